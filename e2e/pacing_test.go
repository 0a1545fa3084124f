package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/queue/ledger"
	"github.com/petitiond/petitiond/smtp"
)

// Three daemons share one Redis and one sink. 2,000 signatures × 6 targets
// go through with per-address 10/s, per-domain 30/s and global 50/s; one
// daemon is killed with SIGKILL in the middle of the run and restarted.
// The sink's arrival log must show every delivery, no limit exceeded by more
// than one message in any window, and duplicates no more than the deliveries
// the killed process had in flight.
func TestThreeInstancesPaceAndSurviveKill(t *testing.T) {
	signers := 2000
	if testing.Short() {
		signers = 300
	}
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	// Each transaction takes 100 ms at the relay, so the killed daemon has
	// deliveries in flight: some already stored by the relay, not yet
	// marked sent. Those are the duplicates the ledger cannot prevent.
	sink := startSink(t, "--delay", "100ms")
	targets := []string{"a@gov1.test", "b@gov1.test", "c@gov1.test", "d@gov2.test", "e@gov2.test", "f@gov2.test"}
	limits := `limits: {per_address: "10/s", per_domain: "30/s", global: "50/s"}
delivery: {concurrency: 40}`
	var daemons []*daemon
	var cfgs []string
	for i := 0; i < 3; i++ {
		cfg := writeConfig(t, srv.URL(0), sink.addr, freeAddr(t), limits)
		cfgs = append(cfgs, cfg)
		daemons = append(daemons, startDaemon(t, fmt.Sprintf("serve-%d", i), cfg))
	}
	applyCampaign(t, env, "pace", targets)
	total := signers * len(targets)
	start := time.Now()
	out := cli(t, env, signatures("pace", 0, signers), false, "enqueue")
	if n := strings.Count(out, `"accepted"`); n != signers {
		t.Fatalf("enqueue accepted %d of %d", n, signers)
	}

	// Kill one daemon mid-run.
	eventually(t, 10*time.Minute, "a third of the messages", func() bool { return sink.count(t) >= total/3 })
	victim := daemons[1]
	owner := fmt.Sprintf("-%d", victim.cmd.Process.Pid)
	victim.kill9()
	killedAt := sink.count(t)
	// What the dead process had claimed and not marked sent: its in-flight
	// deliveries, the bound on duplicates.
	inflight := claimsOf(t, rdb, owner)
	t.Logf("killed %s after %d arrivals with %d deliveries in flight", victim.name, killedAt, inflight)
	daemons[1] = startDaemon(t, "serve-1-restarted", cfgs[1])

	eventually(t, 15*time.Minute, fmt.Sprintf("all %d deliveries", total), func() bool {
		return sink.count(t) >= total && len(distinct(sink.arrivals(t))) >= total
	})
	elapsed := time.Since(start)
	for _, d := range daemons {
		for _, l := range strings.Split(metricsText(t, d.http), "\n") {
			if strings.HasPrefix(l, "petitiond_deferrals_total") && !strings.HasSuffix(l, " 0") {
				t.Logf("%s: %s", d.name, l)
			}
		}
	}
	arr := sink.arrivals(t)
	dups := len(arr) - len(distinct(arr))
	t.Logf("%d deliveries in %s (%.1f/s), %d duplicate(s), %d in flight at the kill",
		total, elapsed.Round(time.Second), float64(total)/elapsed.Seconds(), dups, inflight)
	if dups > inflight {
		t.Fatalf("%d duplicates; at most the %d deliveries in flight at the kill may repeat", dups, inflight)
	}

	// Windows: per address, per domain, global.
	byKey := map[string][]time.Time{}
	for _, a := range arr {
		addr := strings.ToLower(a.To)
		byKey["addr:"+addr] = append(byKey["addr:"+addr], a.Time)
		byKey["domain:"+addr[strings.IndexByte(addr, '@')+1:]] = append(byKey["domain:"+addr[strings.IndexByte(addr, '@')+1:]], a.Time)
		byKey["global"] = append(byKey["global"], a.Time)
	}
	limitOf := func(key string) int {
		switch {
		case strings.HasPrefix(key, "addr:"):
			return 10
		case strings.HasPrefix(key, "domain:"):
			return 30
		}
		return 50
	}
	for key, times := range byKey {
		n := limitOf(key)
		if worst, at := maxInWindow(times, time.Second); worst > n+1 {
			t.Errorf("%s: %d arrivals within one second from %s; limit %d/s (+1 allowed)", key, worst, at.Format("15:04:05.000"), n)
		} else {
			t.Logf("%s: at most %d arrivals in any 1 s window (limit %d)", key, worst, n)
		}
	}
}

// maxInWindow is the largest number of times within any window of length w,
// and where that window starts.
func maxInWindow(times []time.Time, w time.Duration) (int, time.Time) {
	worst, j := 0, 0
	var at time.Time
	for i := range times {
		for times[i].Sub(times[j]) >= w {
			j++
		}
		if n := i - j + 1; n > worst {
			worst, at = n, times[j]
		}
	}
	return worst, at
}

func distinct(arr []smtp.Arrival) map[string]bool {
	m := map[string]bool{}
	for _, a := range arr {
		id := a.DeliveryID
		if len(id) > 32 {
			id = id[:32]
		}
		m[id] = true
	}
	return m
}

// claimsOf counts deliveries left in "sending" by a process whose claim owner
// ends with suffix (host-pid).
func claimsOf(t *testing.T, rdb redis.UniversalClient, suffix string) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	iter := rdb.Scan(ctx, 0, "petitiond:delivery:*", 1000).Iterator()
	for iter.Next(ctx) {
		h, err := rdb.HMGet(ctx, iter.Val(), "state", "owner").Result()
		if err != nil {
			t.Fatal(err)
		}
		st, _ := h[0].(string)
		owner, _ := h[1].(string)
		if st == string(ledger.Sending) && strings.HasSuffix(owner, suffix) {
			n++
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
