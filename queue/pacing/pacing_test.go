package pacing

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testredis"
)

// maxInWindow returns the largest number of times that fall in one closed
// window of length per.
func maxInWindow(times []time.Time, per time.Duration) int {
	ts := append([]time.Time(nil), times...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for j < len(ts) && !ts[j].After(ts[i].Add(per)) {
			j++
		}
		if j-i > best {
			best = j - i
		}
	}
	return best
}

// minGap returns the smallest gap between two of times (a very large value
// when there are fewer than two).
func minGap(times []time.Time) time.Duration {
	ts := append([]time.Time(nil), times...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	gap := time.Duration(1<<63 - 1)
	for i := 1; i < len(ts); i++ {
		if d := ts[i].Sub(ts[i-1]); d < gap {
			gap = d
		}
	}
	return gap
}

// assertPaced fails unless times honour limit: at least one interval apart,
// and never more than N+1 in any window of length Per.
func assertPaced(t *testing.T, limit Limit, times []time.Time) {
	t.Helper()
	// Address keys keep exact spacing; shared keys use one send per cell,
	// which bounds every window but lets neighbours in adjacent cells come
	// closer than an interval.
	if g := minGap(times); strings.Contains(limit.Key, ":addr:") && g < limit.Rate.Interval() {
		t.Errorf("%s at %s: two sends %v apart, want at least %v", limit.Key, limit.Rate, g, limit.Rate.Interval())
	}
	if n := maxInWindow(times, limit.Rate.Per); n > limit.Rate.N+1 {
		t.Errorf("%s at %s: %d sends in one window, want at most %d", limit.Key, limit.Rate, n, limit.Rate.N+1)
	}
}

func TestWindowHelpers(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	spaced := func(n int, gap time.Duration) []time.Time {
		out := make([]time.Time, n)
		for i := range out {
			out[i] = base.Add(time.Duration(i) * gap)
		}
		return out
	}
	tests := []struct {
		name    string
		times   []time.Time
		per     time.Duration
		wantMax int
		wantGap time.Duration
	}{
		{"exact spacing fits N+1 in a closed window", spaced(30, 100*time.Millisecond), time.Second, 11, 100 * time.Millisecond},
		{"too dense is caught", spaced(30, 90*time.Millisecond), time.Second, 12, 90 * time.Millisecond},
		{"burst", append(spaced(5, 0), base.Add(time.Hour)), time.Second, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maxInWindow(tt.times, tt.per); got != tt.wantMax {
				t.Errorf("maxInWindow = %d, want %d", got, tt.wantMax)
			}
			if got := minGap(tt.times); got != tt.wantGap {
				t.Errorf("minGap = %v, want %v", got, tt.wantGap)
			}
		})
	}
}

func redisNow(t *testing.T, rdb redis.UniversalClient) time.Time {
	t.Helper()
	now, err := rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	return now
}

func TestReserveSpacing(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	lim := []Limit{{Key: rkeys.PaceAddress("press@mfa.example"), Rate: MustParseRate("10/s")}}

	before := redisNow(t, rdb)
	slots := make([]time.Time, 100)
	for i := range slots {
		s, err := l.Reserve(ctx, lim, time.Time{})
		if err != nil {
			t.Fatalf("reserve %d: %v", i, err)
		}
		slots[i] = s
	}
	after := redisNow(t, rdb)
	if slots[0].Before(before) || slots[0].After(after) {
		t.Errorf("first slot %v outside Redis now [%v, %v]", slots[0], before, after)
	}
	for i := 1; i < len(slots); i++ {
		if d := slots[i].Sub(slots[i-1]); d != 100*time.Millisecond {
			t.Fatalf("slot %d is %v after slot %d, want 100ms", i, d, i-1)
		}
	}
}

// shape is the acceptance scenario: 6 addresses on 2 domains under
// address 10/s, domain 30/s and global 50/s.
type shape struct {
	addrs   []string
	domains []string
}

func newShape() shape {
	var s shape
	s.domains = []string{"mfa.example", "kz-geneva.example"}
	for i := 0; i < 6; i++ {
		s.addrs = append(s.addrs, fmt.Sprintf("t%d@%s", i, s.domains[i%2]))
	}
	return s
}

func (s shape) limits(i int) []Limit {
	return []Limit{
		{Key: rkeys.PaceAddress(s.addrs[i%6]), Rate: MustParseRate("10/s")},
		{Key: rkeys.PaceDomain(s.domains[i%2]), Rate: MustParseRate("30/s")},
		{Key: rkeys.PaceGlobal, Rate: MustParseRate("50/s")},
	}
}

// booked gathers booked times per limit key, safe for concurrent use.
type booked struct {
	mu     sync.Mutex
	limits map[string]Limit
	times  map[string][]time.Time
	own    map[string]bool // keys that came first in their limits
	all    []time.Time
}

func newBooked() *booked {
	return &booked{limits: map[string]Limit{}, times: map[string][]time.Time{}, own: map[string]bool{}}
}

func (b *booked) add(limits []Limit, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, l := range limits {
		b.limits[l.Key] = l
		b.times[l.Key] = append(b.times[l.Key], at)
		if i == 0 {
			b.own[l.Key] = true
		}
	}
	b.all = append(b.all, at)
}

// assertScheduled checks reserved slots against the schedule's two models:
// an own (address) key's slots at least one interval apart, and a shared
// key never holding more than its capacity in one of its buckets.
func (b *booked) assertScheduled(t *testing.T) {
	t.Helper()
	if len(b.limits) == 0 {
		t.Fatal("nothing booked")
	}
	for k, l := range b.limits {
		if b.own[k] {
			if g := minGap(b.times[k]); g < l.Rate.Interval() {
				t.Errorf("%s at %s: two slots %v apart, want at least %v", k, l.Rate, g, l.Rate.Interval())
			}
			continue
		}
		w, c := l.Rate.bucket()
		per := map[int64]int64{}
		for _, at := range b.times[k] {
			per[at.UnixMicro()/w]++
		}
		for bk, n := range per {
			if n > c {
				t.Errorf("%s at %s: %d slots in bucket %d, capacity %d", k, l.Rate, n, bk, c)
			}
		}
	}
}

func (b *booked) assertPaced(t *testing.T) {
	t.Helper()
	if len(b.limits) == 0 {
		t.Fatal("nothing booked")
	}
	for k, l := range b.limits {
		assertPaced(t, l, b.times[k])
	}
}

func (b *booked) assertDistinct(t *testing.T) {
	t.Helper()
	seen := map[time.Time]bool{}
	for _, at := range b.all {
		if seen[at] {
			t.Errorf("two sends booked at the same time %v", at)
		}
		seen[at] = true
	}
}

// TestReserveSpread books the acceptance shape on one Limiter: the shared
// keys stay within their buckets, each address is spaced, and the schedule
// is packed at the binding rate (global 50/s) rather than stretched.
func TestReserveSpread(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	s := newShape()
	b := newBooked()
	const n = 600
	start := redisNow(t, rdb)
	var last time.Time
	for i := 0; i < n; i++ {
		lims := s.limits(i)
		slot, err := l.Reserve(ctx, lims, time.Time{})
		if err != nil {
			t.Fatalf("reserve %d: %v", i, err)
		}
		if slot.Before(start) {
			t.Fatalf("slot %d at %v, before Redis now %v", i, slot, start)
		}
		if slot.After(last) {
			last = slot
		}
		b.add(lims, slot)
	}
	b.assertScheduled(t)
	// 600 at 50 per second fill 12 buckets; the first is the one holding
	// now, so the last slot falls in the 12th or, if the first bucket was
	// nearly over, the 13th.
	first := start.Truncate(time.Second)
	if lo, hi := first.Add(11*time.Second), first.Add(13*time.Second); last.Before(lo) || !last.Before(hi) {
		t.Errorf("last of %d slots at %v after the first bucket, want in [11s, 13s) (global 50/s)", n, last.Sub(first))
	}
}

// TestReserveNoHeadOfLineBlocking is the case the bucket model exists for: a
// deep backlog on a slow address must not hold back a fast address that
// shares a domain, the global or a campaign key with it.
func TestReserveNoHeadOfLineBlocking(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	global := Limit{Key: rkeys.PaceGlobal, Rate: MustParseRate("50/s")}
	tests := []struct {
		name   string
		shared []Limit
	}{
		{"same domain and global", []Limit{{Key: rkeys.PaceDomain("d0.example"), Rate: MustParseRate("30/s")}, global}},
		{"global only", []Limit{global}},
		{"domain, global and campaign", []Limit{{Key: rkeys.PaceDomain("d2.example"), Rate: MustParseRate("30/s")}, global,
			{Key: rkeys.PaceCampaign("c2"), Rate: MustParseRate("40/s")}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slow := append([]Limit{{Key: rkeys.PaceAddress(fmt.Sprintf("slow%d@x.example", i)), Rate: MustParseRate("1/m")}}, tt.shared...)
			fast := append([]Limit{{Key: rkeys.PaceAddress(fmt.Sprintf("fast%d@x.example", i)), Rate: MustParseRate("10/s")}}, tt.shared...)
			var slowLast time.Time
			for j := 0; j < 1000; j++ {
				s, err := l.Reserve(ctx, slow, time.Time{})
				if err != nil {
					t.Fatalf("slow reserve %d: %v", j, err)
				}
				slowLast = s
			}
			before := redisNow(t, rdb)
			if ahead := slowLast.Sub(before); ahead < 998*time.Minute {
				t.Fatalf("slow address booked only %v ahead; the scenario needs about 999 minutes", ahead)
			}
			prev := time.Time{}
			for j := 0; j < 5; j++ {
				slot, err := l.Reserve(ctx, fast, time.Time{})
				if err != nil {
					t.Fatalf("fast reserve %d: %v", j, err)
				}
				if d := slot.Sub(before); d < 0 || d > 1500*time.Millisecond {
					t.Fatalf("fast slot %d is %v after Redis now, want within about a second", j, d)
				}
				if j > 0 && slot.Sub(prev) < 100*time.Millisecond {
					t.Fatalf("fast slots %d and %d only %v apart, want 100ms", j-1, j, slot.Sub(prev))
				}
				prev = slot
			}
		})
	}
}

// TestReserveFillsGaps pins the bucket walk on a shared key of capacity one
// per second: a slot booked ahead leaves the buckets before it free for later
// reservations, which fill them in order and step over the taken one.
func TestReserveFillsGaps(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	global := Limit{Key: rkeys.PaceGlobal, Rate: MustParseRate("1/s")}
	// Every reservation starts from anchor, so the result does not depend on
	// how long the calls take.
	anchor := redisNow(t, rdb).Truncate(time.Second).Add(5 * time.Second)
	lims := func(addr string) []Limit {
		return []Limit{{Key: rkeys.PaceAddress(addr), Rate: MustParseRate("1/s")}, global}
	}
	ahead, err := l.Reserve(ctx, lims("ahead@x.example"), anchor.Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !ahead.Equal(anchor.Add(3 * time.Second)) {
		t.Fatalf("slot booked ahead at %v, want %v", ahead, anchor.Add(3*time.Second))
	}
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	for i, w := range want {
		slot, err := l.Reserve(ctx, lims(fmt.Sprintf("a%d@x.example", i)), anchor)
		if err != nil {
			t.Fatalf("reserve %d: %v", i, err)
		}
		if got := slot.Sub(anchor); got != w {
			t.Errorf("reservation %d at anchor%+v, want anchor%+v", i, got, w)
		}
	}
}

// TestReserveScanBound checks that a shared key full far beyond the address's
// free time ends in an error naming the key, and that the failed call
// records nothing.
func TestReserveScanBound(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	l.maxScan = 5
	global := Limit{Key: rkeys.PaceGlobal, Rate: MustParseRate("1/s")}
	anchor := redisNow(t, rdb).Truncate(time.Second).Add(5 * time.Second)
	tests := []struct {
		addr    string
		wantErr bool
	}{
		// Reservation k steps over k full buckets: 0..5 are allowed.
		{"b0@x.example", false}, {"b1@x.example", false}, {"b2@x.example", false},
		{"b3@x.example", false}, {"b4@x.example", false}, {"b5@x.example", false},
		{"b6@x.example", true},
	}
	for _, tt := range tests {
		addr := rkeys.PaceAddress(tt.addr)
		_, err := l.Reserve(ctx, []Limit{{Key: addr, Rate: MustParseRate("1/s")}, global}, anchor)
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), rkeys.PaceGlobal+" still full") {
				t.Fatalf("%s: err = %v, want one naming %s as full", tt.addr, err, rkeys.PaceGlobal)
			}
			if n, err := rdb.Exists(ctx, addr).Result(); err != nil || n != 0 {
				t.Fatalf("%s: failed reserve wrote its address key (%d, %v)", tt.addr, n, err)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
	}
	keys, err := rdb.Keys(ctx, rkeys.PaceGlobal+":b:*").Result()
	if err != nil || len(keys) != 6 {
		t.Fatalf("global bucket keys = %v, %v; want 6", keys, err)
	}
}

func TestReserveNoLimits(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	before := redisNow(t, rdb)
	tests := []struct {
		name      string
		notBefore time.Time
		lo, hi    func() time.Time
	}{
		{"now", time.Time{}, func() time.Time { return before }, func() time.Time { return redisNow(t, rdb) }},
		{"notBefore", before.Add(time.Hour), func() time.Time { return before.Add(time.Hour) }, func() time.Time { return before.Add(time.Hour) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slot, err := l.Reserve(ctx, nil, tt.notBefore)
			if err != nil {
				t.Fatal(err)
			}
			if lo, hi := tt.lo(), tt.hi(); slot.Before(lo) || slot.After(hi) {
				t.Fatalf("slot %v, want in [%v, %v]", slot, lo, hi)
			}
		})
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("reserve without limits wrote %d keys (%v)", n, err)
	}
}

func TestReserveNotBefore(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	now := redisNow(t, rdb)
	tests := []struct {
		name string
		// prior reservations on the key before the one under test
		prior     int
		notBefore time.Time
		// want is the expected slot; zero means "Redis now at the call".
		want func(priorLast time.Time) time.Time
	}{
		{"zero means now", 0, time.Time{}, nil},
		{"past means now", 0, now.Add(-time.Hour), nil},
		{"future is honoured", 0, now.Add(time.Hour), func(time.Time) time.Time { return now.Add(time.Hour) }},
		{"future to the microsecond", 0, now.Add(time.Hour + 1500*time.Nanosecond), func(time.Time) time.Time {
			return now.Add(time.Hour + time.Microsecond)
		}},
		{"a later free slot wins over notBefore", 5, now.Add(time.Second), func(p time.Time) time.Time { return p.Add(time.Second) }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := []Limit{{Key: rkeys.PaceAddress(fmt.Sprintf("nb%d@x.example", i)), Rate: MustParseRate("1/s")}}
			var priorLast time.Time
			for j := 0; j < tt.prior; j++ {
				s, err := l.Reserve(ctx, lim, time.Time{})
				if err != nil {
					t.Fatalf("prior reserve: %v", err)
				}
				priorLast = s
			}
			before := redisNow(t, rdb)
			slot, err := l.Reserve(ctx, lim, tt.notBefore)
			if err != nil {
				t.Fatalf("reserve: %v", err)
			}
			after := redisNow(t, rdb)
			if tt.want == nil {
				if slot.Before(before) || slot.After(after) {
					t.Fatalf("slot %v outside Redis now [%v, %v]", slot, before, after)
				}
				return
			}
			if want := tt.want(priorLast); !slot.Equal(want) {
				t.Fatalf("slot %v, want %v", slot, want)
			}
		})
	}
}

func TestAcquireConcurrent(t *testing.T) {
	srv := testredis.Start(t)
	s := newShape()
	b := newBooked()
	const workers, total = 8, 300
	jobs := make(chan int, total)
	for i := 0; i < total; i++ {
		jobs <- i
	}
	close(jobs)
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		l := New(srv.Client(t))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range jobs {
				lims := s.limits(i)
				at, ok, err := l.Acquire(context.Background(), lims, time.Hour)
				if err != nil {
					errs <- err
					return
				}
				if !ok {
					errs <- fmt.Errorf("acquire %d not booked (at %v) despite a one-hour maxWait", i, at)
					return
				}
				b.add(lims, at)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(b.all) != total {
		t.Fatalf("booked %d sends, want %d", len(b.all), total)
	}
	b.assertPaced(t)
	b.assertDistinct(t)
}

func TestAcquireTooLongWait(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	tests := []struct {
		name       string
		rate       string
		maxWait    time.Duration
		wantBooked bool
	}{
		{"wait longer than maxWait is refused", "1/h", time.Second, false},
		{"zero maxWait refuses any wait", "1/m", 0, false},
		{"negative maxWait is zero", "1/m", -time.Hour, false},
		{"wait within maxWait is booked", "10/s", time.Second, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := rkeys.PaceAddress(fmt.Sprintf("wait%d@x.example", i))
			lim := []Limit{{Key: key, Rate: MustParseRate(tt.rate)}}
			first, ok, err := l.Acquire(ctx, lim, 0)
			if err != nil || !ok {
				t.Fatalf("first acquire on a free key = %v, %v, %v; want booked", first, ok, err)
			}
			want := first.Add(time.Duration(gateInterval(lim[0].Rate.intervalMicros())) * time.Microsecond)
			at, ok, err := l.Acquire(ctx, lim, tt.maxWait)
			if err != nil {
				t.Fatalf("second acquire: %v", err)
			}
			if ok != tt.wantBooked || !at.Equal(want) {
				t.Fatalf("second acquire = %v, %v; want %v, %v", at, ok, want, tt.wantBooked)
			}
			if tt.wantBooked {
				return
			}
			// Nothing was recorded, so asking again gives the same time.
			again, ok, err := l.Acquire(ctx, lim, tt.maxWait)
			if err != nil || ok || !again.Equal(want) {
				t.Fatalf("third acquire = %v, %v, %v; want %v, false", again, ok, err, want)
			}
			last, err := rdb.HGet(ctx, key, "last").Int64()
			if err != nil || last != first.UnixMicro() {
				t.Fatalf("last = %d, %v; want %d (unchanged)", last, err, first.UnixMicro())
			}
		})
	}
}

// TestScheduleAndSendsApart checks that Reserve and Acquire keep separate
// books: a long schedule does not delay a send that is due now.
func TestScheduleAndSendsApart(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	lim := []Limit{{Key: rkeys.PaceAddress("apart@x.example"), Rate: MustParseRate("1/s")}}
	for i := 0; i < 10; i++ {
		if _, err := l.Reserve(ctx, lim, time.Time{}); err != nil {
			t.Fatalf("reserve: %v", err)
		}
	}
	before := redisNow(t, rdb)
	at, ok, err := l.Acquire(ctx, lim, 0)
	if err != nil || !ok {
		t.Fatalf("acquire = %v, %v, %v; want booked now", at, ok, err)
	}
	if at.Before(before) || at.After(redisNow(t, rdb)) {
		t.Fatalf("acquire booked %v, want Redis now (from %v)", at, before)
	}
	slot, err := l.Reserve(ctx, lim, time.Time{})
	if err != nil {
		t.Fatalf("reserve: %v", err)
	}
	if d := slot.Sub(before); d < 9*time.Second {
		t.Fatalf("11th slot only %v ahead; the send must not have moved the schedule back", d)
	}
}

func TestBacklog(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	busy := rkeys.PaceAddress("busy@x.example")
	idle := rkeys.PaceAddress("idle@x.example")
	lim := []Limit{{Key: busy, Rate: MustParseRate("10/s")}}
	var last time.Time
	for i := 0; i < 50; i++ {
		s, err := l.Reserve(ctx, lim, time.Time{})
		if err != nil {
			t.Fatalf("reserve: %v", err)
		}
		last = s
	}
	tat := last.Add(100 * time.Millisecond)

	before := redisNow(t, rdb)
	got, err := l.Backlog(ctx, busy, idle)
	if err != nil {
		t.Fatalf("backlog: %v", err)
	}
	after := redisNow(t, rdb)
	if b := got[busy]; b > tat.Sub(before) || b < tat.Sub(after) {
		t.Errorf("backlog of busy key = %v, want between %v and %v", b, tat.Sub(after), tat.Sub(before))
	}
	if b, ok := got[idle]; !ok || b != 0 {
		t.Errorf("backlog of idle key = %v, %v; want 0, present", b, ok)
	}

	if err := l.Forget(ctx, busy); err != nil {
		t.Fatalf("forget: %v", err)
	}
	got, err = l.Backlog(ctx, busy)
	if err != nil || got[busy] != 0 {
		t.Fatalf("backlog after forget = %v, %v; want 0", got, err)
	}
	if n, err := rdb.Exists(ctx, busy).Result(); err != nil || n != 0 {
		t.Fatalf("key still exists after forget: %d, %v", n, err)
	}
}

func TestKeysExpire(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	grace := keyGraceMillis * time.Millisecond
	tests := []struct {
		name string
		rate string
		// reserves and acquires are run in that order on a fresh key.
		reserves, acquires int
		// the key must live at least min and at most min+grace (+1s slack).
		min time.Duration
	}{
		{"reserve keeps the key until its next free slot", "1/h", 1, 0, time.Hour},
		// The gate spaces sends 5 % wider than the limit (gateInterval).
		{"acquire keeps the key one interval past the send", "1/m", 0, 1, time.Minute + time.Minute/20},
		{"acquire does not cut short the schedule", "1/s", 100, 1, 100 * time.Second},
		{"reserve does not cut short the sends", "1/m", 1, 3, 3 * (time.Minute + time.Minute/20)},
		{"a fast key goes soon", "100/s", 1, 0, 10 * time.Millisecond},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := rkeys.PaceAddress(fmt.Sprintf("ttl%d@x.example", i))
			lim := []Limit{{Key: key, Rate: MustParseRate(tt.rate)}}
			for j := 0; j < tt.reserves; j++ {
				if _, err := l.Reserve(ctx, lim, time.Time{}); err != nil {
					t.Fatalf("reserve: %v", err)
				}
			}
			for j := 0; j < tt.acquires; j++ {
				if _, _, err := l.Acquire(ctx, lim, time.Hour); err != nil {
					t.Fatalf("acquire: %v", err)
				}
			}
			ttl, err := rdb.PTTL(ctx, key).Result()
			if err != nil {
				t.Fatalf("pttl: %v", err)
			}
			// A small allowance for the time the calls above took.
			lo, hi := tt.min+grace-time.Second, tt.min+grace+time.Second
			if ttl < lo || ttl > hi {
				t.Fatalf("ttl = %v, want between %v and %v", ttl, lo, hi)
			}
		})
	}
}

// TestTwoProcesses models two daemon instances: two Limiters on two
// connections, booking on the same keys at the same time.
func TestTwoProcesses(t *testing.T) {
	srv := testredis.Start(t)
	s := newShape()
	reserved, acquired := newBooked(), newBooked()
	start := make(chan struct{})
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for p := 0; p < 2; p++ {
		l := New(srv.Client(t))
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			<-start
			ctx := context.Background()
			for i := p; i < 200; i += 2 {
				lims := s.limits(i)
				slot, err := l.Reserve(ctx, lims, time.Time{})
				if err != nil {
					errs <- err
					return
				}
				reserved.add(lims, slot)
				at, ok, err := l.Acquire(ctx, lims, time.Hour)
				if err != nil || !ok {
					errs <- fmt.Errorf("acquire = %v, %v, %v", at, ok, err)
					return
				}
				acquired.add(lims, at)
			}
		}(p)
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, b := range []*booked{reserved, acquired} {
		if len(b.all) != 200 {
			t.Fatalf("booked %d, want 200", len(b.all))
		}
	}
	// The schedule holds to its buckets; the sends to exact spacing.
	reserved.assertScheduled(t)
	acquired.assertPaced(t)
	acquired.assertDistinct(t)
}

func TestInvalidLimits(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	tests := []struct {
		name   string
		limits []Limit
	}{
		{"empty key", []Limit{{Key: "", Rate: MustParseRate("1/s")}}},
		{"zero rate", []Limit{{Key: rkeys.PaceGlobal}}},
		{"negative period", []Limit{{Key: rkeys.PaceGlobal, Rate: Rate{N: 1, Per: -time.Second}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Reserve(ctx, tt.limits, time.Time{}); err == nil {
				t.Error("Reserve accepted an invalid limit")
			}
			if _, _, err := l.Acquire(ctx, tt.limits, time.Hour); err == nil {
				t.Error("Acquire accepted an invalid limit")
			}
		})
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("invalid limits wrote %d keys (%v)", n, err)
	}
}

// TestRepeatedKeyTakesSlowestRate guards the merge of repeated keys: a
// per-domain override and the default on the same key must not let the
// faster one win, whether the key is the own key or a shared one.
func TestRepeatedKeyTakesSlowestRate(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	rates := []Rate{MustParseRate("100/s"), MustParseRate("1/s"), MustParseRate("10/s")}
	repeat := func(key string) []Limit {
		out := make([]Limit, len(rates))
		for i, r := range rates {
			out[i] = Limit{Key: key, Rate: r}
		}
		return out
	}
	anchor := redisNow(t, rdb).Truncate(time.Second).Add(5 * time.Second)
	tests := []struct {
		name string
		// limits for the first and the second reservation
		a, b []Limit
	}{
		{"own key", repeat(rkeys.PaceDomain("gmail.com")), repeat(rkeys.PaceDomain("gmail.com"))},
		{"shared key",
			append([]Limit{{Key: rkeys.PaceAddress("r1@x.example"), Rate: MustParseRate("100/s")}}, repeat(rkeys.PaceDomain("yahoo.com"))...),
			append([]Limit{{Key: rkeys.PaceAddress("r2@x.example"), Rate: MustParseRate("100/s")}}, repeat(rkeys.PaceDomain("yahoo.com"))...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := l.Reserve(ctx, tt.a, anchor)
			if err != nil {
				t.Fatal(err)
			}
			b, err := l.Reserve(ctx, tt.b, anchor)
			if err != nil {
				t.Fatal(err)
			}
			if d := b.Sub(a); d != time.Second {
				t.Fatalf("slots %v apart, want 1s", d)
			}
		})
	}
}

// TestBucketKeysExpire checks that each bucket counter of a shared key goes
// away a grace period after its bucket ends, and that Reserve keeps no other
// state on a shared key.
func TestBucketKeysExpire(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	grace := keyGraceMillis * time.Millisecond
	tests := []struct {
		rate      string
		wantWidth time.Duration
	}{
		{"50/s", time.Second},
		{"600/h", 6 * time.Second},
		{"1/m", time.Minute},
		{"1/d", 24 * time.Hour},
	}
	for i, tt := range tests {
		t.Run(tt.rate, func(t *testing.T) {
			shared := rkeys.PaceCampaign(fmt.Sprintf("ttl%d", i))
			lims := []Limit{
				{Key: rkeys.PaceAddress(fmt.Sprintf("bttl%d@x.example", i)), Rate: MustParseRate("10/s")},
				{Key: shared, Rate: MustParseRate(tt.rate)},
			}
			slot, err := l.Reserve(ctx, lims, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			now := redisNow(t, rdb)
			keys, err := rdb.Keys(ctx, shared+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			w := tt.wantWidth.Microseconds()
			want := fmt.Sprintf("%s:b:%d:%d", shared, w, slot.UnixMicro()/w)
			if len(keys) != 1 || keys[0] != want {
				t.Fatalf("keys under %s = %v, want only %s", shared, keys, want)
			}
			if n, err := rdb.Get(ctx, want).Int(); err != nil || n != 1 {
				t.Fatalf("bucket count = %d, %v; want 1", n, err)
			}
			end := time.UnixMicro((slot.UnixMicro()/w + 1) * w)
			ttl, err := rdb.PTTL(ctx, want).Result()
			if err != nil {
				t.Fatal(err)
			}
			// PEXPIREAT is absolute; allow for the time since the call and
			// for rounding to the millisecond.
			if lo, hi := end.Sub(now)+grace-time.Second, end.Sub(now)+grace+time.Millisecond; ttl < lo || ttl > hi {
				t.Fatalf("bucket ttl = %v, want between %v and %v", ttl, lo, hi)
			}
		})
	}
}

// TestOneRoundTripPerCall counts the commands Redis sees: once the scripts
// are loaded, each call is exactly one EVALSHA, which keeps a large backlog
// cheap for Redis.
func TestOneRoundTripPerCall(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := New(rdb)
	s := newShape()
	const calls = 10
	ops := []func() error{
		func() error { _, err := l.Reserve(ctx, s.limits(0), time.Time{}); return err },
		func() error { _, _, err := l.Acquire(ctx, s.limits(0), time.Hour); return err },
		func() error { _, err := l.Backlog(ctx, rkeys.PaceGlobal, rkeys.PaceAddress(s.addrs[0])); return err },
	}
	for _, op := range ops { // load the scripts
		if err := op(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatalf("config resetstat: %v", err)
	}
	for i := 0; i < calls; i++ {
		for _, op := range ops {
			if err := op(); err != nil {
				t.Fatal(err)
			}
		}
	}
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	got := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(rest, "calls=%d", &n); err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		got[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	if got["evalsha"] != calls*len(ops) {
		t.Errorf("EVALSHA calls = %d, want %d (one per call): %v", got["evalsha"], calls*len(ops), got)
	}
	// Redis counts the commands a script runs too; anything outside them
	// would be an extra round trip.
	inScript := map[string]bool{"evalsha": true, "time": true, "hget": true, "hmget": true, "hset": true, "pexpire": true,
		"get": true, "incr": true, "pexpireat": true, "zscore": true, "zadd": true, "zremrangebyscore": true,
		"config|resetstat": true}
	for name, n := range got {
		if !inScript[name] {
			t.Errorf("unexpected command %s called %d times", name, n)
		}
	}
}

// A changed limit (a reload) applies to the next booking: the address's next
// slot follows its last booking at the new interval, not the old one.
func TestReserveFollowsAChangedLimit(t *testing.T) {
	ctx := context.Background()
	l := New(testredis.Start(t).Client(t))
	key := "petitiond:{pace}:addr:reload@example.test"
	cases := []struct {
		name     string
		rate     string
		wantNear time.Duration // slot minus the first slot
	}{
		{"first booking at 1/h", "1/h", 0},
		{"raised to 10/s", "10/s", 100 * time.Millisecond},
		{"still 10/s", "10/s", 200 * time.Millisecond},
		{"lowered to 1/m", "1/m", 200*time.Millisecond + time.Minute},
	}
	var first time.Time
	for i, tc := range cases {
		slot, err := l.Reserve(ctx, []Limit{{Key: key, Rate: MustParseRate(tc.rate)}}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = slot
		}
		if got := slot.Sub(first); got < tc.wantNear-10*time.Millisecond || got > tc.wantNear+50*time.Millisecond {
			t.Fatalf("%s: slot %s after the first; want about %s", tc.name, got, tc.wantNear)
		}
	}
}

// A burst of sends to one slow address must not hold up another address at
// the gate: shared keys are booked by cell, not by "last send + interval".
func TestAcquireHasNoHeadOfLineBlocking(t *testing.T) {
	ctx := context.Background()
	l := New(testredis.Start(t).Client(t))
	global := Limit{Key: rkeys.PaceGlobal, Rate: MustParseRate("50/s")}
	domain := Limit{Key: rkeys.PaceDomain("x.example"), Rate: MustParseRate("30/s")}
	slow := []Limit{{Key: rkeys.PaceAddress("slow@x.example"), Rate: MustParseRate("1/s")}, domain, global}
	var first time.Time
	for i := 0; i < 5; i++ {
		at, ok, err := l.Acquire(ctx, slow, time.Hour)
		if err != nil || !ok {
			t.Fatalf("acquire slow %d: %v %v", i, ok, err)
		}
		if i == 0 {
			first = at
		}
		if want := time.Duration(i) * time.Second; at.Sub(first) < want {
			t.Fatalf("slow send %d at +%s; want at least +%s", i, at.Sub(first), want)
		}
	}
	fast := []Limit{{Key: rkeys.PaceAddress("fast@x.example"), Rate: MustParseRate("10/s")}, domain, global}
	at, ok, err := l.Acquire(ctx, fast, time.Hour)
	if err != nil || !ok {
		t.Fatal(err)
	}
	if d := at.Sub(first); d > 200*time.Millisecond {
		t.Fatalf("the other address was booked %s after the first slow send; want within 200ms (no head-of-line blocking)", d)
	}
}
