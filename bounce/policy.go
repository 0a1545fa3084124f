package bounce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/metrics"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/smtp"
)

// Policy is the bounce policy of DESIGN.md. Targets are few and each one
// matters, so only a bounce tied to a delivery by a verified token acts.
type Policy struct {
	// SuppressionTTL is how long a hard bounce suppresses an address.
	SuppressionTTL time.Duration
	// SoftThreshold soft bounces within SoftWindow pause the target for
	// SoftCooldown.
	SoftThreshold int
	SoftWindow    time.Duration
	SoftCooldown  time.Duration
}

// Processor is the watcher's Handler: it parses each message, ties it to a
// delivery, applies the policy and says where the message is filed.
type Processor struct {
	VERP    smtp.VERP
	Ledger  *ledger.Ledger
	Policy  Policy
	Metrics *metrics.Metrics // optional
	Log     *slog.Logger
}

// bounceLogCap bounds the bounce log stream; it is an audit trail, not the
// evidence store (that lives on the delivery records).
const bounceLogCap = 100_000

// Handle implements Handler. Errors are only Redis failures: the watcher
// retries the message later.
func (p *Processor) Handle(ctx context.Context, m Message) (Disposition, error) {
	res, _ := Parse(m.Raw)
	rec, how, err := p.Correlate(ctx, res)
	if err != nil {
		return 0, err
	}
	log := p.log().With("uid", m.UID, "uidvalidity", m.UIDValidity, "fingerprint", m.Fingerprint, "kind", res.Kind)
	action := "unrecognized"
	disp := Unrecognized
	if rec != nil {
		res.DeliveryID = rec.ID
		log = log.With("delivery_id", rec.ID, "campaign", rec.Campaign, "target", rec.Target, "matched_by", how)
		action, err = p.apply(ctx, log, rec, res, m)
		if err != nil {
			return 0, err
		}
		disp = Processed
	} else {
		log.Info("bounce mailbox: message not tied to a delivery; filed for a human", "is_bounce", res.IsBounce, "subject", res.Subject)
	}
	if err := p.record(ctx, m, res, action); err != nil {
		return 0, err
	}
	return disp, nil
}

// Correlate ties a parsed message to a delivery, or returns nil. Every path
// checks the token's HMAC: the VERP address the bounce came back to, the
// DSN's ENVID, the returned message's Message-ID or X-Petitiond-Delivery
// header; all carry the same signed token. The bounced recipient must then
// be the delivery's target. A forged or unrelated message matches nothing.
func (p *Processor) Correlate(ctx context.Context, res *Result) (*ledger.Record, string, error) {
	if res == nil || (!res.IsBounce && res.Kind != KindComplaint && res.Kind != KindAutoreply) {
		return nil, "", nil
	}
	for _, v := range VerifiedDeliveries(p.VERP, res) {
		rec, err := p.Ledger.Get(ctx, v.ID)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if !targetMatches(rec.Target, res) {
			p.log().Warn("bounce token verifies but the bounced recipient is not the delivery's target; ignored",
				"delivery_id", rec.ID, "target", rec.Target)
			continue
		}
		return rec, v.How, nil
	}
	return nil, "", nil
}

// Verified is a delivery id whose token's HMAC checked out, and where the
// token was found (verp, envid, message-id, header).
type Verified struct{ How, ID string }

// VerifiedDeliveries returns the delivery ids that a message carries in a
// token that verifies, most trusted first, without duplicates.
func VerifiedDeliveries(v smtp.VERP, res *Result) []Verified {
	tokenAddr := func(token string) string {
		if strings.Contains(token, "@") {
			return token
		}
		return "bounces+" + token + "@" + v.Domain
	}
	type cand struct{ how, addr string }
	var cands []cand
	for _, a := range res.CandidateAddresses {
		cands = append(cands, cand{"verp", a})
	}
	if res.EnvelopeID != "" {
		cands = append(cands, cand{"envid", tokenAddr(res.EnvelopeID)})
	}
	if id := strings.Trim(res.OriginalMessageID, "<> "); id != "" {
		local, _, _ := strings.Cut(id, "@")
		cands = append(cands, cand{"message-id", tokenAddr(local)})
	}
	for k, val := range res.OriginalHeaders {
		if strings.EqualFold(k, "X-Petitiond-Delivery") {
			cands = append(cands, cand{"header", tokenAddr(strings.TrimSpace(val))})
		}
	}
	var out []Verified
	seen := map[string]bool{}
	for _, c := range cands {
		id, err := v.Parse(c.addr)
		if err != nil || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, Verified{How: c.how, ID: id})
	}
	return out
}

// targetMatches requires a failure report to name the delivery's target.
// Auto-replies and complaints often name no recipient; for them the
// verified token is enough.
func targetMatches(target string, res *Result) bool {
	named := false
	for _, r := range res.Recipients {
		if r.Address == "" {
			continue
		}
		named = true
		if strings.EqualFold(r.Address, target) {
			return true
		}
	}
	if !named {
		return res.Kind == KindAutoreply || res.Kind == KindComplaint
	}
	return false
}

func recipientFor(target string, res *Result) Recipient {
	for _, r := range res.Recipients {
		if strings.EqualFold(r.Address, target) {
			return r
		}
	}
	if len(res.Recipients) > 0 {
		return res.Recipients[0]
	}
	return Recipient{Address: target}
}

// policyReasons are soft failures that say the target refuses us, not that
// it is busy: they pause the target rather than count.
var policyReasons = map[string]bool{
	"blocked": true, "spamdetected": true, "policyviolation": true,
	"securityerror": true,
}

func (p *Processor) apply(ctx context.Context, log *slog.Logger, rec *ledger.Record, res *Result, m Message) (string, error) {
	r := recipientFor(rec.Target, res)
	evidence := fmt.Sprintf("imap uid %d/%d fingerprint %s: %s %s", m.UIDValidity, m.UID, m.Fingerprint, r.Status, truncate(r.Diagnostic, 300))
	count := func(kind Kind) {
		if p.Metrics != nil {
			p.Metrics.Bounces.WithLabelValues(rec.Campaign, rec.Target, string(kind)).Inc()
		}
	}
	switch res.Kind {
	case KindHard:
		count(KindHard)
		if _, err := p.Ledger.MarkBounced(ctx, rec.ID, string(KindHard), r.Reason, evidence); err != nil {
			return "", err
		}
		now := time.Now()
		if err := p.Ledger.Suppress(ctx, ledger.Suppression{Address: rec.Target, Reason: r.Reason,
			Evidence: "delivery " + rec.ID + ": " + evidence, At: now, ExpiresAt: now.Add(p.Policy.SuppressionTTL)}); err != nil {
			return "", err
		}
		log.Warn("hard bounce: target suppressed", "reason", r.Reason, "status", r.Status, "expires", now.Add(p.Policy.SuppressionTTL))
		return "suppressed", nil
	case KindComplaint:
		count(KindComplaint)
		if _, err := p.Ledger.MarkBounced(ctx, rec.ID, string(KindComplaint), "feedback", evidence); err != nil {
			return "", err
		}
		if err := p.Ledger.Pause(ctx, rec.Target, "complaint (feedback report)", time.Time{}); err != nil {
			return "", err
		}
		log.Error("complaint from target: target paused until an operator resumes it")
		return "paused", nil
	case KindSoft:
		count(KindSoft)
		if _, err := p.Ledger.MarkBounced(ctx, rec.ID, string(KindSoft), r.Reason, evidence); err != nil {
			return "", err
		}
		if policyReasons[r.Reason] || strings.HasPrefix(r.Status, "5.7.") {
			if err := p.Ledger.Pause(ctx, rec.Target, "policy block: "+r.Status+" "+r.Reason, time.Time{}); err != nil {
				return "", err
			}
			log.Error("policy block by target: target paused until an operator resumes it", "reason", r.Reason, "status", r.Status)
			return "paused", nil
		}
		n, err := p.Ledger.SoftBounce(ctx, rec.Target, rec.ID, p.Policy.SoftWindow)
		if err != nil {
			return "", err
		}
		if n >= int64(p.Policy.SoftThreshold) {
			until := time.Now().Add(p.Policy.SoftCooldown)
			if err := p.Ledger.Pause(ctx, rec.Target, fmt.Sprintf("%d soft bounces within %s", n, p.Policy.SoftWindow), until); err != nil {
				return "", err
			}
			if err := p.Ledger.ClearSoftBounces(ctx, rec.Target); err != nil {
				return "", err
			}
			log.Warn("soft bounces over threshold: target paused for a cool-down", "count", n, "until", until)
			return "cooldown", nil
		}
		log.Info("soft bounce counted", "reason", r.Reason, "count", n, "threshold", p.Policy.SoftThreshold)
		return "counted", nil
	default: // delayed, autoreply: record, no action
		count(res.Kind)
		if err := p.Ledger.RecordEvent(ctx, rec.ID, string(res.Kind), evidence); err != nil {
			return "", err
		}
		log.Info("bounce recorded, no action")
		return "recorded", nil
	}
}

func (p *Processor) record(ctx context.Context, m Message, res *Result, action string) error {
	parsed, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("bounce log: %w", err)
	}
	err = p.Ledger.Client().XAdd(ctx, &redis.XAddArgs{
		Stream: rkeys.BounceLog, MaxLen: bounceLogCap, Approx: true,
		Values: map[string]any{"mailbox": m.Mailbox, "uidvalidity": m.UIDValidity, "uid": m.UID,
			"fingerprint": m.Fingerprint, "message_id": res.MessageID, "kind": string(res.Kind),
			"delivery_id": res.DeliveryID, "action": action, "result": string(parsed)},
	}).Err()
	if err != nil {
		return fmt.Errorf("bounce log: %w", err)
	}
	return nil
}

func (p *Processor) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.Default()
}
