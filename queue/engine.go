package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/metrics"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/queue/pacing"
	"github.com/petitiond/petitiond/smtp"
)

// Relay is what the delivery handler needs of the SMTP relay client.
type Relay interface {
	Send(ctx context.Context, env smtp.Envelope, msg []byte) error
	Probe(ctx context.Context) error
}

// Options tune the engine. Zero values take the defaults noted.
type Options struct {
	// Concurrency is the number of tasks one instance runs at once
	// (default 32). Delivery handlers sleep briefly to pace sends, so keep
	// it above the global rate per second.
	Concurrency int
	// MaxAge is how long a delivery is retried before it fails as
	// expired (default 120h).
	MaxAge time.Duration
	// DrainTimeout is how long shutdown waits for running handlers
	// (default 30s).
	DrainTimeout time.Duration
	// RetryBase is the first retry delay after a temporary failure; it
	// doubles per attempt up to RetryMax, with ±25 % jitter (defaults 30s
	// and 1h).
	RetryBase, RetryMax time.Duration
	// BreakerThreshold relay failures in a row open the breaker (default 3).
	BreakerThreshold int
	// ProbeInterval is how often an open breaker probes the relay
	// (default 10s).
	ProbeInterval time.Duration
	// ClaimLease must outlast the longest SMTP transaction (default 3m).
	ClaimLease time.Duration
	// MaxPaceWait is the longest a handler sleeps for its send slot before
	// it gives the worker back and is rescheduled (default 10s).
	MaxPaceWait time.Duration
	// SuppressionTTL is how long a 5.1.x reply suppresses an address
	// (default 720h).
	SuppressionTTL time.Duration
	// ForwardInterval is how often asynq moves due tasks to pending
	// (default 1s); PauseCheck how often ended cool-down pauses are lifted
	// (default 30s).
	ForwardInterval time.Duration
	PauseCheck      time.Duration
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.BreakerThreshold <= 0 {
		o.BreakerThreshold = 3
	}
	def(&o.MaxAge, 120*time.Hour)
	def(&o.DrainTimeout, 30*time.Second)
	def(&o.RetryBase, 30*time.Second)
	def(&o.RetryMax, time.Hour)
	def(&o.ProbeInterval, 10*time.Second)
	def(&o.ClaimLease, 3*time.Minute)
	def(&o.MaxPaceWait, 10*time.Second)
	def(&o.SuppressionTTL, 720*time.Hour)
	def(&o.ForwardInterval, time.Second)
	def(&o.PauseCheck, 30*time.Second)
}

// Sender is how messages identify themselves.
type Sender struct {
	From string
	VERP smtp.VERP
	DKIM *smtp.DKIMSigner // nil: no DKIM signature
}

// Deps are the engine's collaborators; cmd builds them from configuration.
type Deps struct {
	Redis     redis.UniversalClient
	Campaigns *campaign.Store
	Ledger    *ledger.Ledger
	Limiter   *pacing.Limiter
	Limits    *Limits
	Relay     Relay
	Sender    Sender
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	Options   Options
}

// Engine runs fan-out, deliveries, the stream ingester, the relay breaker and
// the lifting of cool-down pauses for one instance.
type Engine struct {
	*Admin
	d        Deps
	opts     Options
	producer *Producer
	breaker  *Breaker
	log      *slog.Logger
	// owner names this process in delivery claims.
	owner string
}

// NewEngine checks the dependencies and builds an engine.
func NewEngine(d Deps) (*Engine, error) {
	if d.Redis == nil || d.Campaigns == nil || d.Ledger == nil || d.Limiter == nil || d.Limits == nil || d.Relay == nil || d.Metrics == nil {
		return nil, errors.New("queue: engine needs redis, campaigns, ledger, limiter, limits, relay and metrics")
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	d.Options.defaults()
	host, _ := os.Hostname()
	e := &Engine{d: d, opts: d.Options, log: d.Log, owner: fmt.Sprintf("%s-%d", host, os.Getpid())}
	e.Admin = NewAdmin(d.Redis, d.Ledger, d.Limiter, d.Limits, d.Campaigns)
	e.producer = NewProducer(d.Redis)
	e.producer.OnResult = e.countSubmission
	e.breaker = newBreaker(d.Redis, e.Admin.inspector, d.Relay, d.Options, d.Metrics, d.Log)
	return e, nil
}

// Producer returns the engine's producer (used by the stream ingester).
func (e *Engine) Producer() *Producer { return e.producer }

// Breaker returns the relay circuit breaker.
func (e *Engine) Breaker() *Breaker { return e.breaker }

// Ready reports whether the relay was reachable recently, for /readyz.
func (e *Engine) Ready(ctx context.Context) error { return e.breaker.Healthy(ctx) }

func (e *Engine) countSubmission(source, camp string, o Outcome, reason string) {
	switch o {
	case Rejected:
		e.d.Metrics.Signatures.WithLabelValues(camp, "rejected").Inc()
		e.d.Metrics.Rejected.WithLabelValues(source, reason).Inc()
	case Duplicate:
		e.d.Metrics.Signatures.WithLabelValues(camp, "duplicate").Inc()
	}
	// Accepted signatures are counted by fan-out, which knows whether the
	// signer turned out to be a duplicate.
}

// Run serves until ctx ends, then drains: no new tasks are taken, running
// handlers get DrainTimeout to finish their SMTP transactions, and whatever
// is still running after that is requeued by asynq (the ledger's claim keeps
// it from being sent twice).
func (e *Engine) Run(ctx context.Context) error {
	srv := asynq.NewServerFromRedisClient(e.d.Redis, asynq.Config{
		Concurrency:              e.opts.Concurrency,
		Queues:                   map[string]int{QueueFanout: 1, QueueDeliveries: 3},
		RetryDelayFunc:           e.retryDelay,
		IsFailure:                isFailure,
		ShutdownTimeout:          e.opts.DrainTimeout,
		DelayedTaskCheckInterval: e.opts.ForwardInterval,
		Logger:                   asynqLogger{e.log.With("component", "asynq")},
		LogLevel:                 asynq.WarnLevel,
		// Handlers must not be cut off mid-DATA by the shutdown; the drain
		// timeout bounds them instead.
		BaseContext: context.Background,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(TypeFanout, e.handleFanout)
	mux.HandleFunc(TypeDeliver, e.handleDeliver)
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("queue: start task server: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() {
		_ = NewIngester(e.d.Redis, e.producer, e.log.With("component", "ingest")).Run(bg)
		done <- struct{}{}
	}()
	go func() { e.breaker.Run(bg); done <- struct{}{} }()
	go func() { e.liftPauses(bg); done <- struct{}{} }()
	e.log.Info("delivery engine started", "concurrency", e.opts.Concurrency)

	<-ctx.Done()
	e.log.Info("draining: no new tasks; waiting for running deliveries", "timeout", e.opts.DrainTimeout)
	srv.Stop()
	stop()
	srv.Shutdown()
	for i := 0; i < 3; i++ {
		<-done
	}
	e.log.Info("drained")
	return nil
}

// liftPauses resumes targets whose cool-down has ended. Every instance runs
// it; Resume is atomic, so only one of them gets the held deliveries.
func (e *Engine) liftPauses(ctx context.Context) {
	t := time.NewTicker(e.opts.PauseCheck)
	defer t.Stop()
	for {
		addrs, err := e.d.Ledger.DuePauses(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			e.log.Warn("cool-down check failed", "error", err)
		}
		for _, a := range addrs {
			n, err := e.ResumeTarget(ctx, a)
			if err != nil {
				e.log.Warn("lifting cool-down pause failed", "target", a, "error", err)
				continue
			}
			e.log.Info("cool-down pause lifted", "target", a, "released", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// asynqLogger sends asynq's own logs through slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
