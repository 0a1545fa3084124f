// Package pacing owns send pacing: the rate limits per target address, per
// target domain, per campaign and global that every petitiond instance shares
// through Redis. It books send slots ahead of time (Reserve), so a backlog
// waits as scheduled work instead of polling, and gates the actual send
// (Acquire), so that the real sends to one key never exceed its limit by more
// than one message in any window. It knows nothing of asynq; the queue
// package schedules tasks for the slots this package hands out.
//
// All times come from the Redis clock (TIME), never the caller's, so
// instances with skewed clocks still agree on one schedule. Each key is a
// hash with two fields in microseconds: "tat", the next free slot of the
// schedule, and "last", the latest booked actual send. Keys expire shortly
// after their latest booking, so idle targets cost nothing.
package pacing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// keyGraceMillis keeps a key a little past the moment its state stops
// mattering, so rounding and replica lag never drop live state early.
const keyGraceMillis = 10_000

// luaPrelude reads the Redis clock. replicate_commands lets a script that
// called TIME write on Redis before 5.0; on newer servers it is a no-op.
const luaPrelude = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(n) return string.format('%d', n) end
local function keep(k, horizon)
  local ms = math.ceil((horizon - now) / 1000)
  if ms < 0 then ms = 0 end
  redis.call('PEXPIRE', k, ms + tonumber(ARGV[1]))
end
`

// reserveLua: ARGV = grace ms, notBefore µs, interval µs per key.
// Returns the booked slot in µs.
const reserveLua = luaPrelude + `
local slot = now
local nb = tonumber(ARGV[2])
if nb > slot then slot = nb end
local last = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('HMGET', k, 'tat', 'last')
  local tat = tonumber(v[1])
  if tat and tat > slot then slot = tat end
  last[i] = tonumber(v[2]) or 0
end
for i, k in ipairs(KEYS) do
  local iv = tonumber(ARGV[i + 2])
  local tat = slot + iv
  redis.call('HSET', k, 'tat', fmt(tat))
  local horizon = tat
  if last[i] + iv > horizon then horizon = last[i] + iv end
  keep(k, horizon)
end
return slot
`

// acquireLua: ARGV = grace ms, maxWait µs, interval µs per key.
// Returns {at µs, 1 if booked else 0}.
const acquireLua = luaPrelude + `
local at = now
local tats = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('HMGET', k, 'tat', 'last')
  tats[i] = tonumber(v[1]) or 0
  local last = tonumber(v[2])
  if last then
    local nxt = last + tonumber(ARGV[i + 2])
    if nxt > at then at = nxt end
  end
end
if at - now > tonumber(ARGV[2]) then
  return {at, 0}
end
for i, k in ipairs(KEYS) do
  redis.call('HSET', k, 'last', fmt(at))
  local horizon = at + tonumber(ARGV[i + 2])
  if tats[i] > horizon then horizon = tats[i] end
  keep(k, horizon)
end
return {at, 1}
`

// backlogLua returns, per key, how many µs its next free slot lies ahead of
// now (0 when free now).
const backlogLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, k in ipairs(KEYS) do
  local tat = tonumber(redis.call('HGET', k, 'tat')) or 0
  local ahead = tat - now
  if ahead < 0 then ahead = 0 end
  out[i] = ahead
end
return out
`

// Limit is one rate limit on one pacing key (see internal/rkeys: PaceAddress,
// PaceDomain, PaceCampaign, PaceGlobal).
type Limit struct {
	Key  string
	Rate Rate
}

// Limiter books send slots in Redis. It is safe for concurrent use, and any
// number of Limiters in any number of processes may share one Redis.
//
// All keys passed in one call must hash to one Redis Cluster slot; the rkeys
// pacing keys do, through their shared {pace} tag.
type Limiter struct {
	rdb     redis.UniversalClient
	reserve *redis.Script
	acquire *redis.Script
	backlog *redis.Script
}

// New returns a Limiter on rdb.
func New(rdb redis.UniversalClient) *Limiter {
	return &Limiter{
		rdb:     rdb,
		reserve: redis.NewScript(reserveLua),
		acquire: redis.NewScript(acquireLua),
		backlog: redis.NewScript(backlogLua),
	}
}

// Reserve books the earliest send slot at or after max(Redis now, notBefore)
// that honours every limit at once, and records it. Per key the schedule keeps
// a next free time (tat): slot = max(now, notBefore, tat of every key), and
// then each tat becomes slot + its interval. The caller schedules the delivery
// for the returned slot, so a backlog of any size waits without cost.
//
// The schedule only moves forward: a notBefore beyond a key's tat leaves a gap
// that later reservations do not fill. Use notBefore for the near future
// (a campaign start); a retry far ahead should wait on its own timer and pass
// through Acquire when it fires, not reserve a slot on the shared schedule.
//
// A zero notBefore means now. With no limits the slot is max(now, notBefore).
func (l *Limiter) Reserve(ctx context.Context, limits []Limit, notBefore time.Time) (time.Time, error) {
	keys, ivs, err := prepare(limits)
	if err != nil {
		return time.Time{}, fmt.Errorf("pacing: reserve: %w", err)
	}
	var nb int64
	if !notBefore.IsZero() {
		nb = notBefore.UnixMicro()
	}
	args := make([]any, 0, 2+len(ivs))
	args = append(args, keyGraceMillis, nb)
	args = append(args, ivs...)
	slot, err := l.reserve.Run(ctx, l.rdb, keys, args...).Int64()
	if err != nil {
		return time.Time{}, fmt.Errorf("pacing: reserve %v: %w", keys, err)
	}
	return time.UnixMicro(slot), nil
}

// Acquire is the send-time gate. It books the actual send time
// at = max(now, last + interval of every key), tracked apart from the
// schedule that Reserve keeps, and records it only when at is no more than
// maxWait after Redis now. It returns (at, true) when booked: the caller
// sleeps until at and sends. It returns (at, false), recording nothing, when
// the wait would be longer: the caller reschedules for at instead of holding
// a worker. Successive booked sends on one key are at least one interval
// apart, so over any window of length Per a key never sees more than N+1.
//
// at is on the Redis clock; instances are expected to keep their clocks in
// step with it (NTP), since the sleep until at uses the local clock.
func (l *Limiter) Acquire(ctx context.Context, limits []Limit, maxWait time.Duration) (time.Time, bool, error) {
	keys, ivs, err := prepare(limits)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("pacing: acquire: %w", err)
	}
	if maxWait < 0 {
		maxWait = 0
	}
	args := make([]any, 0, 2+len(ivs))
	args = append(args, keyGraceMillis, int64(maxWait/time.Microsecond))
	args = append(args, ivs...)
	res, err := l.acquire.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("pacing: acquire %v: %w", keys, err)
	}
	if len(res) != 2 {
		return time.Time{}, false, fmt.Errorf("pacing: acquire %v: script returned %d values, want 2", keys, len(res))
	}
	return time.UnixMicro(res[0]), res[1] == 1, nil
}

// Backlog returns, per key, how far ahead of Redis now its next free slot
// lies (0 when free now): the backlog figure of a target, ready for a gauge.
// Keys never reserved, or long idle, report 0.
func (l *Limiter) Backlog(ctx context.Context, keys ...string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	res, err := l.backlog.Run(ctx, l.rdb, keys).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("pacing: backlog %v: %w", keys, err)
	}
	if len(res) != len(keys) {
		return nil, fmt.Errorf("pacing: backlog %v: script returned %d values, want %d", keys, len(res), len(keys))
	}
	for i, k := range keys {
		out[k] = time.Duration(res[i]) * time.Microsecond
	}
	return out, nil
}

// Forget drops the pacing state of keys. Call it when a limit is loosened, so
// a far-future slot booked under the old limit does not hold sends back.
func (l *Limiter) Forget(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := l.rdb.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("pacing: forget %v: %w", keys, err)
	}
	return nil
}

// prepare validates limits and merges repeats of one key, keeping the slowest
// rate, since the script writes each key once and the strictest limit must win.
func prepare(limits []Limit) ([]string, []any, error) {
	keys := make([]string, 0, len(limits))
	ivs := make([]any, 0, len(limits))
	seen := make(map[string]int, len(limits))
	for _, lim := range limits {
		if lim.Key == "" {
			return nil, nil, errors.New("limit with an empty key")
		}
		if err := lim.Rate.valid(); err != nil {
			return nil, nil, fmt.Errorf("limit on %q: %w", lim.Key, err)
		}
		iv := lim.Rate.intervalMicros()
		if i, ok := seen[lim.Key]; ok {
			if iv > ivs[i].(int64) {
				ivs[i] = iv
			}
			continue
		}
		seen[lim.Key] = len(keys)
		keys = append(keys, lim.Key)
		ivs = append(ivs, iv)
	}
	return keys, ivs, nil
}
