package queue_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/metrics"
	"github.com/petitiond/petitiond/queue"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/queue/pacing"
	"github.com/petitiond/petitiond/smtp"
)

const testSecret = "test-verp-secret-0123456789"

// harness runs one engine against a real redis-server and the project's
// SMTP sink, in process.
type harness struct {
	t         *testing.T
	rdb       *redis.Client
	sink      *smtp.Sink
	sinkDir   string
	sinkAddr  string
	engine    *queue.Engine
	campaigns *campaign.Store
	ledger    *ledger.Ledger
	producer  *queue.Producer
	metrics   *metrics.Metrics
	verp      smtp.VERP
	stop      func()
	sinkStop  func()
	// hook, when set, answers RCPT for the sink (451 simulations).
	hook atomic.Pointer[func(from, rcpt string) *gosmtp.SMTPError]
}

type harnessOpts struct {
	limits   queue.LimitConfig
	options  queue.Options
	reject   string
	pool     func(*smtp.Config)
	sinkConf func(*smtp.Sink)
}

func newHarness(t *testing.T, mod ...func(*harnessOpts)) *harness {
	t.Helper()
	o := harnessOpts{
		limits: queue.LimitConfig{PerAddress: "1000/s", PerDomain: "1000/s", Global: "1000/s"},
		options: queue.Options{Concurrency: 20, RetryBase: time.Second, RetryMax: 2 * time.Second,
			ProbeInterval: time.Second, ClaimLease: 30 * time.Second, PauseCheck: time.Second},
	}
	for _, m := range mod {
		m(&o)
	}
	srv := testredis.Start(t)
	h := &harness{t: t, rdb: srv.Client(t), sinkDir: t.TempDir()}
	h.verp = smtp.VERP{Secret: []byte(testSecret), Domain: "bounces.test"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	h.sink = &smtp.Sink{Dir: h.sinkDir, Logger: log}
	h.sink.Hook = func(from, rcpt string) *gosmtp.SMTPError {
		if f := h.hook.Load(); f != nil {
			return (*f)(from, rcpt)
		}
		return nil
	}
	if o.reject != "" {
		h.sink.Reject = mustRegexp(t, o.reject)
	}
	if o.sinkConf != nil {
		o.sinkConf(h.sink)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.sinkAddr = ln.Addr().String()
	h.serveSink(ln)

	pc := smtp.Config{Addr: h.sinkAddr, TLS: smtp.TLSNone, HELO: "test.local", PoolSize: 4,
		MaxMessagesPerConn: 50, IdleTimeout: 10 * time.Second, DialTimeout: 5 * time.Second,
		CommandTimeout: 10 * time.Second, Logger: log}
	if o.pool != nil {
		o.pool(&pc)
	}
	pool, err := smtp.NewPool(pc)
	if err != nil {
		t.Fatal(err)
	}
	limits, err := queue.NewLimits(o.limits)
	if err != nil {
		t.Fatal(err)
	}
	h.campaigns = campaign.NewStore(h.rdb)
	h.ledger = ledger.New(h.rdb, 24*time.Hour)
	h.metrics = metrics.New(metrics.BuildInfo{Version: "test"})
	h.engine, err = queue.NewEngine(queue.Deps{
		Redis: h.rdb, Campaigns: h.campaigns, Ledger: h.ledger, Limiter: pacing.New(h.rdb), Limits: limits,
		Relay: pool, Sender: queue.Sender{From: "petitions@petitions.test", VERP: h.verp},
		Metrics: h.metrics, Log: log, Options: o.options,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.producer = queue.NewProducer(h.rdb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.engine.Run(ctx) }()
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		h.stopSink()
		_ = pool.Close()
	}
	t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
		}
	})
	return h
}

// applyCampaign applies a campaign with n targets on two domains.
func (h *harness) applyCampaign(id string, n int) *campaign.Campaign {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "id: %s\nstatus: open\nfrom_name: \"{{.Signer.Name}} via LabourStart\"\n", id)
	b.WriteString("subject: {en: \"Free Erlan Baltabay\", tl: \"Palayain si Erlan Baltabay — ñ\", ru: \"Свободу Ерлану Балтабаю\", kk: \"Ерлан Балтабайға бостандық\", ar: \"الحرية لإرلان بالتباي\"}\n")
	b.WriteString("body:\n")
	for _, loc := range []string{"en", "tl", "ru", "kk", "ar"} {
		fmt.Fprintf(&b, "  %s: |\n    Dear {{.Target.Name}},\n    {{.Comment}}\n    — {{.Signer.Name}}\n", loc)
	}
	b.WriteString("targets:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: \"Target %d\", address: \"office%d@gov%d.test\"}\n", i, i, i%2)
	}
	c, err := campaign.Parse([]byte(b.String()))
	if err != nil {
		h.t.Fatalf("campaign: %v\n%s", err, b.String())
	}
	if err := h.campaigns.Apply(context.Background(), c); err != nil {
		h.t.Fatal(err)
	}
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) emls() []string {
	h.t.Helper()
	files, err := filepath.Glob(filepath.Join(h.sinkDir, "*.eml"))
	if err != nil {
		h.t.Fatal(err)
	}
	return files
}

func (h *harness) serveSink(ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.sink.Serve(ctx, ln); close(done) }()
	h.sinkStop = func() { cancel(); <-done }
}

// stopSink takes the relay down: connections are refused until startSink.
func (h *harness) stopSink() {
	if h.sinkStop != nil {
		h.sinkStop()
		h.sinkStop = nil
	}
}

// startSink brings the relay back on the same address.
func (h *harness) startSink() {
	h.t.Helper()
	var ln net.Listener
	var err error
	eventually(h.t, 10*time.Second, "the sink address to be free again", func() bool {
		ln, err = net.Listen("tcp", h.sinkAddr)
		return err == nil
	})
	h.serveSink(ln)
}
