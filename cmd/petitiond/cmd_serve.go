package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/petitiond/petitiond/bounce"
	"github.com/petitiond/petitiond/internal/config"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/sdnotify"
	"github.com/petitiond/petitiond/metrics"
	"github.com/petitiond/petitiond/queue"
	"github.com/petitiond/petitiond/smtp"
)

func runServe(ctx context.Context, e *env, args []string) error {
	fs, cfgPath := newFlags(e, "serve")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wantArgs(fs, 0, "no arguments"); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := newLogger(e.stderr, cfg.Log, level)

	st, err := openStores(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	ver, rev := buildInfo()
	m := metrics.New(metrics.BuildInfo{Version: ver, Revision: rev})
	m.Logger = log.With("component", "metrics")

	relayTLS, err := tlsConfig(cfg.SMTP.CAFile)
	if err != nil {
		return fmt.Errorf("smtp.ca_file: %w", err)
	}
	pool, err := smtp.NewPool(smtp.Config{
		Addr: cfg.SMTP.Relay, TLS: smtp.TLSMode(cfg.SMTP.TLS), TLSConfig: relayTLS,
		Username: cfg.SMTP.Username, Password: cfg.SMTP.Password, HELO: cfg.SMTP.HELO,
		PoolSize: cfg.SMTP.PoolSize, MaxMessagesPerConn: cfg.SMTP.MaxMessagesPerConn,
		IdleTimeout: cfg.SMTP.IdleTimeout, DialTimeout: 30 * time.Second, CommandTimeout: cfg.SMTP.Timeout,
		Logger: log.With("component", "relay"),
	})
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	defer pool.Close()

	sender, err := buildSender(cfg)
	if err != nil {
		return err
	}
	engine, err := queue.NewEngine(queue.Deps{
		Redis: st.rdb, Campaigns: st.campaigns, Ledger: st.ledger, Limiter: st.limiter, Limits: st.limits,
		Relay: pool, Sender: sender, Metrics: m, Log: log,
		Options: queue.Options{
			Concurrency: cfg.Delivery.Concurrency, MaxAge: cfg.Delivery.MaxAge, DrainTimeout: cfg.Delivery.DrainTimeout,
			BreakerThreshold: cfg.Delivery.BreakerThreshold, ProbeInterval: cfg.Delivery.BreakerProbeInterval,
			ClaimLease: 2*cfg.SMTP.Timeout + 30*time.Second, SuppressionTTL: cfg.Bounces.SuppressionTTL,
			RetryBase: cfg.Delivery.RetryBase, RetryMax: cfg.Delivery.RetryMax,
		},
	})
	if err != nil {
		return err
	}
	registerCollectors(m, st)

	checks := []metrics.Check{
		{Name: "redis", Func: func(ctx context.Context) error { return st.rdb.Ping(ctx).Err() }},
		{Name: "relay", Func: engine.Ready},
	}
	var watcher *bounce.Watcher
	if cfg.IMAP.Enabled {
		watcher, err = buildWatcher(cfg, st, sender.VERP, m, log)
		if err != nil {
			return err
		}
		checks = append(checks, metrics.Check{Name: "imap", Func: func(ctx context.Context) error {
			if watcher.Up() {
				return nil
			}
			// One instance watches the mailbox at a time; the others are
			// ready as long as somebody holds the watcher lease.
			n, err := st.rdb.Exists(ctx, rkeys.IMAPLease(cfg.IMAP.Mailbox)).Result()
			if err != nil {
				return err
			}
			if n == 0 {
				return errors.New("no instance is watching the bounce mailbox")
			}
			return nil
		}})
	} else {
		m.IMAPEnabled.Set(0)
	}

	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	errc := make(chan error, 4)
	running := 0
	start := func(name string, f func(context.Context) error) {
		running++
		go func() {
			err := f(runCtx)
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
			errc <- err
		}()
	}
	if cfg.HTTP.Listen != "" {
		// Listen before telling systemd we are ready, so a scrape or a
		// readiness probe right after READY=1 finds the port open.
		ln, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		h := metrics.NewHandler(m, checks)
		start("http", func(ctx context.Context) error {
			return metrics.ServeListener(ctx, ln, h, log.With("component", "http"))
		})
	}
	start("engine", engine.Run)
	if watcher != nil {
		start("imap", watcher.Run)
	}
	start("watchdog", sdnotify.Watchdog)
	_ = sdnotify.Ready()
	log.Info("petitiond serving", "version", ver, "relay", cfg.SMTP.Relay, "http", cfg.HTTP.Listen, "imap", cfg.IMAP.Enabled)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			reload(e, *cfgPath, cfg, st, level, log)
		case err := <-errc:
			running--
			if err != nil {
				runErr = err
				log.Error("component stopped; shutting down", "error", err)
				break loop
			}
		}
	}
	_ = sdnotify.Stopping()
	log.Info("shutting down: draining", "drain_timeout", cfg.Delivery.DrainTimeout)
	stop()
	for ; running > 0; running-- {
		if err := <-errc; err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
			runErr = err
		}
	}
	log.Info("stopped")
	return runErr
}

// reload applies what can change without a restart: the send limits and the
// log level. Campaigns need no reload: every instance sees an applied or
// closed campaign at once (the store checks its version on each use). A
// configuration that does not load is refused and the running one stays.
func reload(e *env, path string, old config.Config, st *stores, level *slog.LevelVar, log *slog.Logger) {
	_ = sdnotify.Reloading()
	defer sdnotify.Ready()
	cfg, err := config.Load(path, e.environ)
	if err != nil {
		log.Error("reload refused: configuration invalid; keeping the running one", "error", err)
		return
	}
	if err := st.limits.Reload(limitConfig(cfg.Limits)); err != nil {
		log.Error("reload refused: limits invalid; keeping the running ones", "error", err)
		return
	}
	level.Set(parseLevel(cfg.Log.Level))
	if cfg.SMTP != old.SMTP || cfg.Redis.URL != old.Redis.URL || cfg.IMAP != old.IMAP {
		log.Warn("reload: relay, Redis and IMAP settings change only on restart")
	}
	log.Info("configuration reloaded", "per_address", cfg.Limits.PerAddress, "per_domain", cfg.Limits.PerDomain,
		"global", cfg.Limits.Global, "log_level", cfg.Log.Level)
}

func buildSender(cfg config.Config) (queue.Sender, error) {
	s := queue.Sender{From: cfg.Sender.From, VERP: smtp.VERP{Secret: []byte(cfg.Sender.VERPSecret), Domain: cfg.Sender.BounceDomain}}
	if d := cfg.Sender.DKIM; d.Domain != "" {
		key, err := os.ReadFile(d.KeyFile)
		if err != nil {
			return s, fmt.Errorf("sender.dkim.key_file: %w", err)
		}
		if s.DKIM, err = smtp.NewDKIMSigner(d.Domain, d.Selector, key); err != nil {
			return s, fmt.Errorf("sender.dkim: %w", err)
		}
	}
	return s, nil
}

func buildWatcher(cfg config.Config, st *stores, verp smtp.VERP, m *metrics.Metrics, log *slog.Logger) (*bounce.Watcher, error) {
	t, err := tlsConfig(cfg.IMAP.CAFile)
	if err != nil {
		return nil, fmt.Errorf("imap.ca_file: %w", err)
	}
	proc := &bounce.Processor{
		VERP: verp, Ledger: st.ledger, Metrics: m, Log: log.With("component", "bounce"),
		Policy: bounce.Policy{SuppressionTTL: cfg.Bounces.SuppressionTTL, SoftThreshold: cfg.Bounces.SoftThreshold,
			SoftWindow: cfg.Bounces.SoftWindow, SoftCooldown: cfg.Bounces.SoftCooldown},
	}
	return bounce.NewWatcher(bounce.WatcherConfig{
		Addr: cfg.IMAP.Addr, TLS: cfg.IMAP.TLS, TLSConfig: t, Username: cfg.IMAP.Username, Password: cfg.IMAP.Password,
		Mailbox: cfg.IMAP.Mailbox, Processed: cfg.IMAP.Processed, Unrecognized: cfg.IMAP.Unrecognized,
		PollInterval: cfg.IMAP.PollInterval,
	}, st.rdb, proc, log.With("component", "imap"), bounce.WatcherHooks{
		Up: func(up bool) {
			if up {
				m.IMAPUp.Set(1)
			} else {
				m.IMAPUp.Set(0)
			}
		},
		Success: func(t time.Time) { m.IMAPLastSuccess.Set(float64(t.Unix())) },
		Message: func(result string) { m.IMAPMessages.WithLabelValues(result).Inc() },
	}), nil
}

// registerCollectors exposes target and queue state, computed when
// Prometheus scrapes.
func registerCollectors(m *metrics.Metrics, st *stores) {
	m.RegisterTargets(func(ctx context.Context) ([]metrics.TargetStatus, error) {
		ts, err := st.admin.Targets(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]metrics.TargetStatus, len(ts))
		for i, t := range ts {
			out[i] = metrics.TargetStatus{Target: t.Address, State: t.State(), BacklogSeconds: t.Backlog.Seconds()}
		}
		return out, nil
	})
	m.RegisterQueues(func(ctx context.Context) ([]metrics.QueueStat, error) {
		qs, err := st.admin.QueueStats(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]metrics.QueueStat, len(qs))
		for i, q := range qs {
			out[i] = metrics.QueueStat{Queue: q.Queue, State: q.State, Tasks: float64(q.Tasks)}
		}
		return out, nil
	})
}
