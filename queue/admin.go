package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/queue/pacing"
)

// Admin is what operators' commands need: resuming targets (which enqueues
// their held deliveries), queue and target status, a signature's deliveries.
// It needs no relay, so the CLI can use it.
type Admin struct {
	rdb       redis.UniversalClient
	ledger    *ledger.Ledger
	limiter   *pacing.Limiter
	limits    *Limits
	campaigns *campaign.Store
	client    *asynq.Client
	inspector *asynq.Inspector
}

// NewAdmin builds an Admin on rdb.
func NewAdmin(rdb redis.UniversalClient, l *ledger.Ledger, lim *pacing.Limiter, limits *Limits, cs *campaign.Store) *Admin {
	return &Admin{rdb: rdb, ledger: l, limiter: lim, limits: limits, campaigns: cs,
		client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb)}
}

func (a *Admin) enqueueDelivery(ctx context.Context, dp deliveryPayload, at time.Time) error {
	payload, err := encode(dp)
	if err != nil {
		return err
	}
	_, err = a.client.EnqueueContext(ctx, asynq.NewTask(TypeDeliver, payload),
		asynq.Queue(QueueDeliveries), asynq.TaskID(deliveryTaskID(dp.DeliveryID)),
		asynq.ProcessAt(at), asynq.MaxRetry(deliveryMaxRetry), asynq.Timeout(15*time.Minute))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) && !errors.Is(err, asynq.ErrDuplicateTask) {
		return fmt.Errorf("enqueue delivery %s: %w", dp.DeliveryID, err)
	}
	return nil
}

// precheckResult is everything the delivery handler checks before pacing,
// read in one round trip.
type precheckResult struct {
	state          ledger.State
	suppressed     bool
	paused         bool
	campaignStatus campaign.Status
}

func (a *Admin) precheck(ctx context.Context, id, camp, target string) (precheckResult, error) {
	var st, paused, status *redis.StringCmd
	var sup *redis.IntCmd
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		st = p.HGet(ctx, rkeys.Delivery(id), "state")
		sup = p.Exists(ctx, rkeys.Suppression(target))
		paused = p.HGet(ctx, rkeys.Target(target), "paused")
		status = p.HGet(ctx, rkeys.Campaign(camp), "status")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return precheckResult{}, fmt.Errorf("delivery %s: precheck: %w", id, err)
	}
	return precheckResult{state: ledger.State(st.Val()), suppressed: sup.Val() == 1,
		paused: paused.Val() == "1", campaignStatus: campaign.Status(status.Val())}, nil
}

// PauseTarget pauses a target by hand; its deliveries are held.
func (a *Admin) PauseTarget(ctx context.Context, addr, reason string) error {
	return a.ledger.Pause(ctx, addr, reason, time.Time{})
}

// ResumeTarget lifts a pause and enqueues every held delivery again, each
// with a fresh send slot, and returns how many it released.
func (a *Admin) ResumeTarget(ctx context.Context, addr string) (int, error) {
	held, err := a.ledger.Resume(ctx, addr)
	if err != nil {
		return 0, err
	}
	for i, raw := range held {
		if err := a.requeueHeld(ctx, raw); err != nil {
			// Put back what was not enqueued, paused again, so nothing is
			// lost; the operator can run resume once more.
			if perr := a.ledger.Pause(ctx, addr, "resume interrupted: "+err.Error(), time.Time{}); perr == nil {
				for _, r := range held[i:] {
					_, _ = a.ledger.HoldIfPaused(ctx, addr, r)
				}
			}
			return i, fmt.Errorf("resume %s: %w", addr, err)
		}
	}
	return len(held), nil
}

func (a *Admin) requeueHeld(ctx context.Context, raw string) error {
	dp, err := decode[deliveryPayload]([]byte(raw))
	if err != nil {
		return err
	}
	camp, err := a.campaigns.Get(ctx, dp.Campaign)
	if err != nil && !errors.Is(err, campaign.ErrNotFound) {
		return err
	}
	at := time.Now()
	if camp != nil {
		limits, err := a.limits.For(camp, dp.Target.Address)
		if err != nil {
			return err
		}
		if at, err = a.limiter.Reserve(ctx, limits, time.Time{}); err != nil {
			return err
		}
	}
	return a.enqueueDelivery(ctx, dp, at)
}

// QueueCount is the number of tasks in one state of one queue.
type QueueCount struct {
	Queue, State string
	Tasks        int
	Paused       bool
}

// QueueStats reads asynq's queue sizes.
func (a *Admin) QueueStats(ctx context.Context) ([]QueueCount, error) {
	var out []QueueCount
	for _, q := range Queues {
		info, err := a.inspector.GetQueueInfo(q)
		if err != nil {
			if errors.Is(err, asynq.ErrQueueNotFound) || containsAny(err.Error(), "not found", "NOT_FOUND", "does not exist") {
				continue
			}
			return nil, fmt.Errorf("queue %s: %w", q, err)
		}
		for _, s := range []struct {
			name string
			n    int
		}{{"pending", info.Pending}, {"active", info.Active}, {"scheduled", info.Scheduled},
			{"retry", info.Retry}, {"archived", info.Archived}, {"completed", info.Completed}} {
			out = append(out, QueueCount{Queue: q, State: s.name, Tasks: s.n, Paused: info.Paused})
		}
	}
	return out, ctx.Err()
}

// TargetInfo is a target's state and how far ahead its next free send slot
// is (its backlog).
type TargetInfo struct {
	ledger.TargetState
	Backlog time.Duration
}

// Targets lists every known target with state and backlog.
func (a *Admin) Targets(ctx context.Context) ([]TargetInfo, error) {
	states, err := a.ledger.Targets(ctx)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(states))
	for i, s := range states {
		keys[i] = rkeys.PaceAddress(s.Address)
	}
	backlog, err := a.limiter.Backlog(ctx, keys...)
	if err != nil {
		return nil, err
	}
	out := make([]TargetInfo, len(states))
	for i, s := range states {
		out[i] = TargetInfo{TargetState: s, Backlog: backlog[keys[i]]}
	}
	return out, nil
}

// SignatureStatus is one signature's record and its deliveries.
type SignatureStatus struct {
	Signature  *ledger.SignatureRecord
	Deliveries []*ledger.Record
	Sent       int
}

// Signature reports what became of one signature ("delivered to 5 of 6").
func (a *Admin) Signature(ctx context.Context, id string) (*SignatureStatus, error) {
	rec, err := a.ledger.Signature(ctx, id)
	if err != nil {
		return nil, err
	}
	ds, err := a.ledger.GetMany(ctx, rec.Deliveries)
	if err != nil {
		return nil, err
	}
	st := &SignatureStatus{Signature: rec}
	for i, d := range ds {
		if d == nil {
			d = &ledger.Record{ID: rec.Deliveries[i], State: "unknown"}
		}
		if d.State == ledger.Sent || d.State == ledger.Bounced && d.BounceKind != "hard" {
			st.Sent++
		}
		st.Deliveries = append(st.Deliveries, d)
	}
	return st, nil
}

// Breaker reads the shared relay breaker state.
func (a *Admin) Breaker(ctx context.Context) (BreakerState, error) { return readBreaker(ctx, a.rdb) }

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
