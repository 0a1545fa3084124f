package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
)

// Signature outcomes, as counted in petitiond_signatures_total.
const (
	OutcomeAccepted        = "accepted"
	OutcomeDuplicate       = "duplicate"
	OutcomeCampaignClosed  = "campaign_closed"
	OutcomeUnknownCampaign = "unknown_campaign"
)

// SignatureRecord says what became of one submitted signature.
type SignatureRecord struct {
	ID         string
	Campaign   string
	Outcome    string
	Deliveries []string
	// DuplicateOf names the earlier signature by the same signer.
	DuplicateOf string
	AcceptedAt  time.Time
}

// ClaimSigner marks (campaign, signer) as taken by signature id. It returns
// the id of the signature that took it first, which is id itself when this
// signature is the first (or a retry of the first).
func (l *Ledger) ClaimSigner(ctx context.Context, campaign, signerKey, id string) (string, error) {
	key := rkeys.Signer(campaign, signerKey)
	ok, err := l.rdb.SetNX(ctx, key, id, l.ttl).Result()
	if err != nil {
		return "", fmt.Errorf("ledger: claim signer: %w", err)
	}
	if ok {
		return id, nil
	}
	first, err := l.rdb.Get(ctx, key).Result()
	if err != nil {
		return "", fmt.Errorf("ledger: claim signer: %w", err)
	}
	return first, nil
}

// SaveSignature writes the signature's record.
func (l *Ledger) SaveSignature(ctx context.Context, r SignatureRecord) error {
	key := rkeys.Signature(r.ID)
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "campaign", r.Campaign, "outcome", r.Outcome,
			"deliveries", strings.Join(r.Deliveries, ","), "duplicate_of", r.DuplicateOf,
			"accepted_at", ms(r.AcceptedAt))
		p.PExpire(ctx, key, l.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: save signature %s: %w", r.ID, err)
	}
	return nil
}

// Signature returns a signature's record, ErrNotFound when it has none
// (never submitted, not yet fanned out, or expired).
func (l *Ledger) Signature(ctx context.Context, id string) (*SignatureRecord, error) {
	h, err := l.rdb.HGetAll(ctx, rkeys.Signature(id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("ledger: signature %s: %w", id, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("%w: signature %s", ErrNotFound, id)
	}
	r := &SignatureRecord{ID: id, Campaign: h["campaign"], Outcome: h["outcome"],
		DuplicateOf: h["duplicate_of"], AcceptedAt: fromMS(h["accepted_at"])}
	if d := h["deliveries"]; d != "" {
		r.Deliveries = strings.Split(d, ",")
	}
	return r, nil
}

// SignatureExists reports whether a signature id was already fanned out.
func (l *Ledger) SignatureExists(ctx context.Context, id string) (bool, error) {
	n, err := l.rdb.Exists(ctx, rkeys.Signature(id)).Result()
	if err != nil {
		return false, fmt.Errorf("ledger: signature %s: %w", id, err)
	}
	return n == 1, nil
}
