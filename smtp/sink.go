package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// ArrivalsFile is the log, in Sink.Dir, of every accepted recipient.
const ArrivalsFile = "arrivals.jsonl"

// Arrival is one line of ArrivalsFile.
type Arrival struct {
	Time       time.Time `json:"time"` // when the sink accepted the message (RFC 3339, nanoseconds)
	From       string    `json:"from"` // envelope sender
	To         string    `json:"to"`   // envelope recipient
	MessageID  string    `json:"message_id"`
	DeliveryID string    `json:"delivery_id"` // X-Petitiond-Delivery
	File       string    `json:"file"`        // .eml name within Dir
}

// Sink is a development SMTP server standing in for a relay: it accepts mail,
// stores each message as a .eml file and logs every recipient to
// ArrivalsFile. Options let tests make it reject, defer, demand TLS and AUTH,
// or answer slowly. The .eml holds the message exactly as received; the
// envelope is in ArrivalsFile.
type Sink struct {
	Dir        string                                    // each accepted message is written as a .eml file
	Reject     *regexp.Regexp                            // recipients matching it get 550 5.1.1
	TLSConfig  *tls.Config                               // offers STARTTLS when set
	Users      map[string]string                         // when non-empty, AUTH (PLAIN and LOGIN) is required before MAIL
	RequireTLS bool                                      // refuse AUTH/MAIL before STARTTLS
	DataDelay  time.Duration                             // wait this long before answering DATA
	Hook       func(from, rcpt string) *gosmtp.SMTPError // optional per-recipient answer, e.g. 451
	Logger     *slog.Logger

	// AuthMechanisms to offer when Users is set; PLAIN and LOGIN when empty.
	AuthMechanisms []string

	count atomic.Int64
	conns atomic.Int64
	seq   atomic.Uint64

	logMu    sync.Mutex
	arrivals *os.File

	// inflight counts Data calls, so Serve returns only after every
	// accepted message is fully on disk.
	inflightMu sync.Mutex
	inflight   int
	closing    bool
	idle       *sync.Cond
}

// Count is the number of messages accepted so far.
func (s *Sink) Count() int { return int(s.count.Load()) }

// Connections is the number of connections accepted so far.
func (s *Sink) Connections() int { return int(s.conns.Load()) }

// ListenAndServe listens on addr (host:port) and serves until ctx is done.
func (s *Sink) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("sink: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, l)
}

// Serve accepts SMTP connections on l until ctx is done, then closes l and
// every open session and returns once in-flight messages are written. A
// Sink serves once.
func (s *Sink) Serve(ctx context.Context, l net.Listener) error {
	defer l.Close()
	log := s.logger().With("listen", l.Addr().String())
	if s.Dir == "" {
		return errors.New("sink: Dir is required")
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("sink: create %s: %w", s.Dir, err)
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, ArrivalsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("sink: open arrivals log: %w", err)
	}
	defer f.Close()
	s.logMu.Lock()
	s.arrivals = f
	s.logMu.Unlock()
	s.inflightMu.Lock()
	s.idle = sync.NewCond(&s.inflightMu)
	// A sink may be served again after a stop (tests take the relay down
	// and bring it back); it must not keep refusing as "shutting down".
	s.closing = false
	s.inflightMu.Unlock()

	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return &sinkSession{sink: s, ctx: ctx, conn: c, log: log}, nil
	}))
	srv.Domain = "sink.petitiond.invalid"
	srv.TLSConfig = s.TLSConfig
	srv.AllowInsecureAuth = !s.RequireTLS
	srv.EnableDSN = true // so clients exercise their DSN parameters
	srv.EnableSMTPUTF8 = true
	srv.MaxMessageBytes = 32 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = 10 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = slogPrinter{log}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(countingListener{Listener: l, n: &s.conns}) }()
	log.InfoContext(ctx, "sink: listening", "dir", s.Dir, "starttls", s.TLSConfig != nil,
		"auth", len(s.Users) > 0, "require_tls", s.RequireTLS)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	closeErr := srv.Close()
	if serveErr == nil {
		serveErr = <-errc
	}
	s.inflightMu.Lock()
	s.closing = true
	for s.inflight > 0 {
		s.idle.Wait()
	}
	s.inflightMu.Unlock()
	log.InfoContext(ctx, "sink: stopped", "accepted", s.Count())
	if serveErr != nil {
		return fmt.Errorf("sink: serve: %w", serveErr)
	}
	if closeErr != nil && !errors.Is(closeErr, gosmtp.ErrServerClosed) && !errors.Is(closeErr, net.ErrClosed) {
		return fmt.Errorf("sink: close: %w", closeErr)
	}
	return nil
}

func (s *Sink) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Sink) enter() bool {
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	if s.closing {
		return false
	}
	s.inflight++
	return true
}

func (s *Sink) leave() {
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	s.inflight--
	if s.inflight == 0 {
		s.idle.Broadcast()
	}
}

// store writes the message under a temporary name and renames it, so a
// reader polling Dir never sees half a file, then logs the arrivals.
func (s *Sink) store(from string, rcpts []string, data []byte) (string, error) {
	tmp, err := os.CreateTemp(s.Dir, ".incoming-*.tmp")
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	now := time.Now()
	name := fmt.Sprintf("%s-%06d.eml", now.UTC().Format("20060102T150405.000000000Z"), s.seq.Add(1))
	if err := os.Rename(tmp.Name(), filepath.Join(s.Dir, name)); err != nil {
		return "", fmt.Errorf("rename to %s: %w", name, err)
	}
	s.count.Add(1)

	var msgID, deliveryID string
	if h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(data))); err == nil {
		msgID = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h.Get("Message-Id")), "<"), ">")
		deliveryID = strings.TrimSpace(h.Get(DeliveryHeader))
	}
	var lines bytes.Buffer
	enc := json.NewEncoder(&lines)
	for _, rcpt := range rcpts {
		a := Arrival{Time: now, From: from, To: rcpt, MessageID: msgID, DeliveryID: deliveryID, File: name}
		if err := enc.Encode(a); err != nil {
			return name, fmt.Errorf("encode arrival: %w", err)
		}
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	// One write for all lines: concurrent sessions never interleave within
	// a line, and readers see only complete lines.
	if _, err := s.arrivals.Write(lines.Bytes()); err != nil {
		return name, fmt.Errorf("append to %s: %w", ArrivalsFile, err)
	}
	return name, nil
}

type sinkSession struct {
	sink   *Sink
	ctx    context.Context
	conn   *gosmtp.Conn
	log    *slog.Logger
	authed bool
	from   string
	rcpts  []string
}

var (
	errTLSRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	errAuthNeeded  = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errNoSuchUser  = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user here (sink reject rule)"}
	errShutdown    = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "Sink shutting down"}
)

func (ss *sinkSession) isTLS() bool {
	_, ok := ss.conn.TLSConnectionState()
	return ok
}

func (ss *sinkSession) AuthMechanisms() []string {
	if len(ss.sink.Users) == 0 {
		return nil
	}
	if len(ss.sink.AuthMechanisms) > 0 {
		return ss.sink.AuthMechanisms
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	if ss.sink.RequireTLS && !ss.isTLS() {
		return nil, errTLSRequired
	}
	if !slices.Contains(ss.AuthMechanisms(), mech) {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return gosmtp.ErrAuthFailed
			}
			return ss.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: ss.login}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

func (ss *sinkSession) login(username, password string) error {
	want, ok := ss.sink.Users[username]
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
		ss.log.Info("sink: authentication failed", "username", username)
		return gosmtp.ErrAuthFailed
	}
	ss.authed = true
	return nil
}

func (ss *sinkSession) Mail(from string, _ *gosmtp.MailOptions) error {
	if ss.sink.RequireTLS && !ss.isTLS() {
		return errTLSRequired
	}
	if len(ss.sink.Users) > 0 && !ss.authed {
		return errAuthNeeded
	}
	ss.from = from
	ss.rcpts = nil
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if ss.sink.Reject != nil && ss.sink.Reject.MatchString(to) {
		return errNoSuchUser
	}
	if ss.sink.Hook != nil {
		if e := ss.sink.Hook(ss.from, to); e != nil {
			return e
		}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	if !ss.sink.enter() {
		return errShutdown
	}
	defer ss.sink.leave()
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("sink: read message: %w", err)
	}
	if d := ss.sink.DataDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ss.ctx.Done():
			t.Stop()
			return errShutdown
		}
	}
	name, err := ss.sink.store(ss.from, ss.rcpts, data)
	if err != nil {
		ss.log.Error("sink: store message", "err", err)
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Sink could not store the message"}
	}
	ss.log.Debug("sink: accepted", "from", ss.from, "to", ss.rcpts, "file", name, "bytes", len(data))
	return nil
}

func (ss *sinkSession) Reset() {
	ss.from = ""
	ss.rcpts = nil
}

func (ss *sinkSession) Logout() error { return nil }

// loginServer is the server side of the obsolete but still common LOGIN
// mechanism, which go-sasl implements only for clients.
type loginServer struct {
	check    func(username, password string) error
	username string
	state    int
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case 0:
		l.state = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough // initial response carries the username
	case 1:
		l.username = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.check(l.username, string(response))
	}
	return nil, true, errors.New("unexpected response after LOGIN completed")
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// slogPrinter adapts go-smtp's printf-style error log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Warn("sink: " + fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("sink: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
