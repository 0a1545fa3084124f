// Package e2e runs petitiond as real processes: several `petitiond serve`
// instances sharing one redis-server, `petitiond sink` as the relay,
// `petitiond enqueue` and the other commands, and Postfix + Dovecot for the
// bounce loop. These are the slow tests of the suite.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/smtp"
)

// bin is the petitiond binary built once for the package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "petitiond-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "petitiond")
	build := exec.Command("go", "build", "-o", bin, "../cmd/petitiond")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building petitiond:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one petitiond process.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func start(t *testing.T, name string, environ []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), environ...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (last 4 KB) ---\n%s", name, tail(b, 4096))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// kill9 simulates a crash.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil
}

// signal sends sig and returns the exit error channel.
func (p *proc) signal(sig os.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for the process to exit within d and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		p.t.Fatalf("%s: %v", p.name, err)
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %s", p.name, d)
	}
	return -1
}

// cli runs a one-shot command and returns its output; it fails the test on a
// non-zero exit unless allowFail.
func cli(t *testing.T, environ []string, stdin string, allowFail bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), environ...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil && !allowFail {
		t.Fatalf("petitiond %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitPort(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	eventually(t, d, addr+" to accept connections", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sinkProc is `petitiond sink` as a separate process, shared by every
// daemon of a test.
type sinkProc struct {
	*proc
	addr, dir string
}

func startSink(t *testing.T, extra ...string) *sinkProc {
	t.Helper()
	return startSinkAt(t, freeAddr(t), t.TempDir(), extra...)
}

// startSinkAt starts a sink on a given address and directory, e.g. to bring
// a stopped relay back; arrivals append to the same log.
func startSinkAt(t *testing.T, addr, dir string, extra ...string) *sinkProc {
	t.Helper()
	p := start(t, "sink", nil, append([]string{"sink", "--listen", addr, "--dir", dir}, extra...)...)
	waitPort(t, addr, 10*time.Second)
	return &sinkProc{proc: p, addr: addr, dir: dir}
}

const sigTERM = syscall.SIGTERM

// arrivals reads the sink's arrival log.
func (s *sinkProc) arrivals(t *testing.T) []smtp.Arrival {
	t.Helper()
	f, err := os.Open(filepath.Join(s.dir, smtp.ArrivalsFile))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []smtp.Arrival
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var a smtp.Arrival
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			// The last line may be half-written while we read.
			continue
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// count is the number of arrival lines so far; it counts newlines instead of
// parsing, so that polling it does not steal the CPU the daemons pace on.
func (s *sinkProc) count(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, smtp.ArrivalsFile))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// daemon is one `petitiond serve`.
type daemon struct {
	*proc
	http string
	cfg  string
}

// config writes a configuration file for a daemon; overrides are YAML
// fragments appended per section.
func writeConfig(t *testing.T, redisURL, relay, httpAddr string, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`redis: {url: %q}
smtp: {relay: %q, tls: none, helo: e2e.test, pool_size: 8, timeout: 20s}
sender:
  from: petitions@petitions.test
  bounce_domain: bounce.test
  verp_secret: e2e-verp-secret-0123456789
http: {listen: %q}
log: {level: info, format: json}
%s
`, redisURL, relay, httpAddr, extra)
	path := filepath.Join(t.TempDir(), "petitiond.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startDaemon(t *testing.T, name, cfg string) *daemon {
	t.Helper()
	httpAddr := configHTTP(t, cfg)
	p := start(t, name, nil, "serve", "--config", cfg)
	d := &daemon{proc: p, http: httpAddr, cfg: cfg}
	eventually(t, 20*time.Second, name+" /healthz", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return d
}

func configHTTP(t *testing.T, cfg string) string {
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "http: {listen: ") {
			return strings.Trim(strings.TrimSuffix(strings.TrimPrefix(l, "http: {listen: "), "}"), `"`)
		}
	}
	t.Fatal("config has no http.listen")
	return ""
}

// campaignYAML builds a campaign of targets.
func campaignYAML(id string, targets []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "id: %s\nfrom_name: \"{{.Signer.Name}} via LabourStart\"\n", id)
	b.WriteString("subject: {en: \"Free Erlan Baltabay\", ru: \"Свободу Ерлану Балтабаю\"}\n")
	b.WriteString("body:\n  en: \"Dear {{.Target.Name}}, release Erlan Baltabay. {{.Signer.Name}}\"\n")
	b.WriteString("  ru: \"Уважаемый адресат, освободите Ерлана Балтабая. {{.Signer.Name}}\"\n")
	b.WriteString("targets:\n")
	for i, tg := range targets {
		fmt.Fprintf(&b, "  - {name: \"Office %d\", address: %q}\n", i, tg)
	}
	return b.String()
}

func applyCampaign(t *testing.T, environ []string, id string, targets []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), id+".yaml")
	if err := os.WriteFile(path, []byte(campaignYAML(id, targets)), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, environ, "", false, "campaign", "apply", path)
}

// signatures returns n JSON Lines signatures for a campaign.
func signatures(camp string, from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		locale := "en"
		if i%2 == 1 {
			locale = "ru"
		}
		fmt.Fprintf(&b, `{"version":1,"id":"%s-%06d","campaign":%q,"signer":{"name":"Signer %d","email":"signer%d@example.org","locale":%q},"signed_at":"2019-07-20T10:00:00Z"}`+"\n",
			camp, i, camp, i, i, locale)
	}
	return b.String()
}

func metricsText(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// withTimeout is a context for one test step.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// activeDeliveries is the number of delivery tasks being handled right now.
func activeDeliveries(t *testing.T, rdb redis.UniversalClient) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("deliveries")
	if err != nil {
		return 0
	}
	return info.Active
}
