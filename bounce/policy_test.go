package bounce_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/bounce"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/smtp"
)

const (
	deliveryID = "0123456789abcdef0123456789abcdef"
	target     = "press@mfa.example"
)

var verp = smtp.VERP{Secret: []byte("policy-test-secret-0123"), Domain: "bounces.test"}

// dsn builds an RFC 3464 report as an MTA would send it back to the VERP
// address.
func dsn(to, recipient, status, diag, envid string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`Return-Path: <>
Delivered-To: %[1]s
From: Mail Delivery System <MAILER-DAEMON@relay.test>
To: %[1]s
Subject: Undelivered Mail Returned to Sender
Message-Id: <dsn-%[3]s-%[2]s@relay.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system at host relay.test. Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.test
Original-Envelope-Id: %[5]s

Final-Recipient: rfc822; %[2]s
Action: %[6]s
Status: %[3]s
Diagnostic-Code: smtp; %[4]s

--B
Content-Type: text/rfc822-headers

From: Someone via LabourStart <petitions@petitions.test>
To: %[2]s
Subject: Free Erlan Baltabay

--B--
`, to, recipient, status, diag, envid, action(status)), "\n", "\r\n"))
}

func action(status string) string {
	if strings.HasPrefix(status, "4") {
		return "delayed"
	}
	return "failed"
}

func arf(to string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`Delivered-To: %s
From: feedback@mfa.example
To: %[1]s
Subject: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: test/1.0
Version: 1
Original-Rcpt-To: %[2]s

--F
Content-Type: text/rfc822-headers

From: petitions@petitions.test
To: %[2]s
Subject: Free Erlan Baltabay

--F--
`, to, target), "\n", "\r\n"))
}

func TestPolicy(t *testing.T) {
	good := verp.Address(deliveryID)
	forged := "bounces+" + deliveryID + "aaaaaaaaaaaaaaaa@bounces.test"
	otherSecret := smtp.VERP{Secret: []byte("some-other-secret-000"), Domain: "bounces.test"}.Address(deliveryID)
	token := strings.TrimSuffix(strings.TrimPrefix(good, "bounces+"), "@bounces.test")
	cases := []struct {
		name      string
		raw       []byte
		disp      bounce.Disposition
		state     ledger.State
		kind      string
		suppress  bool
		paused    bool
		pauseTill bool
	}{
		{"hard bounce suppresses", dsn(good, target, "5.1.1", "550 5.1.1 <press@mfa.example>: user unknown", ""), bounce.Processed, ledger.Bounced, "hard", true, false, false},
		{"matched by ENVID token", dsn("catchall@bounces.test", target, "5.1.1", "550 5.1.1 user unknown", token), bounce.Processed, ledger.Bounced, "hard", true, false, false},
		{"policy block pauses", dsn(good, target, "5.7.1", "550 5.7.1 Message rejected as spam", ""), bounce.Processed, ledger.Bounced, "soft", false, true, false},
		{"mailbox full is counted", dsn(good, target, "5.2.2", "552 5.2.2 mailbox full", ""), bounce.Processed, ledger.Bounced, "soft", false, false, false},
		{"delayed is recorded only", dsn(good, target, "4.4.1", "451 4.4.1 connection timed out", ""), bounce.Processed, ledger.Sent, "", false, false, false},
		{"complaint pauses", arf(good), bounce.Processed, ledger.Bounced, "complaint", false, true, false},
		{"forged HMAC changes nothing", dsn(forged, target, "5.1.1", "550 5.1.1 user unknown", ""), bounce.Unrecognized, ledger.Sent, "", false, false, false},
		{"other secret changes nothing", dsn(otherSecret, target, "5.1.1", "550 5.1.1 user unknown", ""), bounce.Unrecognized, ledger.Sent, "", false, false, false},
		{"missing token changes nothing", dsn("bounces@bounces.test", target, "5.1.1", "550 5.1.1 user unknown", deliveryID), bounce.Unrecognized, ledger.Sent, "", false, false, false},
		{"wrong recipient changes nothing", dsn(good, "someone-else@mfa.example", "5.1.1", "550 5.1.1 user unknown", ""), bounce.Unrecognized, ledger.Sent, "", false, false, false},
		{"not a bounce", []byte("From: a@example.org\r\nTo: bounces@bounces.test\r\nSubject: hello\r\n\r\nJust a note.\r\n"), bounce.Unrecognized, ledger.Sent, "", false, false, false},
		{"malformed MIME", []byte("Delivered-To: " + good + "\r\nContent-Type: multipart/report; boundary=\"X\"\r\n\r\n--Y\r\ntruncated"), bounce.Unrecognized, ledger.Sent, "", false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			rdb := testredis.Start(t).Client(t)
			l := ledger.New(rdb, time.Hour)
			if _, err := l.Create(ctx, ledger.Record{ID: deliveryID, Campaign: "c", Target: target, Signature: "s"}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := l.Claim(ctx, deliveryID, time.Minute, "test"); err != nil {
				t.Fatal(err)
			}
			if err := l.MarkSent(ctx, deliveryID, "250"); err != nil {
				t.Fatal(err)
			}
			p := &bounce.Processor{VERP: verp, Ledger: l, Policy: bounce.Policy{
				SuppressionTTL: time.Hour, SoftThreshold: 3, SoftWindow: time.Hour, SoftCooldown: time.Hour}}
			disp, err := p.Handle(ctx, bounce.Message{Mailbox: "INBOX", UIDValidity: 1, UID: 7, Raw: tc.raw, Fingerprint: "fp"})
			if err != nil {
				t.Fatal(err)
			}
			if disp != tc.disp {
				t.Fatalf("disposition %v; want %v", disp, tc.disp)
			}
			rec, err := l.Get(ctx, deliveryID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State != tc.state || rec.BounceKind != tc.kind {
				t.Errorf("delivery state %s kind %q; want %s %q", rec.State, rec.BounceKind, tc.state, tc.kind)
			}
			sups, _ := l.Suppressions(ctx)
			if got := len(sups) == 1; got != tc.suppress {
				t.Errorf("suppressed = %v; want %v (%+v)", got, tc.suppress, sups)
			}
			ts, err := l.TargetStates(ctx, []string{target})
			if err != nil {
				t.Fatal(err)
			}
			if ts[0].Paused != tc.paused {
				t.Errorf("paused = %v; want %v", ts[0].Paused, tc.paused)
			}
			// Every message, acted on or not, is logged with its action.
			entries, err := rdb.XRange(ctx, rkeys.BounceLog, "-", "+").Result()
			if err != nil || len(entries) != 1 || entries[0].Values["action"] == "" {
				t.Errorf("bounce log %v, %v; want one entry with an action", entries, err)
			}
		})
	}
}

func TestSoftBouncesPauseForACooldown(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	l := ledger.New(rdb, time.Hour)
	p := &bounce.Processor{VERP: verp, Ledger: l, Policy: bounce.Policy{
		SuppressionTTL: time.Hour, SoftThreshold: 3, SoftWindow: time.Hour, SoftCooldown: 2 * time.Hour}}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("%031x%d", 0, i)
		if _, err := l.Create(ctx, ledger.Record{ID: id, Campaign: "c", Target: target}); err != nil {
			t.Fatal(err)
		}
		raw := dsn(verp.Address(id), target, "5.2.2", "552 5.2.2 mailbox full", "")
		if _, err := p.Handle(ctx, bounce.Message{UID: uint32(i + 1), Raw: raw, Fingerprint: id}); err != nil {
			t.Fatal(err)
		}
		ts, _ := l.TargetStates(ctx, []string{target})
		if want := i == 2; ts[0].Paused != want {
			t.Fatalf("after %d soft bounces paused = %v; want %v", i+1, ts[0].Paused, want)
		}
		if i == 2 && (ts[0].Until.Before(time.Now().Add(time.Hour)) || ts[0].Until.After(time.Now().Add(3*time.Hour))) {
			t.Fatalf("cool-down until %s; want about 2h from now", ts[0].Until)
		}
	}
}
