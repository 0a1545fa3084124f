package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/config"
	"github.com/petitiond/petitiond/queue"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/queue/pacing"
)

func loadConfig(e *env, path string) (config.Config, error) {
	cfg, err := config.Load(path, e.environ)
	if err != nil {
		return config.Config{}, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

// loadClientConfig is for commands that only talk to Redis: they need the
// Redis settings, not a complete sending configuration.
func loadClientConfig(e *env, path string) (config.Config, error) {
	cfg, err := config.LoadPartial(path, e.environ)
	if err != nil {
		return config.Config{}, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

// connect loads the client configuration and opens the Redis-backed stores
// for a command that only talks to Redis. The caller closes the stores.
func connect(ctx context.Context, e *env, path string) (*stores, config.Config, error) {
	cfg, err := loadClientConfig(e, path)
	if err != nil {
		return nil, cfg, err
	}
	st, err := openStores(ctx, cfg)
	return st, cfg, err
}

func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	level.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func newRedis(ctx context.Context, c config.Redis) (redis.UniversalClient, error) {
	var rdb redis.UniversalClient
	if c.SentinelMaster != "" {
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs, Password: c.Password,
		})
	} else {
		opt, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		if c.Password != "" {
			opt.Password = c.Password
		}
		rdb = redis.NewClient(opt)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", redactURL(c.URL), err)
	}
	return rdb, nil
}

// redactURL hides a password in a Redis URL before it reaches a message.
func redactURL(u string) string {
	opt, err := redis.ParseURL(u)
	if err != nil || opt.Password == "" {
		return u
	}
	return opt.Network + "://" + opt.Addr
}

func tlsConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates found", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

func limitConfig(c config.Limits) queue.LimitConfig {
	return queue.LimitConfig{PerAddress: c.PerAddress, PerDomain: c.PerDomain, Global: c.Global,
		PerCampaign: c.PerCampaign, Domains: c.Domains}
}

// stores are the Redis-backed parts every command may need.
type stores struct {
	rdb       redis.UniversalClient
	campaigns *campaign.Store
	ledger    *ledger.Ledger
	limiter   *pacing.Limiter
	limits    *queue.Limits
	admin     *queue.Admin
}

func openStores(ctx context.Context, cfg config.Config) (*stores, error) {
	rdb, err := newRedis(ctx, cfg.Redis)
	if err != nil {
		return nil, err
	}
	limits, err := queue.NewLimits(limitConfig(cfg.Limits))
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	s := &stores{rdb: rdb, campaigns: campaign.NewStore(rdb), ledger: ledger.New(rdb, cfg.Delivery.LedgerTTL),
		limiter: pacing.New(rdb), limits: limits}
	s.admin = queue.NewAdmin(rdb, s.ledger, s.limiter, s.limits, s.campaigns)
	return s, nil
}

func (s *stores) Close() error { return s.rdb.Close() }
