package bounce

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testredis"
)

const (
	wtUser = "bounces"
	wtPass = "secret"
)

// wtServerOptions shape a test IMAP server.
type wtServerOptions struct {
	caps        imap.CapSet
	implicitTLS *tls.Config // serve TLS from the first byte
	startTLS    *tls.Config // offer STARTTLS
	hideIdle    bool        // strip IDLE from every CAPABILITY the server sends
}

// wtServer is go-imap's in-memory server on a loopback port. The memory
// backend outlives restarts, the way a real server's disk does.
type wtServer struct {
	t    *testing.T
	opts wtServerOptions
	user *imapmemserver.User
	addr string

	mu   sync.Mutex
	srv  *imapserver.Server
	done chan struct{}
	cmds []string // command lines the server read, in order
}

func wtDefaultCaps() imap.CapSet {
	return imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {}}
}

func wtStartServer(t *testing.T, opts wtServerOptions) *wtServer {
	t.Helper()
	if opts.caps == nil {
		opts.caps = wtDefaultCaps()
	}
	s := &wtServer{t: t, opts: opts, user: imapmemserver.NewUser(wtUser, wtPass)}
	if err := s.user.Create("INBOX", nil); err != nil {
		t.Fatalf("create INBOX: %v", err)
	}
	s.serve("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *wtServer) serve(addr string) {
	s.t.Helper()
	var ln net.Listener
	var err error
	// After a restart the port may take a moment to be free again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen %s: %v", addr, err)
	}
	s.addr = ln.Addr().String()
	if s.opts.implicitTLS != nil {
		ln = tls.NewListener(ln, s.opts.implicitTLS)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &wtSession{imapmemserver.NewUserSession(s.user)}, nil, nil
		},
		Caps:         s.opts.caps,
		TLSConfig:    s.opts.startTLS,
		InsecureAuth: true,
		Logger:       log.New(io.Discard, "", 0),
	})
	done := make(chan struct{})
	s.mu.Lock()
	s.srv, s.done = srv, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(&wtListener{Listener: ln, s: s})
	}()
}

// stop closes the listener and every connection, as a crashing server would.
func (s *wtServer) stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

func (s *wtServer) restart() {
	s.stop()
	s.serve(s.addr)
}

// sawCommand reports whether a client sent a command line containing cmd
// (for example " UID MOVE ").
func (s *wtServer) sawCommand(cmd string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.cmds {
		if strings.Contains(strings.ToUpper(l), cmd) {
			return true
		}
	}
	return false
}

type wtLiteral struct{ *bytes.Reader }

func (l wtLiteral) Size() int64 { return l.Reader.Size() }

func (s *wtServer) append(mailbox string, raw []byte) {
	s.t.Helper()
	if _, err := s.user.Append(mailbox, wtLiteral{bytes.NewReader(raw)}, &imap.AppendOptions{}); err != nil {
		s.t.Fatalf("append to %s: %v", mailbox, err)
	}
}

func (s *wtServer) count(mailbox string) int {
	s.t.Helper()
	st, err := s.user.Status(mailbox, &imap.StatusOptions{NumMessages: true})
	if err != nil {
		return -1 // folder missing
	}
	return int(*st.NumMessages)
}

func (s *wtServer) uidValidity(mailbox string) uint32 {
	s.t.Helper()
	st, err := s.user.Status(mailbox, &imap.StatusOptions{UIDValidity: true})
	if err != nil {
		s.t.Fatalf("status %s: %v", mailbox, err)
	}
	return st.UIDValidity
}

// ids returns the X-Test-ID of every message in mailbox, sorted, read over
// IMAP with BODY.PEEK[] so nothing changes.
func (s *wtServer) ids(mailbox string) []string {
	s.t.Helper()
	var conn net.Conn
	var err error
	if s.opts.implicitTLS != nil {
		conn, err = tls.Dial("tcp", s.addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = net.Dial("tcp", s.addr)
	}
	if err != nil {
		s.t.Fatalf("dial: %v", err)
	}
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.Login(wtUser, wtPass).Wait(); err != nil {
		s.t.Fatalf("login: %v", err)
	}
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		s.t.Fatalf("examine %s: %v", mailbox, err)
	}
	var ids []string
	if sel.NumMessages > 0 {
		section := &imap.FetchItemBodySection{Peek: true}
		var all imap.SeqSet
		all.AddRange(1, 0)
		bufs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			s.t.Fatalf("fetch %s: %v", mailbox, err)
		}
		for _, b := range bufs {
			ids = append(ids, wtTestID(b.FindBodySection(section)))
		}
	}
	slices.Sort(ids)
	return ids
}

// wtSession is the memory server's session with a sturdier IDLE. The memory
// server only looks for queued updates when told of a new one, so mail
// appended between the end of the previous command and the start of IDLE
// stays queued until something else happens: a lost wake-up no real server
// has. Polling the queue while idle keeps the notification pushed during IDLE
// without that gap.
type wtSession struct {
	*imapmemserver.UserSession
}

func (s *wtSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-t.C:
			if err := s.UserSession.Poll(w, true); err != nil {
				return err
			}
		}
	}
}

// wtListener records what clients send and can hide IDLE from them.
type wtListener struct {
	net.Listener
	s *wtServer
}

func (l *wtListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wtConn{Conn: c, s: l.s}, nil
}

type wtConn struct {
	net.Conn
	s    *wtServer
	line []byte
}

func (c *wtConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.line = append(c.line, p[:n]...)
	for {
		i := bytes.Index(c.line, []byte("\r\n"))
		if i < 0 {
			break
		}
		c.s.mu.Lock()
		c.s.cmds = append(c.s.cmds, string(c.line[:i]))
		c.s.mu.Unlock()
		c.line = c.line[i+2:]
	}
	return n, err
}

func (c *wtConn) Write(p []byte) (int, error) {
	if c.s.opts.hideIdle && bytes.Contains(p, []byte("CAPABILITY")) {
		if _, err := c.Conn.Write(bytes.ReplaceAll(p, []byte(" IDLE"), nil)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// wtMessage builds a small mail whose X-Test-ID header names it in
// assertions; pad grows the body.
func wtMessage(id string, pad int) []byte {
	return []byte(fmt.Sprintf("From: MAILER-DAEMON@mx.example\r\nTo: bounces@petitions.example\r\n"+
		"Subject: Undelivered Mail %s\r\nMessage-ID: <%s@test.example>\r\nX-Test-ID: %s\r\n\r\n"+
		"This is the mail system.%s\r\n", id, id, id, strings.Repeat("x", pad)))
}

func wtTestID(raw []byte) string {
	for _, l := range strings.Split(string(raw), "\r\n") {
		if v, ok := strings.CutPrefix(l, "X-Test-ID: "); ok {
			return v
		}
	}
	return ""
}

func wtFingerprint(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// wtHandler records every call; verdict decides each answer from the test
// id and the call number (1-based) for that message.
type wtHandler struct {
	mu      sync.Mutex
	byID    map[string]int
	byFP    map[string]int
	who     map[string]string
	name    string
	verdict func(id string, call int) (Disposition, error)
}

func newWTHandler(verdict func(id string, call int) (Disposition, error)) *wtHandler {
	if verdict == nil {
		verdict = func(string, int) (Disposition, error) { return Processed, nil }
	}
	return &wtHandler{byID: map[string]int{}, byFP: map[string]int{}, who: map[string]string{}, verdict: verdict}
}

func (h *wtHandler) Handle(_ context.Context, m Message) (Disposition, error) {
	id := wtTestID(m.Raw)
	h.mu.Lock()
	h.byID[id]++
	h.byFP[m.Fingerprint]++
	n := h.byID[id]
	h.mu.Unlock()
	if m.Fingerprint != wtFingerprint(m.Raw) {
		return 0, errors.New("fingerprint does not match content")
	}
	return h.verdict(id, n)
}

func (h *wtHandler) calls(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byID[id]
}

func (h *wtHandler) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.byID {
		n += c
	}
	return n
}

// wtRecorder collects hook calls.
type wtRecorder struct {
	mu      sync.Mutex
	ups     []bool
	success int
	results map[string]int
}

func (r *wtRecorder) hooks() WatcherHooks {
	r.results = map[string]int{}
	return WatcherHooks{
		Up: func(v bool) { r.mu.Lock(); r.ups = append(r.ups, v); r.mu.Unlock() },
		Success: func(time.Time) {
			r.mu.Lock()
			r.success++
			r.mu.Unlock()
		},
		Message: func(res string) { r.mu.Lock(); r.results[res]++; r.mu.Unlock() },
	}
}

func (r *wtRecorder) successes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.success
}

func (r *wtRecorder) result(res string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[res]
}

func (r *wtRecorder) upHistory() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ups)
}

// wtEventually polls cond until it holds or the deadline passes.
func wtEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wtConfig(s *wtServer) WatcherConfig {
	return WatcherConfig{
		Addr: s.addr, TLS: "none", Username: wtUser, Password: wtPass,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		LeaseTTL: 3 * time.Second,
	}
}

// wtRun runs a watcher until the returned stop is called (or the test ends)
// and checks that Run returned nil.
func wtRun(t *testing.T, cfg WatcherConfig, rdb redis.UniversalClient, h Handler, hooks WatcherHooks) (*Watcher, func()) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := NewWatcher(cfg, rdb, h, logger, hooks)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run returned %v after cancel; want nil", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("Run did not return within 20s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func wtCheckpoint(t *testing.T, rdb redis.UniversalClient, mailbox string) (uidValidity, last string) {
	t.Helper()
	h, err := rdb.HGetAll(context.Background(), rkeys.IMAPCheckpoint(mailbox)).Result()
	if err != nil {
		t.Fatalf("read checkpoint: %v", err)
	}
	return h["uidvalidity"], h["last_uid"]
}

// wtCert returns a server TLS config with a fresh self-signed certificate for
// 127.0.0.1 and a pool that trusts it.
func wtCert(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imap.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func TestWatcherHandlesNewMailWhileIdle(t *testing.T) {
	serverTLS, roots := wtCert(t)
	tests := []struct {
		name string
		opts wtServerOptions
		tls  string
		// seesIdle: the test can read the client's commands (not once
		// STARTTLS has encrypted them) and so wait for IDLE itself.
		seesIdle bool
	}{
		{name: "plain", tls: "none", seesIdle: true},
		{name: "implicit TLS", tls: "implicit", opts: wtServerOptions{implicitTLS: serverTLS}, seesIdle: true},
		{name: "STARTTLS", tls: "starttls", opts: wtServerOptions{startTLS: serverTLS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := wtStartServer(t, tt.opts)
			rdb := testredis.Start(t).Client(t)
			h := newWTHandler(nil)
			var rec wtRecorder
			cfg := wtConfig(srv)
			cfg.TLS = tt.tls
			cfg.TLSConfig = &tls.Config{RootCAs: roots}
			w, _ := wtRun(t, cfg, rdb, h, rec.hooks())

			wtEventually(t, 10*time.Second, "first pass over the mailbox", func() bool { return rec.successes() > 0 })
			if tt.seesIdle {
				wtEventually(t, 10*time.Second, "IDLE", func() bool { return srv.sawCommand(" IDLE") })
			}
			if !w.Up() {
				t.Fatalf("Up() = false after a successful pass")
			}

			start := time.Now()
			srv.append("INBOX", wtMessage("m1", 0))
			wtEventually(t, 10*time.Second, "message filed in Processed", func() bool { return srv.count("Processed") == 1 })
			latency := time.Since(start)
			t.Logf("append to filed in Processed: %v", latency)
			if latency > 5*time.Second {
				t.Errorf("latency %v; want under 5s", latency)
			}
			if got := h.calls("m1"); got != 1 {
				t.Errorf("handler calls for m1 = %d; want 1", got)
			}
			if n := srv.count("INBOX"); n != 0 {
				t.Errorf("INBOX holds %d messages; want 0", n)
			}
			// The checkpoint follows the move, so it may lag the count.
			wtEventually(t, 5*time.Second, "checkpoint at UID 1", func() bool {
				uv, last := wtCheckpoint(t, rdb, "INBOX")
				return uv == fmt.Sprint(srv.uidValidity("INBOX")) && last == "1"
			})
			wtEventually(t, 5*time.Second, "Message hook to report processed", func() bool {
				return rec.result("processed") == 1
			})
		})
	}
}

func TestWatcherSurvivesServerRestart(t *testing.T) {
	srv := wtStartServer(t, wtServerOptions{})
	rdb := testredis.Start(t).Client(t)
	h := newWTHandler(nil)
	var rec wtRecorder
	w, _ := wtRun(t, wtConfig(srv), rdb, h, rec.hooks())

	srv.append("INBOX", wtMessage("before", 0))
	wtEventually(t, 10*time.Second, "first message filed", func() bool { return srv.count("Processed") == 1 })
	wtEventually(t, 10*time.Second, "IDLE", func() bool { return srv.sawCommand(" IDLE") })

	srv.restart()
	wtEventually(t, 10*time.Second, "Up to drop and come back", func() bool {
		ups := rec.upHistory()
		return len(ups) >= 3 && slices.Equal(ups[:3], []bool{true, false, true}) && w.Up()
	})
	srv.append("INBOX", wtMessage("after", 0))
	wtEventually(t, 10*time.Second, "message appended after the restart filed", func() bool {
		return srv.count("Processed") == 2
	})
	if got := h.calls("after"); got != 1 {
		t.Errorf("handler calls for the message after the restart = %d; want 1", got)
	}
	if got := h.calls("before"); got != 1 {
		t.Errorf("handler calls for the message before the restart = %d; want 1", got)
	}
}

func TestWatcherUIDValidityChangeActsOnNothingTwice(t *testing.T) {
	srv := wtStartServer(t, wtServerOptions{})
	rdb := testredis.Start(t).Client(t)
	h := newWTHandler(nil)
	var rec wtRecorder
	wtRun(t, wtConfig(srv), rdb, h, rec.hooks())

	old := [][]byte{wtMessage("old1", 0), wtMessage("old2", 0), wtMessage("old3", 0)}
	for _, raw := range old {
		srv.append("INBOX", raw)
	}
	wtEventually(t, 10*time.Second, "old messages filed", func() bool { return srv.count("Processed") == 3 })
	oldUV := srv.uidValidity("INBOX")

	// The mailbox is rebuilt while the server is down (a restore, a
	// migration): a new UIDVALIDITY, the same mail and one new message.
	srv.stop()
	if err := srv.user.Delete("INBOX"); err != nil {
		t.Fatalf("delete INBOX: %v", err)
	}
	if err := srv.user.Create("INBOX", nil); err != nil {
		t.Fatalf("create INBOX: %v", err)
	}
	for _, raw := range old {
		srv.append("INBOX", raw)
	}
	srv.append("INBOX", wtMessage("new", 0))
	newUV := srv.uidValidity("INBOX")
	if newUV == oldUV {
		t.Fatalf("UIDVALIDITY did not change (%d)", newUV)
	}
	srv.serve(srv.addr)

	wtEventually(t, 10*time.Second, "rebuilt mailbox emptied", func() bool {
		return srv.count("INBOX") == 0 && srv.count("Processed") == 7
	})
	for _, id := range []string{"old1", "old2", "old3", "new"} {
		if got := h.calls(id); got != 1 {
			t.Errorf("handler calls for %s = %d; want 1", id, got)
		}
	}
	if got := h.total(); got != 4 {
		t.Errorf("handler calls = %d; want 4", got)
	}
	wtEventually(t, 5*time.Second, "checkpoint at the new UIDVALIDITY and UID 4", func() bool {
		uv, last := wtCheckpoint(t, rdb, "INBOX")
		return uv == fmt.Sprint(newUV) && last == "4"
	})
	if n := srv.count("Unrecognized"); n != 0 {
		t.Errorf("Unrecognized holds %d; want 0", n)
	}
}

func TestWatcherBacklogOfThousand(t *testing.T) {
	const n = 1000
	srv := wtStartServer(t, wtServerOptions{})
	rdb := testredis.Start(t).Client(t)
	h := newWTHandler(nil)
	var rec wtRecorder
	for i := range n {
		srv.append("INBOX", wtMessage(fmt.Sprintf("b%04d", i), 200))
	}

	start := time.Now()
	wtRun(t, wtConfig(srv), rdb, h, rec.hooks())
	wtEventually(t, 2*time.Minute, "backlog filed", func() bool { return srv.count("Processed") == n })
	t.Logf("%d waiting messages handled and filed in %v", n, time.Since(start))

	h.mu.Lock()
	if len(h.byFP) != n {
		t.Errorf("distinct fingerprints handled = %d; want %d", len(h.byFP), n)
	}
	for fp, c := range h.byFP {
		if c != 1 {
			t.Errorf("fingerprint %s handled %d times; want 1", fp, c)
		}
	}
	h.mu.Unlock()
	if got := srv.count("INBOX"); got != 0 {
		t.Errorf("INBOX holds %d; want 0", got)
	}
	if got := srv.count("Unrecognized"); got != 0 {
		t.Errorf("Unrecognized holds %d; want 0", got)
	}
	if got, err := rdb.SCard(context.Background(), rkeys.IMAPSeen("INBOX")).Result(); err != nil || got != n {
		t.Errorf("seen set size = %d, %v; want %d", got, err, n)
	}
	wtEventually(t, 5*time.Second, "checkpoint at the last UID", func() bool {
		_, last := wtCheckpoint(t, rdb, "INBOX")
		return last == fmt.Sprint(n)
	})
}

// TestWatcherFilesByVerdict covers every verdict on servers with MOVE, with
// only UIDPLUS (COPY, STORE, UID EXPUNGE) and with neither (COPY, STORE,
// EXPUNGE).
func TestWatcherFilesByVerdict(t *testing.T) {
	tests := []struct {
		name        string
		caps        imap.CapSet
		wantCommand string
	}{
		{"MOVE", wtDefaultCaps(), " UID MOVE "},
		{"UIDPLUS without MOVE", imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}}, " UID EXPUNGE "},
		{"plain IMAP4rev1", imap.CapSet{imap.CapIMAP4rev1: {}}, " EXPUNGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := wtStartServer(t, wtServerOptions{caps: tt.caps})
			rdb := testredis.Start(t).Client(t)
			h := newWTHandler(func(id string, call int) (Disposition, error) {
				switch {
				case strings.HasPrefix(id, "junk"):
					return Unrecognized, nil
				case id == "flaky" && call <= 2:
					return 0, errors.New("redis: connection refused")
				case id == "broken":
					return 0, errors.New("redis: connection refused")
				case id == "bogus":
					return Disposition(42), nil
				}
				return Processed, nil
			})
			var rec wtRecorder
			cfg := wtConfig(srv)
			cfg.MaxMessageBytes = 4096
			for _, id := range []string{"ok1", "junk1", "flaky", "broken", "ok2", "bogus", "junk2"} {
				srv.append("INBOX", wtMessage(id, 0))
			}
			srv.append("INBOX", wtMessage("huge", 8192))
			before := srv.count("INBOX")

			wtRun(t, cfg, rdb, h, rec.hooks())
			wtEventually(t, 20*time.Second, "INBOX emptied and every message reported", func() bool {
				return srv.count("INBOX") == 0 && srv.count("Processed")+srv.count("Unrecognized") == before &&
					rec.result("processed")+rec.result("unrecognized") == before
			})

			if got, want := srv.ids("Processed"), []string{"flaky", "ok1", "ok2"}; !slices.Equal(got, want) {
				t.Errorf("Processed = %v; want %v", got, want)
			}
			if got, want := srv.ids("Unrecognized"), []string{"bogus", "broken", "huge", "junk1", "junk2"}; !slices.Equal(got, want) {
				t.Errorf("Unrecognized = %v; want %v", got, want)
			}
			for id, want := range map[string]int{"ok1": 1, "junk1": 1, "flaky": 3, "broken": maxAttempts, "huge": 0, "bogus": 1} {
				if got := h.calls(id); got != want {
					t.Errorf("handler calls for %s = %d; want %d", id, got, want)
				}
			}
			if got := rec.result("error"); got != 2+maxAttempts {
				t.Errorf("Message hook error = %d; want %d", got, 2+maxAttempts)
			}
			if got := rec.result("processed"); got != 3 {
				t.Errorf("Message hook processed = %d; want 3", got)
			}
			if got, err := rdb.SCard(context.Background(), rkeys.IMAPSeen("INBOX")).Result(); err != nil || got != 3 {
				t.Errorf("seen set size = %d, %v; want 3 (only acted-on mail)", got, err)
			}
			if !srv.sawCommand(tt.wantCommand) {
				t.Errorf("server never saw %q", tt.wantCommand)
			}
			if tt.caps.Has(imap.CapMove) == srv.sawCommand(" UID COPY ") {
				t.Errorf("UID COPY used = %v with MOVE offered = %v", !tt.caps.Has(imap.CapMove), tt.caps.Has(imap.CapMove))
			}
		})
	}
}

// TestWatcherNeverDeletesUncopied removes the destination folder under the
// watcher: the failed MOVE or COPY must leave the message in place until the
// folder is back.
func TestWatcherNeverDeletesUncopied(t *testing.T) {
	tests := []struct {
		name string
		caps imap.CapSet
	}{
		{"MOVE", wtDefaultCaps()},
		{"COPY and EXPUNGE", imap.CapSet{imap.CapIMAP4rev1: {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := wtStartServer(t, wtServerOptions{caps: tt.caps})
			rdb := testredis.Start(t).Client(t)
			h := newWTHandler(nil)
			var rec wtRecorder
			wtRun(t, wtConfig(srv), rdb, h, rec.hooks())
			wtEventually(t, 10*time.Second, "IDLE", func() bool { return srv.sawCommand(" IDLE") })

			if err := srv.user.Delete("Processed"); err != nil {
				t.Fatalf("delete Processed: %v", err)
			}
			srv.append("INBOX", wtMessage("orphan", 0))
			wtEventually(t, 10*time.Second, "message filed once Processed is recreated", func() bool {
				return srv.count("Processed") == 1 && srv.count("INBOX") == 0
			})
			if got := srv.count("INBOX") + srv.count("Processed") + srv.count("Unrecognized"); got != 1 {
				t.Errorf("messages across folders = %d; want 1", got)
			}
			if got := h.calls("orphan"); got != 1 {
				t.Errorf("handler calls = %d; want 1 (the retry must not act twice)", got)
			}
		})
	}
}

func TestWatcherPollsWithoutIdle(t *testing.T) {
	srv := wtStartServer(t, wtServerOptions{hideIdle: true})
	rdb := testredis.Start(t).Client(t)
	h := newWTHandler(nil)
	var rec wtRecorder
	cfg := wtConfig(srv)
	cfg.PollInterval = 200 * time.Millisecond
	wtRun(t, cfg, rdb, h, rec.hooks())
	wtEventually(t, 10*time.Second, "first pass", func() bool { return rec.successes() > 0 })

	start := time.Now()
	srv.append("INBOX", wtMessage("polled", 0))
	wtEventually(t, 10*time.Second, "message filed by polling", func() bool { return srv.count("Processed") == 1 })
	t.Logf("filed after %v with a %v poll interval", time.Since(start), cfg.PollInterval)
	if srv.sawCommand(" IDLE") {
		t.Errorf("client sent IDLE to a server that does not offer it")
	}
	if !srv.sawCommand(" NOOP") {
		t.Errorf("client never polled with NOOP")
	}
	if got := h.calls("polled"); got != 1 {
		t.Errorf("handler calls = %d; want 1", got)
	}
}

// TestWatcherOneInstancePerMailbox runs two watchers on one mailbox, as two
// petitiond instances sharing Redis would: each message is handled once, and
// the standby takes over when the active one stops.
func TestWatcherOneInstancePerMailbox(t *testing.T) {
	const n = 200
	srv := wtStartServer(t, wtServerOptions{})
	rdb := testredis.Start(t).Client(t)
	h := newWTHandler(nil)
	for i := range n {
		srv.append("INBOX", wtMessage(fmt.Sprintf("s%03d", i), 0))
	}
	cfg := wtConfig(srv)
	cfg.LeaseTTL = 600 * time.Millisecond
	var recA, recB wtRecorder
	a, stopA := wtRun(t, cfg, rdb, h, recA.hooks())
	b, stopB := wtRun(t, cfg, rdb, h, recB.hooks())

	wtEventually(t, 30*time.Second, "backlog filed", func() bool { return srv.count("Processed") == n })
	h.mu.Lock()
	for fp, c := range h.byFP {
		if c != 1 {
			t.Errorf("fingerprint %s handled %d times; want 1", fp, c)
		}
	}
	if len(h.byFP) != n {
		t.Errorf("distinct fingerprints = %d; want %d", len(h.byFP), n)
	}
	h.mu.Unlock()
	if a.Up() && b.Up() {
		t.Fatalf("both instances connected at once")
	}

	standby, stopActive := b, stopA
	if b.Up() {
		standby, stopActive = a, stopB
	}
	stopActive()
	wtEventually(t, 10*time.Second, "standby takes over", standby.Up)
	srv.append("INBOX", wtMessage("takeover", 0))
	wtEventually(t, 10*time.Second, "message filed by the standby", func() bool { return srv.count("Processed") == n+1 })
	if got := h.calls("takeover"); got != 1 {
		t.Errorf("handler calls = %d; want 1", got)
	}
}

func TestWatcherRejectsBadConfig(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	tests := []struct {
		name string
		cfg  WatcherConfig
		want string
	}{
		{"no addr", WatcherConfig{}, "addr is empty"},
		{"no port", WatcherConfig{Addr: "imap.example"}, "missing port"},
		{"bad tls", WatcherConfig{Addr: "imap.example:993", TLS: "ssl"}, `tls "ssl"`},
		{"folder is mailbox", WatcherConfig{Addr: "imap.example:993", Processed: "INBOX"}, "must differ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWatcher(tt.cfg, rdb, newWTHandler(nil), nil, WatcherHooks{})
			err := w.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestWatcherResumesFromCheckpoint starts with a checkpoint past the first two
// messages: they are left alone even though "UID 3:*" returns the last
// message when nothing newer exists.
func TestWatcherResumesFromCheckpoint(t *testing.T) {
	srv := wtStartServer(t, wtServerOptions{})
	rdb := testredis.Start(t).Client(t)
	h := newWTHandler(nil)
	var rec wtRecorder
	srv.append("INBOX", wtMessage("done1", 0))
	srv.append("INBOX", wtMessage("done2", 0))
	if err := rdb.HSet(context.Background(), rkeys.IMAPCheckpoint("INBOX"),
		"uidvalidity", srv.uidValidity("INBOX"), "last_uid", 2).Err(); err != nil {
		t.Fatalf("seed checkpoint: %v", err)
	}
	wtRun(t, wtConfig(srv), rdb, h, rec.hooks())
	wtEventually(t, 10*time.Second, "first pass", func() bool { return rec.successes() > 0 })
	wtEventually(t, 10*time.Second, "IDLE", func() bool { return srv.sawCommand(" IDLE") })
	srv.append("INBOX", wtMessage("new", 0))
	wtEventually(t, 10*time.Second, "new message filed", func() bool { return srv.count("Processed") == 1 })
	if got, want := srv.ids("INBOX"), []string{"done1", "done2"}; !slices.Equal(got, want) {
		t.Errorf("INBOX = %v; want %v", got, want)
	}
	if got := h.total(); got != 1 {
		t.Errorf("handler calls = %d; want 1", got)
	}
}
