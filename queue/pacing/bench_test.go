package pacing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testredis"
)

// benchLimits returns the first n of the limits a delivery can carry.
func benchLimits(n int) []Limit {
	all := []Limit{
		{Key: rkeys.PaceAddress("press@mfa.example"), Rate: MustParseRate("10/s")},
		{Key: rkeys.PaceDomain("mfa.example"), Rate: MustParseRate("30/s")},
		{Key: rkeys.PaceGlobal, Rate: MustParseRate("50/s")},
		{Key: rkeys.PaceCampaign("kz-baltabay"), Rate: MustParseRate("40/s")},
		{Key: rkeys.PaceDomain("example"), Rate: MustParseRate("45/s")},
	}
	return all[:n]
}

// benchPacing runs op serially (one caller, so ops/s is bound by the round
// trip) and in parallel (GOMAXPROCS callers on one pooled client, so ops/s is
// bound by Redis running the script).
func benchPacing(b *testing.B, op func(*Limiter, []Limit) error) {
	srv := testredis.Start(b)
	for _, n := range []int{1, 3, 5} {
		lims := benchLimits(n)
		b.Run(fmt.Sprintf("limits=%d", n), func(b *testing.B) {
			l := New(srv.Client(b))
			for b.Loop() {
				if err := op(l, lims); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(fmt.Sprintf("limits=%d/parallel", n), func(b *testing.B) {
			l := New(srv.Client(b))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := op(l, lims); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkReserve books into a schedule that is free ahead of the address,
// the common case: every shared key has room in the address's bucket.
//
// Figures on a 2-vCPU VM with Redis 7.0 on loopback, three runs each, in
// ops/s (serial / parallel). The machine is noisy; the run-to-run spread is
// as large as the difference between the models:
//
//	limits  append-only on every key   buckets on the shared keys
//	1       20,000-21,600 / 15,000-21,000   13,000-14,000 / 19,000-20,000
//	3       15,300-16,100 / 15,600-16,400   13,300-14,200 / 17,500-19,600
//	5       14,400-15,300 / 14,100-17,400   12,500-12,900 / 15,100-16,700
//
// A shared key now costs a GET, an INCR and a PEXPIREAT instead of an HSET
// and a PEXPIRE; the call stays bound by its one round trip.
func BenchmarkReserve(b *testing.B) {
	benchPacing(b, func(l *Limiter, lims []Limit) error {
		_, err := l.Reserve(context.Background(), lims, time.Time{})
		return err
	})
}

// BenchmarkAcquire books every call (a wait cap far beyond the run), so each
// op writes, as a real send does.
func BenchmarkAcquire(b *testing.B) {
	benchPacing(b, func(l *Limiter, lims []Limit) error {
		_, ok, err := l.Acquire(context.Background(), lims, 1000*time.Hour)
		if err == nil && !ok {
			err = fmt.Errorf("acquire not booked")
		}
		return err
	})
}

// BenchmarkReserveScan measures the cost of a reservation that must step over
// depth full buckets of the global key before it finds room: a new target
// behind a schedule booked depth seconds ahead at the global rate. The last
// depth is the scan bound, the worst a call may hold Redis for.
//
// Figures on the same VM: about 1.7-1.9 µs per full bucket stepped over
// (a GET in the script), so 1,000 full buckets cost 1.7 ms per call and the
// bound of 100,000 about 190 ms.
func BenchmarkReserveScan(b *testing.B) {
	srv := testredis.Start(b)
	ctx := context.Background()
	for _, depth := range []int{10, 1_000, defaultMaxScan - 100} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			rdb := srv.Client(b)
			if err := rdb.FlushDB(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			// A global limit of 1,000,000/s: capacity enough that every op
			// lands in the first free bucket, so the depth stays put.
			global := Limit{Key: rkeys.PaceGlobal, Rate: MustParseRate("1000000/s")}
			w, c := global.Rate.bucket()
			now, err := rdb.Time(ctx).Result()
			if err != nil {
				b.Fatal(err)
			}
			first := now.UnixMicro() / w
			pipe := rdb.Pipeline()
			for i := int64(0); i < int64(depth); i++ {
				pipe.Set(ctx, fmt.Sprintf("%s:b:%d:%d", global.Key, w, first+i), c, time.Hour)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			// A new address each op, since an address's own schedule would
			// start the next op past the full buckets.
			lims := []Limit{{Rate: MustParseRate("1/s")}, global}
			l := New(rdb)
			i := 0
			for b.Loop() {
				lims[0].Key = rkeys.PaceAddress(fmt.Sprintf("new%d@x.example", i))
				i++
				if _, err := l.Reserve(ctx, lims, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(depth), "ns/bucket")
		})
	}
}
