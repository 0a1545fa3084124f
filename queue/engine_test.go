package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/queue"
	"github.com/petitiond/petitiond/queue/ledger"
)

func mustRegexp(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

// signers in five languages, with diacritics, Cyrillic and Arabic.
var signers = []struct{ name, locale, comment string }{
	{"Maria Santos-Ñiño", "tl", "Ang pagkakaisa ay lakas — ñ, ã, é"},
	{"Айгерим Сапарова", "ru", "Свободу Ерлану! Профсоюзные права — права человека."},
	{"Ерлан Жақсылықов", "kk", "Қазақстандағы жұмысшыларға бостандық"},
	{"فاطمة السيد", "ar", "الحرية لإرلان بالتباي"},
	{"John O'Neill", "en", "Solidarity from Dublin.\nLine two, with a very long sentence that goes on and on so that quoted-printable has to wrap it somewhere past seventy-six characters."},
}

func signature(camp string, i int) campaign.Signature {
	s := signers[i%len(signers)]
	return campaign.Signature{
		Version: 1, ID: fmt.Sprintf("sig-%05d", i), Campaign: camp,
		Signer:   campaign.Signer{Name: fmt.Sprintf("%s %d", s.name, i), Email: fmt.Sprintf("signer%d@example.org", i), Locale: s.locale},
		Comment:  s.comment,
		SignedAt: time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC),
	}
}

func TestFiftySignaturesSixTargets(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	camp := h.applyCampaign("kz-baltabay", 6)
	sigs := map[string]campaign.Signature{}
	for i := 0; i < 50; i++ {
		sig := signature(camp.ID, i)
		sigs[sig.Signer.Email] = sig
		if o, err := h.producer.Submit(ctx, sig); err != nil || o != queue.Accepted {
			t.Fatalf("submit %d: %v, %v", i, o, err)
		}
	}
	eventually(t, 60*time.Second, "300 messages at the sink", func() bool { return h.sink.Count() >= 300 })

	files := h.emls()
	if len(files) != 300 {
		t.Fatalf("sink holds %d messages; want exactly 300", len(files))
	}
	seen := map[string]bool{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkMessage(t, raw, camp, sigs, seen)
	}
	if len(seen) != 300 {
		t.Fatalf("%d distinct (signer, target) pairs; want 300", len(seen))
	}

	// Resubmitting through the Go API and the stream sends nothing more.
	for i := 0; i < 50; i++ {
		if o, err := h.producer.Submit(ctx, signature(camp.ID, i)); err != nil || o != queue.Duplicate {
			t.Fatalf("resubmit %d: %v, %v; want duplicate", i, o, err)
		}
	}
	for i := 0; i < 50; i++ {
		xadd(t, h.rdb, signature(camp.ID, i))
	}
	// A signer who signs again under a new id is a duplicate too.
	again := signature(camp.ID, 7)
	again.ID = "sig-new-id-same-signer"
	if o, err := h.producer.Submit(ctx, again); err != nil || o != queue.Accepted {
		t.Fatalf("submit same signer, new id: %v, %v", o, err)
	}
	eventually(t, 30*time.Second, "the stream to drain and the duplicate signer to be fanned out", func() bool {
		n, _ := h.rdb.XLen(ctx, rkeys.SignatureStream).Result()
		rec, err := h.ledger.Signature(ctx, again.ID)
		return n == 0 && err == nil && rec.Outcome == ledger.OutcomeDuplicate
	})
	// Wait for the engine to be idle, then check nothing more was sent.
	eventually(t, 30*time.Second, "queues to be idle", func() bool { return idle(t, h) })
	if n := h.sink.Count(); n != 300 {
		t.Fatalf("sink count after resubmission = %d; want 300", n)
	}
	st, err := h.engine.Signature(ctx, "sig-00003")
	if err != nil || st.Sent != 6 || len(st.Deliveries) != 6 {
		t.Fatalf("signature status = %+v, %v; want delivered to 6 of 6", st, err)
	}
	if rej, _ := h.rdb.XLen(ctx, rkeys.RejectedStream).Result(); rej != 0 {
		t.Fatalf("rejected stream has %d entries; want 0", rej)
	}
}

func idle(t *testing.T, h *harness) bool {
	qs, err := h.engine.QueueStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		switch q.State {
		case "pending", "active", "scheduled", "retry":
			if q.Tasks > 0 {
				return false
			}
		}
	}
	n, _ := h.rdb.XLen(context.Background(), rkeys.SignatureStream).Result()
	return n == 0
}

func xadd(t *testing.T, rdb *redis.Client, sig campaign.Signature) {
	t.Helper()
	b, err := jsonMarshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: rkeys.SignatureStream, Values: map[string]any{"json": b}}).Err(); err != nil {
		t.Fatal(err)
	}
}

// checkMessage parses one message strictly and checks that every text
// round-trips byte for byte.
func checkMessage(t *testing.T, raw []byte, camp *campaign.Campaign, sigs map[string]campaign.Signature, seen map[string]bool) {
	t.Helper()
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatalf("message has a bare LF:\n%s", raw)
	}
	mr, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("go-message cannot read the message: %v\n%s", err, raw)
	}
	replyTo, err := mr.Header.AddressList("Reply-To")
	if err != nil || len(replyTo) != 1 {
		t.Fatalf("Reply-To: %v %v", replyTo, err)
	}
	sig, ok := sigs[replyTo[0].Address]
	if !ok {
		t.Fatalf("Reply-To %q is no signer", replyTo[0].Address)
	}
	if replyTo[0].Name != sig.Signer.Name {
		t.Errorf("Reply-To name %q; want %q", replyTo[0].Name, sig.Signer.Name)
	}
	from, err := mr.Header.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "petitions@petitions.test" || from[0].Name != sig.Signer.Name+" via LabourStart" {
		t.Errorf("From = %v, %v; want the signer's name at the campaign address", from, err)
	}
	to, err := mr.Header.AddressList("To")
	if err != nil || len(to) != 1 || !camp.HasTarget(to[0].Address) {
		t.Fatalf("To = %v, %v", to, err)
	}
	var target campaign.Target
	for _, tg := range camp.Targets {
		if tg.Address == to[0].Address {
			target = tg
		}
	}
	letter, err := camp.Render(&sig, target)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := mr.Header.Subject()
	if err != nil || subj != letter.Subject {
		t.Errorf("Subject = %q, %v; want %q", subj, err, letter.Subject)
	}
	if raw := mr.Header.Get("Subject"); !isASCII(raw) {
		t.Errorf("raw Subject header is not ASCII (RFC 2047 missing): %q", raw)
	}
	ct, params, err := mime.ParseMediaType(mr.Header.Get("Content-Type"))
	if err != nil || ct != "text/plain" || strings.ToLower(params["charset"]) != "utf-8" {
		t.Errorf("Content-Type = %q", mr.Header.Get("Content-Type"))
	}
	if cte := mr.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(cte, "quoted-printable") {
		t.Errorf("Content-Transfer-Encoding = %q; want quoted-printable", cte)
	}
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(p.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ReplaceAll(string(body), "\r\n", "\n"); got != letter.Body {
		t.Errorf("body does not round-trip:\n got %q\nwant %q", got, letter.Body)
	}
	if !strings.Contains(letter.Body, sig.Comment) {
		t.Errorf("letter lacks the comment %q", sig.Comment)
	}
	id := campaign.DeliveryID(camp.ID, sig.Signer.Email, target.Address)
	if got := mr.Header.Get("X-Petitiond-Delivery"); !strings.HasPrefix(got, id) {
		t.Errorf("X-Petitiond-Delivery = %q; want the token of %s", got, id)
	}
	if mid := mr.Header.Get("Message-Id"); !strings.Contains(mid, id) {
		t.Errorf("Message-ID %q does not carry delivery %s", mid, id)
	}
	key := sig.Signer.Email + "|" + target.Address
	if seen[key] {
		t.Errorf("%s sent twice", key)
	}
	seen[key] = true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestHostileInputIsRejected(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	camp := h.applyCampaign("kz-baltabay", 2)
	good := `{"version":1,"id":"ok-1","campaign":"kz-baltabay","signer":{"name":"Ann","email":"ann@example.org"},"signed_at":"2019-07-20T10:00:00Z"}`
	cases := []struct {
		name, json, field, reason string
	}{
		{"CRLF in name", strings.Replace(good, `"Ann"`, `"Ann\r\nBcc: victim@example.org"`, 1), "signer.name", "invalid"},
		{"CRLF in email", strings.Replace(good, `"ann@example.org"`, `"ann@example.org\r\nBcc: x@example.org"`, 1), "signer.email", "invalid"},
		{"oversize comment", strings.Replace(good, `"signed_at"`, `"comment":"`+strings.Repeat("x", 6000)+`","signed_at"`, 1), "comment", "invalid"},
		{"invalid UTF-8", strings.Replace(good, `"Ann"`, "\"Ann\xff\xfe\"", 1), "signer.name", "invalid"},
		{"unknown campaign", strings.Replace(good, `"kz-baltabay"`, `"no-such-campaign"`, 1), "campaign", "unknown_campaign"},
		{"missing id", strings.Replace(good, `"id":"ok-1",`, ``, 1), "id", "invalid"},
		{"version 2", strings.Replace(good, `"version":1`, `"version":2`, 1), "version", "invalid"},
		{"NUL in name", strings.Replace(good, `"Ann"`, `"Ann\u0000"`, 1), "signer.name", "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := h.producer.SubmitJSON(ctx, []byte(tc.json), "api")
			var rej *queue.RejectError
			if o != queue.Rejected || !errors.As(err, &rej) {
				t.Fatalf("outcome %v, err %v; want a rejection", o, err)
			}
			if rej.Reason != tc.reason || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("rejection %q (%v); want reason %q naming %q", rej.Reason, err, tc.reason, tc.field)
			}
			if err := h.rdb.XAdd(ctx, &redis.XAddArgs{Stream: rkeys.SignatureStream, Values: map[string]any{"json": tc.json, "case": tc.name}}).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// An entry without a json field is rejected too.
	if err := h.rdb.XAdd(ctx, &redis.XAddArgs{Stream: rkeys.SignatureStream, Values: map[string]any{"signature": good}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "every hostile stream entry in the rejected stream", func() bool {
		n, _ := h.rdb.XLen(ctx, rkeys.RejectedStream).Result()
		return n == int64(len(cases)+1)
	})
	entries, err := h.rdb.XRange(ctx, rkeys.RejectedStream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		if e.Values["reason"] == "" || e.Values["error"] == "" || e.Values["source_id"] == "" {
			t.Errorf("rejected entry %d lacks reason, error or source_id: %v", i, e.Values)
		}
		if i < len(cases) {
			if e.Values["json"] != cases[i].json {
				t.Errorf("rejected entry %d does not keep the original input", i)
			}
			if !strings.Contains(e.Values["error"].(string), cases[i].field) {
				t.Errorf("rejected entry %d error %q does not name %q", i, e.Values["error"], cases[i].field)
			}
		}
	}
	if n, _ := h.rdb.XLen(ctx, rkeys.SignatureStream).Result(); n != 0 {
		t.Errorf("signature stream still holds %d entries; rejected ones must be acked", n)
	}
	if h.sink.Count() != 0 {
		t.Fatalf("the sink received %d messages from hostile input", h.sink.Count())
	}
	_ = camp
}

func TestTemporaryFailureThenRecovery(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	camp := h.applyCampaign("c451", 1)
	var refused atomicInt
	hook := func(from, rcpt string) *gosmtp.SMTPError {
		if refused.add() <= 3 {
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}
	h.hook.Store(&hook)
	if _, err := h.producer.Submit(ctx, signature(camp.ID, 1)); err != nil {
		t.Fatal(err)
	}
	id := campaign.DeliveryID(camp.ID, "signer1@example.org", camp.Targets[0].Address)
	var rec *ledger.Record
	eventually(t, 60*time.Second, "delivery after the relay recovers", func() bool {
		r, err := h.ledger.Get(ctx, id)
		rec = r
		return err == nil && r.State == ledger.Sent
	})
	if rec.Attempts != 4 || h.sink.Count() != 1 {
		t.Fatalf("record %+v, sink %d; want sent once after 4 attempts", rec, h.sink.Count())
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.reject = "^office0@" })
	ctx := context.Background()
	camp := h.applyCampaign("c550", 2)
	if _, err := h.producer.Submit(ctx, signature(camp.ID, 1)); err != nil {
		t.Fatal(err)
	}
	dead := campaign.DeliveryID(camp.ID, "signer1@example.org", "office0@gov0.test")
	eventually(t, 30*time.Second, "the rejected delivery to fail", func() bool {
		r, err := h.ledger.Get(ctx, dead)
		return err == nil && r.State == ledger.Failed
	})
	eventually(t, 30*time.Second, "queues to be idle", func() bool { return idle(t, h) })
	r, _ := h.ledger.Get(ctx, dead)
	if r.Attempts != 1 || r.Reason != "userunknown" || !strings.Contains(r.LastReply, "550") || !strings.Contains(r.LastReply, "5.1.1") {
		t.Fatalf("failed record %+v; want one attempt, reason userunknown, reply with 550 5.1.1", r)
	}
	if h.sink.Count() != 1 {
		t.Fatalf("sink count %d; want only the other target", h.sink.Count())
	}
	sups, err := h.ledger.Suppressions(ctx)
	if err != nil || len(sups) != 1 || sups[0].Address != "office0@gov0.test" {
		t.Fatalf("suppressions %+v, %v; want office0@gov0.test", sups, err)
	}
	// A second signer's delivery to the suppressed address is dropped.
	if _, err := h.producer.Submit(ctx, signature(camp.ID, 2)); err != nil {
		t.Fatal(err)
	}
	dropped := campaign.DeliveryID(camp.ID, "signer2@example.org", "office0@gov0.test")
	eventually(t, 30*time.Second, "the suppressed delivery to be dropped", func() bool {
		r, err := h.ledger.Get(ctx, dropped)
		return err == nil && r.State == ledger.Dropped && r.Reason == "suppressed"
	})
}

type atomicInt struct{ n atomic.Int64 }

func (a *atomicInt) add() int64 { return a.n.Add(1) }

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
