package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/metrics"
)

// contractFamilies are the metric names DESIGN.md promises.
var contractFamilies = []string{
	"petitiond_signatures_total",
	"petitiond_deliveries_total",
	"petitiond_deferrals_total",
	"petitiond_bounces_total",
	"petitiond_smtp_transaction_seconds",
	"petitiond_delivery_latency_seconds",
	"petitiond_target_backlog_seconds",
	"petitiond_target_state",
	"petitiond_queue_tasks",
	"petitiond_relay_up",
	"petitiond_imap_up",
	"petitiond_imap_last_success_timestamp_seconds",
	"petitiond_imap_messages_total",
	"petitiond_build_info",
	// Beyond the contract minimum, relied on by deploy/ and docs/metrics.md.
	"petitiond_relay_breaker_open",
	"petitiond_imap_enabled",
	"petitiond_ingest_rejected_total",
	"petitiond_scrape_collector_errors_total",
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newMetrics(t *testing.T) *metrics.Metrics {
	t.Helper()
	m := metrics.New(metrics.BuildInfo{Version: "1.2.3", Revision: "abc123", GoVersion: "go1.26.8"})
	m.Logger = quietLogger()
	return m
}

// touchAll gives every collector a sample value so that every family shows
// up in the exposition.
func touchAll(m *metrics.Metrics) {
	m.Signatures.WithLabelValues("kz-baltabay", metrics.SignatureAccepted).Add(3)
	m.Deliveries.WithLabelValues("kz-baltabay", "press@mfa.example", metrics.DeliverySent).Add(2)
	m.Deferrals.WithLabelValues("press@mfa.example", metrics.DeferralRateLimited).Inc()
	m.Bounces.WithLabelValues("kz-baltabay", "press@mfa.example", metrics.BounceHard).Inc()
	m.SMTPTransaction.Observe(0.2)
	m.DeliveryLatency.Observe(3600)
	m.RelayUp.Set(1)
	m.RelayBreakerOpen.Set(0)
	m.IMAPUp.Set(1)
	m.IMAPLastSuccess.Set(1.7e9)
	m.IMAPMessages.WithLabelValues(metrics.IMAPProcessed).Inc()
	m.Rejected.WithLabelValues(metrics.SourceStream, "bad_json").Inc()
	m.RegisterTargets(func(context.Context) ([]metrics.TargetStatus, error) {
		return []metrics.TargetStatus{{Target: "press@mfa.example", State: metrics.TargetActive, BacklogSeconds: 120}}, nil
	})
	m.RegisterQueues(func(context.Context) ([]metrics.QueueStat, error) {
		return []metrics.QueueStat{{Queue: "deliveries", State: "pending", Tasks: 7}}, nil
	})
}

func scrape(t *testing.T, h http.Handler) []byte {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d: %s", resp.StatusCode, body)
	}
	return body
}

func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testenv.LookPath(t, "promtool")
	m := newMetrics(t)
	touchAll(m)
	body := scrape(t, metrics.NewHandler(m, nil))

	for _, name := range contractFamilies {
		if !bytes.Contains(body, []byte("\n# TYPE "+name+" ")) {
			t.Errorf("/metrics has no family %s", name)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func families(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series renders a family as "label=value,... value" lines, sorted, for
// comparison in tables.
func series(mf *dto.MetricFamily) []string {
	if mf == nil {
		return nil
	}
	var out []string
	for _, m := range mf.GetMetric() {
		var parts []string
		for _, l := range m.GetLabel() {
			parts = append(parts, l.GetName()+"="+l.GetValue())
		}
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		out = append(out, strings.Join(parts, ",")+" "+formatFloat(v))
	}
	sort.Strings(out)
	return out
}

func formatFloat(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestBuildInfo(t *testing.T) {
	m := newMetrics(t)
	got := series(families(t, m)["petitiond_build_info"])
	want := []string{"goversion=go1.26.8,revision=abc123,version=1.2.3 1"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("build_info = %q, want %q", got, want)
	}
}

func TestTargetsCollector(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })

	tests := []struct {
		name       string
		fn         func(context.Context) ([]metrics.TargetStatus, error)
		wantState  []string
		wantLog    []string
		wantErrors float64
	}{
		{
			name: "states and backlog",
			fn: func(context.Context) ([]metrics.TargetStatus, error) {
				return []metrics.TargetStatus{
					{Target: "a@x.example", State: metrics.TargetActive, BacklogSeconds: 30},
					{Target: "b@x.example", State: metrics.TargetPaused, BacklogSeconds: 7200},
					{Target: "c@x.example", State: metrics.TargetSuppressed},
				}, nil
			},
			wantState: []string{
				"state=active,target=a@x.example 1", "state=active,target=b@x.example 0", "state=active,target=c@x.example 0",
				"state=paused,target=a@x.example 0", "state=paused,target=b@x.example 1", "state=paused,target=c@x.example 0",
				"state=suppressed,target=a@x.example 0", "state=suppressed,target=b@x.example 0", "state=suppressed,target=c@x.example 1",
			},
			wantLog: []string{"target=a@x.example 30", "target=b@x.example 7200", "target=c@x.example 0"},
		},
		{
			name: "duplicate target keeps the first and the scrape survives",
			fn: func(context.Context) ([]metrics.TargetStatus, error) {
				return []metrics.TargetStatus{
					{Target: "a@x.example", State: metrics.TargetPaused, BacklogSeconds: 1},
					{Target: "a@x.example", State: metrics.TargetActive, BacklogSeconds: 2},
				}, nil
			},
			wantState: []string{"state=active,target=a@x.example 0", "state=paused,target=a@x.example 1", "state=suppressed,target=a@x.example 0"},
			wantLog:   []string{"target=a@x.example 1"},
		},
		{
			name: "unknown state reports every known state as 0",
			fn: func(context.Context) ([]metrics.TargetStatus, error) {
				return []metrics.TargetStatus{{Target: "a@x.example", State: "bogus"}}, nil
			},
			wantState: []string{"state=active,target=a@x.example 0", "state=paused,target=a@x.example 0", "state=suppressed,target=a@x.example 0"},
			wantLog:   []string{"target=a@x.example 0"},
		},
		{
			name: "error leaves the families out",
			fn: func(context.Context) ([]metrics.TargetStatus, error) {
				return nil, errors.New("redis: connection refused")
			},
			wantErrors: 1,
		},
		{
			name: "lookup that honours the deadline",
			fn: func(ctx context.Context) ([]metrics.TargetStatus, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			wantErrors: 1,
		},
		{
			name: "lookup that ignores the deadline is abandoned",
			fn: func(context.Context) ([]metrics.TargetStatus, error) {
				<-block
				return []metrics.TargetStatus{{Target: "late@x.example", State: metrics.TargetActive}}, nil
			},
			wantErrors: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics(t)
			metrics.SetScrapeTimeout(m, 50*time.Millisecond)
			m.RegisterTargets(tt.fn)
			fams := families(t, m)
			if got := series(fams["petitiond_target_state"]); strings.Join(got, "\n") != strings.Join(tt.wantState, "\n") {
				t.Errorf("target_state =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.wantState, "\n"))
			}
			if got := series(fams["petitiond_target_backlog_seconds"]); strings.Join(got, "\n") != strings.Join(tt.wantLog, "\n") {
				t.Errorf("target_backlog_seconds = %q, want %q", got, tt.wantLog)
			}
			if got := metrics.CollectorErrors(m, "targets"); got != tt.wantErrors {
				t.Errorf("scrape_collector_errors_total{collector=targets} = %v, want %v", got, tt.wantErrors)
			}
		})
	}
}

func TestQueuesCollector(t *testing.T) {
	tests := []struct {
		name       string
		fn         func(context.Context) ([]metrics.QueueStat, error)
		want       []string
		wantErrors float64
	}{
		{
			name: "every state",
			fn: func(context.Context) ([]metrics.QueueStat, error) {
				return []metrics.QueueStat{
					{Queue: "deliveries", State: "pending", Tasks: 12},
					{Queue: "deliveries", State: "scheduled", Tasks: 4000},
					{Queue: "fanout", State: "archived", Tasks: 1},
				}, nil
			},
			want: []string{"queue=deliveries,state=pending 12", "queue=deliveries,state=scheduled 4000", "queue=fanout,state=archived 1"},
		},
		{
			name: "duplicate keeps the first",
			fn: func(context.Context) ([]metrics.QueueStat, error) {
				return []metrics.QueueStat{{Queue: "q", State: "retry", Tasks: 1}, {Queue: "q", State: "retry", Tasks: 2}}, nil
			},
			want: []string{"queue=q,state=retry 1"},
		},
		{
			name: "error leaves the family out",
			fn: func(context.Context) ([]metrics.QueueStat, error) {
				return nil, errors.New("asynq inspector: i/o timeout")
			},
			wantErrors: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics(t)
			m.RegisterQueues(tt.fn)
			fams := families(t, m)
			if got := series(fams["petitiond_queue_tasks"]); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("queue_tasks = %q, want %q", got, tt.want)
			}
			if got := metrics.CollectorErrors(m, "queues"); got != tt.wantErrors {
				t.Errorf("scrape_collector_errors_total{collector=queues} = %v, want %v", got, tt.wantErrors)
			}
		})
	}
}

// A failing collector must not turn the scrape into an error page.
func TestScrapeSurvivesFailingCollector(t *testing.T) {
	m := newMetrics(t)
	m.RegisterQueues(func(context.Context) ([]metrics.QueueStat, error) { return nil, errors.New("down") })
	m.RelayUp.Set(1)
	body := scrape(t, metrics.NewHandler(m, nil))
	if !bytes.Contains(body, []byte("\npetitiond_relay_up 1\n")) {
		t.Errorf("scrape lacks petitiond_relay_up 1:\n%s", body)
	}
	if bytes.Contains(body, []byte("petitiond_queue_tasks{")) {
		t.Errorf("scrape has queue_tasks samples despite the lookup error")
	}
}

func TestPrepareCampaign(t *testing.T) {
	m := newMetrics(t)
	m.PrepareCampaign("kz", []string{"a@x.example"})
	fams := families(t, m)
	tests := []struct {
		family string
		want   string
	}{
		{"petitiond_signatures_total", "campaign=kz,outcome=accepted 0"},
		{"petitiond_signatures_total", "campaign=kz,outcome=unknown_campaign 0"},
		{"petitiond_deliveries_total", "campaign=kz,outcome=sent,target=a@x.example 0"},
		{"petitiond_deliveries_total", "campaign=kz,outcome=failed,target=a@x.example 0"},
		{"petitiond_bounces_total", "campaign=kz,kind=hard,target=a@x.example 0"},
		{"petitiond_deferrals_total", "reason=relay_down,target=a@x.example 0"},
		{"petitiond_imap_messages_total", "result=processed 0"},
		{"petitiond_imap_enabled", " 1"},
	}
	for _, tt := range tests {
		if got := series(fams[tt.family]); !contains(got, tt.want) {
			t.Errorf("%s = %q, want %q among them", tt.family, got, tt.want)
		}
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

func TestHealthAndReady(t *testing.T) {
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name       string
		path       string
		checks     []metrics.Check
		wantCode   int
		wantStatus string
		wantChecks map[string]string // "" means any non-"ok" text
	}{
		{name: "healthz", path: "/healthz", wantCode: 200, wantStatus: "ok"},
		{name: "readyz without checks", path: "/readyz", wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{}},
		{
			name: "readyz all ok", path: "/readyz",
			checks:   []metrics.Check{{Name: "redis", Func: ok}, {Name: "relay", Func: ok}},
			wantCode: 200, wantStatus: "ok",
			wantChecks: map[string]string{"redis": "ok", "relay": "ok"},
		},
		{
			name: "readyz names the failing check", path: "/readyz",
			checks: []metrics.Check{
				{Name: "redis", Func: ok},
				{Name: "relay", Func: func(context.Context) error { return errors.New("dial tcp 10.0.0.1:587: connection refused") }},
			},
			wantCode: 503, wantStatus: "unavailable",
			wantChecks: map[string]string{"redis": "ok", "relay": "dial tcp 10.0.0.1:587: connection refused"},
		},
		{
			name: "each check runs under a short deadline", path: "/readyz",
			checks: []metrics.Check{{Name: "imap", Func: func(ctx context.Context) error {
				dl, ok := ctx.Deadline()
				if !ok || time.Until(dl) > metrics.CheckTimeout {
					return errors.New("no short deadline")
				}
				return nil
			}}},
			wantCode: 200, wantStatus: "ok",
			wantChecks: map[string]string{"imap": "ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics(t)
			srv := httptest.NewServer(metrics.NewHandler(m, tt.checks))
			defer srv.Close()
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tt.path, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var body struct {
				Status string            `json:"status"`
				Checks map[string]string `json:"checks"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if body.Status != tt.wantStatus {
				t.Errorf("status field = %q, want %q", body.Status, tt.wantStatus)
			}
			if tt.wantChecks == nil {
				return
			}
			if len(body.Checks) != len(tt.wantChecks) {
				t.Errorf("checks = %v, want %v", body.Checks, tt.wantChecks)
			}
			for k, v := range tt.wantChecks {
				if body.Checks[k] != v {
					t.Errorf("checks[%q] = %q, want %q", k, body.Checks[k], v)
				}
			}
		})
	}
}

func TestServeShutsDownWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- metrics.ServeListener(ctx, ln, metrics.NewHandler(m, nil), quietLogger()) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz status %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeListener after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return after its context ended")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

func TestServeReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = metrics.Serve(context.Background(), ln.Addr().String(), http.NotFoundHandler(), quietLogger())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("Serve on a busy address = %v, want an error naming the address", err)
	}
}
