package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/metrics"
)

// repoRoot is the module root; go test runs in deploy/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

// registryNames gathers metrics.New's registry after giving every labelled
// family a series, so that each appears. Histograms contribute the names
// PromQL sees: _bucket, _sum and _count.
func registryNames(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New(metrics.BuildInfo{Version: "test"})
	m.PrepareCampaign("kz", []string{"press@mfa.example"})
	m.Rejected.WithLabelValues(metrics.SourceStream, "bad_json")
	m.RegisterTargets(func(context.Context) ([]metrics.TargetStatus, error) {
		return []metrics.TargetStatus{{Target: "press@mfa.example", State: metrics.TargetActive}}, nil
	})
	m.RegisterQueues(func(context.Context) ([]metrics.QueueStat, error) {
		return []metrics.QueueStat{{Queue: "deliveries", State: "pending"}}, nil
	})
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		names[n] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		}
		if mf.GetType() == dto.MetricType_SUMMARY {
			names[n+"_sum"], names[n+"_count"] = true, true
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`petitiond_relay_up == 0`, []string{"petitiond_relay_up"}},
		{`sum by (outcome) (rate(petitiond_deliveries_total{job=~"$job",campaign=~"$campaign"}[$__rate_interval]))`, []string{"petitiond_deliveries_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(petitiond_smtp_transaction_seconds_bucket{job="x"}[5m])))`, []string{"petitiond_smtp_transaction_seconds_bucket"}},
		{"max by (job) (a) == 0\nand on (job)\nmax by (job) (b) == 1", []string{"a", "b"}},
		{`time() - max(petitiond_imap_last_success_timestamp_seconds) > 1.8e3`, []string{"petitiond_imap_last_success_timestamp_seconds"}},
		{`x / ignoring(target) group_left y offset 5m unless z bool`, []string{"x", "y", "z"}},
		{`label_replace(up{a="b"}, "dst", "$1", "src", "(.*)")`, []string{"up"}},
		{`count(x{state=~"paused|suppressed"} == 1) or vector(0)`, []string{"x"}},
		{`sum without (instance) (rate(c[5m:1m]))`, []string{"c"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("metricNames(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

// --- Prometheus ------------------------------------------------------------

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestPromtoolRules(t *testing.T) {
	promtool := testenv.LookPath(t, "promtool")
	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"check rules", []string{"check", "rules", "alerts.yml"}, "SUCCESS"},
		{"test rules", []string{"test", "rules", "alerts_test.yml"}, "SUCCESS"},
		{"check config", []string{"check", "config", "prometheus.yml"}, "is valid prometheus config file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out := run(t, dir, promtool, tt.args...); !strings.Contains(out, tt.want) {
				t.Fatalf("promtool %s: no %q in\n%s", strings.Join(tt.args, " "), tt.want, out)
			}
		})
	}
}

// Every alert must be unit-tested firing, name only metrics petitiond
// exports, and have a runbook section in docs/operations.md.
func TestAlertsAreTestedAndDocumented(t *testing.T) {
	root := repoRoot(t)
	var rules ruleFile
	readYAML(t, filepath.Join(root, "deploy", "prometheus", "alerts.yml"), &rules)

	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, filepath.Join(root, "deploy", "prometheus", "alerts_test.yml"), &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}

	ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(ops))
	names := registryNames(t)
	// Prometheus makes these itself for every scrape target.
	names["up"] = true

	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			t.Run(r.Alert, func(t *testing.T) {
				if !fires[r.Alert] {
					t.Error("alerts_test.yml has no case where it fires")
				}
				if !quiet[r.Alert] {
					t.Error("alerts_test.yml has no case where it stays quiet")
				}
				for _, m := range metricNames(r.Expr) {
					if !names[m] {
						t.Errorf("expr names %s, which petitiond does not export", m)
					}
				}
				if s := r.Labels["severity"]; s != "warning" && s != "critical" {
					t.Errorf("severity = %q, want warning or critical", s)
				}
				rb := r.Annotations["runbook"]
				anchor, ok := strings.CutPrefix(rb, "docs/operations.md#")
				if !ok || !anchors[anchor] {
					t.Errorf("runbook %q does not point at a heading of docs/operations.md", rb)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("alerts.yml has no alerts")
	}
}

// markdownAnchors returns the GitHub-style anchors of the headings.
func markdownAnchors(md string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		h = drop.ReplaceAllString(h, "")
		out[strings.ReplaceAll(h, " ", "-")] = true
	}
	return out
}

// --- Grafana ----------------------------------------------------------------

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // collapsed rows nest their panels
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "petitiond.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("parse petitiond.json: %v", err)
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// variableQuery reads a query variable's query, which Grafana stores as a
// string or as {"query": "..."}.
func variableQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.Query
}

func TestDashboardNamesExistingMetrics(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title for provisioning; got uid %q title %q", d.UID, d.Title)
	}
	names := registryNames(t)
	used := map[string]bool{}
	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			ms := metricNames(q.Expr)
			if len(ms) == 0 {
				t.Errorf("panel %q: query %q names no metric", p.Title, q.Expr)
			}
			for _, m := range ms {
				used[m] = true
				if !names[m] {
					t.Errorf("panel %q: query names %s, which is not in the registry", p.Title, m)
				}
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := variableQuery(v.Query)
		sm := labelValues.FindStringSubmatch(q)
		if sm == nil {
			t.Errorf("variable %s: query %q names no metric", v.Name, q)
			continue
		}
		if !names[sm[1]] {
			t.Errorf("variable %s: query names %s, which is not in the registry", v.Name, sm[1])
		}
	}
	// The panels the operations guide promises.
	for _, m := range []string{
		"petitiond_deliveries_total", "petitiond_target_backlog_seconds", "petitiond_target_state",
		"petitiond_bounces_total", "petitiond_delivery_latency_seconds_bucket",
		"petitiond_smtp_transaction_seconds_bucket", "petitiond_queue_tasks",
		"petitiond_relay_up", "petitiond_imap_up", "petitiond_imap_last_success_timestamp_seconds",
	} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// The dashboard's queries must be valid PromQL, not just name real metrics:
// promtool checks them as recording rules once Grafana's variables are
// replaced.
func TestDashboardQueriesParse(t *testing.T) {
	promtool := testenv.LookPath(t, "promtool")
	d := loadDashboard(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, p := range allPanels(d.Panels) {
		for i, q := range p.Targets {
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel_%d_%d", p.ID, i), Expr: grafanaToPromQL(q.Expr)})
		}
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := run(t, dir, promtool, "check", "rules", "dashboard.yml"); !strings.Contains(res, fmt.Sprintf("%d rules found", len(rules))) {
		t.Fatalf("promtool check rules on the dashboard queries:\n%s", res)
	}
}

// --- systemd ----------------------------------------------------------------

// unitDirectives reads a unit file into key → values, in order.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: not a directive: %q", path, line)
			continue
		}
		out[k] = append(out[k], v)
	}
	return out
}

func TestSystemdUnitDirectives(t *testing.T) {
	d := unitDirectives(t, filepath.Join(repoRoot(t), "deploy", "systemd", "petitiond.service"))
	tests := []struct {
		key  string
		want string // one of the key's values must equal this
	}{
		{"Type", "notify"},
		{"NotifyAccess", "main"},
		{"ExecStart", "/usr/local/bin/petitiond serve --config /etc/petitiond/petitiond.yaml"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"WatchdogSec", "30s"},
		{"Restart", "on-failure"},
		{"LoadCredential", "smtp:/etc/petitiond/credentials/smtp"},
		{"LoadCredential", "verp:/etc/petitiond/credentials/verp"},
		{"LoadCredential", "imap:/etc/petitiond/credentials/imap"},
		{"Environment", "PETITIOND_SMTP_PASSWORD_FILE=%d/smtp"},
		{"Environment", "PETITIOND_SENDER_VERP_SECRET_FILE=%d/verp"},
		{"Environment", "PETITIOND_IMAP_PASSWORD_FILE=%d/imap"},
		{"DynamicUser", "yes"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"CapabilityBoundingSet", ""},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"SystemCallFilter", "@system-service"},
	}
	for _, tt := range tests {
		found := false
		for _, v := range d[tt.key] {
			found = found || v == tt.want
		}
		if !found {
			t.Errorf("%s=%s missing; have %q", tt.key, tt.want, d[tt.key])
		}
	}

	// SIGTERM drains for delivery.drain_timeout (30s by default); systemd
	// must not SIGKILL before the drain is over.
	const drainTimeout = 30 * time.Second
	stop, err := time.ParseDuration(strings.Join(d["TimeoutStopSec"], ""))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= drainTimeout {
		t.Errorf("TimeoutStopSec=%s is not longer than the %s drain timeout", stop, drainTimeout)
	}
}

// TestSystemdAnalyze runs systemd-analyze on a copy of the unit whose
// ExecStart points at a stand-in binary built here: verify insists that the
// executable exists, and what it checks is the unit, not the program, so a
// stand-in keeps this test independent of whether cmd/petitiond builds.
func TestSystemdAnalyze(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd-analyze")
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", "petitiond.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "petitiond")
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin := testenv.LookPath(t, "go")
	run(t, dir, goBin, "build", "-o", bin, "main.go")

	unit := strings.ReplaceAll(string(src), "/usr/local/bin/petitiond", bin)
	if unit == string(src) {
		t.Fatal("the unit does not run /usr/local/bin/petitiond")
	}
	unitDir := filepath.Join(dir, "units")
	if err := os.Mkdir(unitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(unitDir, "petitiond.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("verify", func(t *testing.T) {
		// verify exits 0 on unknown keys and bad values, printing them;
		// clean means no output at all.
		if out := run(t, unitDir, analyze, "verify", "--man=no", "petitiond.service"); strings.TrimSpace(out) != "" {
			t.Fatalf("systemd-analyze verify is not clean:\n%s", out)
		}
	})
	t.Run("security", func(t *testing.T) {
		// Exposure 2.0 or less is what systemd-analyze calls "OK"; the
		// threshold is in tenths.
		out := run(t, unitDir, analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", "petitiond.service")
		if !strings.Contains(out, "Overall exposure level") {
			t.Fatalf("unexpected output:\n%s", out)
		}
	})
}

// --- docker-compose ---------------------------------------------------------

type composeFile struct {
	Services map[string]struct {
		Image   string    `yaml:"image"`
		Build   yaml.Node `yaml:"build"`
		Command yaml.Node `yaml:"command"`
		EnvFile yaml.Node `yaml:"env_file"`
		Volumes []yaml.Node
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// mount is one service volume in either compose syntax.
type mount struct{ source, target string }

func parseMount(n yaml.Node) (mount, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		parts := strings.Split(n.Value, ":")
		if len(parts) < 2 {
			return mount{target: parts[0]}, nil // anonymous volume
		}
		return mount{source: parts[0], target: parts[1]}, nil
	case yaml.MappingNode:
		var m struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		}
		if err := n.Decode(&m); err != nil {
			return mount{}, err
		}
		return mount{m.Source, m.Target}, nil
	}
	return mount{}, errors.New("volume is neither a string nor a mapping")
}

func stringList(n yaml.Node) []string {
	var s string
	if n.Decode(&s) == nil && s != "" {
		return []string{s}
	}
	var l []string
	_ = n.Decode(&l)
	return l
}

func TestDockerCompose(t *testing.T) {
	root := repoRoot(t)
	var c composeFile
	readYAML(t, filepath.Join(root, "docker-compose.yml"), &c)

	for _, want := range []string{"redis", "petitiond", "sink", "prometheus", "grafana"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("no service %q", want)
		}
	}
	mounts := map[string][]mount{}
	for name, s := range c.Services {
		if s.Image == "" && s.Build.IsZero() {
			t.Errorf("service %s has neither image nor build", name)
		}
		if !s.Build.IsZero() {
			var b struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			}
			if s.Build.Kind == yaml.ScalarNode {
				b.Context = s.Build.Value
			} else if err := s.Build.Decode(&b); err != nil {
				t.Errorf("service %s: build: %v", name, err)
			}
			if b.Dockerfile == "" {
				b.Dockerfile = "Dockerfile"
			}
			mustExist(t, name+" build context", filepath.Join(root, b.Context))
			mustExist(t, name+" dockerfile", filepath.Join(root, b.Context, b.Dockerfile))
		}
		for _, f := range stringList(s.EnvFile) {
			mustExist(t, name+" env_file", filepath.Join(root, f))
		}
		for _, v := range s.Volumes {
			m, err := parseMount(v)
			if err != nil {
				t.Errorf("service %s: %v", name, err)
				continue
			}
			mounts[name] = append(mounts[name], m)
			switch {
			case m.source == "":
			case strings.HasPrefix(m.source, ".") || strings.HasPrefix(m.source, "/"):
				if filepath.IsAbs(m.source) {
					t.Errorf("service %s mounts host path %s: use a path inside the repository", name, m.source)
					continue
				}
				mustExist(t, name+" mount", filepath.Join(root, m.source))
			default:
				if _, ok := c.Volumes[m.source]; !ok {
					t.Errorf("service %s uses volume %q, not declared under volumes", name, m.source)
				}
			}
		}
	}

	redisCmd := strings.Join(stringList(c.Services["redis"].Command), " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(redisCmd, want) {
			t.Errorf("redis command %q lacks %q", redisCmd, want)
		}
	}
	sinkCmd := strings.Join(stringList(c.Services["sink"].Command), " ")
	if !strings.HasPrefix(sinkCmd, "sink --listen 0.0.0.0:2525 --dir /sink") {
		t.Errorf("sink command = %q", sinkCmd)
	}

	mountedAt := func(service, target string) string {
		for _, m := range mounts[service] {
			if m.target == target {
				return m.source
			}
		}
		t.Errorf("service %s mounts nothing at %s", service, target)
		return ""
	}
	if src := mountedAt("prometheus", "/etc/prometheus"); src != "" && filepath.Clean(src) != "deploy/prometheus" {
		t.Errorf("prometheus mounts %s, want ./deploy/prometheus (config and rules)", src)
	}
	mountedAt("grafana", "/etc/grafana/provisioning")
	dash := mountedAt("grafana", "/var/lib/grafana/dashboards/petitiond.json")

	// The Grafana provider must look where the dashboard is mounted.
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(root, "deploy", "grafana", "provisioning", "dashboards", "petitiond.yml"), &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("dashboard provider path = %+v, want /var/lib/grafana/dashboards", prov.Providers)
	}
	if dash != "" && filepath.Clean(dash) != "deploy/grafana/petitiond.json" {
		t.Errorf("grafana mounts dashboard %s, want ./deploy/grafana/petitiond.json", dash)
	}

	// Prometheus must scrape the petitiond service where its config listens.
	cfgPath := mountedAt("petitiond", "/etc/petitiond/petitiond.yaml")
	if cfgPath == "" {
		return
	}
	var cfg struct {
		Redis struct {
			URL string `yaml:"url"`
		} `yaml:"redis"`
		SMTP struct {
			Relay string `yaml:"relay"`
		} `yaml:"smtp"`
		HTTP struct {
			Listen string `yaml:"listen"`
		} `yaml:"http"`
	}
	readYAML(t, filepath.Join(root, cfgPath), &cfg)
	_, port, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		t.Fatalf("petitiond http.listen %q: %v", cfg.HTTP.Listen, err)
	}
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(root, "deploy", "prometheus", "prometheus.yml"), &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName == "petitiond" {
			for _, s := range sc.StaticConfigs {
				targets = append(targets, s.Targets...)
			}
		}
	}
	if want := net.JoinHostPort("petitiond", port); !contains(targets, want) {
		t.Errorf("prometheus job petitiond scrapes %v, want %s", targets, want)
	}
	if !strings.HasPrefix(cfg.Redis.URL, "redis://redis:") {
		t.Errorf("petitiond redis.url = %q, want the redis service", cfg.Redis.URL)
	}
	if host, _, _ := net.SplitHostPort(cfg.SMTP.Relay); host != "sink" {
		t.Errorf("petitiond smtp.relay = %q, want the sink service", cfg.SMTP.Relay)
	}
}

func mustExist(t *testing.T, what, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
