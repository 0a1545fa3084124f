package queue

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/petitiond/petitiond/campaign"
)

// Task types and queues. Deliveries have their own queue so that the relay
// circuit breaker can pause it without stopping fan-out.
const (
	TypeFanout  = "petitiond:fanout"
	TypeDeliver = "petitiond:deliver"

	QueueFanout     = "fanout"
	QueueDeliveries = "deliveries"
)

// Queues lists the queues petitiond serves, for status and metrics.
var Queues = []string{QueueFanout, QueueDeliveries}

// fanoutPayload is one accepted signature waiting to be fanned out.
type fanoutPayload struct {
	Signature  campaign.Signature `json:"signature"`
	AcceptedAt time.Time          `json:"accepted_at"`
	Source     string             `json:"source"`
}

// deliveryPayload is one (signature, target) message. It carries what the
// letter needs, so a delivery never depends on the signature still being
// stored elsewhere.
type deliveryPayload struct {
	DeliveryID  string          `json:"delivery_id"`
	Campaign    string          `json:"campaign"`
	SignatureID string          `json:"signature_id"`
	Target      campaign.Target `json:"target"`
	Signer      campaign.Signer `json:"signer"`
	Comment     string          `json:"comment,omitempty"`
	SignedAt    time.Time       `json:"signed_at"`
	AcceptedAt  time.Time       `json:"accepted_at"`
}

func (p *deliveryPayload) signature() *campaign.Signature {
	return &campaign.Signature{
		Version: campaign.SignatureVersion, ID: p.SignatureID, Campaign: p.Campaign,
		Signer: p.Signer, Comment: p.Comment, SignedAt: p.SignedAt,
	}
}

func decode[T any](data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("queue: bad task payload: %w", err)
	}
	return v, nil
}

// fanoutTaskID makes resubmitting the same signature harmless while its
// fan-out task is retained.
func fanoutTaskID(sigID string) string { return "sig:" + sigID }

// deliveryTaskID keeps one live task per delivery; it is free again once
// the task is done, so a held delivery can be enqueued anew on resume.
func deliveryTaskID(id string) string { return "dlv:" + id }

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("queue: encode payload: %w", err)
	}
	return b, nil
}
