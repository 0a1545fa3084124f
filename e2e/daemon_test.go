package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/queue/ledger"
)

// The demo of `make run`, as processes: 5 signatures × 6 targets, then the
// same signatures again through the CLI, then /metrics through promtool.
func TestDemoRunMetricsAndResubmission(t *testing.T) {
	promtool := testenv.LookPath(t, "promtool")
	srv := testredis.Start(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	sink := startSink(t)
	cfg := writeConfig(t, srv.URL(0), sink.addr, freeAddr(t), `limits: {per_address: "50/s", per_domain: "50/s", global: "100/s"}`)
	d := startDaemon(t, "serve", cfg)

	cli(t, env, "", false, "campaign", "apply", "../demo/campaign.yaml")
	sigs, err := os.ReadFile("../demo/signatures.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	out := cli(t, env, string(sigs), false, "enqueue")
	if n := strings.Count(out, `"result":"accepted"`); n != 5 {
		t.Fatalf("enqueue accepted %d of 5:\n%s", n, out)
	}
	eventually(t, 60*time.Second, "30 messages at the sink", func() bool { return sink.count(t) >= 30 })

	out = cli(t, env, string(sigs), false, "enqueue")
	if n := strings.Count(out, `"result":"duplicate"`); n != 5 {
		t.Fatalf("resubmission: %d of 5 duplicates:\n%s", n, out)
	}
	if n := sink.count(t); n != 30 {
		t.Fatalf("%d messages at the sink; want exactly 30", n)
	}

	text := metricsText(t, d.http)
	sent := 0.0
	re := regexp.MustCompile(`(?m)^petitiond_deliveries_total\{[^}]*outcome="sent"[^}]*\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sent += v
	}
	if sent != 30 {
		t.Fatalf("petitiond_deliveries_total{outcome=sent} sums to %v; want 30", sent)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// SIGTERM while deliveries are in flight against a slow relay: the process
// exits 0 within the drain timeout; every delivery is sent once or still
// queued; a restarted daemon sends the rest, each once.
func TestSIGTERMDrainsWithoutLossOrDuplicates(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	sink := startSink(t, "--delay", "2s")
	const drain = 15 * time.Second
	cfg := writeConfig(t, srv.URL(0), sink.addr, freeAddr(t), `limits: {per_address: "1000/s", per_domain: "1000/s", global: "1000/s"}
delivery: {concurrency: 100, drain_timeout: 15s}`)
	cfg = strings.Replace(cfgText(t, cfg), "pool_size: 8", "pool_size: 60", 1)
	path := writeRaw(t, cfg)
	d := startDaemon(t, "serve-1", path)

	targets := []string{"a@gov1.test", "b@gov1.test", "c@gov2.test", "d@gov2.test", "e@gov3.test"}
	applyCampaign(t, env, "drain", targets)
	cli(t, env, signatures("drain", 0, 40), false, "enqueue")
	eventually(t, 30*time.Second, "deliveries in flight", func() bool { return activeDeliveries(t, rdb) >= 30 })

	start := time.Now()
	d.signal(syscall.SIGTERM)
	if code := d.wait(drain + 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; want 0", code)
	}
	took := time.Since(start)
	if took > drain+5*time.Second {
		t.Fatalf("drain took %s; drain timeout is %s", took, drain)
	}
	t.Logf("SIGTERM to exit: %s; %d of 200 sent before exit", took.Round(time.Millisecond), sink.count(t))

	l := ledger.New(rdb, time.Hour)
	sentOnce := checkArrivals(t, sink)
	ctx := context.Background()
	queued := 0
	for i := 0; i < 40; i++ {
		if _, err := l.Signature(ctx, fmt.Sprintf("drain-%06d", i)); err != nil {
			// Not fanned out yet: its fan-out task is still queued.
			queued++
			continue
		}
		for _, tg := range targets {
			id := campaign.DeliveryID("drain", "signer"+strconv.Itoa(i)+"@example.org", tg)
			r, err := l.Get(ctx, id)
			if err != nil {
				t.Fatalf("delivery %s of a fanned-out signature lost: %v", id, err)
			}
			if sentOnce[id] != (r.State == ledger.Sent) {
				t.Fatalf("delivery %s: ledger %s, at sink %v", id, r.State, sentOnce[id])
			}
		}
	}
	t.Logf("%d signatures not yet fanned out at exit", queued)
	// Nothing was lost: a new daemon sends the rest, and nothing twice.
	startDaemon(t, "serve-2", path)
	eventually(t, 90*time.Second, "all 200 messages", func() bool { return sink.count(t) >= 200 })
	if got := len(checkArrivals(t, sink)); got != 200 {
		t.Fatalf("%d distinct deliveries at the sink; want 200", got)
	}
}

// SIGHUP with a changed per-address limit takes effect without a restart; a
// broken configuration is refused and the old one stays.
func TestSIGHUPReloadsLimits(t *testing.T) {
	srv := testredis.Start(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	sink := startSink(t)
	httpAddr := freeAddr(t)
	slow := writeConfig(t, srv.URL(0), sink.addr, httpAddr, `limits: {per_address: "1/h", per_domain: "1000/s", global: "1000/s"}`)
	d := startDaemon(t, "serve", slow)
	applyCampaign(t, env, "hup", []string{"press@mfa.test"})
	cli(t, env, signatures("hup", 0, 1), false, "enqueue")
	eventually(t, 20*time.Second, "the first message", func() bool { return sink.count(t) == 1 })

	// Same file, faster limit.
	fast := strings.Replace(cfgText(t, slow), `per_address: "1/h"`, `per_address: "20/s"`, 1)
	if err := os.WriteFile(slow, []byte(fast), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload to be logged", func() bool { return logContains(t, d.proc, "configuration reloaded") })
	cli(t, env, signatures("hup", 1, 5), false, "enqueue")
	// Under 1/h the next five would take five hours.
	eventually(t, 20*time.Second, "five more messages under the new limit", func() bool { return sink.count(t) == 6 })

	if err := os.WriteFile(slow, []byte("smtp: {tls: sometimes}\n"+fast), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the refusal to be logged", func() bool { return logContains(t, d.proc, "reload refused") })
	cli(t, env, signatures("hup", 6, 3), false, "enqueue")
	eventually(t, 20*time.Second, "three more under the kept limit", func() bool { return sink.count(t) == 9 })
	select {
	case err := <-d.done:
		t.Fatalf("daemon exited after a broken reload: %v", err)
	default:
	}
}

func logContains(t *testing.T, p *proc, s string) bool {
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), s)
}

func cfgText(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeRaw(t *testing.T, text string) string {
	path := t.TempDir() + "/petitiond.yaml"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkArrivals fails on any delivery that arrived twice and returns the
// set that arrived.
func checkArrivals(t *testing.T, s *sinkProc) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for _, a := range s.arrivals(t) {
		id := a.DeliveryID
		if len(id) > 32 {
			id = id[:32]
		}
		if seen[id] {
			t.Fatalf("delivery %s arrived twice", id)
		}
		seen[id] = true
	}
	return seen
}
