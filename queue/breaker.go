package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/metrics"
)

// Breaker is the relay circuit breaker, shared by every instance through
// Redis. When the relay is unusable (refused connections, TLS or AUTH
// failures) several times in a row, it opens: the delivery queue is paused
// in asynq, so no instance burns retries on a dead relay. While open, one
// instance at a time probes the relay; the first good probe closes it and
// unpauses the queue.
type Breaker struct {
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	relay     Relay
	opts      Options
	m         *metrics.Metrics
	log       *slog.Logger

	mu          sync.Mutex
	consecutive int
	lastOK      time.Time
	lastErr     error
}

func newBreaker(rdb redis.UniversalClient, in *asynq.Inspector, relay Relay, opts Options, m *metrics.Metrics, log *slog.Logger) *Breaker {
	return &Breaker{rdb: rdb, inspector: in, relay: relay, opts: opts, m: m, log: log.With("component", "breaker")}
}

// BreakerState is the shared breaker's state as stored in Redis.
type BreakerState struct {
	Open        bool
	Since       time.Time
	Reason      string
	OpenedTotal int64
}

func (b *Breaker) success() {
	b.mu.Lock()
	b.consecutive = 0
	b.lastOK = time.Now()
	b.lastErr = nil
	b.mu.Unlock()
	b.m.RelayUp.Set(1)
}

func (b *Breaker) failure(ctx context.Context, err error) {
	b.mu.Lock()
	b.consecutive++
	n := b.consecutive
	b.lastErr = err
	b.mu.Unlock()
	b.m.RelayUp.Set(0)
	if n >= b.opts.BreakerThreshold {
		if oerr := b.open(ctx, err.Error()); oerr != nil {
			b.log.Error("cannot open the relay breaker", "error", oerr)
		}
	}
}

// openScript makes opening idempotent across instances: only the first
// opener records the time and reason and counts the opening.
var openScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') == 'open' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'open', 'since', ARGV[1], 'reason', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'opened_total', 1)
return 1
`)

func (b *Breaker) open(ctx context.Context, reason string) error {
	n, err := openScript.Run(ctx, b.rdb, []string{rkeys.Breaker}, time.Now().UnixMilli(), reason).Int()
	if err != nil {
		return fmt.Errorf("breaker: %w", err)
	}
	b.m.RelayBreakerOpen.Set(1)
	if n == 1 {
		b.log.Warn("relay circuit breaker opened: delivery queue paused", "reason", reason)
	}
	return b.pauseQueue()
}

func (b *Breaker) pauseQueue() error {
	if err := b.inspector.PauseQueue(QueueDeliveries); err != nil && !isAlreadyPaused(err) {
		return fmt.Errorf("breaker: pause queue: %w", err)
	}
	return nil
}

func (b *Breaker) close(ctx context.Context) error {
	if err := b.rdb.HSet(ctx, rkeys.Breaker, "state", "closed", "since", time.Now().UnixMilli(), "reason", "").Err(); err != nil {
		return fmt.Errorf("breaker: %w", err)
	}
	if err := b.inspector.UnpauseQueue(QueueDeliveries); err != nil && !isNotPaused(err) {
		return fmt.Errorf("breaker: unpause queue: %w", err)
	}
	b.m.RelayBreakerOpen.Set(0)
	b.log.Info("relay circuit breaker closed: delivery queue resumed")
	return nil
}

// State reads the shared breaker state.
func (b *Breaker) State(ctx context.Context) (BreakerState, error) { return readBreaker(ctx, b.rdb) }

func readBreaker(ctx context.Context, rdb redis.UniversalClient) (BreakerState, error) {
	h, err := rdb.HGetAll(ctx, rkeys.Breaker).Result()
	if err != nil {
		return BreakerState{}, fmt.Errorf("breaker: %w", err)
	}
	var st BreakerState
	st.Open = h["state"] == "open"
	st.Reason = h["reason"]
	var ms, total int64
	fmt.Sscan(h["since"], &ms)
	fmt.Sscan(h["opened_total"], &total)
	if ms > 0 {
		st.Since = time.UnixMilli(ms)
	}
	st.OpenedTotal = total
	return st, nil
}

// Healthy reports an error while the breaker is open, or when the last
// contact with the relay from this instance failed.
func (b *Breaker) Healthy(ctx context.Context) error {
	st, err := b.State(ctx)
	if err != nil {
		return err
	}
	if st.Open {
		return fmt.Errorf("relay circuit breaker open since %s: %s", st.Since.Format(time.RFC3339), st.Reason)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastErr != nil {
		return fmt.Errorf("last relay contact failed: %w", b.lastErr)
	}
	return nil
}

// Run probes the relay while the breaker is open. Every instance runs it;
// a lock in Redis lets one probe at a time.
func (b *Breaker) Run(ctx context.Context) {
	t := time.NewTicker(b.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := b.tick(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("breaker check failed", "error", err)
		}
	}
}

func (b *Breaker) tick(ctx context.Context) error {
	st, err := b.State(ctx)
	if err != nil {
		return err
	}
	if !st.Open {
		b.m.RelayBreakerOpen.Set(0)
		return nil
	}
	b.m.RelayBreakerOpen.Set(1)
	got, err := b.rdb.SetNX(ctx, rkeys.BreakerProbeLock, "1", b.opts.ProbeInterval).Result()
	if err != nil || !got {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, b.opts.ProbeInterval)
	perr := b.relay.Probe(pctx)
	cancel()
	if perr != nil {
		b.m.RelayUp.Set(0)
		b.log.Info("relay probe failed; breaker stays open", "error", perr)
		return nil
	}
	b.success()
	return b.close(ctx)
}

func isAlreadyPaused(err error) bool {
	return err != nil && containsAny(err.Error(), "already paused")
}

func isNotPaused(err error) bool {
	return err != nil && containsAny(err.Error(), "not paused", "not found", "NOT_FOUND", "does not exist")
}
