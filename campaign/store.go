package campaign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
)

// ErrNotFound says a campaign id has never been applied.
var ErrNotFound = errors.New("campaign not found")

// Hash fields of rkeys.Campaign(id).
const (
	fieldDefinition = "definition"
	fieldStatus     = "status"
	fieldVersion    = "version"
	fieldUpdatedAt  = "updated_at"
)

// Summary is one line of a campaign listing.
type Summary struct {
	ID        string
	Status    Status
	Targets   int
	Locales   []string
	Version   int64
	UpdatedAt time.Time
}

// Store keeps campaigns in Redis, one hash per campaign (the definition as
// JSON, its status, a version bumped by every Apply, and the time of the
// last change) plus a set of all ids.
//
// The status is a field of its own, not part of the definition, so that
// closing a campaign is one small write that every instance sees at once.
//
// Get caches compiled campaigns by (id, version). A cache hit costs one
// HMGET of version and status, one round trip; a miss (first Get, or after
// an Apply anywhere) adds a second round trip, a JSON decode and template
// compilation with test rendering, a few milliseconds. The cache holds one
// entry per campaign id ever read, which is as many as there are campaigns.
type Store struct {
	rdb   redis.UniversalClient
	close *redis.Script
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cachedCampaign
}

type cachedCampaign struct {
	version int64
	c       *Campaign
}

// NewStore returns a Store on rdb.
func NewStore(rdb redis.UniversalClient) *Store {
	return &Store{
		rdb: rdb,
		// One key only, so it runs unchanged on Redis Cluster. Closing an
		// already closed campaign leaves updated_at alone: close is
		// idempotent, and the timestamp says when it actually closed.
		close: redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'closed' then
  redis.call('HSET', KEYS[1], 'status', 'closed', 'updated_at', ARGV[1])
end
return 1`),
		now:   time.Now,
		cache: map[string]cachedCampaign{},
	}
}

// Apply stores c, compiling it first if Parse has not. Every Apply bumps the
// campaign's version, which makes every instance's Store recompile it on its
// next Get. A definition without a status keeps the stored one (or opens a
// new campaign); an explicit status sets it. On return c.Status is the
// status now stored.
func (s *Store) Apply(ctx context.Context, c *Campaign) error {
	if c.compiled == nil {
		if err := c.Compile(); err != nil {
			return fmt.Errorf("apply campaign %s: %w", c.ID, err)
		}
	}
	def := *c
	def.Status = "" // the status field of the hash is the only truth
	if def.DefaultLocale == "" {
		def.DefaultLocale = DefaultLocaleTag
	}
	data, err := json.Marshal(def)
	if err != nil {
		return fmt.Errorf("apply campaign %s: encode: %w", c.ID, err)
	}
	key := rkeys.Campaign(c.ID)
	now := s.now().UTC().Format(time.RFC3339Nano)
	// One key per transaction, so this also works on Redis Cluster.
	var stored *redis.StringCmd
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, fieldDefinition, data, fieldUpdatedAt, now)
		if c.Status != "" {
			p.HSet(ctx, key, fieldStatus, string(c.Status))
		} else {
			p.HSetNX(ctx, key, fieldStatus, string(StatusOpen))
		}
		p.HIncrBy(ctx, key, fieldVersion, 1)
		stored = p.HGet(ctx, key, fieldStatus)
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply campaign %s: %w", c.ID, err)
	}
	c.Status = Status(stored.Val())
	// Added after the hash is written, so a listed id always has a hash; if
	// this fails, applying again repairs it.
	if err := s.rdb.SAdd(ctx, rkeys.CampaignIndex, c.ID).Err(); err != nil {
		return fmt.Errorf("apply campaign %s: index: %w", c.ID, err)
	}
	return nil
}

// Get returns the compiled campaign id with its current status. The result
// is shared with other callers: treat it as read-only.
func (s *Store) Get(ctx context.Context, id string) (*Campaign, error) {
	key := rkeys.Campaign(id)
	vals, err := s.rdb.HMGet(ctx, key, fieldVersion, fieldStatus).Result()
	if err != nil {
		return nil, fmt.Errorf("get campaign %s: %w", id, err)
	}
	version, status, err := versionStatus(id, vals[0], vals[1])
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	hit, ok := s.cache[id]
	s.mu.Unlock()
	if ok && hit.version == version {
		c := *hit.c
		c.Status = status
		return &c, nil
	}

	vals, err = s.rdb.HMGet(ctx, key, fieldDefinition, fieldVersion, fieldStatus).Result()
	if err != nil {
		return nil, fmt.Errorf("get campaign %s: %w", id, err)
	}
	// Read again with the definition: an Apply may have landed in between,
	// and the version cached must be the one of this definition.
	if version, status, err = versionStatus(id, vals[1], vals[2]); err != nil {
		return nil, err
	}
	def, _ := vals[0].(string)
	var c Campaign
	if err := json.Unmarshal([]byte(def), &c); err != nil {
		return nil, fmt.Errorf("get campaign %s: stored definition: %w", id, err)
	}
	if err := c.Compile(); err != nil {
		return nil, fmt.Errorf("get campaign %s: stored definition: %w", id, err)
	}
	s.mu.Lock()
	if cur, ok := s.cache[id]; !ok || cur.version < version {
		s.cache[id] = cachedCampaign{version: version, c: &c}
	}
	s.mu.Unlock()
	out := c
	out.Status = status
	return &out, nil
}

func versionStatus(id string, v, st any) (int64, Status, error) {
	vs, ok := v.(string)
	if !ok {
		return 0, "", fmt.Errorf("campaign %q: %w", id, ErrNotFound)
	}
	version, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("get campaign %s: version %q: %w", id, vs, err)
	}
	status, _ := st.(string)
	return version, Status(status), nil
}

// List returns a summary of every campaign, sorted by id.
func (s *Store) List(ctx context.Context) ([]Summary, error) {
	ids, err := s.rdb.SMembers(ctx, rkeys.CampaignIndex).Result()
	if err != nil {
		return nil, fmt.Errorf("list campaigns: %w", err)
	}
	slices.Sort(ids)
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, rkeys.Campaign(id), fieldDefinition, fieldStatus, fieldVersion, fieldUpdatedAt)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list campaigns: %w", err)
	}
	out := make([]Summary, 0, len(ids))
	for i, id := range ids {
		vals := cmds[i].Val()
		def, ok := vals[0].(string)
		if !ok {
			continue // indexed but not (or no longer) stored
		}
		var c Campaign
		if err := json.Unmarshal([]byte(def), &c); err != nil {
			return nil, fmt.Errorf("list campaigns: %s: stored definition: %w", id, err)
		}
		version, status, err := versionStatus(id, vals[2], vals[1])
		if err != nil {
			return nil, fmt.Errorf("list campaigns: %w", err)
		}
		sum := Summary{
			ID:      id,
			Status:  status,
			Targets: len(c.Targets),
			Locales: slices.Sorted(maps.Keys(c.Body)),
			Version: version,
		}
		if ts, ok := vals[3].(string); ok {
			if sum.UpdatedAt, err = time.Parse(time.RFC3339Nano, ts); err != nil {
				return nil, fmt.Errorf("list campaigns: %s: updated_at %q: %w", id, ts, err)
			}
		}
		out = append(out, sum)
	}
	return out, nil
}

// Close stops a campaign from sending anything more. Closing a closed
// campaign is not an error.
func (s *Store) Close(ctx context.Context, id string) error {
	n, err := s.close.Run(ctx, s.rdb, []string{rkeys.Campaign(id)}, s.now().UTC().Format(time.RFC3339Nano)).Int()
	if err != nil {
		return fmt.Errorf("close campaign %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("close campaign %q: %w", id, ErrNotFound)
	}
	return nil
}

// Status returns whether campaign id is open or closed.
func (s *Store) Status(ctx context.Context, id string) (Status, error) {
	st, err := s.rdb.HGet(ctx, rkeys.Campaign(id), fieldStatus).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("campaign %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("campaign %s status: %w", id, err)
	}
	return Status(st), nil
}
