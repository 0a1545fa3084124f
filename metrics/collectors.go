package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// defaultScrapeTimeout bounds one scrape-time lookup. Prometheus' default
// scrape timeout is 10 s; staying under it leaves room for the rest of the
// registry, so a slow Redis costs one family, not the whole scrape.
const defaultScrapeTimeout = 5 * time.Second

const (
	collectorTargets = "targets"
	collectorQueues  = "queues"
)

// TargetStatus is one target address as the pacing and bounce policy see it.
type TargetStatus struct {
	Target         string
	State          string // active | paused | suppressed
	BacklogSeconds float64
}

// QueueStat is the number of tasks of one asynq queue in one state
// (pending, active, scheduled, retry, archived, completed).
type QueueStat struct {
	Queue, State string
	Tasks        float64
}

// RegisterTargets adds petitiond_target_backlog_seconds{target} and
// petitiond_target_state{target,state}, computed by fn at each scrape. Call
// it once; a second call panics like any duplicate registration.
func (m *Metrics) RegisterTargets(fn func(ctx context.Context) ([]TargetStatus, error)) {
	m.Registry.MustRegister(&targetCollector{m: m, fn: fn,
		backlog: prometheus.NewDesc(namespace+"_target_backlog_seconds",
			"Seconds until the last delivery already scheduled for this target address can be sent, given its pacing limits.",
			[]string{"target"}, nil),
		state: prometheus.NewDesc(namespace+"_target_state",
			"1 for the target address's current state (active, paused, suppressed), 0 for the others.",
			[]string{"target", "state"}, nil),
	})
}

// RegisterQueues adds petitiond_queue_tasks{queue,state}, computed by fn at
// each scrape (from asynq's Inspector). Call it once.
func (m *Metrics) RegisterQueues(fn func(ctx context.Context) ([]QueueStat, error)) {
	m.Registry.MustRegister(&queueCollector{m: m, fn: fn,
		tasks: prometheus.NewDesc(namespace+"_queue_tasks",
			"Tasks in an asynq queue, by queue and state (pending, active, scheduled, retry, archived, completed).",
			[]string{"queue", "state"}, nil),
	})
}

// lookup runs fn under the scrape timeout. A fn that ignores its context is
// abandoned at the deadline so that one stuck lookup cannot hang every
// later scrape.
func lookup[T any](m *Metrics, name string, fn func(context.Context) ([]T, error)) ([]T, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), m.scrapeTimeout)
	defer cancel()
	type result struct {
		v   []T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if r.err != nil {
		m.collectorErrors.WithLabelValues(name).Inc()
		m.logger().Warn("metrics: scrape-time lookup failed; its metrics are left out of this scrape",
			"collector", name, "err", fmt.Errorf("%s lookup: %w", name, r.err))
		return nil, false
	}
	return r.v, true
}

type targetCollector struct {
	m              *Metrics
	fn             func(context.Context) ([]TargetStatus, error)
	backlog, state *prometheus.Desc
}

func (c *targetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.backlog
	ch <- c.state
}

func (c *targetCollector) Collect(ch chan<- prometheus.Metric) {
	list, ok := lookup(c.m, collectorTargets, c.fn)
	if !ok {
		return
	}
	seen := make(map[string]bool, len(list))
	for _, t := range list {
		if seen[t.Target] {
			// The registry rejects a whole scrape that repeats a series.
			c.m.logger().Warn("metrics: target reported twice; keeping the first", "target", t.Target)
			continue
		}
		seen[t.Target] = true
		if !knownState(t.State) {
			c.m.logger().Warn("metrics: target in an unknown state; reporting every known state as 0",
				"target", t.Target, "state", t.State)
		}
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, t.BacklogSeconds, t.Target)
		for _, s := range targetStates {
			v := 0.0
			if s == t.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, t.Target, s)
		}
	}
}

func knownState(s string) bool {
	for _, k := range targetStates {
		if s == k {
			return true
		}
	}
	return false
}

type queueCollector struct {
	m     *Metrics
	fn    func(context.Context) ([]QueueStat, error)
	tasks *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.tasks }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	list, ok := lookup(c.m, collectorQueues, c.fn)
	if !ok {
		return
	}
	type key struct{ q, s string }
	seen := make(map[key]bool, len(list))
	for _, q := range list {
		k := key{q.Queue, q.State}
		if seen[k] {
			c.m.logger().Warn("metrics: queue state reported twice; keeping the first", "queue", q.Queue, "state", q.State)
			continue
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, q.Tasks, q.Queue, q.State)
	}
}
