package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/smtp"
)

// handleDeliver sends one message to one target, at most once.
//
// Order matters: state checks, then the send slot, then the claim, then
// SMTP, then the ledger. The claim is what makes a requeued task harmless:
// asynq requeues a task whose handler outlived the shutdown timeout while
// that handler may still be in DATA, and the second run finds the claim.
func (e *Engine) handleDeliver(ctx context.Context, t *asynq.Task) error {
	p, err := decode[deliveryPayload](t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := e.log.With("delivery_id", p.DeliveryID, "campaign", p.Campaign,
		"target", p.Target.Address, "signature", p.SignatureID)

	pre, err := e.Admin.precheck(ctx, p.DeliveryID, p.Campaign, p.Target.Address)
	if err != nil {
		return err
	}
	switch {
	case pre.state.Final():
		return nil
	case pre.state == "":
		// The record expired or was never written (a task older than the
		// ledger TTL): recreate it so the send is still guarded.
		if _, err := e.d.Ledger.Create(ctx, ledger.Record{ID: p.DeliveryID, Campaign: p.Campaign,
			Target: p.Target.Address, Signature: p.SignatureID, SubmittedAt: p.AcceptedAt}); err != nil {
			return err
		}
	}
	if pre.campaignStatus != campaign.StatusOpen {
		return e.drop(ctx, log, p, "campaign_closed")
	}
	if pre.suppressed {
		return e.drop(ctx, log, p, "suppressed")
	}
	if pre.paused {
		held, err := e.hold(ctx, p)
		if err != nil || held {
			return err
		}
	}
	camp, err := e.d.Campaigns.Get(ctx, p.Campaign)
	if err != nil {
		if errors.Is(err, campaign.ErrNotFound) {
			return e.drop(ctx, log, p, "campaign_closed")
		}
		return err
	}

	// Pace: book the actual send time; sleep for it when it is near, or give
	// the worker back and come back near it.
	limits, err := e.d.Limits.For(camp, p.Target.Address)
	if err != nil {
		return err
	}
	at, ok, err := e.d.Limiter.Acquire(ctx, limits, e.opts.MaxPaceWait)
	if err != nil {
		return err
	}
	if !ok {
		e.d.Metrics.Deferrals.WithLabelValues(p.Target.Address, "rate_limited").Inc()
		return &deferError{until: at, reason: "rate limited"}
	}
	if err := sleepUntil(ctx, at); err != nil {
		return err
	}

	res, wait, err := e.d.Ledger.Claim(ctx, p.DeliveryID, e.opts.ClaimLease, e.owner)
	if err != nil {
		return err
	}
	switch res {
	case ledger.Done:
		return nil
	case ledger.InFlight:
		log.Info("delivery claimed by another worker; checking again after its lease", "wait", wait)
		return &deferError{until: time.Now().Add(wait), reason: "in flight elsewhere"}
	case ledger.Missing:
		return fmt.Errorf("delivery %s: ledger record vanished", p.DeliveryID)
	}

	msg, err := e.compose(camp, p)
	if err != nil {
		// The campaign was validated when applied, so this is a bug or a
		// campaign changed under us; retrying will not help.
		log.Error("cannot compose message", "error", err)
		if _, ferr := e.d.Ledger.MarkFailed(ctx, p.DeliveryID, "render", err.Error()); ferr != nil {
			return ferr
		}
		e.d.Metrics.Deliveries.WithLabelValues(p.Campaign, p.Target.Address, "failed").Inc()
		return nil
	}
	env := smtp.Envelope{From: e.d.Sender.VERP.Address(p.DeliveryID), To: p.Target.Address, EnvID: e.token(p.DeliveryID)}
	start := time.Now()
	sendErr := e.d.Relay.Send(ctx, env, msg)
	e.d.Metrics.SMTPTransaction.Observe(time.Since(start).Seconds())
	if sendErr == nil {
		// The one window for a duplicate is here: the relay said 250 and
		// the process dies before this write. The claim's lease then
		// expires and another worker sends again.
		if err := e.d.Ledger.MarkSent(ctx, p.DeliveryID, "250"); err != nil {
			log.Error("sent, but the ledger write failed", "error", err)
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		e.breaker.success()
		e.d.Metrics.Deliveries.WithLabelValues(p.Campaign, p.Target.Address, "sent").Inc()
		if !p.AcceptedAt.IsZero() {
			e.d.Metrics.DeliveryLatency.Observe(time.Since(p.AcceptedAt).Seconds())
		}
		log.Info("delivered", "attempt", attemptOf(ctx))
		return nil
	}
	return e.sendFailed(ctx, log, p, sendErr)
}

func (e *Engine) sendFailed(ctx context.Context, log *slog.Logger, p deliveryPayload, sendErr error) error {
	se, ok := smtp.AsError(sendErr)
	reply := sendErr.Error()
	if ok && se.RelayDown {
		if err := e.d.Ledger.ReleaseClaim(ctx, p.DeliveryID, reply); err != nil {
			return err
		}
		e.d.Metrics.Deferrals.WithLabelValues(p.Target.Address, "relay_down").Inc()
		e.breaker.failure(ctx, se)
		log.Warn("relay unusable; delivery waits", "error", sendErr)
		return &relayDownError{err: sendErr}
	}
	e.breaker.success()
	if ok && !se.Temporary && se.Code >= 500 {
		code := se.EnhancedCode
		if strings.HasPrefix(code, "5.7.") {
			// A policy block is about us, not the message: stop writing to
			// this target and keep the delivery for when it is resumed.
			if err := e.d.Ledger.ReleaseClaim(ctx, p.DeliveryID, reply); err != nil {
				return err
			}
			if err := e.d.Ledger.Pause(ctx, p.Target.Address, "relay refused with "+code+": "+se.Message, time.Time{}); err != nil {
				return err
			}
			log.Warn("target refused us on policy grounds; target paused", "code", code, "reply", se.Message)
			_, err := e.hold(ctx, p)
			return err
		}
		reason := reasonForCode(code)
		if _, err := e.d.Ledger.MarkFailed(ctx, p.DeliveryID, reason, reply); err != nil {
			return err
		}
		e.d.Metrics.Deliveries.WithLabelValues(p.Campaign, p.Target.Address, "failed").Inc()
		log.Warn("delivery failed permanently", "code", se.Code, "enhanced_code", code, "reason", reason)
		if strings.HasPrefix(code, "5.1.") {
			now := time.Now()
			if err := e.d.Ledger.Suppress(ctx, ledger.Suppression{Address: p.Target.Address, Reason: reason,
				Evidence: "delivery " + p.DeliveryID + ": " + reply, At: now, ExpiresAt: now.Add(e.opts.SuppressionTTL)}); err != nil {
				return err
			}
			log.Warn("target suppressed", "reason", reason)
		}
		return nil
	}
	// 4xx or a network error during the transaction: retry with backoff
	// until MaxAge.
	if err := e.d.Ledger.ReleaseClaim(ctx, p.DeliveryID, reply); err != nil {
		return err
	}
	if !p.AcceptedAt.IsZero() && time.Since(p.AcceptedAt) > e.opts.MaxAge {
		if _, err := e.d.Ledger.MarkFailed(ctx, p.DeliveryID, "expired", reply); err != nil {
			return err
		}
		e.d.Metrics.Deliveries.WithLabelValues(p.Campaign, p.Target.Address, "failed").Inc()
		log.Warn("delivery expired after temporary failures", "max_age", e.opts.MaxAge, "last_reply", reply)
		return nil
	}
	e.d.Metrics.Deferrals.WithLabelValues(p.Target.Address, "temp_failure").Inc()
	log.Info("temporary failure; will retry", "error", sendErr, "attempt", attemptOf(ctx))
	return fmt.Errorf("delivery %s: temporary failure: %w", p.DeliveryID, sendErr)
}

func (e *Engine) drop(ctx context.Context, log *slog.Logger, p deliveryPayload, reason string) error {
	changed, err := e.d.Ledger.MarkDropped(ctx, p.DeliveryID, reason)
	if err != nil {
		return err
	}
	if changed {
		e.d.Metrics.Deliveries.WithLabelValues(p.Campaign, p.Target.Address, "dropped").Inc()
		log.Info("delivery dropped", "reason", reason)
	}
	return nil
}

// hold parks the delivery while its target is paused.
func (e *Engine) hold(ctx context.Context, p deliveryPayload) (bool, error) {
	payload, err := encode(p)
	if err != nil {
		return false, err
	}
	held, err := e.d.Ledger.HoldIfPaused(ctx, p.Target.Address, string(payload))
	if err != nil {
		return false, err
	}
	if held {
		e.d.Metrics.Deferrals.WithLabelValues(p.Target.Address, "target_paused").Inc()
	}
	return held, nil
}

func (e *Engine) compose(camp *campaign.Campaign, p deliveryPayload) ([]byte, error) {
	letter, err := camp.Render(p.signature(), p.Target)
	if err != nil {
		return nil, err
	}
	msg, err := smtp.Compose(smtp.Message{
		FromName: letter.FromName, FromAddress: e.d.Sender.From,
		ReplyToName: p.Signer.Name, ReplyToAddress: p.Signer.Email,
		ToName: p.Target.Name, ToAddress: p.Target.Address,
		Subject: letter.Subject, Body: letter.Body, Locale: letter.Locale,
		MessageID:  smtp.MessageIDFor(e.token(p.DeliveryID), e.d.Sender.From),
		DeliveryID: e.token(p.DeliveryID), Date: time.Now(),
	})
	if err != nil {
		return nil, err
	}
	if e.d.Sender.DKIM != nil {
		return e.d.Sender.DKIM.Sign(msg)
	}
	return msg, nil
}

// token is the signed VERP token of a delivery. The ENVID, the Message-ID
// and the X-Petitiond-Delivery header all carry it rather than the bare id,
// so that a bounce tied to a delivery by any of them is verified by its
// HMAC: delivery ids are hashes of guessable inputs.
func (e *Engine) token(id string) string {
	addr := e.d.Sender.VERP.Address(id)
	local := addr[:strings.LastIndexByte(addr, '@')]
	return strings.TrimPrefix(local, "bounces+")
}

// reasonForCode names a send-time permanent failure with DESIGN.md's words.
func reasonForCode(code string) string {
	switch {
	case code == "5.1.2" || code == "5.1.10":
		return "hostunknown"
	case code == "5.1.6":
		return "hasmoved"
	case strings.HasPrefix(code, "5.1."):
		return "userunknown"
	case code == "5.2.2":
		return "mailboxfull"
	case code == "5.3.4" || code == "5.2.3":
		return "mesgtoobig"
	case code == "5.2.1":
		return "suspend"
	case strings.HasPrefix(code, "5.7."):
		return "blocked"
	}
	return "rejected"
}

func sleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func attemptOf(ctx context.Context) int {
	n, _ := asynq.GetRetryCount(ctx)
	return n + 1
}
