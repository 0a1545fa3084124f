package queue_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/testcert"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/smtp"
)

func TestPausedTargetWaitsAndResumes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	camp := h.applyCampaign("cpause", 2)
	paused := camp.Targets[0].Address
	if err := h.engine.PauseTarget(ctx, paused, "test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := h.producer.Submit(ctx, signature(camp.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the active target's 5 messages", func() bool { return h.sink.Count() == 5 })
	eventually(t, 30*time.Second, "5 held deliveries", func() bool {
		ts, err := h.ledger.TargetStates(ctx, []string{paused})
		return err == nil && ts[0].Held == 5
	})
	for i := 0; i < 5; i++ {
		r, err := h.ledger.Get(ctx, campaign.DeliveryID(camp.ID, signature(camp.ID, i).Signer.Email, paused))
		if err != nil || r.State.Final() {
			t.Fatalf("held delivery %d: %+v, %v; want not final", i, r, err)
		}
	}
	n, err := h.engine.ResumeTarget(ctx, paused)
	if err != nil || n != 5 {
		t.Fatalf("resume = %d, %v; want 5", n, err)
	}
	eventually(t, 30*time.Second, "all 10 messages after resume", func() bool { return h.sink.Count() == 10 })
}

func TestClosingACampaignStopsItsMail(t *testing.T) {
	// 1/s per address: the backlog of 20 signatures takes 20 s, so the
	// close lands in the middle of it.
	h := newHarness(t, func(o *harnessOpts) { o.limits.PerAddress = "1/s" })
	ctx := context.Background()
	camp := h.applyCampaign("cclose", 1)
	for i := 0; i < 20; i++ {
		if _, err := h.producer.Submit(ctx, signature(camp.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the first message", func() bool { return h.sink.Count() >= 1 })
	if err := h.campaigns.Close(ctx, camp.ID); err != nil {
		t.Fatal(err)
	}
	// A message already in its SMTP transaction may still land.
	atClose := h.sink.Count() + 1
	// Every signature ends either with its delivery dropped, or, when its
	// fan-out came after the close, with no delivery at all.
	var dropped, notFanned int
	eventually(t, 60*time.Second, "every signature to reach its end", func() bool {
		dropped, notFanned = 0, 0
		for i := 0; i < 20; i++ {
			sig := signature(camp.ID, i)
			rec, err := h.ledger.Signature(ctx, sig.ID)
			if err != nil {
				return false
			}
			if rec.Outcome == ledger.OutcomeCampaignClosed {
				notFanned++
				continue
			}
			r, err := h.ledger.Get(ctx, campaign.DeliveryID(camp.ID, sig.Signer.Email, camp.Targets[0].Address))
			if err != nil || !r.State.Final() {
				return false
			}
			if r.State == ledger.Dropped && r.Reason == "campaign_closed" {
				dropped++
			}
		}
		return true
	})
	if got := h.sink.Count(); got > atClose {
		t.Fatalf("%d messages after close; at most %d may have been in flight", got, atClose)
	}
	if dropped+notFanned+h.sink.Count() != 20 || dropped+notFanned < 15 {
		t.Fatalf("dropped %d, not fanned out %d, sent %d; want the rest of 20 stopped", dropped, notFanned, h.sink.Count())
	}
}

func TestRelayDownOpensBreakerWithoutSpendingRetries(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.options.BreakerThreshold = 2 })
	ctx := context.Background()
	camp := h.applyCampaign("cdown", 3)
	h.stopSink()
	for i := 0; i < 4; i++ {
		if _, err := h.producer.Submit(ctx, signature(camp.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the breaker to open", func() bool {
		st, err := h.engine.Breaker().State(ctx)
		return err == nil && st.Open
	})
	qs, err := h.engine.QueueStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Queue == "deliveries" && !q.Paused {
			t.Fatal("delivery queue not paused while the breaker is open")
		}
	}
	if err := h.engine.Ready(ctx); err == nil || !strings.Contains(err.Error(), "breaker open") {
		t.Fatalf("Ready = %v; want the open breaker named", err)
	}
	h.startSink()
	eventually(t, 60*time.Second, "all 12 messages once the relay is back", func() bool { return h.sink.Count() == 12 })
	st, err := h.engine.Breaker().State(ctx)
	if err != nil || st.Open || st.OpenedTotal != 1 {
		t.Fatalf("breaker %+v, %v; want closed after one opening", st, err)
	}
	for i := 0; i < 4; i++ {
		for _, tg := range camp.Targets {
			r, err := h.ledger.Get(ctx, campaign.DeliveryID(camp.ID, signature(camp.ID, i).Signer.Email, tg.Address))
			if err != nil || r.State != ledger.Sent {
				t.Fatalf("delivery %d/%s: %+v, %v", i, tg.Address, r, err)
			}
		}
	}
	archived := 0
	qs, _ = h.engine.QueueStats(ctx)
	for _, q := range qs {
		if q.State == "archived" || q.State == "retry" {
			archived += q.Tasks
		}
	}
	if archived != 0 {
		t.Fatalf("%d tasks in retry or archived; relay downtime must not spend retries", archived)
	}
}

func TestStartTLSAndAuth(t *testing.T) {
	serverTLS, roots := testcert.New(t, "127.0.0.1", "localhost")
	cases := []struct {
		name     string
		password string
		wantSent bool
	}{
		{"right credentials", "s3cret", true},
		{"wrong credentials", "wrong", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *harnessOpts) {
				o.options.BreakerThreshold = 1
				o.sinkConf = func(s *smtp.Sink) {
					s.TLSConfig = serverTLS
					s.RequireTLS = true
					s.Users = map[string]string{"campaigns": "s3cret"}
				}
				o.pool = func(c *smtp.Config) {
					c.TLS = smtp.TLSStartTLS
					c.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
					c.Username, c.Password = "campaigns", tc.password
				}
			})
			ctx := context.Background()
			camp := h.applyCampaign("ctls", 1)
			if _, err := h.producer.Submit(ctx, signature(camp.ID, 1)); err != nil {
				t.Fatal(err)
			}
			if tc.wantSent {
				eventually(t, 30*time.Second, "the message over STARTTLS with AUTH", func() bool { return h.sink.Count() == 1 })
				return
			}
			eventually(t, 30*time.Second, "the breaker to open on rejected credentials", func() bool {
				st, err := h.engine.Breaker().State(ctx)
				return err == nil && st.Open
			})
			st, _ := h.engine.Breaker().State(ctx)
			if !strings.Contains(strings.ToLower(st.Reason), "credentials") {
				t.Fatalf("breaker reason %q; want it to say the credentials were rejected", st.Reason)
			}
			if h.sink.Count() != 0 {
				t.Fatal("mail flowed with wrong credentials")
			}
		})
	}
}

func TestSuppressedAddressGetsNothingUntilReleased(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	camp := h.applyCampaign("csup", 1)
	addr := camp.Targets[0].Address
	now := time.Now()
	if err := h.ledger.Suppress(ctx, ledger.Suppression{Address: addr, Reason: "manual", At: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := h.producer.Submit(ctx, signature(camp.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "3 dropped deliveries", func() bool {
		for i := 0; i < 3; i++ {
			r, err := h.ledger.Get(ctx, campaign.DeliveryID(camp.ID, signature(camp.ID, i).Signer.Email, addr))
			if err != nil || r.State != ledger.Dropped || r.Reason != "suppressed" {
				return false
			}
		}
		return true
	})
	if h.sink.Count() != 0 {
		t.Fatalf("a suppressed address got %d messages", h.sink.Count())
	}
	if ok, err := h.ledger.Unsuppress(ctx, addr); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	if _, err := h.producer.Submit(ctx, signature(camp.ID, 3)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a new signature to get through after release", func() bool { return h.sink.Count() == 1 })
}
