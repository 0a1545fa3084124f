package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/petitiond/petitiond/internal/mailstack"
	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/queue/ledger"
)

// The whole loop with a real MTA and a real IMAP server: petitiond relays
// through Postfix to the sink, the sink refuses two targets with 550 5.1.1,
// Postfix writes real DSNs to the VERP address, Dovecot serves the bounce
// mailbox, and the watcher suppresses exactly those two targets within
// seconds and files the DSNs in Processed.
func TestPostfixDovecotBounceLoop(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	sink := startSink(t, "--reject", "^dead[0-9]@")
	stack := mailstack.Start(t, mailstack.Config{RelayDomain: "gov.test", NextHop: sink.addr, BounceDomain: "bounce.test"})

	cfg := writeConfig(t, srv.URL(0), stack.SMTPAddr, freeAddr(t), fmt.Sprintf(`limits: {per_address: "100/s", per_domain: "100/s", global: "100/s"}
imap: {enabled: true, addr: %q, tls: none, username: %q, password: %q, poll_interval: 5s}`,
		stack.IMAPAddr, stack.MailboxUser, stack.MailboxPassword))
	d := startDaemon(t, "serve", cfg)

	targets := []string{"press@gov.test", "dead1@gov.test", "mission@gov.test", "dead2@gov.test", "labour@gov.test", "embassy@gov.test"}
	applyCampaign(t, env, "loop", targets)
	sent := time.Now()
	cli(t, env, signatures("loop", 0, 2), false, "enqueue")

	eventually(t, 60*time.Second, "8 messages through Postfix to the sink", func() bool { return sink.count(t) >= 8 })
	l := ledger.New(rdb, time.Hour)
	ctx := context.Background()
	var sups []ledger.Suppression
	eventually(t, 60*time.Second, "both dead targets suppressed", func() bool {
		var err error
		sups, err = l.Suppressions(ctx)
		return err == nil && len(sups) == 2
	})
	t.Logf("both dead targets suppressed %s after submission", time.Since(sent).Round(time.Millisecond))
	for _, s := range sups {
		if !strings.HasPrefix(s.Address, "dead") || s.Reason != "userunknown" || !strings.Contains(s.Evidence, "5.1.1") {
			t.Errorf("suppression %+v; want a dead target, userunknown, with the DSN as evidence", s)
		}
	}
	// Every DSN ends up in Processed, none in Unrecognized or the inbox.
	eventually(t, 30*time.Second, "4 DSNs in Processed and an empty inbox", func() bool {
		counts := mailboxCounts(t, stack)
		return counts["Processed"] == 4 && counts["INBOX"] == 0 && counts["Unrecognized"] == 0
	})
	text := metricsText(t, d.http)
	if !strings.Contains(text, `petitiond_imap_up 1`) || !strings.Contains(text, `petitiond_imap_messages_total{result="processed"} 4`) {
		t.Errorf("IMAP metrics do not show the watcher up with 4 processed messages")
	}
}

func mailboxCounts(t *testing.T, s *mailstack.Stack) map[string]uint32 {
	t.Helper()
	c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(s.MailboxUser, s.MailboxPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, mb := range []string{"INBOX", "Processed", "Unrecognized"} {
		data, err := c.Status(mb, &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			continue
		}
		out[mb] = *data.NumMessages
	}
	return out
}
