package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/petitiond/petitiond/internal/testredis"
)

// The relay is down for two minutes (the sink process stopped), then back:
// the breaker opens and closes, every delivery is sent once, and no task has
// spent its retries.
func TestRelayOutage(t *testing.T) {
	outage := 2 * time.Minute
	if testing.Short() {
		outage = 15 * time.Second
	}
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	sink := startSink(t)
	cfg := writeConfig(t, srv.URL(0), sink.addr, freeAddr(t), `limits: {per_address: "5/s", per_domain: "100/s", global: "100/s"}
delivery: {breaker_threshold: 3, breaker_probe_interval: 5s}`)
	d := startDaemon(t, "serve", cfg)
	applyCampaign(t, env, "outage", []string{"a@gov1.test", "b@gov2.test", "c@gov3.test"})
	cli(t, env, signatures("outage", 0, 60), false, "enqueue")
	eventually(t, 30*time.Second, "the first messages", func() bool { return sink.count(t) >= 10 })

	sink.proc.signal(sigTERM)
	sink.proc.wait(10 * time.Second)
	down := time.Now()
	eventually(t, 60*time.Second, "the breaker to open", func() bool {
		return strings.Contains(cli(t, env, "", false, "status"), "breaker open")
	})
	before := sink.count(t)
	t.Logf("relay down after %d messages; breaker open after %s", before, time.Since(down).Round(time.Millisecond))
	time.Sleep(outage - time.Since(down)) // the outage itself, not synchronisation

	back := startSinkAt(t, sink.addr, sink.dir)
	eventually(t, 3*time.Minute, "all 180 messages after the relay is back", func() bool { return back.count(t) >= 180 })
	t.Logf("all sent %s after the relay came back", time.Since(down.Add(outage)).Round(time.Second))
	if got := len(checkArrivals(t, back)); got != 180 {
		t.Fatalf("%d distinct deliveries; want 180", got)
	}
	status := cli(t, env, "", false, "status")
	if !strings.Contains(status, "breaker closed; opened 1 time(s)") {
		t.Errorf("status does not show the breaker closed after one opening:\n%s", status)
	}
	if !logContains(t, d.proc, "relay circuit breaker opened") || !logContains(t, d.proc, "relay circuit breaker closed") {
		t.Errorf("the daemon log does not show the breaker opening and closing")
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("deliveries")
	if err != nil {
		t.Fatal(err)
	}
	if info.Archived != 0 || info.Retry != 0 {
		t.Fatalf("%d archived, %d waiting to retry: the outage must not spend retries", info.Archived, info.Retry)
	}
}
