package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
)

// rejectedCap bounds the rejected stream; operators read it, so keep plenty.
const rejectedCap = 100_000

// Ingester reads the signature stream that producers in any language write
// with XADD, through a consumer group shared by every instance. An entry is
// acknowledged (and deleted) only after its signature is safely queued, or
// after it is written to the rejected stream with its reason. A crash in
// between leaves the entry pending, and it is claimed again.
type Ingester struct {
	rdb      redis.UniversalClient
	producer *Producer
	log      *slog.Logger
	consumer string
	// Block is how long one XREADGROUP waits for new entries.
	Block time.Duration
	// ClaimIdle is how long an entry may sit unacknowledged with a consumer
	// (crashed or stuck) before another one takes it.
	ClaimIdle time.Duration
}

// NewIngester returns an ingester whose consumer name is unique per process.
func NewIngester(rdb redis.UniversalClient, p *Producer, log *slog.Logger) *Ingester {
	host, _ := os.Hostname()
	return &Ingester{
		rdb: rdb, producer: p, log: log,
		consumer: fmt.Sprintf("%s-%d", host, os.Getpid()),
		Block:    5 * time.Second, ClaimIdle: time.Minute,
	}
}

// Run reads until ctx ends. Redis errors are retried with backoff.
func (in *Ingester) Run(ctx context.Context) error {
	backoff := time.Second
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		err := in.ensureGroup(ctx)
		if err == nil && time.Since(lastClaim) > in.ClaimIdle/2 {
			err = in.claimStale(ctx)
			lastClaim = time.Now()
		}
		if err == nil {
			err = in.readOnce(ctx)
		}
		if err == nil {
			backoff = time.Second
			continue
		}
		if ctx.Err() != nil {
			break
		}
		in.log.Warn("signature stream: read failed; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
	return nil
}

func (in *Ingester) ensureGroup(ctx context.Context) error {
	err := in.rdb.XGroupCreateMkStream(ctx, rkeys.SignatureStream, rkeys.IngestGroup, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create consumer group: %w", err)
	}
	return nil
}

func (in *Ingester) readOnce(ctx context.Context) error {
	res, err := in.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: rkeys.IngestGroup, Consumer: in.consumer,
		Streams: []string{rkeys.SignatureStream, ">"}, Count: 100, Block: in.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			// The stream was deleted under us; recreate on the next turn.
			return nil
		}
		return fmt.Errorf("xreadgroup: %w", err)
	}
	for _, s := range res {
		for _, m := range s.Messages {
			if err := in.handle(ctx, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// claimStale takes over entries left pending by a consumer that died.
func (in *Ingester) claimStale(ctx context.Context) error {
	start := "0-0"
	for {
		msgs, next, err := in.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: rkeys.SignatureStream, Group: rkeys.IngestGroup, Consumer: in.consumer,
			MinIdle: in.ClaimIdle, Start: start, Count: 100,
		}).Result()
		if err != nil {
			return fmt.Errorf("xautoclaim: %w", err)
		}
		for _, m := range msgs {
			if err := in.handle(ctx, m); err != nil {
				return err
			}
		}
		if next == "0-0" || len(msgs) == 0 {
			return nil
		}
		start = next
	}
}

// handle returns an error only for failures worth retrying (Redis down);
// the entry then stays pending and is read again.
func (in *Ingester) handle(ctx context.Context, m redis.XMessage) error {
	raw, ok := m.Values["json"].(string)
	var outcome Outcome
	var err error
	if !ok {
		outcome = Rejected
		err = &RejectError{Reason: "invalid", Err: errors.New(`input: the stream entry has no "json" field`)}
		if in.producer.OnResult != nil {
			in.producer.OnResult("stream", "", Rejected, "invalid")
		}
	} else {
		outcome, err = in.producer.SubmitJSON(ctx, []byte(raw), "stream")
	}
	var rej *RejectError
	switch {
	case outcome == Rejected && errors.As(err, &rej):
		// The error text may quote the input (a malformed address); it goes
		// to the rejected stream, and to the log only at debug level.
		field := ""
		var fe *campaign.FieldError
		if errors.As(rej.Err, &fe) {
			field = fe.Field
		}
		in.log.Info("signature stream: entry rejected", "entry", m.ID, "reason", rej.Reason, "field", field)
		in.log.Debug("signature stream: rejection detail", "entry", m.ID, "error", rej.Err)
		_, err := in.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.XAdd(ctx, &redis.XAddArgs{
				Stream: rkeys.RejectedStream, MaxLen: rejectedCap, Approx: true,
				Values: map[string]any{"json": raw, "reason": rej.Reason, "error": rej.Err.Error(), "source_id": m.ID},
			})
			p.XAck(ctx, rkeys.SignatureStream, rkeys.IngestGroup, m.ID)
			p.XDel(ctx, rkeys.SignatureStream, m.ID)
			return nil
		})
		if err != nil {
			return fmt.Errorf("record rejected entry %s: %w", m.ID, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("entry %s: %w", m.ID, err)
	}
	_, err = in.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, rkeys.SignatureStream, rkeys.IngestGroup, m.ID)
		p.XDel(ctx, rkeys.SignatureStream, m.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack entry %s: %w", m.ID, err)
	}
	return nil
}
