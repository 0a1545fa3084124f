// Package queue owns the path of a signature from submission to the relay:
// the asynq task types, the Go producer API, the Redis-stream ingester for
// producers in other languages, fan-out into one delivery per target, pacing
// of every delivery through a booked send slot, the delivery handler with its
// crash-safe claim, retries and the relay circuit breaker.
//
// The durable state (delivery ledger, suppressions, pauses) lives in
// queue/ledger and the rate limiter in queue/pacing; neither knows asynq.
package queue
