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
