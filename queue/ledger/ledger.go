// Package ledger owns the durable record of petitiond's deliveries in Redis:
// one small hash per delivery with its state, timestamps, last SMTP reply and
// attempt count; the signature records that say which deliveries a signature
// made; the suppression list; and the pause state of targets with the
// deliveries held while a target is paused.
//
// It knows nothing of asynq: the queue package schedules work, the bounce
// package records bounces, and both read and write delivery state here. Every
// state change is one Lua script or one MULTI, so concurrent instances never
// see a half-written record.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
)

// State is where a delivery stands.
type State string

// The delivery states of DESIGN.md. Sending is the claim taken just before
// the SMTP transaction; it turns into sent right after the relay's 250.
const (
	Scheduled State = "scheduled"
	Sending   State = "sending"
	Sent      State = "sent"
	Bounced   State = "bounced"
	Failed    State = "failed"
	Dropped   State = "dropped"
	Duplicate State = "duplicate"
)

// Final reports whether no more mail will ever be sent for a delivery in
// this state.
func (s State) Final() bool {
	switch s {
	case Sent, Bounced, Failed, Dropped, Duplicate:
		return true
	}
	return false
}

// Record is one delivery. Times are zero when not reached.
type Record struct {
	ID         string
	Campaign   string
	Target     string
	Signature  string
	State      State
	Attempts   int
	LastReply  string
	Reason     string
	BounceKind string
	Evidence   string
	// Owner is the process (host-pid) that last claimed the delivery.
	Owner string
	// SubmittedAt is when the signature was accepted; used for latency.
	SubmittedAt time.Time
	CreatedAt   time.Time
	SlotAt      time.Time
	ClaimedAt   time.Time
	LeaseUntil  time.Time
	SentAt      time.Time
	UpdatedAt   time.Time
}

// ErrNotFound means the ledger has no record for the id.
var ErrNotFound = errors.New("ledger: no such record")

// Ledger reads and writes delivery records.
type Ledger struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// New returns a Ledger whose records expire ttl after their last change.
// The ttl must outlive every retry (delivery.max_age) and the window in which
// bounces arrive; the default is 90 days.
func New(rdb redis.UniversalClient, ttl time.Duration) *Ledger {
	return &Ledger{rdb: rdb, ttl: ttl}
}

// Client returns the Redis client the ledger uses.
func (l *Ledger) Client() redis.UniversalClient { return l.rdb }

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func fromMS(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

var createScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if st then return st end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return ''
`)

// Create writes a new scheduled record unless one exists. It returns the
// state of the existing record, or "" when it created one.
func (l *Ledger) Create(ctx context.Context, r Record) (State, error) {
	now := time.Now()
	args := []any{l.ttl.Milliseconds(),
		"state", string(Scheduled), "campaign", r.Campaign, "target", r.Target,
		"signature", r.Signature, "attempts", 0,
		"submitted_at", ms(r.SubmittedAt), "created_at", ms(now), "updated_at", ms(now),
	}
	if !r.SlotAt.IsZero() {
		args = append(args, "slot_at", ms(r.SlotAt))
	}
	st, err := createScript.Run(ctx, l.rdb, []string{rkeys.Delivery(r.ID)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("ledger: create %s: %w", r.ID, err)
	}
	return State(st), nil
}

// SetSlot records the send slot booked for a delivery.
func (l *Ledger) SetSlot(ctx context.Context, id string, at time.Time) error {
	if err := l.rdb.HSet(ctx, rkeys.Delivery(id), "slot_at", ms(at)).Err(); err != nil {
		return fmt.Errorf("ledger: set slot %s: %w", id, err)
	}
	return nil
}

// Get returns one record.
func (l *Ledger) Get(ctx context.Context, id string) (*Record, error) {
	recs, err := l.GetMany(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	if recs[0] == nil {
		return nil, fmt.Errorf("%w: delivery %s", ErrNotFound, id)
	}
	return recs[0], nil
}

// GetMany returns the records for ids in order, nil where one is missing, in
// one round trip.
func (l *Ledger) GetMany(ctx context.Context, ids []string) ([]*Record, error) {
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, rkeys.Delivery(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("ledger: get: %w", err)
	}
	out := make([]*Record, len(ids))
	for i, c := range cmds {
		h := c.Val()
		if len(h) == 0 {
			continue
		}
		att, _ := strconv.Atoi(h["attempts"])
		out[i] = &Record{
			ID: ids[i], Campaign: h["campaign"], Target: h["target"], Signature: h["signature"],
			State: State(h["state"]), Attempts: att, LastReply: h["last_reply"], Reason: h["reason"],
			BounceKind: h["bounce_kind"], Evidence: h["evidence"], Owner: h["owner"],
			SubmittedAt: fromMS(h["submitted_at"]), CreatedAt: fromMS(h["created_at"]),
			SlotAt: fromMS(h["slot_at"]), ClaimedAt: fromMS(h["claimed_at"]),
			LeaseUntil: fromMS(h["lease_until"]), SentAt: fromMS(h["sent_at"]),
			UpdatedAt: fromMS(h["updated_at"]),
		}
	}
	return out, nil
}

// ClaimResult says what Claim found.
type ClaimResult int

const (
	// Claimed: the caller owns the delivery and may send it now.
	Claimed ClaimResult = iota + 1
	// Done: the delivery is already in a final state; do nothing.
	Done
	// InFlight: another worker holds an unexpired claim (for example a
	// handler that asynq requeued on shutdown while it was still in DATA);
	// try again after the lease.
	InFlight
	// Missing: there is no record (expired or never created).
	Missing
)

// Claim uses Redis time so that instances with skewed clocks agree on leases.
var claimScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {3, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if st == 'sent' or st == 'bounced' or st == 'failed' or st == 'dropped' or st == 'duplicate' then
  return {1, 0}
end
if st == 'sending' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now then return {2, lease - now} end
end
redis.call('HSET', KEYS[1], 'state', 'sending', 'claimed_at', now, 'lease_until', now + tonumber(ARGV[1]), 'updated_at', now, 'owner', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {0, 0}
`)

// Claim takes the delivery for one send attempt with a lease. The lease must
// outlast the longest SMTP transaction, so that a worker whose handler is
// still in DATA keeps the claim. When the previous holder crashed its lease
// runs out and the delivery may be claimed again: that is the one window in
// which a message can be sent twice (relay said 250, the process died
// before MarkSent).
//
// owner names the claiming process (host-pid) so that an operator, or a
// test, can see which deliveries a crashed process had in flight.
func (l *Ledger) Claim(ctx context.Context, id string, lease time.Duration, owner string) (ClaimResult, time.Duration, error) {
	res, err := claimScript.Run(ctx, l.rdb, []string{rkeys.Delivery(id)}, lease.Milliseconds(), l.ttl.Milliseconds(), owner).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("ledger: claim %s: %w", id, err)
	}
	wait := time.Duration(res[1]) * time.Millisecond
	switch res[0] {
	case 0:
		return Claimed, 0, nil
	case 1:
		return Done, 0, nil
	case 2:
		return InFlight, wait, nil
	default:
		return Missing, 0, nil
	}
}

// transition moves a record to a new state unless it is already final (a
// late answer must not turn a bounce back into "sent"), or unconditionally
// when force is set (bounces may follow "sent").
var transitionScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
local force = ARGV[1] == '1'
local from = ARGV[2]
if from ~= '' and st ~= from then return 0 end
if not force and (st == 'sent' or st == 'bounced' or st == 'failed' or st == 'dropped' or st == 'duplicate') then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'updated_at', now, unpack(ARGV, 5))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[3], now) end
redis.call('HDEL', KEYS[1], 'lease_until')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

func (l *Ledger) transition(ctx context.Context, id string, force bool, from State, stampField string, fields ...string) (bool, error) {
	forceArg := "0"
	if force {
		forceArg = "1"
	}
	args := []any{forceArg, string(from), stampField, l.ttl.Milliseconds()}
	for _, f := range fields {
		args = append(args, f)
	}
	n, err := transitionScript.Run(ctx, l.rdb, []string{rkeys.Delivery(id)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("ledger: update %s: %w", id, err)
	}
	if n < 0 {
		return false, fmt.Errorf("%w: delivery %s", ErrNotFound, id)
	}
	return n == 1, nil
}

// MarkSent records the relay's acceptance. Only a claimed delivery turns sent.
func (l *Ledger) MarkSent(ctx context.Context, id, reply string) error {
	_, err := l.transition(ctx, id, false, Sending, "sent_at", "state", string(Sent), "last_reply", reply)
	return err
}

// ReleaseClaim gives up a claim after a temporary failure, recording the reply.
func (l *Ledger) ReleaseClaim(ctx context.Context, id, reply string) error {
	_, err := l.transition(ctx, id, false, Sending, "", "state", string(Scheduled), "last_reply", reply)
	return err
}

// MarkFailed records a permanent failure (a 5xx at send time, or a retry
// budget that ran out: reason "expired").
func (l *Ledger) MarkFailed(ctx context.Context, id, reason, reply string) (bool, error) {
	return l.transition(ctx, id, false, "", "", "state", string(Failed), "reason", reason, "last_reply", reply)
}

// MarkDropped records that a delivery will not be sent (campaign_closed,
// suppressed).
func (l *Ledger) MarkDropped(ctx context.Context, id, reason string) (bool, error) {
	return l.transition(ctx, id, false, "", "", "state", string(Dropped), "reason", reason)
}

// MarkBounced records a bounce against a delivery; bounces arrive after
// "sent", so this overrides a final state.
func (l *Ledger) MarkBounced(ctx context.Context, id, kind, reason, evidence string) (bool, error) {
	return l.transition(ctx, id, true, "", "bounced_at", "state", string(Bounced), "bounce_kind", kind, "reason", reason, "evidence", evidence)
}

// RecordEvent notes a bounce-mailbox event (delayed DSN, auto-reply) on a
// delivery without changing its state.
func (l *Ledger) RecordEvent(ctx context.Context, id, kind, evidence string) error {
	err := l.rdb.HSet(ctx, rkeys.Delivery(id), "last_event", kind, "last_event_evidence", evidence,
		"last_event_at", ms(time.Now())).Err()
	if err != nil {
		return fmt.Errorf("ledger: record event %s: %w", id, err)
	}
	return nil
}
