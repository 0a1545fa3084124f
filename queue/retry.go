package queue

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
)

// deferError puts a task off until a given time without counting a failed
// attempt: the task is not at fault (its slot is later, another worker holds
// its claim).
type deferError struct {
	until  time.Time
	reason string
}

func (e *deferError) Error() string {
	return "deferred until " + e.until.Format(time.RFC3339) + ": " + e.reason
}

// relayDownError puts a task off while the relay is unusable, without
// spending its retries: the relay being down is not the delivery's problem.
type relayDownError struct{ err error }

func (e *relayDownError) Error() string { return "relay down: " + e.err.Error() }
func (e *relayDownError) Unwrap() error { return e.err }

// isFailure tells asynq which errors count against a task's retries.
func isFailure(err error) bool {
	var d *deferError
	var r *relayDownError
	return !errors.As(err, &d) && !errors.As(err, &r)
}

// retryDelay schedules the next attempt. asynq has second precision and
// forwards due tasks every ForwardInterval; the handler paces finer.
func (e *Engine) retryDelay(n int, err error, t *asynq.Task) time.Duration {
	var d *deferError
	if errors.As(err, &d) {
		return max(time.Until(d.until), time.Second)
	}
	var r *relayDownError
	if errors.As(err, &r) {
		return e.opts.ProbeInterval
	}
	return backoff(n, e.opts.RetryBase, e.opts.RetryMax)
}

// backoff is exponential with ±25 % jitter, so that deliveries that failed
// together do not come back together.
func backoff(n int, base, maxDelay time.Duration) time.Duration {
	d := base
	for i := 0; i < n && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	jitter := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return max(d+jitter, time.Second)
}
