// Package pacing owns send pacing: the rate limits per target address, per
// target domain, per campaign and global that every petitiond instance shares
// through Redis. It books send slots ahead of time (Reserve), so a backlog
// waits as scheduled work instead of polling, and gates the actual send
// (Acquire), so that the real sends to one key never exceed its limit by more
// than one message in any window. It knows nothing of asynq; the queue
// package schedules tasks for the slots this package hands out.
//
// The schedule and the gate keep separate books, and the schedule uses two
// models:
//
//   - The first limit of a delivery is its own queue: the target address.
//     Its schedule is append-only: a next free time ("tat") that each
//     reservation moves one interval past the slot it books. A target's
//     backlog lines up behind itself and nowhere else.
//   - Every other limit (domain, global, campaign) is shared by many targets.
//     It is booked in time buckets that later reservations may fill wherever
//     they have room: one bucket per max(1 s, interval), holding as many
//     bookings as the rate allows in that width. A shared key is busy only
//     as far ahead as its buckets are full, so a slot booked a week ahead
//     for a slow target takes one place in a bucket a week ahead and costs
//     the other targets nothing now.
//
// An append-only schedule on the shared keys too would be exact, but it
// would block the head of the line: one delivery to a target booked a week
// ahead would push the global and domain schedules a week ahead, and every
// later delivery to any idle target would wait behind it. The buckets give
// up exact spacing on the shared keys instead, and only within a bucket:
// a bucket's bookings may fall close together. That is enough, because the
// schedule only has to wake tasks at about the right time (asynq schedules
// to the second anyway); Acquire bounds every key at send time.
//
// The gate has the same two models at a finer grain. The address key keeps
// exact spacing: each send at least one interval after the previous one.
// A shared key is divided into cells one interval long, and a send takes a
// free cell of every shared key it is under: the same bucket counters as the
// schedule's, one interval wide and holding one, kept as a separate book
// (KEY:g:... beside the schedule's KEY:b:...). One send per cell means that any window of the
// limit's length touches at most N+1 cells, so it holds at most N+1 sends;
// and since a cell is taken only where the send falls, a burst of sends to
// one address, spaced by that address's interval, leaves the cells between
// them free for other addresses. Spacing by "last send + interval" on the
// shared keys would instead make every other target wait behind the burst.
//
// All times come from the Redis clock (TIME), never the caller's, so
// instances with skewed clocks still agree on one schedule. Each limit key is
// a hash with fields in microseconds: "tat" (address keys only), the next
// free slot of the schedule, and "last", the latest booked actual send. A
// shared key's bookings are counted in one string key per bucket that holds
// any, KEY:b:<width µs>:<bucket index>, about 130 bytes each; naming the
// width keeps counts made under an old limit apart from a new one. Every key
// expires shortly after it stops mattering (a bucket about 10 s after it
// ends), so idle targets and past buckets cost nothing.
package pacing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gateInterval widens an interval by 5 % at the send gate. The gate bounds
// the booked send times to N+1 per window; the relay sees them a little
// later, each by a slightly different amount (scheduling, the SMTP round
// trip). The margin keeps a window of booked sends a message or more below
// N+1 (at 50/s: 48 booked in any second, so arrivals spread by up to about
// 60 ms still stay within 51), at the cost of 5 % of the configured rate.
func gateInterval(iv int64) int64 { return iv + iv/20 }

// keyGraceMillis keeps a key a little past the moment its state stops
// mattering, so rounding and replica lag never drop live state early.
const keyGraceMillis = 10_000

// defaultMaxScan bounds how many full buckets one reservation may step over
// before it gives up with an error. A shared key is full only as far ahead as
// the schedule reaches, and a target's own schedule starts its next
// reservation near that edge, so a real scan is short; only a target new to a
// deeply booked shared key walks far, once. Each step costs about 2 µs of
// Redis time (BenchmarkReserveScan), so the bound caps a call at about
// 200 ms, and a schedule 100,000 buckets deep on a shared key (28 hours at
// 1-second buckets) is a limit far too tight for its load.
const defaultMaxScan = 100_000

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
-- floor(t / w), exact even where the float quotient rounds up to an integer.
local function bucketOf(t, w)
  local b = math.floor(t / w)
  if b * w > t then b = b - 1 elseif (b + 1) * w <= t then b = b + 1 end
  return b
end
-- A shared key's bucket counter: KEYS[i] .. ':' .. book .. ':' .. width .. ':'
-- .. index. Built here rather than passed in KEYS: see reserveLua.
local function bucketKey(i, book, w, b) return KEYS[i] .. ':' .. book .. ':' .. fmt(w) .. ':' .. fmt(b) end
-- fit walks the shared keys (KEYS[2..]) round-robin from time t until every
-- one has room in its bucket at t; a full bucket moves t to the start of
-- that key's next bucket. width(i) and cap(i) describe key i's buckets.
-- Returns t and the bucket index per key, or nil and an error text once
-- ARGV[3] full buckets have been stepped over.
local function fit(t, book, width, cap)
  local n = #KEYS
  local maxScan = tonumber(ARGV[3])
  local scanned, i, clear = 0, 2, 0
  local bucket = {}
  while clear < n - 1 do
    local w = width(i)
    local b = bucketOf(t, w)
    if (tonumber(redis.call('GET', bucketKey(i, book, w, b))) or 0) >= cap(i) then
      scanned = scanned + 1
      if scanned > maxScan then
        return nil, 'ERR ' .. KEYS[i] .. ' still full after stepping over ' .. fmt(maxScan) .. ' buckets'
      end
      t = (b + 1) * w
      clear = 0
    else
      bucket[i] = b
      clear = clear + 1
    end
    i = i + 1
    if i > n then i = 2 end
  end
  return t, bucket
end
-- take counts one booking in each shared key's bucket; a counter expires
-- ARGV[1] ms after its bucket ends.
local function take(book, bucket, width)
  for j = 2, #KEYS do
    local w = width(j)
    local k = bucketKey(j, book, w, bucket[j])
    redis.call('INCR', k)
    redis.call('PEXPIREAT', k, math.ceil((bucket[j] + 1) * w / 1000) + tonumber(ARGV[1]))
  end
end
`

// reserveLua: KEYS[1] is the own (address) key, KEYS[2..] the shared keys.
// ARGV = grace ms, notBefore µs, scan bound, the own key's interval µs, then
// per shared key its bucket width µs and capacity. Returns the slot in µs.
//
// The bucket keys are built inside the script, not passed in KEYS. Redis
// Cluster requires a script to declare its keys so that they can be routed;
// an undeclared key is safe only because bucketKey extends KEYS[i], whose
// hash tag ({pace}) it keeps, so it always lives on the same slot.
const reserveLua = luaPrelude + `
local slot = now
local nb = tonumber(ARGV[2])
if nb > slot then slot = nb end
local n = #KEYS
if n == 0 then return slot end
local own = KEYS[1]
local iv = tonumber(ARGV[4])
local v = redis.call('HMGET', own, 'tat', 'last', 'iv')
local tat = tonumber(v[1])
-- The tat is the last booking plus the interval in force when it was made.
-- When the limit has changed since (a reload), the next booking follows the
-- last one at the new interval, so a raised limit takes effect at once.
local oldiv = tonumber(v[3])
if tat and oldiv and oldiv ~= iv then tat = tat - oldiv + iv end
if tat and tat > slot then slot = tat end

local width = function(i) return tonumber(ARGV[2 * i + 1]) end
local bucket
slot, bucket = fit(slot, 'b', width, function(i) return tonumber(ARGV[2 * i + 2]) end)
if not slot then return redis.error_reply(bucket) end
take('b', bucket, width)

local ntat = slot + iv
redis.call('HSET', own, 'tat', fmt(ntat), 'iv', fmt(iv))
local horizon = ntat
local last = tonumber(v[2])
if last and last + iv > horizon then horizon = last + iv end
keep(own, horizon)
return slot
`

// acquireLua: ARGV = grace ms, maxWait µs, scan bound, interval µs per key.
// Returns {at µs, 1 if booked else 0}.
const acquireLua = luaPrelude + `
local at = now
local own = KEYS[1]
local ownIv = tonumber(ARGV[4])
local ov = redis.call('HMGET', own, 'tat', 'last')
local ownTat = tonumber(ov[1]) or 0
local last = tonumber(ov[2])
if last and last + ownIv > at then at = last + ownIv end

-- Shared keys: one send per cell, a cell being a bucket one interval wide
-- holding one; kept apart from the schedule's buckets as book 'g'.
local width = function(i) return tonumber(ARGV[i + 3]) end
local cell
at, cell = fit(at, 'g', width, function() return 1 end)
if not at then return redis.error_reply(cell) end
if at - now > tonumber(ARGV[2]) then
  return {at, 0}
end
redis.call('HSET', own, 'last', fmt(at))
local horizon = at + ownIv
if ownTat > horizon then horizon = ownTat end
keep(own, horizon)
take('g', cell, width)
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
	// maxScan bounds the full buckets one Reserve may step over.
	maxScan int
}

// New returns a Limiter on rdb.
func New(rdb redis.UniversalClient) *Limiter {
	return &Limiter{
		rdb:     rdb,
		reserve: redis.NewScript(reserveLua),
		acquire: redis.NewScript(acquireLua),
		backlog: redis.NewScript(backlogLua),
		maxScan: defaultMaxScan,
	}
}

// Reserve books a send slot at or after max(Redis now, notBefore) that
// honours every limit at once, and records it. The caller schedules the
// delivery for the returned slot, so a backlog of any size waits without
// cost.
//
// The first limit is the delivery's own queue, its target address; callers
// pass [address, domain, global, campaign] in that order. On it the schedule
// is append-only: the slot is at or after its next free time (tat), and tat
// becomes slot + its interval. Its backlog never delays anyone else.
//
// The other limits are shared, and booked in buckets of width
// max(1 s, interval) holding floor(width × rate) bookings each (50/s: 50 per
// second; 600/h: 1 per 6 s). Starting from the address's free time, the slot
// moves to the start of the next bucket of any shared key whose bucket is
// full, until every shared key has room; then each counts the booking. A
// bucket left with room, say by a slow target booked far ahead, is filled
// by later reservations, so a shared key blocks only as far ahead as it is
// really full. Within a bucket the slots may fall close together: Acquire
// spaces the actual sends.
//
// On the address the schedule only moves forward: a notBefore beyond its tat
// leaves a gap that later reservations for it do not fill. Use notBefore for
// the near future (a campaign start); a retry far ahead should wait on its own
// timer and pass through Acquire when it fires, not reserve a slot.
//
// A zero notBefore means now. With no limits the slot is max(now, notBefore).
// Reserve fails, naming the key, when a shared key is full for more than
// 100,000 buckets after the address's free time.
func (l *Limiter) Reserve(ctx context.Context, limits []Limit, notBefore time.Time) (time.Time, error) {
	keys, ivs, rates, err := prepare(limits)
	if err != nil {
		return time.Time{}, fmt.Errorf("pacing: reserve: %w", err)
	}
	var nb int64
	if !notBefore.IsZero() {
		nb = notBefore.UnixMicro()
	}
	args := make([]any, 0, 2+2*len(keys))
	args = append(args, keyGraceMillis, nb, l.maxScan)
	for i := range keys {
		if i == 0 {
			args = append(args, ivs[0])
			continue
		}
		w, c := rates[i].bucket()
		args = append(args, w, c)
	}
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
	keys, ivs, _, err := prepare(limits)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("pacing: acquire: %w", err)
	}
	if maxWait < 0 {
		maxWait = 0
	}
	args := make([]any, 0, 3+len(ivs))
	args = append(args, keyGraceMillis, int64(maxWait/time.Microsecond), l.maxScan)
	for _, iv := range ivs {
		args = append(args, gateInterval(iv.(int64)))
	}
	res, err := l.acquire.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("pacing: acquire %v: %w", keys, err)
	}
	if len(res) != 2 {
		return time.Time{}, false, fmt.Errorf("pacing: acquire %v: script returned %d values, want 2", keys, len(res))
	}
	return time.UnixMicro(res[0]), res[1] == 1, nil
}

// Backlog returns, per address key, how far ahead of Redis now its next free
// slot (tat) lies (0 when free now): the backlog figure of a target, ready
// for a gauge. Keys never reserved, or long idle, report 0, and so do shared
// keys, which Reserve books in buckets and keeps no tat for.
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
// rate, since the script writes each key once and the strictest limit must
// win. The keys keep the order of their first appearance, so the first limit
// stays first.
func prepare(limits []Limit) ([]string, []any, []Rate, error) {
	keys := make([]string, 0, len(limits))
	ivs := make([]any, 0, len(limits))
	rates := make([]Rate, 0, len(limits))
	seen := make(map[string]int, len(limits))
	for _, lim := range limits {
		if lim.Key == "" {
			return nil, nil, nil, errors.New("limit with an empty key")
		}
		if err := lim.Rate.valid(); err != nil {
			return nil, nil, nil, fmt.Errorf("limit on %q: %w", lim.Key, err)
		}
		iv := lim.Rate.intervalMicros()
		if i, ok := seen[lim.Key]; ok {
			if iv > ivs[i].(int64) {
				ivs[i] = iv
				rates[i] = lim.Rate
			}
			continue
		}
		seen[lim.Key] = len(keys)
		keys = append(keys, lim.Key)
		ivs = append(ivs, iv)
		rates = append(rates, lim.Rate)
	}
	return keys, ivs, rates, nil
}
