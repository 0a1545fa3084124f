package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/testredis"
)

// 100,000 deliveries queued behind a 1/min per-address limit cost almost
// nothing while they wait: over 60 s, Redis sees at most 50 commands per
// second in all, and the daemon uses under 2 % of a core.
func TestIdleBacklogIsCheap(t *testing.T) {
	signers := 16667 // × 6 targets = 100,002 deliveries
	if testing.Short() {
		signers = 1000
	}
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	env := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	sink := startSink(t)
	cfg := writeConfig(t, srv.URL(0), sink.addr, freeAddr(t), `limits: {per_address: "1/m", per_domain: "1000/s", global: "1000/s"}`)
	d := startDaemon(t, "serve", cfg)
	targets := []string{"a@gov1.test", "b@gov1.test", "c@gov2.test", "d@gov2.test", "e@gov3.test", "f@gov3.test"}
	applyCampaign(t, env, "backlog", targets)
	cli(t, env, signatures("backlog", 0, signers), false, "enqueue")

	in := asynq.NewInspectorFromRedisClient(rdb)
	want := signers * len(targets)
	eventually(t, 5*time.Minute, "fan-out of every signature", func() bool {
		f, err := in.GetQueueInfo("fanout")
		if err != nil || f.Pending+f.Active+f.Retry > 0 {
			return false
		}
		q, err := in.GetQueueInfo("deliveries")
		return err == nil && q.Scheduled+q.Pending+q.Active+q.Completed >= want-3*len(targets)
	})
	q, _ := in.GetQueueInfo("deliveries")
	t.Logf("waiting: %d scheduled delivery tasks, %d sent so far", q.Scheduled, sink.count(t))

	ctx := context.Background()
	calls0 := commandCalls(t, ctx, rdb)
	cpu0 := cpuTicks(t, d.cmd.Process.Pid)
	start := time.Now()
	window := 60 * time.Second
	time.Sleep(window) // the measurement window itself, not synchronisation
	elapsed := time.Since(start)
	calls := commandCalls(t, ctx, rdb) - calls0 - 1           // our own INFO
	cpu := float64(cpuTicks(t, d.cmd.Process.Pid)-cpu0) / 100 // USER_HZ
	perSec := float64(calls) / elapsed.Seconds()
	cpuShare := cpu / elapsed.Seconds() * 100
	t.Logf("over %s: %d Redis commands (%.1f/s), daemon CPU %.2f s (%.2f %% of a core)",
		elapsed.Round(time.Millisecond), calls, perSec, cpu, cpuShare)
	if perSec > 50 {
		t.Errorf("%.1f Redis commands per second while waiting; want at most 50", perSec)
	}
	if cpuShare >= 2 {
		t.Errorf("daemon used %.2f %% of a core while waiting; want under 2 %%", cpuShare)
	}
}

// commandCalls sums calls= over INFO commandstats.
func commandCalls(t *testing.T, ctx context.Context, rdb redis.UniversalClient) int64 {
	t.Helper()
	text, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(text, "\n") {
		_, rest, ok := strings.Cut(line, "calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		total += n
	}
	return total
}

// cpuTicks is utime+stime of a process from /proc, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces; fields start after the last ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return ut + st
}
