package ledger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/queue/ledger"
)

func newLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	return ledger.New(testredis.Start(t).Client(t), 24*time.Hour)
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	rec := ledger.Record{ID: "d1", Campaign: "c", Target: "press@mfa.example", Signature: "s1", SubmittedAt: time.Now()}
	if st, err := l.Create(ctx, rec); err != nil || st != "" {
		t.Fatalf("create = %q, %v; want new record", st, err)
	}
	if st, err := l.Create(ctx, rec); err != nil || st != ledger.Scheduled {
		t.Fatalf("second create = %q, %v; want existing scheduled", st, err)
	}
	res, _, err := l.Claim(ctx, "d1", time.Minute, "test")
	if err != nil || res != ledger.Claimed {
		t.Fatalf("claim = %v, %v; want Claimed", res, err)
	}
	res, wait, err := l.Claim(ctx, "d1", time.Minute, "test")
	if err != nil || res != ledger.InFlight || wait <= 0 || wait > time.Minute {
		t.Fatalf("second claim = %v (%v), %v; want InFlight with a wait up to the lease", res, wait, err)
	}
	if err := l.MarkSent(ctx, "d1", "250 2.0.0 ok"); err != nil {
		t.Fatal(err)
	}
	if res, _, _ := l.Claim(ctx, "d1", time.Minute, "test"); res != ledger.Done {
		t.Fatalf("claim after sent = %v; want Done", res)
	}
	// A late drop must not overwrite "sent".
	if changed, err := l.MarkDropped(ctx, "d1", "campaign_closed"); err != nil || changed {
		t.Fatalf("drop after sent changed=%v err=%v; want unchanged", changed, err)
	}
	// A bounce follows "sent".
	if changed, err := l.MarkBounced(ctx, "d1", "hard", "userunknown", "550 5.1.1"); err != nil || !changed {
		t.Fatalf("bounce changed=%v err=%v", changed, err)
	}
	got, err := l.Get(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != ledger.Bounced || got.BounceKind != "hard" || got.Attempts != 1 || got.LastReply != "250 2.0.0 ok" || got.SentAt.IsZero() {
		t.Fatalf("record = %+v", got)
	}
	if _, err := l.Get(ctx, "nope"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("get missing: %v; want ErrNotFound", err)
	}
	if res, _, _ := l.Claim(ctx, "nope", time.Minute, "test"); res != ledger.Missing {
		t.Fatalf("claim missing = %v; want Missing", res)
	}
}

func TestExpiredLeaseCanBeReclaimed(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	if _, err := l.Create(ctx, ledger.Record{ID: "d2", Campaign: "c", Target: "t@x.example"}); err != nil {
		t.Fatal(err)
	}
	if res, _, err := l.Claim(ctx, "d2", time.Millisecond, "test"); err != nil || res != ledger.Claimed {
		t.Fatalf("claim = %v, %v", res, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, _, err := l.Claim(ctx, "d2", time.Minute, "test")
		if err != nil {
			t.Fatal(err)
		}
		if res == ledger.Claimed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease of 1ms never expired; last result %v", res)
		}
	}
	r, _ := l.Get(ctx, "d2")
	if r.Attempts != 2 {
		t.Fatalf("attempts = %d; want 2", r.Attempts)
	}
}

func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	if _, err := l.Create(ctx, ledger.Record{ID: "d3", Campaign: "c", Target: "t@x.example"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _, err := l.Claim(ctx, "d3", time.Minute, "test")
			if err != nil {
				t.Error(err)
				return
			}
			if res == ledger.Claimed {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d claims won; want exactly 1", wins)
	}
}

func TestSuppressionsAndPauses(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	now := time.Now()
	if err := l.Suppress(ctx, ledger.Suppression{Address: "Dead@Gov.example", Reason: "userunknown", Evidence: "550 5.1.1", At: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	sups, err := l.Suppressions(ctx)
	if err != nil || len(sups) != 1 || sups[0].Address != "dead@gov.example" || sups[0].Reason != "userunknown" {
		t.Fatalf("suppressions = %+v, %v", sups, err)
	}
	if err := l.Pause(ctx, "press@mfa.example", "blocked", time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b"} {
		if held, err := l.HoldIfPaused(ctx, "press@mfa.example", p); err != nil || !held {
			t.Fatalf("hold %s = %v, %v", p, held, err)
		}
	}
	if held, err := l.HoldIfPaused(ctx, "other@mfa.example", "c"); err != nil || held {
		t.Fatalf("hold on active target = %v, %v; want not held", held, err)
	}
	states, err := l.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"dead@gov.example": "suppressed", "press@mfa.example": "paused"}
	if len(states) != len(want) {
		t.Fatalf("targets = %+v", states)
	}
	for _, s := range states {
		if want[s.Address] != s.State() {
			t.Errorf("%s state %s; want %s", s.Address, s.State(), want[s.Address])
		}
	}
	got, err := l.Resume(ctx, "press@mfa.example")
	if err != nil || len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("resume = %v, %v; want [a b]", got, err)
	}
	if held, _ := l.HoldIfPaused(ctx, "press@mfa.example", "d"); held {
		t.Fatal("held after resume")
	}
	if ok, err := l.Unsuppress(ctx, "DEAD@gov.example"); err != nil || !ok {
		t.Fatalf("unsuppress = %v, %v", ok, err)
	}
	if sups, _ := l.Suppressions(ctx); len(sups) != 0 {
		t.Fatalf("suppressions after release = %+v", sups)
	}
}

func TestSoftBounceWindow(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	for i, id := range []string{"b1", "b2", "b2", "b3"} {
		n, err := l.SoftBounce(ctx, "t@x.example", id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		want := []int64{1, 2, 2, 3}[i]
		if n != want {
			t.Fatalf("after %s count = %d; want %d", id, n, want)
		}
	}
}

func TestSignerClaim(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	cases := []struct{ sig, want string }{{"s1", "s1"}, {"s1", "s1"}, {"s2", "s1"}}
	for _, c := range cases {
		got, err := l.ClaimSigner(ctx, "camp", "hash", c.sig)
		if err != nil || got != c.want {
			t.Fatalf("ClaimSigner(%s) = %q, %v; want %q", c.sig, got, err, c.want)
		}
	}
}
