package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/queue/ledger"
)

// deliveryMaxRetry is generous because MaxAge, not the count, ends retries;
// deferrals and relay outages do not count at all.
const deliveryMaxRetry = 1000

// handleFanout turns one signature into one delivery per campaign target.
// It is safe to run twice: the signer claim, the ledger records and the
// delivery task ids are all idempotent.
func (e *Engine) handleFanout(ctx context.Context, t *asynq.Task) error {
	p, err := decode[fanoutPayload](t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	sig := p.Signature
	log := e.log.With("signature", sig.ID, "campaign", sig.Campaign)
	camp, err := e.d.Campaigns.Get(ctx, sig.Campaign)
	switch {
	case errors.Is(err, campaign.ErrNotFound):
		log.Warn("signature for an unknown campaign: nothing sent")
		return e.finishSignature(ctx, sig, ledger.OutcomeUnknownCampaign, nil, "")
	case err != nil:
		return fmt.Errorf("fan-out %s: %w", sig.ID, err)
	case camp.Status == campaign.StatusClosed:
		log.Info("signature for a closed campaign: nothing sent")
		return e.finishSignature(ctx, sig, ledger.OutcomeCampaignClosed, nil, "")
	}
	ids := make([]string, len(camp.Targets))
	for i, tg := range camp.Targets {
		ids[i] = campaign.DeliveryID(camp.ID, sig.Signer.Email, tg.Address)
	}
	first, err := e.d.Ledger.ClaimSigner(ctx, camp.ID, campaign.SignerKey(camp.ID, sig.Signer.Email), sig.ID)
	if err != nil {
		return fmt.Errorf("fan-out %s: %w", sig.ID, err)
	}
	if first != sig.ID {
		log.Info("signer already signed this campaign: nothing more sent", "first_signature", first)
		for _, tg := range camp.Targets {
			e.d.Metrics.Deliveries.WithLabelValues(camp.ID, tg.Address, "duplicate").Inc()
		}
		return e.finishSignature(ctx, sig, ledger.OutcomeDuplicate, ids, first)
	}
	addrs := make([]string, len(camp.Targets))
	for i, tg := range camp.Targets {
		addrs[i] = tg.Address
	}
	// Zero-valued series from the first signature on, so rates and alerts
	// work before anything fails; idempotent and cheap.
	e.d.Metrics.PrepareCampaign(camp.ID, addrs)
	if err := e.d.Ledger.AddTargets(ctx, addrs...); err != nil {
		return fmt.Errorf("fan-out %s: %w", sig.ID, err)
	}
	for i, tg := range camp.Targets {
		dp := deliveryPayload{
			DeliveryID: ids[i], Campaign: camp.ID, SignatureID: sig.ID, Target: tg,
			Signer: sig.Signer, Comment: sig.Comment, SignedAt: sig.SignedAt, AcceptedAt: p.AcceptedAt,
		}
		st, err := e.d.Ledger.Create(ctx, ledger.Record{ID: dp.DeliveryID, Campaign: camp.ID,
			Target: tg.Address, Signature: sig.ID, SubmittedAt: p.AcceptedAt})
		if err != nil {
			return fmt.Errorf("fan-out %s: %w", sig.ID, err)
		}
		if st.Final() {
			continue
		}
		if err := e.schedule(ctx, camp, dp, st == ""); err != nil {
			return fmt.Errorf("fan-out %s: %w", sig.ID, err)
		}
	}
	return e.finishSignature(ctx, sig, ledger.OutcomeAccepted, ids, "")
}

// schedule books a send slot for a delivery (when book is set; a delivery
// that already has one, from an interrupted fan-out, is enqueued for now)
// and enqueues its task for that slot. A backlog therefore waits in Redis
// as scheduled tasks, each woken once, near its slot.
func (e *Engine) schedule(ctx context.Context, camp *campaign.Campaign, dp deliveryPayload, book bool) error {
	at := time.Now()
	if book {
		limits, err := e.d.Limits.For(camp, dp.Target.Address)
		if err != nil {
			return err
		}
		if at, err = e.d.Limiter.Reserve(ctx, limits, time.Time{}); err != nil {
			return err
		}
		if err := e.d.Ledger.SetSlot(ctx, dp.DeliveryID, at); err != nil {
			return err
		}
	}
	return e.Admin.enqueueDelivery(ctx, dp, at)
}

func (e *Engine) finishSignature(ctx context.Context, sig campaign.Signature, outcome string, ids []string, dupOf string) error {
	err := e.d.Ledger.SaveSignature(ctx, ledger.SignatureRecord{ID: sig.ID, Campaign: sig.Campaign,
		Outcome: outcome, Deliveries: ids, DuplicateOf: dupOf, AcceptedAt: time.Now()})
	if err != nil {
		return err
	}
	label := sig.Campaign
	if outcome == ledger.OutcomeUnknownCampaign {
		// An unknown campaign id is not a bounded label.
		label = ""
	}
	e.d.Metrics.Signatures.WithLabelValues(label, outcome).Inc()
	return nil
}
