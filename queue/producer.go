package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
)

// Outcome is what became of one submission.
type Outcome string

const (
	// Accepted: the signature is safely queued for fan-out.
	Accepted Outcome = "accepted"
	// Duplicate: this signature id was submitted before; nothing more is sent.
	Duplicate Outcome = "duplicate"
	// Rejected: the input is invalid; the error says why.
	Rejected Outcome = "rejected"
)

// RejectError is returned for input that petitiond will never accept. Reason
// is a short fixed word for metrics and the rejected stream (invalid,
// unknown_campaign, campaign_closed); Err names the field at fault.
type RejectError struct {
	Reason string
	Err    error
}

func (e *RejectError) Error() string { return e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

// Producer submits signatures. It is the Go API for campaign frontends and
// the one validated path that the stream ingester and `petitiond enqueue`
// use too. It needs only a Redis client.
type Producer struct {
	rdb    redis.UniversalClient
	client *asynq.Client
	// OnResult, when set, is told the outcome of every submission (the
	// daemon counts them in metrics). campaign is empty for rejected input,
	// whose campaign field is not trusted to be a bounded label.
	OnResult func(source, campaign string, outcome Outcome, reason string)
}

// NewProducer returns a Producer on rdb. Close it when done.
func NewProducer(rdb redis.UniversalClient) *Producer {
	return &Producer{rdb: rdb, client: asynq.NewClientFromRedisClient(rdb)}
}

// Close releases the producer. The Redis client is the caller's and stays
// open; asynq refuses to close a shared connection, so there is nothing else
// to release.
func (p *Producer) Close() error { return nil }

// fanoutRetention keeps a finished fan-out task's id reserved for a while,
// so a resubmission that races the fan-out is still seen as a duplicate;
// after that the signature record answers.
const fanoutRetention = 24 * time.Hour

// Submit validates a signature and queues it. A signature id seen before
// gives Duplicate and no error. Invalid input gives Rejected and a
// *RejectError naming the field.
func (p *Producer) Submit(ctx context.Context, sig campaign.Signature) (Outcome, error) {
	return p.submit(ctx, sig, "api")
}

// SubmitJSON parses and submits one signature in the JSON format of
// docs/signature.md. source names the path ("stream", "cli", "api") in
// logs and metrics.
func (p *Producer) SubmitJSON(ctx context.Context, data []byte, source string) (Outcome, error) {
	sig, err := campaign.ParseSignature(data)
	if err != nil {
		return p.result(source, sig.Campaign, Rejected, &RejectError{Reason: "invalid", Err: err})
	}
	return p.submit(ctx, sig, source)
}

func (p *Producer) submit(ctx context.Context, sig campaign.Signature, source string) (Outcome, error) {
	if err := sig.Validate(); err != nil {
		return p.result(source, sig.Campaign, Rejected, &RejectError{Reason: "invalid", Err: err})
	}
	var status *redis.StringCmd
	var seen *redis.IntCmd
	_, err := p.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		status = pl.HGet(ctx, rkeys.Campaign(sig.Campaign), "status")
		seen = pl.Exists(ctx, rkeys.Signature(sig.ID))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("submit %s: %w", sig.ID, err)
	}
	switch campaign.Status(status.Val()) {
	case "":
		return p.result(source, sig.Campaign, Rejected, &RejectError{Reason: "unknown_campaign",
			Err: fmt.Errorf("campaign: unknown campaign %q", sig.Campaign)})
	case campaign.StatusClosed:
		return p.result(source, sig.Campaign, Rejected, &RejectError{Reason: "campaign_closed",
			Err: fmt.Errorf("campaign: campaign %q is closed", sig.Campaign)})
	}
	if seen.Val() == 1 {
		return p.result(source, sig.Campaign, Duplicate, nil)
	}
	payload, err := encode(fanoutPayload{Signature: sig, AcceptedAt: time.Now().UTC(), Source: source})
	if err != nil {
		return "", err
	}
	_, err = p.client.EnqueueContext(ctx, asynq.NewTask(TypeFanout, payload),
		asynq.Queue(QueueFanout), asynq.TaskID(fanoutTaskID(sig.ID)),
		asynq.MaxRetry(25), asynq.Retention(fanoutRetention))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
		return p.result(source, sig.Campaign, Duplicate, nil)
	case err != nil:
		return "", fmt.Errorf("submit %s: enqueue: %w", sig.ID, err)
	}
	return p.result(source, sig.Campaign, Accepted, nil)
}

func (p *Producer) result(source, camp string, o Outcome, err error) (Outcome, error) {
	if p.OnResult != nil {
		reason := ""
		var re *RejectError
		if errors.As(err, &re) {
			reason = re.Reason
			camp = ""
		}
		p.OnResult(source, camp, o, reason)
	}
	return o, err
}
