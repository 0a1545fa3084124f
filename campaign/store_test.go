package campaign

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testredis"
)

// cmdLog records the commands a client sends, to show what the cache saves.
type cmdLog struct {
	mu   sync.Mutex
	cmds []string
}

func (l *cmdLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *cmdLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.add(cmd)
		return next(ctx, cmd)
	}
}

func (l *cmdLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			l.add(c)
		}
		return next(ctx, cmds)
	}
}

func (l *cmdLog) add(c redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cmds = append(l.cmds, strings.ToLower(c.Name()))
}

func (l *cmdLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.cmds
	l.cmds = nil
	return out
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	log := &cmdLog{}
	rdb.AddHook(log)
	store := NewStore(rdb)
	// A second instance on its own connection, as another petitiond would be.
	other := NewStore(srv.Client(t))

	c, err := Parse(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(ctx, c); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	second, err := Parse(campaignYAML(t, func(m map[string]any) { m["id"] = "ph-teachers" }))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Apply(ctx, second); err != nil {
		t.Fatalf("Apply second: %v", err)
	}

	got, err := store.Get(ctx, "kz-baltabay")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Status != StatusOpen || len(got.Targets) != 6 || got.Subject["ru"] != "Свободу Ерлану Балтабаю" {
		t.Errorf("Get returned %+v", got)
	}
	if got.compiled == nil {
		t.Error("Get returned an uncompiled campaign")
	}
	l, err := got.Render(testSignature("Ñiño Dela Peña", "tl", "Mabuhay!"), got.Targets[0])
	if err != nil || l.Subject != "Palayain si Erlan Baltabay" || !strings.Contains(l.Body, "Ñiño Dela Peña") {
		t.Errorf("Render after Get: %+v, %v", l, err)
	}

	// A repeated Get is one HMGET of version and status.
	log.take()
	if _, err := store.Get(ctx, "kz-baltabay"); err != nil {
		t.Fatal(err)
	}
	if cmds := log.take(); len(cmds) != 1 || cmds[0] != "hmget" {
		t.Errorf("cached Get sent %v, want one hmget", cmds)
	}

	// Closing from another instance shows through this one's cache.
	if err := other.Close(ctx, "kz-baltabay"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got, err = store.Get(ctx, "kz-baltabay")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusClosed {
		t.Errorf("status after Close = %q, want closed", got.Status)
	}
	if cmds := log.take(); len(cmds) != 1 {
		t.Errorf("Get after Close sent %v, want a cache hit (one hmget)", cmds)
	}
	if st, err := store.Status(ctx, "kz-baltabay"); err != nil || st != StatusClosed {
		t.Errorf("Status = %q, %v", st, err)
	}
	// Idempotent, and it leaves updated_at alone.
	before, _ := rdb.HGet(ctx, rkeys.Campaign("kz-baltabay"), "updated_at").Result()
	if err := store.Close(ctx, "kz-baltabay"); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if after, _ := rdb.HGet(ctx, rkeys.Campaign("kz-baltabay"), "updated_at").Result(); after != before {
		t.Errorf("second Close moved updated_at from %s to %s", before, after)
	}

	// Re-applying a file without a status keeps it closed, bumps the
	// version, and every Store recompiles the new definition.
	edited, err := Parse([]byte(strings.Replace(strings.Replace(string(readExample(t)),
		"status: open\n", "", 1), `en: "Free Erlan Baltabay"`, `en: "Free Erlan Baltabay now"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Apply(ctx, edited); err != nil {
		t.Fatal(err)
	}
	if edited.Status != StatusClosed {
		t.Errorf("after Apply, Status = %q, want the stored closed", edited.Status)
	}
	got, err = store.Get(ctx, "kz-baltabay")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusClosed || got.Subject["en"] != "Free Erlan Baltabay now" {
		t.Errorf("after re-apply: status %q subject %q; want closed and the new subject", got.Status, got.Subject["en"])
	}
	if l, err := got.Render(testSignature("Maria", "en", ""), got.Targets[0]); err != nil || l.Subject != "Free Erlan Baltabay now" {
		t.Errorf("recompiled render: %q, %v", l.Subject, err)
	}
	// An explicit status reopens it.
	edited.Status = StatusOpen
	if err := store.Apply(ctx, edited); err != nil {
		t.Fatal(err)
	}

	list, err := store.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 2 || list[0].ID != "kz-baltabay" || list[1].ID != "ph-teachers" {
		t.Fatalf("List = %+v, want kz-baltabay then ph-teachers", list)
	}
	kz := list[0]
	if kz.Status != StatusOpen || kz.Version != 3 || kz.Targets != 6 ||
		strings.Join(kz.Locales, ",") != "en,ru,tl" || kz.UpdatedAt.IsZero() {
		t.Errorf("summary %+v, want open, version 3, 6 targets, en,ru,tl, a time", kz)
	}
	if list[1].Version != 1 || list[1].Targets != 2 {
		t.Errorf("summary %+v, want version 1 with 2 targets", list[1])
	}
}

func TestStoreNotFound(t *testing.T) {
	ctx := context.Background()
	store := NewStore(testredis.Start(t).Client(t))
	if _, err := store.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Get: %v, want ErrNotFound naming the id", err)
	}
	if err := store.Close(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Close: %v, want ErrNotFound", err)
	}
	if _, err := store.Status(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status: %v, want ErrNotFound", err)
	}
	if list, err := store.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List on empty Redis = %v, %v", list, err)
	}
}

func TestStoreApplyValidates(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Start(t).Client(t)
	store := NewStore(rdb)
	bad := &Campaign{
		ID: "kz-baltabay", FromName: "{{.Signer.Name}}",
		Subject: map[string]string{"en": "x"}, Body: map[string]string{"en": "{{.Nope}}"},
		Targets: []Target{{Address: "press@mfa.example"}},
	}
	var fe *FieldError
	if err := store.Apply(ctx, bad); !errors.As(err, &fe) || fe.Field != "body.en" {
		t.Errorf("Apply of a bad template: %v, want a FieldError on body.en", err)
	}
	if n, err := rdb.Exists(ctx, rkeys.Campaign("kz-baltabay")).Result(); err != nil || n != 0 {
		t.Errorf("a rejected campaign was stored (exists=%d, %v)", n, err)
	}
}

// Many workers share one Store; run under -race.
func TestStoreConcurrentGet(t *testing.T) {
	ctx := context.Background()
	store := NewStore(testredis.Start(t).Client(t))
	c, err := Parse(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(ctx, c); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := store.Get(ctx, "kz-baltabay")
			if err == nil {
				_, err = got.Render(testSignature("Maria", "ru", ""), got.Targets[1])
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
