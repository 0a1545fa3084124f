package ledger_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testredis"
	"github.com/petitiond/petitiond/queue/ledger"
)

// The values below are what a real campaign writes: a campaign id, target
// addresses of ministries and missions, producer signature ids, a claim
// owner of the form host-pid, and the reply the delivery handler stores for
// a sent message.
const (
	memCampaign = "kz-baltabay"
	memReply    = "250"
	memTTL      = 90 * 24 * time.Hour
	memOwner    = "mail-01.petitions.example.org-48213"
)

var memTargets = []string{
	"press@mfa.example", "mission@kz-geneva.example", "info@akorda.example",
	"kanc@prokuror.example", "office@ombudsman.example", "un-mission@kz-newyork.example",
}

func memSigner(i int) string { return fmt.Sprintf("signer.%06d@example.org", i) }
func memSigID(i int) string  { return fmt.Sprintf("sig-%06d", i) }

// memDelivery is the record of signer i/6 to target i%6, taken through the
// whole life of a delivery that was sent: created, claimed, marked sent.
func memDelivery(ctx context.Context, l *ledger.Ledger, i int) error {
	id := memDeliveryID(i)
	if _, err := l.Create(ctx, ledger.Record{ID: id, Campaign: memCampaign, Target: memTargets[i%len(memTargets)],
		Signature: memSigID(i / len(memTargets)), SubmittedAt: time.Now()}); err != nil {
		return err
	}
	if err := l.SetSlot(ctx, id, time.Now().Add(time.Minute)); err != nil {
		return err
	}
	res, _, err := l.Claim(ctx, id, 5*time.Minute, memOwner)
	if err != nil {
		return err
	}
	if res != ledger.Claimed {
		return fmt.Errorf("claim %s = %v, want Claimed", id, res)
	}
	return l.MarkSent(ctx, id, memReply)
}

func memDeliveryID(i int) string {
	return campaign.DeliveryID(memCampaign, memSigner(i/len(memTargets)), memTargets[i%len(memTargets)])
}

// memSignature is the record of an accepted signature that made one delivery
// per target.
func memSignature(ctx context.Context, l *ledger.Ledger, i int) error {
	ids := make([]string, len(memTargets))
	for j, target := range memTargets {
		ids[j] = campaign.DeliveryID(memCampaign, memSigner(i), target)
	}
	return l.SaveSignature(ctx, ledger.SignatureRecord{ID: memSigID(i), Campaign: memCampaign,
		Outcome: ledger.OutcomeAccepted, Deliveries: ids, AcceptedAt: time.Now()})
}

// memSignerKey is the marker that makes a second signature by the same
// person a duplicate.
func memSignerKey(ctx context.Context, l *ledger.Ledger, i int) error {
	first, err := l.ClaimSigner(ctx, memCampaign, campaign.SignerKey(memCampaign, memSigner(i)), memSigID(i))
	if err != nil {
		return err
	}
	if first != memSigID(i) {
		return fmt.Errorf("claim signer %d: first = %q", i, first)
	}
	return nil
}

// TestMemoryPerRecord measures what the ledger costs in a real redis-server:
// the growth of INFO used_memory over n records, divided by n, which counts
// the key, the value, its TTL entry and the dictionary slots. MEMORY USAGE of
// a sample of keys is logged beside it. The figures are quoted in
// docs/redis-keys.md; keep the two in step.
func TestMemoryPerRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("writes tens of thousands of records")
	}
	tests := []struct {
		name     string
		n        int
		write    func(context.Context, *ledger.Ledger, int) error
		key      func(i int) string
		config   map[string]string // CONFIG SET before writing
		encoding []string          // acceptable OBJECT ENCODING values
		maxBytes float64           // per record, from used_memory
	}{
		// A sent delivery is a listpack of 13 fields, about 300 bytes, which
		// jemalloc rounds to 320; the key name, the TTL entry and the
		// dictionary slots add about 160. Field names alone are 107 bytes
		// and the claim owner stays after the send: shortening the one or
		// dropping the other is what would bring a record under 400 bytes.
		{"delivery", 10_000, memDelivery,
			func(i int) string { return rkeys.Delivery(memDeliveryID(i)) }, nil,
			[]string{"listpack", "ziplist"}, 512},
		// The deliveries field (6 ids, 197 bytes) is longer than the default
		// hash-max-listpack-value of 64, so the record is a hashtable.
		{"signature with 6 deliveries", 5_000, memSignature,
			func(i int) string { return rkeys.Signature(memSigID(i)) }, nil,
			[]string{"hashtable"}, 900},
		{"signature with 6 deliveries, hash-max-listpack-value 256", 5_000, memSignature,
			func(i int) string { return rkeys.Signature(memSigID(i)) },
			map[string]string{"hash-max-listpack-value": "256"},
			[]string{"listpack"}, 450},
		{"signer", 10_000, memSignerKey,
			func(i int) string { return rkeys.Signer(memCampaign, campaign.SignerKey(memCampaign, memSigner(i))) }, nil,
			[]string{"embstr", "raw"}, 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			const workers = 8
			rdb := redis.NewClient(&redis.Options{Addr: testredis.Start(t).Addr, PoolSize: workers})
			t.Cleanup(func() { _ = rdb.Close() })
			for k, v := range tt.config {
				if err := rdb.ConfigSet(ctx, k, v).Err(); err != nil {
					t.Fatalf("config set %s %s: %v", k, v, err)
				}
			}
			l := ledger.New(rdb, memTTL)

			// Warm up every connection and load the scripts, so that the
			// baseline already holds client buffers and the script cache.
			const warm = 1_000_000 // indices no measured record uses
			if err := run(ctx, l, warm, warm+workers*4, workers, tt.write); err != nil {
				t.Fatal(err)
			}
			before := usedMemory(ctx, t, rdb)
			if err := run(ctx, l, 0, tt.n, workers, tt.write); err != nil {
				t.Fatal(err)
			}
			after := usedMemory(ctx, t, rdb)
			perRecord := float64(after-before) / float64(tt.n)

			var sample []string
			for i := 0; i < tt.n; i += tt.n / 100 {
				sample = append(sample, tt.key(i))
			}
			usage, enc := sampleUsage(ctx, t, rdb, sample)
			if n, err := rdb.DBSize(ctx).Result(); err != nil || n < int64(tt.n) {
				t.Fatalf("dbsize = %d, %v; want at least %d keys", n, err, tt.n)
			}
			t.Logf("%s: %d records, used_memory +%d bytes = %.0f bytes per record; MEMORY USAGE of %d sampled keys: mean %.0f bytes; encoding %s",
				tt.name, tt.n, after-before, perRecord, len(sample), usage, enc)
			if !contains(tt.encoding, enc) {
				t.Errorf("encoding %q, want one of %v (hash-max-listpack-value too low for the fields?)", enc, tt.encoding)
			}
			if perRecord <= 0 || perRecord > tt.maxBytes {
				t.Errorf("%.0f bytes per record, want between 1 and %.0f", perRecord, tt.maxBytes)
			}
			if usage <= 0 || usage > tt.maxBytes {
				t.Errorf("MEMORY USAGE mean %.0f bytes, want between 1 and %.0f", usage, tt.maxBytes)
			}
		})
	}
}

// run writes records from..to-1 with a few workers.
func run(ctx context.Context, l *ledger.Ledger, from, to, workers int, write func(context.Context, *ledger.Ledger, int) error) error {
	next := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := write(ctx, l, i); err != nil {
					errc <- fmt.Errorf("record %d: %w", i, err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := from; i < to; i++ {
		select {
		case next <- i:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

func usedMemory(ctx context.Context, t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("used_memory %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no used_memory in INFO memory:\n%s", info)
	return 0
}

// sampleUsage returns the mean MEMORY USAGE of keys and their encoding, and
// fails if the sampled keys do not all share one encoding.
func sampleUsage(ctx context.Context, t *testing.T, rdb *redis.Client, keys []string) (float64, string) {
	t.Helper()
	var total int64
	enc := ""
	for _, k := range keys {
		n, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			t.Fatalf("memory usage %s: %v", k, err)
		}
		total += n
		e, err := rdb.ObjectEncoding(ctx, k).Result()
		if err != nil {
			t.Fatalf("object encoding %s: %v", k, err)
		}
		if enc != "" && e != enc {
			t.Fatalf("key %s is %s, others %s", k, e, enc)
		}
		enc = e
	}
	return float64(total) / float64(len(keys)), enc
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
