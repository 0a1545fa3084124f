package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// TLSMode says how the pool secures its connections to the relay.
type TLSMode string

const (
	// TLSStartTLS upgrades a plain connection and refuses relays that do
	// not offer STARTTLS, so credentials and letters never travel in clear.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit speaks TLS from the first byte (submissions, port 465).
	TLSImplicit TLSMode = "implicit"
	// TLSNone is for a relay on localhost or a trusted network only.
	TLSNone TLSMode = "none"
)

// Defaults for zero Config fields.
const (
	DefaultPoolSize           = 4
	DefaultMaxMessagesPerConn = 100
	DefaultIdleTimeout        = 30 * time.Second
	DefaultDialTimeout        = 30 * time.Second
	DefaultCommandTimeout     = 2 * time.Minute
)

// ErrPoolClosed is wrapped by the *Error returned after Close.
var ErrPoolClosed = errors.New("smtp pool is closed")

// Config describes the relay and how to use it.
type Config struct {
	Addr      string      // host:port
	TLS       TLSMode     // "starttls" when empty
	TLSConfig *tls.Config // RootCAs etc.; ServerName defaults to the host of Addr

	// AUTH PLAIN, or LOGIN when the relay offers only LOGIN; no AUTH when
	// Username is empty.
	Username, Password string

	HELO               string        // the name in EHLO; the host name when empty
	PoolSize           int           // most connections open at once
	MaxMessagesPerConn int           // reconnect after this many messages
	IdleTimeout        time.Duration // close connections idle this long
	DialTimeout        time.Duration // TCP connect, TLS, greeting, EHLO and AUTH together
	CommandTimeout     time.Duration // each command, and the reply to the final dot

	Logger *slog.Logger
}

// Envelope is the SMTP envelope of one message to one recipient.
type Envelope struct {
	From  string // the VERP address
	To    string // the target
	EnvID string // DSN ENVID: the delivery id, echoed back in bounces
}

// Pool keeps persistent, authenticated connections to one relay and sends
// messages over them, one transaction at a time per connection.
//
// A connection goes back to the pool after a message was accepted or after a
// well-formed 4xx/5xx reply to MAIL or RCPT: the session is intact and the
// next transaction starts with RSET. A connection is closed instead, never
// reused, after any error that leaves its state unknown: network errors and
// timeouts (including the caller's ctx ending mid-command), a 421 reply,
// a failed RSET, and any error during DATA (the relay may or may not have
// taken part of the message). It is also closed after MaxMessagesPerConn
// messages and after IdleTimeout unused.
//
// If a reused connection turns out dead at RSET or MAIL (the relay closed it
// while idle), Send retries once on a fresh connection: nothing of the
// message was committed, so this is safe and hides a non-event.
type Pool struct {
	cfg    Config
	tlsCfg *tls.Config
	log    *slog.Logger

	// tokens holds one entry per connection in use. A connection is dialled
	// only by a token holder that finds no idle one, so open connections
	// (in use + idle) never exceed PoolSize.
	tokens chan struct{}

	mu     sync.Mutex
	idle   []*conn // most recently used last
	closed bool

	done       chan struct{}
	reaperDone chan struct{}
	seq        atomic.Uint64
}

type conn struct {
	id       uint64
	c        *gosmtp.Client
	dc       *deadlineConn
	used     bool // a transaction was started: RSET before the next one
	sent     int
	lastUsed time.Time
}

// NewPool checks cfg and starts the idle reaper. It does not dial: use Probe
// to find out whether the relay is usable.
func NewPool(cfg Config) (*Pool, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtp pool: relay address %q: %w", cfg.Addr, err)
	}
	switch cfg.TLS {
	case "":
		cfg.TLS = TLSStartTLS
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		return nil, fmt.Errorf("smtp pool: tls mode %q: want starttls, implicit or none", cfg.TLS)
	}
	if cfg.Username == "" && cfg.Password != "" {
		return nil, errors.New("smtp pool: password is set but username is empty")
	}
	if strings.ContainsAny(cfg.Username+cfg.Password, "\x00\r\n") {
		return nil, errors.New("smtp pool: username or password contains NUL, CR or LF")
	}
	if cfg.HELO == "" {
		if cfg.HELO, err = os.Hostname(); err != nil || cfg.HELO == "" {
			cfg.HELO = "localhost"
		}
	}
	if strings.ContainsAny(cfg.HELO, " \t\r\n") {
		return nil, fmt.Errorf("smtp pool: helo %q is not a host name", cfg.HELO)
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"pool_size", &cfg.PoolSize, DefaultPoolSize},
		{"max_messages_per_conn", &cfg.MaxMessagesPerConn, DefaultMaxMessagesPerConn},
	} {
		if *f.v < 0 {
			return nil, fmt.Errorf("smtp pool: %s is %d, want > 0", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"idle_timeout", &cfg.IdleTimeout, DefaultIdleTimeout},
		{"dial_timeout", &cfg.DialTimeout, DefaultDialTimeout},
		{"command_timeout", &cfg.CommandTimeout, DefaultCommandTimeout},
	} {
		if *f.v < 0 {
			return nil, fmt.Errorf("smtp pool: %s is %v, want > 0", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	tlsCfg := &tls.Config{}
	if cfg.TLSConfig != nil {
		tlsCfg = cfg.TLSConfig.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host
	}
	if tlsCfg.MinVersion == 0 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Pool{
		cfg:        cfg,
		tlsCfg:     tlsCfg,
		log:        log.With("relay", cfg.Addr),
		tokens:     make(chan struct{}, cfg.PoolSize),
		done:       make(chan struct{}),
		reaperDone: make(chan struct{}),
	}
	go p.reaper()
	return p, nil
}

// Send delivers msg to env.To. nil means the relay answered 250 to the final
// dot; any other outcome is an *Error.
func (p *Pool) Send(ctx context.Context, env Envelope, msg []byte) error {
	if err := env.validate(); err != nil {
		return &Error{Op: OpMail, Message: err.Error(), Err: err}
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		serr, broken := p.transact(ctx, c, env, msg)
		if serr == nil {
			c.sent++
			p.log.DebugContext(ctx, "smtp: message accepted", "conn", c.id, "to", env.To,
				"envid", env.EnvID, "conn_messages", c.sent, "duration", time.Since(start))
			p.release(c, true)
			return nil
		}
		if reused && attempt == 0 && broken && (serr.Op == OpReset || serr.Op == OpMail) && ctxDone(ctx) == nil {
			p.log.DebugContext(ctx, "smtp: pooled connection was dead, redialling", "conn", c.id, "err", serr)
			p.release(c, false)
			continue
		}
		p.log.DebugContext(ctx, "smtp: send failed", "conn", c.id, "to", env.To, "envid", env.EnvID,
			"op", serr.Op, "code", serr.Code, "enhanced_code", serr.EnhancedCode,
			"temporary", serr.Temporary, "relay_down", serr.RelayDown, "conn_discarded", broken)
		p.release(c, !broken)
		return serr
	}
}

// Probe dials a fresh connection, negotiates TLS, authenticates, and says
// NOOP and QUIT: nil means the relay is usable now.
func (p *Pool) Probe(ctx context.Context) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-p.tokens }()
	c, err := p.dial(ctx)
	if err != nil {
		return err
	}
	release := c.dc.bind(ctx)
	defer release()
	if err := c.c.Noop(); err != nil {
		c.c.Close()
		return classify(ctx, OpDial, fmt.Errorf("noop: %w", err))
	}
	if err := c.c.Quit(); err != nil {
		c.c.Close()
		return classify(ctx, OpDial, fmt.Errorf("quit: %w", err))
	}
	return nil
}

// Close closes idle connections, and connections in use as soon as their
// Send returns. Later Sends fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	close(p.done)
	<-p.reaperDone
	var errs []error
	for _, c := range idle {
		if err := p.closeConn(c, true); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("smtp pool: close: %w", err)
	}
	return nil
}

func (p *Pool) acquire(ctx context.Context) error {
	select {
	case <-p.done:
		return &Error{Op: OpDial, Message: ErrPoolClosed.Error(), Temporary: true, Err: ErrPoolClosed}
	default:
	}
	select {
	case p.tokens <- struct{}{}:
		return nil
	case <-p.done:
		return &Error{Op: OpDial, Message: ErrPoolClosed.Error(), Temporary: true, Err: ErrPoolClosed}
	case <-ctx.Done():
		return classify(ctx, OpDial, ctx.Err())
	}
}

// get returns a connection and whether it carried earlier transactions.
func (p *Pool) get(ctx context.Context) (*conn, bool, error) {
	if err := p.acquire(ctx); err != nil {
		return nil, false, err
	}
	var stale []*conn
	p.mu.Lock()
	var c *conn
	for len(p.idle) > 0 && c == nil {
		c = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(c.lastUsed) >= p.cfg.IdleTimeout {
			stale = append(stale, c)
			c = nil
		}
	}
	p.mu.Unlock()
	for _, s := range stale {
		_ = p.closeConn(s, true)
	}
	if c != nil {
		return c, true, nil
	}
	c, err := p.dial(ctx)
	if err != nil {
		<-p.tokens
		return nil, false, err
	}
	return c, false, nil
}

// release returns a connection taken by get to the idle list when it is
// healthy and under its message cap, closes it otherwise, and gives up its
// token.
func (p *Pool) release(c *conn, healthy bool) {
	keep := healthy && c.sent < p.cfg.MaxMessagesPerConn
	if keep {
		p.mu.Lock()
		if p.closed {
			keep = false
		} else {
			c.lastUsed = time.Now()
			p.idle = append(p.idle, c)
		}
		p.mu.Unlock()
	}
	if !keep {
		// A healthy connection (at its cap, or the pool closing) deserves a
		// QUIT; one in an unknown state gets closed without a word.
		_ = p.closeConn(c, healthy)
	}
	<-p.tokens
}

func (p *Pool) reaper() {
	defer close(p.reaperDone)
	t := time.NewTicker(max(p.cfg.IdleTimeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			p.reapIdle(now)
		}
	}
}

// reapIdle closes connections idle for IdleTimeout or longer at now; relays
// drop idle sessions on their own schedule, and a connection we close
// cleanly is one that can not fail us later.
func (p *Pool) reapIdle(now time.Time) int {
	var stale []*conn
	p.mu.Lock()
	kept := p.idle[:0]
	for _, c := range p.idle {
		if now.Sub(c.lastUsed) >= p.cfg.IdleTimeout {
			stale = append(stale, c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.mu.Unlock()
	for _, c := range stale {
		p.log.Debug("smtp: closing idle connection", "conn", c.id, "idle", now.Sub(c.lastUsed))
		_ = p.closeConn(c, true)
	}
	return len(stale)
}

func (p *Pool) dial(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", p.cfg.Addr)
	if err != nil {
		return nil, classify(ctx, OpDial, err)
	}
	dc := &deadlineConn{Conn: raw}
	release := dc.bind(dctx)
	defer release()

	var c *gosmtp.Client
	helloOp := OpDial
	switch p.cfg.TLS {
	case TLSImplicit:
		tc := tls.Client(dc, p.tlsCfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, classify(ctx, OpTLS, fmt.Errorf("tls handshake with %s: %w", p.tlsCfg.ServerName, err))
		}
		c = gosmtp.NewClient(tc)
	case TLSStartTLS:
		// go-smtp greets with "EHLO localhost" before STARTTLS; our HELO is
		// sent in the EHLO after the upgrade, which is the one relays record.
		c, err = gosmtp.NewClientStartTLS(dc, p.tlsCfg)
		if err != nil {
			raw.Close()
			e := classify(ctx, OpTLS, err)
			var ne net.Error
			if e.Code == 0 && ctxDone(ctx) == nil && !errors.As(err, &ne) {
				// go-smtp reports a relay without STARTTLS as a plain error.
				e.Message = "STARTTLS failed (tls mode starttls requires it; use implicit, or none only for a relay on a trusted network): " + err.Error()
			}
			return nil, e
		}
		helloOp = OpTLS // the handshake itself happens during this EHLO
	default:
		c = gosmtp.NewClient(dc)
	}
	c.CommandTimeout = p.cfg.CommandTimeout
	c.SubmissionTimeout = p.cfg.CommandTimeout
	if err := c.Hello(p.cfg.HELO); err != nil {
		c.Close()
		return nil, classify(ctx, helloOp, err)
	}
	if p.cfg.Username != "" {
		if err := p.auth(c); err != nil {
			c.Close()
			return nil, classify(ctx, OpAuth, err)
		}
	}
	id := p.seq.Add(1)
	p.log.DebugContext(ctx, "smtp: connected", "conn", id, "tls", p.cfg.TLS)
	return &conn{id: id, c: c, dc: dc}, nil
}

func (p *Pool) auth(c *gosmtp.Client) error {
	if ok, _ := c.Extension("AUTH"); !ok {
		return &Error{Op: OpAuth, RelayDown: true,
			Message: "relay does not offer AUTH but a username is configured (does it require TLS first?)"}
	}
	switch {
	case c.SupportsAuth("PLAIN"):
		return c.Auth(sasl.NewPlainClient("", p.cfg.Username, p.cfg.Password))
	case c.SupportsAuth("LOGIN"):
		return c.Auth(sasl.NewLoginClient(p.cfg.Username, p.cfg.Password))
	default:
		_, mechs := c.Extension("AUTH")
		return &Error{Op: OpAuth, RelayDown: true,
			Message: fmt.Sprintf("relay offers neither PLAIN nor LOGIN (offers %q)", mechs)}
	}
}

// transact runs one mail transaction. broken reports that the connection
// must not be reused.
func (p *Pool) transact(ctx context.Context, c *conn, env Envelope, msg []byte) (err *Error, broken bool) {
	if ctx.Err() != nil {
		return classify(ctx, OpMail, ctx.Err()), false
	}
	release := c.dc.bind(ctx)
	defer release()

	if c.used {
		if err := c.c.Reset(); err != nil {
			return classify(ctx, OpReset, err), true
		}
	}
	c.used = true
	opts := &gosmtp.MailOptions{
		Return:     gosmtp.DSNReturnHeaders,
		EnvelopeID: env.EnvID,
		Size:       int64(len(msg)),
	}
	if !isASCII(env.From) || !isASCII(env.To) {
		if ok, _ := c.c.Extension("SMTPUTF8"); !ok {
			return &Error{Op: OpMail, Message: "envelope address is not ASCII and the relay does not offer SMTPUTF8"}, false
		}
		opts.UTF8 = true
	}
	if err := c.c.Mail(env.From, opts); err != nil {
		return classify(ctx, OpMail, err), connBroken(err)
	}
	rcpt := &gosmtp.RcptOptions{Notify: []gosmtp.DSNNotify{gosmtp.DSNNotifyFailure, gosmtp.DSNNotifyDelayed}}
	if err := c.c.Rcpt(env.To, rcpt); err != nil {
		return classify(ctx, OpRcpt, err), connBroken(err)
	}
	w, err2 := c.c.Data()
	if err2 != nil {
		return classify(ctx, OpData, err2), true
	}
	if _, err := w.Write(msg); err != nil {
		return classify(ctx, OpData, err), true
	}
	if err := w.Close(); err != nil {
		return classify(ctx, OpData, err), true
	}
	return nil, false
}

func (p *Pool) closeConn(c *conn, polite bool) error {
	if polite {
		ctx, cancel := context.WithTimeout(context.Background(), min(p.cfg.CommandTimeout, 5*time.Second))
		release := c.dc.bind(ctx)
		err := c.c.Quit()
		release()
		cancel()
		if err == nil {
			return nil
		}
	}
	if err := c.c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close connection %d: %w", c.id, err)
	}
	return nil
}

func (e Envelope) validate() error {
	if e.From == "" || e.To == "" {
		return fmt.Errorf("envelope needs From and To (got %q, %q)", e.From, e.To)
	}
	for _, f := range []struct{ name, v string }{{"From", e.From}, {"To", e.To}, {"EnvID", e.EnvID}} {
		if strings.ContainsAny(f.v, "\r\n\x00<> ") {
			return fmt.Errorf("envelope %s %q contains a forbidden character", f.name, f.v)
		}
	}
	for i := 0; i < len(e.EnvID); i++ {
		if e.EnvID[i] < 0x21 || e.EnvID[i] > 0x7e {
			return fmt.Errorf("envelope EnvID %q is not printable ASCII", e.EnvID)
		}
	}
	if len(e.EnvID) > 100 {
		return fmt.Errorf("envelope EnvID is %d bytes, over the DSN limit of 100", len(e.EnvID))
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// deadlineConn lets a context govern a connection that go-smtp drives with
// its own per-command deadlines: every deadline go-smtp sets is clamped to
// the bound context's deadline, and cancelling the context fails pending and
// future I/O at once.
type deadlineConn struct {
	net.Conn
	mu    sync.Mutex
	limit time.Time // zero: no limit
	gen   uint64    // bumps on bind and release, so a late cancel can not hit the next use
}

func (d *deadlineConn) clamp(t time.Time) time.Time {
	if d.limit.IsZero() || (!t.IsZero() && t.Before(d.limit)) {
		return t
	}
	return d.limit
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Conn.SetDeadline(d.clamp(t))
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Conn.SetReadDeadline(d.clamp(t))
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Conn.SetWriteDeadline(d.clamp(t))
}

// bind ties the connection to ctx until the returned func is called.
func (d *deadlineConn) bind(ctx context.Context) (release func()) {
	d.mu.Lock()
	d.gen++
	gen := d.gen
	d.limit, _ = ctx.Deadline()
	_ = d.Conn.SetDeadline(d.limit)
	d.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen != gen {
			return
		}
		d.limit = time.Unix(1, 0) // in the past
		_ = d.Conn.SetDeadline(d.limit)
	})
	return func() {
		stop()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen != gen {
			return
		}
		d.gen++
		d.limit = time.Time{}
		_ = d.Conn.SetDeadline(time.Time{})
	}
}
