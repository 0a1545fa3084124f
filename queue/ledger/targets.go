package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
)

// Suppression is an address petitiond will not write to until it expires or
// an operator releases it.
type Suppression struct {
	Address   string
	Reason    string
	Evidence  string
	At        time.Time
	ExpiresAt time.Time
}

// Suppress adds or refreshes a suppression. Deliveries to the address become
// dropped (suppressed) when their slot comes.
func (l *Ledger) Suppress(ctx context.Context, s Suppression) error {
	if s.At.IsZero() {
		s.At = time.Now()
	}
	if !s.ExpiresAt.After(s.At) {
		return fmt.Errorf("ledger: suppress %s: expiry %s is not after %s", s.Address, s.ExpiresAt, s.At)
	}
	addr := rkeys.Norm(s.Address)
	key := rkeys.Suppression(addr)
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "reason", s.Reason, "evidence", s.Evidence, "at", ms(s.At), "expires_at", ms(s.ExpiresAt))
		p.PExpireAt(ctx, key, s.ExpiresAt)
		p.ZAdd(ctx, rkeys.SuppressionIndex, redis.Z{Score: float64(s.ExpiresAt.Unix()), Member: addr})
		p.SAdd(ctx, rkeys.TargetIndex, addr)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: suppress %s: %w", addr, err)
	}
	return nil
}

// Unsuppress releases a suppression; false when there was none.
func (l *Ledger) Unsuppress(ctx context.Context, addr string) (bool, error) {
	addr = rkeys.Norm(addr)
	var del *redis.IntCmd
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, rkeys.Suppression(addr))
		p.ZRem(ctx, rkeys.SuppressionIndex, addr)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("ledger: release %s: %w", addr, err)
	}
	return del.Val() == 1, nil
}

// Suppressions lists live suppressions, soonest expiry first, and drops index
// entries whose suppression has expired.
func (l *Ledger) Suppressions(ctx context.Context) ([]Suppression, error) {
	now := time.Now()
	if err := l.rdb.ZRemRangeByScore(ctx, rkeys.SuppressionIndex, "-inf", strconv.FormatInt(now.Unix(), 10)).Err(); err != nil {
		return nil, fmt.Errorf("ledger: suppressions: %w", err)
	}
	addrs, err := l.rdb.ZRange(ctx, rkeys.SuppressionIndex, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: suppressions: %w", err)
	}
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(addrs))
	for i, a := range addrs {
		cmds[i] = pipe.HGetAll(ctx, rkeys.Suppression(a))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("ledger: suppressions: %w", err)
	}
	var out []Suppression
	for i, c := range cmds {
		h := c.Val()
		if len(h) == 0 {
			continue
		}
		out = append(out, Suppression{Address: addrs[i], Reason: h["reason"], Evidence: h["evidence"],
			At: fromMS(h["at"]), ExpiresAt: fromMS(h["expires_at"])})
	}
	return out, nil
}

// TargetState is one target's pause and suppression state.
type TargetState struct {
	Address    string
	Paused     bool
	Reason     string
	Since      time.Time
	Until      time.Time // zero: until an operator resumes it
	Held       int64
	Suppressed bool
}

// State is "suppressed", "paused" or "active", the values of the
// petitiond_target_state metric.
func (t TargetState) State() string {
	switch {
	case t.Suppressed:
		return "suppressed"
	case t.Paused:
		return "paused"
	}
	return "active"
}

// AddTargets records target addresses so that status and metrics list them
// before anything happens to them.
func (l *Ledger) AddTargets(ctx context.Context, addrs ...string) error {
	if len(addrs) == 0 {
		return nil
	}
	members := make([]any, len(addrs))
	for i, a := range addrs {
		members[i] = rkeys.Norm(a)
	}
	if err := l.rdb.SAdd(ctx, rkeys.TargetIndex, members...).Err(); err != nil {
		return fmt.Errorf("ledger: add targets: %w", err)
	}
	return nil
}

// Pause stops sending to a target. Its deliveries are held, not dropped.
// A zero until means "until an operator resumes it"; otherwise the pause is
// a cool-down that the daemon lifts when it ends.
func (l *Ledger) Pause(ctx context.Context, addr, reason string, until time.Time) error {
	addr = rkeys.Norm(addr)
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, rkeys.Target(addr), "paused", "1", "reason", reason, "since", ms(time.Now()), "until", ms(until))
		p.SAdd(ctx, rkeys.TargetIndex, addr)
		if until.IsZero() {
			p.ZRem(ctx, rkeys.PauseUntil, addr)
		} else {
			p.ZAdd(ctx, rkeys.PauseUntil, redis.Z{Score: float64(until.Unix()), Member: addr})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: pause %s: %w", addr, err)
	}
	return nil
}

// The check and the push are one script so that a resume that runs between
// them cannot strand a delivery in the held list.
var holdScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'paused') ~= '1' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
`)

// HoldIfPaused parks a delivery's payload when its target is paused and
// reports whether it did. A held delivery costs one list entry while it
// waits and nothing else.
func (l *Ledger) HoldIfPaused(ctx context.Context, addr, payload string) (bool, error) {
	n, err := holdScript.Run(ctx, l.rdb, []string{rkeys.Target(addr), rkeys.Held(addr)}, payload).Int()
	if err != nil {
		return false, fmt.Errorf("ledger: hold for %s: %w", addr, err)
	}
	return n == 1, nil
}

var resumeScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local held = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return held
`)

// Resume lifts a pause and hands back the held payloads, all in one step, so
// the caller can enqueue them again. The caller must re-enqueue every one.
func (l *Ledger) Resume(ctx context.Context, addr string) ([]string, error) {
	addr = rkeys.Norm(addr)
	held, err := resumeScript.Run(ctx, l.rdb, []string{rkeys.Target(addr), rkeys.Held(addr), rkeys.PauseUntil}, addr).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("ledger: resume %s: %w", addr, err)
	}
	return held, nil
}

// DuePauses lists targets whose cool-down has ended.
func (l *Ledger) DuePauses(ctx context.Context, now time.Time) ([]string, error) {
	addrs, err := l.rdb.ZRangeByScore(ctx, rkeys.PauseUntil, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now.Unix(), 10)}).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: due pauses: %w", err)
	}
	return addrs, nil
}

// Targets lists every known target with its state, sorted by address.
func (l *Ledger) Targets(ctx context.Context) ([]TargetState, error) {
	addrs, err := l.rdb.SMembers(ctx, rkeys.TargetIndex).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: targets: %w", err)
	}
	sort.Strings(addrs)
	return l.TargetStates(ctx, addrs)
}

// TargetStates returns the state of the given targets in one round trip.
func (l *Ledger) TargetStates(ctx context.Context, addrs []string) ([]TargetState, error) {
	pipe := l.rdb.Pipeline()
	type cmds struct {
		t    *redis.MapStringStringCmd
		held *redis.IntCmd
		sup  *redis.IntCmd
	}
	cs := make([]cmds, len(addrs))
	for i, a := range addrs {
		cs[i] = cmds{pipe.HGetAll(ctx, rkeys.Target(a)), pipe.LLen(ctx, rkeys.Held(a)), pipe.Exists(ctx, rkeys.Suppression(a))}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("ledger: target states: %w", err)
	}
	out := make([]TargetState, len(addrs))
	for i, a := range addrs {
		h := cs[i].t.Val()
		out[i] = TargetState{Address: rkeys.Norm(a), Paused: h["paused"] == "1", Reason: h["reason"],
			Since: fromMS(h["since"]), Until: fromMS(h["until"]), Held: cs[i].held.Val(),
			Suppressed: cs[i].sup.Val() == 1}
	}
	return out, nil
}

// SoftBounce counts one soft bounce (identified by id, so a bounce seen twice
// counts once) and returns how many fell within the window.
func (l *Ledger) SoftBounce(ctx context.Context, addr, id string, window time.Duration) (int64, error) {
	key := rkeys.SoftBounces(addr)
	now := time.Now()
	var card *redis.IntCmd
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, key, redis.Z{Score: float64(now.Unix()), Member: id})
		p.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(now.Add(-window).Unix(), 10))
		card = p.ZCard(ctx, key)
		p.Expire(ctx, key, window)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: soft bounce %s: %w", addr, err)
	}
	return card.Val(), nil
}

// ClearSoftBounces forgets a target's soft bounces (after a cool-down pause).
func (l *Ledger) ClearSoftBounces(ctx context.Context, addr string) error {
	if err := l.rdb.Del(ctx, rkeys.SoftBounces(addr)).Err(); err != nil {
		return fmt.Errorf("ledger: clear soft bounces %s: %w", addr, err)
	}
	return nil
}
