package bounce

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
)

// Disposition is a Handler's verdict on one message: it decides the folder the
// watcher files the message in.
type Disposition int

const (
	// Processed is a bounce tied to a delivery and acted on: the message is
	// moved to the processed folder.
	Processed Disposition = iota + 1
	// Unrecognized is mail that is not a bounce, or is unmatched, forged or
	// malformed: the message is moved to the unrecognized folder for a human.
	Unrecognized
)

// String returns the lower-case name used in logs and metrics.
func (d Disposition) String() string {
	switch d {
	case Processed:
		return "processed"
	case Unrecognized:
		return "unrecognized"
	default:
		return "invalid(" + strconv.Itoa(int(d)) + ")"
	}
}

// Message is one raw message from the watched mailbox.
type Message struct {
	Mailbox     string
	UIDValidity uint32
	UID         uint32
	Raw         []byte
	// Fingerprint is the hex SHA-256 of Raw: it names the content rather than
	// its place in the mailbox, so the same mail is recognised after a
	// UIDVALIDITY change or after a human moves it back.
	Fingerprint string
}

// Handler decides what a message is and acts on it. An error means "try again
// later" (for example Redis is down); a message that fails maxAttempts times
// in a row is filed Unrecognized so that it cannot block the mailbox.
type Handler interface {
	Handle(ctx context.Context, m Message) (Disposition, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m Message) (Disposition, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m Message) (Disposition, error) { return f(ctx, m) }

// WatcherConfig configures a Watcher. Zero values take the documented
// defaults.
type WatcherConfig struct {
	Addr string
	// TLS is "implicit" (default), "starttls" or "none".
	TLS string
	// TLSConfig is cloned per connection; ServerName defaults to the host of
	// Addr.
	TLSConfig *tls.Config

	Username, Password string

	// Mailbox is watched; Processed and Unrecognized receive the filed mail
	// and are created when missing. Defaults INBOX, Processed, Unrecognized.
	Mailbox, Processed, Unrecognized string

	// PollInterval is used when the server has no IDLE; default 30s.
	PollInterval time.Duration
	// IdleRestart re-issues IDLE before servers drop it (RFC 2177 allows a
	// server to log out a client idle for 30 minutes); default 25m.
	IdleRestart time.Duration
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// after any error, and between handler retries; defaults 1s and 2m.
	ReconnectMin, ReconnectMax time.Duration
	// MaxMessageBytes: larger messages are filed Unrecognized without being
	// downloaded or parsed; default 10 MiB.
	MaxMessageBytes int64
	// LeaseTTL is how long a crashed instance keeps other instances from
	// taking over the mailbox; default 30s.
	LeaseTTL time.Duration
}

// WatcherHooks report what the watcher does; every field is optional.
type WatcherHooks struct {
	// Up is called whenever the connection state changes: true once the
	// mailbox is selected, false when the connection is lost.
	Up func(bool)
	// Success is called after every pass over the mailbox that completed
	// without error, including the pass after each IDLE restart.
	Success func(time.Time)
	// Message is called once per filed message with "processed" or
	// "unrecognized", and once per handler failure with "error".
	Message func(result string)
}

// Watcher watches one IMAP mailbox for bounces, hands each new message to a
// Handler and files it by the verdict.
type Watcher struct {
	cfg   WatcherConfig
	rdb   redis.UniversalClient
	h     Handler
	log   *slog.Logger
	hooks WatcherHooks
	token string

	up atomic.Bool

	mu sync.Mutex
	// attempts counts consecutive handler failures per fingerprint. It lives
	// in memory on purpose: the failures it counts are often Redis being
	// down, when nothing could be written there anyway.
	attempts map[string]int
}

const (
	// maxAttempts is how many handler failures in a row file a message
	// Unrecognized.
	maxAttempts = 5
	// batchUIDs and batchBytes bound one UID FETCH so memory stays flat
	// whatever the backlog.
	batchUIDs  = 100
	batchBytes = 32 << 20
	// imapOpTimeout closes a connection whose command got no answer: IMAP
	// has no heartbeat, and a half-open TCP connection would otherwise block
	// forever.
	imapOpTimeout = 5 * time.Minute
	// shutdownGrace is how long a cancelled Run may spend finishing the
	// current command before its connection is cut.
	shutdownGrace = 10 * time.Second
	// redisTimeout bounds the bookkeeping done after a handler succeeded; it
	// runs detached from Run's context so a shutdown still files what was
	// already acted on.
	redisTimeout = 10 * time.Second
)

// NewWatcher returns a Watcher; nothing happens until Run. A nil log discards
// output.
func NewWatcher(cfg WatcherConfig, rdb redis.UniversalClient, h Handler, log *slog.Logger, hooks WatcherHooks) *Watcher {
	if cfg.TLS == "" {
		cfg.TLS = "implicit"
	}
	if cfg.Mailbox == "" {
		cfg.Mailbox = "INBOX"
	}
	if cfg.Processed == "" {
		cfg.Processed = "Processed"
	}
	if cfg.Unrecognized == "" {
		cfg.Unrecognized = "Unrecognized"
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.IdleRestart <= 0 {
		cfg.IdleRestart = 25 * time.Minute
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = time.Second
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 2 * time.Minute
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 10 << 20
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tok := make([]byte, 16)
	_, _ = crand.Read(tok) // never fails on supported platforms
	return &Watcher{
		cfg:      cfg,
		rdb:      rdb,
		h:        h,
		log:      log.With("component", "imap-watcher", "mailbox", cfg.Mailbox),
		hooks:    hooks,
		token:    hex.EncodeToString(tok),
		attempts: make(map[string]int),
	}
}

// Up reports whether the watcher is connected with its mailbox selected.
func (w *Watcher) Up() bool { return w.up.Load() }

func (w *Watcher) setUp(v bool) {
	if w.up.Swap(v) != v && w.hooks.Up != nil {
		w.hooks.Up(v)
	}
}

func (w *Watcher) report(result string) {
	if w.hooks.Message != nil {
		w.hooks.Message(result)
	}
}

func (w *Watcher) validate() error {
	if w.cfg.Addr == "" {
		return errors.New("imap watcher: addr is empty")
	}
	if _, _, err := net.SplitHostPort(w.cfg.Addr); err != nil {
		return fmt.Errorf("imap watcher: addr %q: %w", w.cfg.Addr, err)
	}
	switch w.cfg.TLS {
	case "implicit", "starttls", "none":
	default:
		return fmt.Errorf("imap watcher: tls %q: want implicit, starttls or none", w.cfg.TLS)
	}
	if w.cfg.Processed == w.cfg.Mailbox || w.cfg.Unrecognized == w.cfg.Mailbox {
		return fmt.Errorf("imap watcher: processed and unrecognized folders must differ from mailbox %q", w.cfg.Mailbox)
	}
	if w.rdb == nil || w.h == nil {
		return errors.New("imap watcher: redis client and handler are required")
	}
	return nil
}

// errLeaseHeld means another instance watches the mailbox.
var errLeaseHeld = errors.New("mailbox watched by another instance")

// Run watches the mailbox until ctx is done, reconnecting with backoff after
// any error. It returns nil once ctx is done and the work in hand is filed
// and checkpointed; it returns an error only for an invalid configuration.
func (w *Watcher) Run(ctx context.Context) error {
	if err := w.validate(); err != nil {
		return err
	}
	failures := 0
	for {
		reachedUp, err := w.session(ctx)
		w.setUp(false)
		if ctx.Err() != nil {
			w.log.Info("imap watcher stopped")
			return nil
		}
		var delay time.Duration
		if errors.Is(err, errLeaseHeld) {
			delay = jitter(w.cfg.LeaseTTL / 3)
			w.log.Debug("imap mailbox held by another instance", "retry_in", delay)
		} else {
			if reachedUp {
				failures = 0
			}
			failures++
			delay = w.backoff(failures)
			w.log.Warn("imap session ended", "err", err, "retry_in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			w.log.Info("imap watcher stopped")
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the delay before attempt n (1-based): exponential from
// ReconnectMin, capped at ReconnectMax, with jitter so instances that lost the
// same server do not reconnect in step.
func (w *Watcher) backoff(n int) time.Duration {
	d := w.cfg.ReconnectMin
	for i := 1; i < n && d < w.cfg.ReconnectMax; i++ {
		d *= 2
	}
	return jitter(min(d, w.cfg.ReconnectMax))
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

var (
	leaseRenew = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	leaseFree  = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

// hold takes the mailbox lease and keeps it renewed until the returned release
// is called. The returned context is cancelled if the lease is lost.
func (w *Watcher) hold(ctx context.Context) (context.Context, func(), error) {
	key := rkeys.IMAPLease(w.cfg.Mailbox)
	ok, err := w.rdb.SetNX(ctx, key, w.token, w.cfg.LeaseTTL).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("take lease %s: %w", key, err)
	}
	if !ok {
		// A lease of ours can outlive a session whose release failed
		// (Redis was down); take it back rather than wait for it to expire.
		n, err := leaseRenew.Run(ctx, w.rdb, []string{key}, w.token, w.cfg.LeaseTTL.Milliseconds()).Int()
		if err != nil {
			return nil, nil, fmt.Errorf("check lease %s: %w", key, err)
		}
		if n == 0 {
			return nil, nil, errLeaseHeld
		}
	}
	lctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			n, err := leaseRenew.Run(lctx, w.rdb, []string{key}, w.token, w.cfg.LeaseTTL.Milliseconds()).Int()
			if lctx.Err() != nil {
				return
			}
			if err != nil || n == 0 {
				cancel(fmt.Errorf("lease %s lost (renew: %v)", key, err))
				return
			}
		}
	}()
	release := func() {
		cancel(nil)
		<-done
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
		defer rcancel()
		if err := leaseFree.Run(rctx, w.rdb, []string{key}, w.token).Err(); err != nil {
			w.log.Warn("release imap lease", "key", key, "err", err)
		}
	}
	return lctx, release, nil
}

// imapSession is one connection's worth of state.
type imapSession struct {
	w          *Watcher
	c          *imapclient.Client
	notify     chan struct{}
	log        *slog.Logger
	hasIdle    bool
	hasMove    bool
	hasUIDPlus bool

	uidValidity uint32
	last        uint32 // highest UID filed; everything up to it is done
}

// session connects, catches up and then waits for new mail until an error or
// ctx ends it. reachedUp tells Run whether the connection got as far as a
// selected mailbox, which resets the backoff.
func (w *Watcher) session(ctx context.Context) (reachedUp bool, err error) {
	sctx, release, err := w.hold(ctx)
	if err != nil {
		return false, err
	}
	defer release()

	s := &imapSession{w: w, notify: make(chan struct{}, 1), log: w.log}
	if err := s.connect(sctx); err != nil {
		return false, lostLease(sctx, err)
	}
	defer s.c.Close()
	// A command stuck on a dead connection must not hold up shutdown forever.
	stopCut := context.AfterFunc(sctx, func() {
		t := time.AfterFunc(shutdownGrace, func() { _ = s.c.Close() })
		<-s.c.Closed()
		t.Stop()
	})
	defer stopCut()

	if err := s.open(sctx); err != nil {
		return false, lostLease(sctx, err)
	}
	w.setUp(true)
	w.log.Info("imap mailbox selected", "uidvalidity", s.uidValidity, "last_uid", s.last,
		"idle", s.hasIdle, "move", s.hasMove, "uidplus", s.hasUIDPlus)

	retries := 0
	for {
		var retry time.Duration
		err := s.drain(sctx)
		var rl *imapRetryError
		switch {
		case err == nil:
			retries = 0
			if w.hooks.Success != nil {
				w.hooks.Success(time.Now())
			}
		case errors.As(err, &rl):
			retries++
			retry = w.backoff(retries)
			w.log.Warn("imap processing paused", "err", err, "retry_in", retry)
		case sctx.Err() == nil:
			return true, err
		}
		if sctx.Err() != nil {
			s.logout()
			return true, lostLease(sctx, nil)
		}
		if err := s.wait(sctx, retry); err != nil {
			if sctx.Err() != nil {
				s.logout()
				return true, lostLease(sctx, nil)
			}
			return true, err
		}
	}
}

// lostLease returns the reason the session context ended when the lease was
// lost, so Run backs off instead of returning; otherwise it returns err.
func lostLease(sctx context.Context, err error) error {
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// op runs one IMAP exchange under a watchdog that cuts the connection if the
// server never answers.
func (s *imapSession) op(name string, f func() error) error {
	t := time.AfterFunc(imapOpTimeout, func() {
		s.log.Warn("imap command timed out; closing connection", "command", name)
		_ = s.c.Close()
	})
	defer t.Stop()
	if err := f(); err != nil {
		return fmt.Errorf("imap %s: %w", name, err)
	}
	return nil
}

func (s *imapSession) connect(ctx context.Context) error {
	cfg := s.w.cfg
	opts := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			// Runs on the client's reader goroutine: it may not issue
			// commands, so it only wakes the session loop.
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					select {
					case s.notify <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	host, _, _ := net.SplitHostPort(cfg.Addr)
	tc := &tls.Config{}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	d := &net.Dialer{Timeout: 30 * time.Second}
	var err error
	switch cfg.TLS {
	case "implicit":
		if tc.NextProtos == nil {
			tc.NextProtos = []string{"imap"}
		}
		var conn net.Conn
		conn, err = (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", cfg.Addr)
		if err == nil {
			s.c = imapclient.New(conn, opts)
		}
	case "starttls":
		var conn net.Conn
		conn, err = d.DialContext(ctx, "tcp", cfg.Addr)
		if err == nil {
			opts.TLSConfig = tc
			s.c, err = imapclient.NewStartTLS(conn, opts)
		}
	default:
		var conn net.Conn
		conn, err = d.DialContext(ctx, "tcp", cfg.Addr)
		if err == nil {
			s.c = imapclient.New(conn, opts)
		}
	}
	if err != nil {
		return fmt.Errorf("connect %s (tls %s): %w", cfg.Addr, cfg.TLS, err)
	}
	if err := s.op("greeting", s.c.WaitGreeting); err != nil {
		_ = s.c.Close()
		return err
	}
	return nil
}

// open logs in, makes sure the target folders exist, selects the mailbox and
// loads the checkpoint.
func (s *imapSession) open(ctx context.Context) error {
	cfg := s.w.cfg
	if err := s.op("LOGIN", s.c.Login(cfg.Username, cfg.Password).Wait); err != nil {
		return err
	}
	for _, folder := range []string{cfg.Processed, cfg.Unrecognized} {
		if err := s.ensureFolder(folder); err != nil {
			return err
		}
	}
	var sel *imap.SelectData
	err := s.op("SELECT", func() (err error) {
		sel, err = s.c.Select(cfg.Mailbox, nil).Wait()
		return err
	})
	if err != nil {
		return err
	}
	// Capabilities may change after LOGIN; Caps re-asks the server if the
	// LOGIN reply did not carry them.
	caps := s.c.Caps()
	s.hasIdle = caps.Has(imap.CapIdle)
	s.hasMove = caps.Has(imap.CapMove)
	s.hasUIDPlus = caps.Has(imap.CapUIDPlus)
	s.uidValidity = sel.UIDValidity
	s.log = s.w.log.With("uidvalidity", s.uidValidity)
	return s.loadCheckpoint(ctx)
}

func (s *imapSession) ensureFolder(name string) error {
	var found bool
	err := s.op("LIST", func() error {
		l, err := s.c.List("", name, nil).Collect()
		for _, d := range l {
			if d.Mailbox == name {
				found = true
			}
		}
		return err
	})
	if err != nil || found {
		return err
	}
	if err := s.op("CREATE "+name, s.c.Create(name, nil).Wait); err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists {
			return nil
		}
		return err
	}
	s.w.log.Info("imap folder created", "folder", name)
	return nil
}

func (s *imapSession) loadCheckpoint(ctx context.Context) error {
	key := rkeys.IMAPCheckpoint(s.w.cfg.Mailbox)
	h, err := s.w.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("read checkpoint %s: %w", key, err)
	}
	uv, _ := strconv.ParseUint(h["uidvalidity"], 10, 32)
	last, _ := strconv.ParseUint(h["last_uid"], 10, 32)
	if len(h) > 0 && uint32(uv) == s.uidValidity {
		s.last = uint32(last)
		return nil
	}
	if len(h) > 0 {
		// UIDs of the old validity mean nothing now: rescan everything and
		// let the seen set keep us from acting twice.
		s.log.Warn("imap uidvalidity changed; rescanning mailbox",
			"old_uidvalidity", uv, "old_last_uid", last)
	}
	s.last = 0
	if err := s.w.rdb.HSet(ctx, key, "uidvalidity", s.uidValidity, "last_uid", 0).Err(); err != nil {
		return fmt.Errorf("reset checkpoint %s: %w", key, err)
	}
	return nil
}

func (s *imapSession) saveCheckpoint(ctx context.Context, uid uint32) error {
	if uid <= s.last {
		return nil
	}
	key := rkeys.IMAPCheckpoint(s.w.cfg.Mailbox)
	if err := s.w.rdb.HSet(ctx, key, "uidvalidity", s.uidValidity, "last_uid", uid).Err(); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", key, err)
	}
	s.last = uid
	return nil
}

func (s *imapSession) logout() {
	_ = s.op("LOGOUT", s.c.Logout().Wait)
}

// wait blocks until new mail may be there: an EXISTS, the IDLE restart or
// poll interval, or the retry delay when retry > 0.
func (s *imapSession) wait(ctx context.Context, retry time.Duration) error {
	d := s.w.cfg.PollInterval
	if s.hasIdle {
		d = s.w.cfg.IdleRestart
	}
	if retry > 0 && retry < d {
		d = retry
	}
	t := time.NewTimer(d)
	defer t.Stop()

	if !s.hasIdle {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.c.Closed():
			return errors.New("imap connection closed")
		case <-s.notify:
		case <-t.C:
		}
		// NOOP is how a server without IDLE tells us about new mail, and it
		// proves the connection is still alive.
		return s.op("NOOP", s.c.Noop().Wait)
	}

	var idle *imapclient.IdleCommand
	err := s.op("IDLE", func() (err error) {
		idle, err = s.c.Idle()
		return err
	})
	if err != nil {
		return err
	}
	var cause error
	select {
	case <-ctx.Done():
		cause = ctx.Err()
	case <-s.c.Closed():
		cause = errors.New("imap connection closed while idle")
	case <-s.notify:
	case <-t.C:
	}
	// IDLE must be over, acknowledged by the server, before any other
	// command goes out.
	err = s.op("IDLE DONE", func() error {
		if err := idle.Close(); err != nil {
			return err
		}
		return idle.Wait()
	})
	if cause != nil {
		return cause
	}
	return err
}

// imapRetryError marks a failure that leaves the connection usable (the
// handler or Redis failed): the session retries after a delay instead of
// reconnecting.
type imapRetryError struct{ err error }

func (e *imapRetryError) Error() string { return e.err.Error() }
func (e *imapRetryError) Unwrap() error { return e.err }

// imapItem is a message waiting in the mailbox.
type imapItem struct {
	uid  uint32
	size int64
}

// drain handles and files every message with a UID above the checkpoint.
func (s *imapSession) drain(ctx context.Context) error {
	// Whatever arrives from now on is news; what arrived before is covered
	// by this pass.
	select {
	case <-s.notify:
	default:
	}
	items, err := s.pending()
	if err != nil {
		return err
	}
	var batch []imapItem
	var bytes int64
	flush := func() error {
		err := s.processBatch(ctx, batch)
		batch, bytes = batch[:0], 0
		return err
	}
	for _, it := range items {
		if ctx.Err() != nil {
			return nil
		}
		fetched := it.size
		if fetched > s.w.cfg.MaxMessageBytes {
			fetched = 0
		}
		if len(batch) > 0 && (len(batch) >= batchUIDs || bytes+fetched > batchBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, it)
		bytes += fetched
	}
	if len(batch) > 0 && ctx.Err() == nil {
		return flush()
	}
	return nil
}

// pending lists the messages above the checkpoint in UID order.
func (s *imapSession) pending() ([]imapItem, error) {
	var set imap.UIDSet
	set.AddRange(imap.UID(s.last+1), 0)
	var bufs []*imapclient.FetchMessageBuffer
	err := s.op("UID FETCH (RFC822.SIZE)", func() (err error) {
		bufs, err = s.c.Fetch(set, &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
		return err
	})
	if err != nil {
		return nil, err
	}
	items := make([]imapItem, 0, len(bufs))
	for _, b := range bufs {
		// "UID n:*" also returns the last message when its UID is below n.
		if uint32(b.UID) > s.last {
			items = append(items, imapItem{uid: uint32(b.UID), size: b.RFC822Size})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].uid < items[j].uid })
	return items, nil
}

// processBatch decides every message of batch in UID order, files the decided
// ones and moves the checkpoint past them. It stops at the first message that
// must be retried, so the checkpoint never skips an undecided message.
func (s *imapSession) processBatch(ctx context.Context, batch []imapItem) error {
	section := &imap.FetchItemBodySection{Peek: true}
	var fetch imap.UIDSet
	for _, it := range batch {
		if it.size <= s.w.cfg.MaxMessageBytes {
			fetch.AddNum(imap.UID(it.uid))
		}
	}
	raws := make(map[uint32][]byte, len(batch))
	if len(fetch) > 0 {
		err := s.op("UID FETCH (BODY.PEEK[])", func() error {
			bufs, err := s.c.Fetch(fetch, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
			for _, b := range bufs {
				if raw := b.FindBodySection(section); raw != nil {
					raws[uint32(b.UID)] = raw
				}
			}
			return err
		})
		if err != nil {
			return err
		}
	}

	// Bookkeeping after a handler acted must survive a shutdown, or the
	// action would be repeated on the next start.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
	defer cancel()

	groups := map[Disposition][]uint32{}
	var decided uint32
	var stop error
	for _, it := range batch {
		if ctx.Err() != nil {
			break
		}
		disp, err := s.decide(ctx, bctx, it, raws)
		if err != nil {
			stop = err
			break
		}
		if disp != 0 {
			groups[disp] = append(groups[disp], it.uid)
		}
		decided = it.uid
	}
	for _, disp := range []Disposition{Processed, Unrecognized} {
		uids := groups[disp]
		if len(uids) == 0 {
			continue
		}
		if err := s.file(uids, disp); err != nil {
			return err
		}
		for range uids {
			s.w.report(disp.String())
		}
	}
	if decided != 0 {
		if err := s.saveCheckpoint(bctx, decided); err != nil {
			// The messages are filed already; a stale checkpoint only costs
			// a look at UIDs that are gone.
			s.log.Warn("imap checkpoint not saved", "err", err)
		}
	}
	return stop
}

// decide returns where one message goes, calling the handler unless the
// content was acted on before. A zero Disposition means the message vanished
// (expunged by someone else) and there is nothing to file.
func (s *imapSession) decide(ctx, bctx context.Context, it imapItem, raws map[uint32][]byte) (Disposition, error) {
	w := s.w
	log := s.log.With("uid", it.uid)
	if it.size > w.cfg.MaxMessageBytes {
		log.Warn("imap message too large; filed without parsing", "size", it.size,
			"limit", w.cfg.MaxMessageBytes, "disposition", Unrecognized)
		return Unrecognized, nil
	}
	raw, ok := raws[it.uid]
	if !ok {
		log.Warn("imap message vanished before it was fetched")
		return 0, nil
	}
	sum := sha256.Sum256(raw)
	fp := hex.EncodeToString(sum[:])
	log = log.With("fingerprint", fp)
	seenKey := rkeys.IMAPSeen(w.cfg.Mailbox)

	seen, err := w.rdb.SIsMember(ctx, seenKey, fp).Result()
	if err != nil {
		return 0, &imapRetryError{fmt.Errorf("check seen set %s: %w", seenKey, err)}
	}
	if seen {
		log.Info("imap message already acted on; filing without handling", "disposition", Processed)
		return Processed, nil
	}

	disp, err := w.h.Handle(ctx, Message{
		Mailbox: w.cfg.Mailbox, UIDValidity: s.uidValidity, UID: it.uid, Raw: raw, Fingerprint: fp,
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, &imapRetryError{fmt.Errorf("handle uid %d: %w", it.uid, err)}
		}
		w.report("error")
		w.mu.Lock()
		w.attempts[fp]++
		n := w.attempts[fp]
		if n >= maxAttempts {
			delete(w.attempts, fp)
		}
		w.mu.Unlock()
		if n < maxAttempts {
			log.Warn("imap handler failed; will retry", "attempt", n, "err", err)
			return 0, &imapRetryError{fmt.Errorf("handle uid %d (attempt %d of %d): %w", it.uid, n, maxAttempts, err)}
		}
		log.Error("imap handler keeps failing; filing for a human", "attempts", n, "err", err,
			"disposition", Unrecognized)
		return Unrecognized, nil
	}
	w.mu.Lock()
	delete(w.attempts, fp)
	w.mu.Unlock()

	switch disp {
	case Processed:
		// Only acted-on mail enters the seen set: an Unrecognized verdict
		// changed nothing, and remembering it would file a later copy in
		// Processed.
		if err := w.rdb.SAdd(bctx, seenKey, fp).Err(); err != nil {
			return 0, &imapRetryError{fmt.Errorf("add to seen set %s: %w", seenKey, err)}
		}
	case Unrecognized:
	default:
		log.Error("imap handler returned an invalid disposition; filing for a human", "got", int(disp))
		disp = Unrecognized
	}
	log.Info("imap message handled", "disposition", disp)
	return disp, nil
}

// file moves uids to the folder for disp. Without MOVE it copies, and only
// after the copy succeeded flags and expunges the originals: a failed copy
// must never turn into a deletion. imapclient's own MOVE fallback pipelines
// all three commands without waiting, so it is not used.
func (s *imapSession) file(uids []uint32, disp Disposition) error {
	folder := s.w.cfg.Processed
	if disp == Unrecognized {
		folder = s.w.cfg.Unrecognized
	}
	var set imap.UIDSet
	for _, u := range uids {
		set.AddNum(imap.UID(u))
	}
	if s.hasMove {
		return s.op("UID MOVE "+folder, func() error {
			_, err := s.c.Move(set, folder).Wait()
			return err
		})
	}
	if err := s.op("UID COPY "+folder, func() error {
		_, err := s.c.Copy(set, folder).Wait()
		return err
	}); err != nil {
		return err
	}
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := s.op("UID STORE +FLAGS.SILENT (\\Deleted)", s.c.Store(set, store, nil).Close); err != nil {
		return err
	}
	if s.hasUIDPlus {
		return s.op("UID EXPUNGE", s.c.UIDExpunge(set).Close)
	}
	return s.op("EXPUNGE", s.c.Expunge().Close)
}
