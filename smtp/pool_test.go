package smtp

import (
	"bufio"
	"bytes"
	"context"
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
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/internal/testcert"
)

// testLogger logs through t until the test ends; go-smtp's handler
// goroutines may still log after that, when t.Log would panic.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

func (w *tWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// startSink serves s on a fresh loopback port (or on addr when given) until
// the test ends, and returns the address.
func startSink(t testing.TB, s *Sink, addr string, wrap func(net.Listener) net.Listener) (string, func()) {
	t.Helper()
	if s.Dir == "" {
		s.Dir = t.TempDir()
	}
	if s.Logger == nil {
		s.Logger = testLogger(t)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr = l.Addr().String()
	if wrap != nil {
		l = wrap(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sink Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return addr, stop
}

func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	if cfg.TLS == "" {
		cfg.TLS = TLSNone
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	cfg.HELO = "client.petitiond.test"
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Pool.Close: %v", err)
		}
	})
	return p
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var verpT = VERP{Secret: []byte("a test secret of some length"), Domain: "bounces.petitions.example.org"}

func deliveryID(i int) string { return fmt.Sprintf("%032x", i+1) }

// letter composes the message and envelope of delivery i to target to.
func letter(t testing.TB, i int, to string) (Envelope, []byte) {
	t.Helper()
	id := deliveryID(i)
	msg, err := Compose(Message{
		FromName: "Maria Santos via LabourStart", FromAddress: "petitions@petitions.example.org",
		ReplyToName: "Maria Santos", ReplyToAddress: "maria@example.org",
		ToName: "Target", ToAddress: to,
		Subject: "Palayain si Erlan Baltabay, ñ, ã", Body: "Palayain si Erlan Baltabay.\n",
		DeliveryID: id, MessageID: MessageIDFor(id, "petitions@petitions.example.org"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return Envelope{From: verpT.Address(id), To: to, EnvID: id}, msg
}

func readArrivals(t *testing.T, dir string) []Arrival {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, ArrivalsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Arrival
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var raw map[string]any
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			t.Fatalf("arrivals line %q: %v", sc.Text(), err)
		}
		if ts, _ := raw["time"].(string); ts == "" {
			t.Fatalf("arrivals line %q has no time", sc.Text())
		} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Fatalf("arrivals time %q is not RFC 3339: %v", ts, err)
		}
		var a Arrival
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSendDeliversToSink(t *testing.T) {
	sink := &Sink{}
	addr, _ := startSink(t, sink, "", nil)
	p := newPool(t, Config{Addr: addr, PoolSize: 2})
	before := time.Now()
	targets := []string{"press@mfa.example", "mission@kz-geneva.example", "info@un.example"}
	sent := map[string][]byte{}
	for i, to := range targets {
		env, msg := letter(t, i, to)
		if err := p.Send(ctxT(t), env, msg); err != nil {
			t.Fatalf("Send to %s: %v", to, err)
		}
		sent[to] = msg
	}
	after := time.Now()
	if got := sink.Count(); got != len(targets) {
		t.Fatalf("sink accepted %d messages, want %d", got, len(targets))
	}
	arrivals := readArrivals(t, sink.Dir)
	if len(arrivals) != len(targets) {
		t.Fatalf("%d arrivals, want %d", len(arrivals), len(targets))
	}
	for i, a := range arrivals {
		id := deliveryID(i)
		want := Arrival{
			Time: a.Time, From: verpT.Address(id), To: targets[i],
			MessageID: MessageIDFor(id, "petitions@petitions.example.org"), DeliveryID: id, File: a.File,
		}
		if a != want {
			t.Errorf("arrival %d = %+v, want %+v", i, a, want)
		}
		if a.Time.Before(before) || a.Time.After(after) {
			t.Errorf("arrival %d time %v outside the send window [%v, %v]", i, a.Time, before, after)
		}
		if !strings.HasSuffix(a.File, ".eml") || strings.ContainsRune(a.File, '/') {
			t.Errorf("arrival %d file %q is not a bare .eml name", i, a.File)
		}
		eml, err := os.ReadFile(filepath.Join(sink.Dir, a.File))
		if err != nil {
			t.Fatalf("read %s: %v", a.File, err)
		}
		if !bytes.Equal(eml, sent[a.To]) {
			t.Errorf("%s differs from the message sent to %s", a.File, a.To)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(sink.Dir, ".incoming-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
	if got := sink.Connections(); got != 1 {
		t.Errorf("sequential sends used %d connections, want 1 reused", got)
	}
}

func TestSendReplyClassification(t *testing.T) {
	var defer451 atomic.Bool
	sink := &Sink{
		Reject: regexp.MustCompile(`^nobody@`),
		Hook: func(from, rcpt string) *gosmtp.SMTPError {
			if rcpt == "slow@mfa.example" && defer451.Load() {
				return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Try again later"}
			}
			if rcpt == "blocked@mfa.example" {
				return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Rejected by policy"}
			}
			return nil
		},
	}
	addr, _ := startSink(t, sink, "", nil)
	p := newPool(t, Config{Addr: addr, PoolSize: 1})

	defer451.Store(true)
	tests := []struct {
		name      string
		to        string
		code      int
		enhanced  string
		temporary bool
	}{
		{"unknown user", "nobody@mfa.example", 550, "5.1.1", false},
		{"greylisted", "slow@mfa.example", 451, "4.7.1", true},
		{"policy block", "blocked@mfa.example", 554, "5.7.1", false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, msg := letter(t, i, tc.to)
			err := p.Send(ctxT(t), env, msg)
			e, ok := AsError(err)
			if !ok {
				t.Fatalf("Send = %v (%T), want *Error", err, err)
			}
			if e.Op != OpRcpt || e.Code != tc.code || e.EnhancedCode != tc.enhanced || e.Temporary != tc.temporary || e.RelayDown {
				t.Fatalf("Send = %+v, want op rcpt code %d %s temporary=%v relay_down=false", e, tc.code, tc.enhanced, tc.temporary)
			}
			if !strings.Contains(e.Error(), fmt.Sprintf("%d %s", tc.code, tc.enhanced)) {
				t.Errorf("Error() = %q does not show the reply", e.Error())
			}
		})
	}
	defer451.Store(false)
	env, msg := letter(t, 9, "slow@mfa.example")
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatalf("Send after the 451s stopped: %v", err)
	}
	if sink.Count() != 1 {
		t.Fatalf("sink accepted %d messages, want 1", sink.Count())
	}
	// Rejected recipients leave the session intact: everything went over one
	// connection.
	if got := sink.Connections(); got != 1 {
		t.Errorf("used %d connections, want 1", got)
	}
}

func TestTLSAndAuth(t *testing.T) {
	serverTLS, roots := testcert.New(t, "127.0.0.1", "localhost")
	users := map[string]string{"campaigns": "s3cret"}
	tests := []struct {
		name     string
		sink     *Sink
		implicit bool
		cfg      Config
		wantOp   string // "" for success
		wantText string
		wantCode int
	}{
		{
			name: "starttls and plain",
			sink: &Sink{TLSConfig: serverTLS, Users: users, RequireTLS: true},
			cfg:  Config{TLS: TLSStartTLS, Username: "campaigns", Password: "s3cret"},
		},
		{
			name: "starttls and login only",
			sink: &Sink{TLSConfig: serverTLS, Users: users, RequireTLS: true, AuthMechanisms: []string{"LOGIN"}},
			cfg:  Config{TLS: TLSStartTLS, Username: "campaigns", Password: "s3cret"},
		},
		{
			name:     "implicit tls",
			sink:     &Sink{Users: users},
			implicit: true,
			cfg:      Config{TLS: TLSImplicit, Username: "campaigns", Password: "s3cret"},
		},
		{
			name:     "wrong password",
			sink:     &Sink{TLSConfig: serverTLS, Users: users, RequireTLS: true},
			cfg:      Config{TLS: TLSStartTLS, Username: "campaigns", Password: "wrong"},
			wantOp:   OpAuth,
			wantCode: 535,
			wantText: "rejected the credentials",
		},
		{
			name:     "starttls required but not offered",
			sink:     &Sink{},
			cfg:      Config{TLS: TLSStartTLS},
			wantOp:   OpTLS,
			wantText: "STARTTLS",
		},
		{
			name:     "untrusted certificate",
			sink:     &Sink{TLSConfig: serverTLS},
			cfg:      Config{TLS: TLSStartTLS, TLSConfig: &tls.Config{}},
			wantOp:   OpTLS,
			wantText: "certificate",
		},
		{
			name:     "auth not offered before tls",
			sink:     &Sink{TLSConfig: serverTLS, Users: users, RequireTLS: true},
			cfg:      Config{TLS: TLSNone, Username: "campaigns", Password: "s3cret"},
			wantOp:   OpAuth,
			wantText: "does not offer AUTH",
		},
		{
			name:     "mail without auth",
			sink:     &Sink{Users: users},
			cfg:      Config{TLS: TLSNone},
			wantOp:   OpMail,
			wantCode: 530,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := tc.sink
			var wrap func(net.Listener) net.Listener
			if tc.implicit {
				wrap = func(l net.Listener) net.Listener { return tls.NewListener(l, serverTLS) }
			}
			addr, _ := startSink(t, sink, "", wrap)
			cfg := tc.cfg
			cfg.Addr = addr
			if cfg.TLSConfig == nil {
				cfg.TLSConfig = &tls.Config{RootCAs: roots}
			}
			p := newPool(t, cfg)
			env, msg := letter(t, 0, "press@mfa.example")
			err := p.Send(ctxT(t), env, msg)
			probeErr := p.Probe(ctxT(t))
			if tc.wantOp == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if probeErr != nil {
					t.Fatalf("Probe: %v", probeErr)
				}
				if sink.Count() != 1 {
					t.Fatalf("sink accepted %d messages, want 1", sink.Count())
				}
				return
			}
			for name, err := range map[string]error{"Send": err, "Probe": probeErr} {
				if name == "Probe" && tc.wantOp == OpMail {
					if err != nil {
						t.Errorf("Probe = %v; the relay is usable, only MAIL is refused", err)
					}
					continue
				}
				e, ok := AsError(err)
				if !ok {
					t.Fatalf("%s = %v, want *Error", name, err)
				}
				if e.Op != tc.wantOp || (tc.wantCode != 0 && e.Code != tc.wantCode) || !strings.Contains(e.Error(), tc.wantText) {
					t.Fatalf("%s = %q (%+v), want op %s code %d mentioning %q", name, e, e, tc.wantOp, tc.wantCode, tc.wantText)
				}
				if tc.wantOp != OpMail && !e.RelayDown {
					t.Errorf("%s: RelayDown = false for a %s failure", name, e.Op)
				}
			}
			if sink.Count() != 0 {
				t.Errorf("sink accepted %d messages despite the failure", sink.Count())
			}
		})
	}
}

func TestConnectionReuse(t *testing.T) {
	tests := []struct {
		name      string
		maxPer    int
		messages  int
		wantConns int
	}{
		{"one connection for several messages", 10, 5, 1},
		{"new connection after the cap", 3, 7, 3},
		{"cap of one", 1, 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &Sink{}
			addr, _ := startSink(t, sink, "", nil)
			p := newPool(t, Config{Addr: addr, PoolSize: 2, MaxMessagesPerConn: tc.maxPer})
			for i := range tc.messages {
				env, msg := letter(t, i, "press@mfa.example")
				if err := p.Send(ctxT(t), env, msg); err != nil {
					t.Fatalf("Send %d: %v", i, err)
				}
			}
			if got := sink.Connections(); got != tc.wantConns {
				t.Errorf("sink saw %d connections, want %d", got, tc.wantConns)
			}
			if got := sink.Count(); got != tc.messages {
				t.Errorf("sink accepted %d messages, want %d", got, tc.messages)
			}
		})
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	sink := &Sink{}
	addr, _ := startSink(t, sink, "", nil)
	p := newPool(t, Config{Addr: addr, IdleTimeout: time.Hour})
	env, msg := letter(t, 0, "press@mfa.example")
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatal(err)
	}
	if n := p.reapIdle(time.Now()); n != 0 {
		t.Fatalf("reaped %d fresh connections", n)
	}
	if n := p.reapIdle(time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("reaped %d connections idle for an hour, want 1", n)
	}
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatal(err)
	}
	if got := sink.Connections(); got != 2 {
		t.Errorf("sink saw %d connections, want a new one after the idle close (2)", got)
	}
}

func TestDeadPooledConnectionIsRedialled(t *testing.T) {
	first := &Sink{}
	addr, stop := startSink(t, first, "", nil)
	p := newPool(t, Config{Addr: addr, PoolSize: 1})
	env, msg := letter(t, 0, "press@mfa.example")
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatal(err)
	}
	// The relay restarts: the pooled connection is now dead.
	stop()
	second := &Sink{}
	startSink(t, second, addr, nil)
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatalf("Send over a dead pooled connection was not retried: %v", err)
	}
	if second.Count() != 1 || second.Connections() != 1 {
		t.Errorf("restarted sink: %d messages over %d connections, want 1 over 1", second.Count(), second.Connections())
	}
}

func TestPoolSizeBoundsConnections(t *testing.T) {
	// The delay makes sends overlap, so an unbounded pool would open one
	// connection per goroutine.
	sink := &Sink{DataDelay: 20 * time.Millisecond}
	addr, _ := startSink(t, sink, "", nil)
	p := newPool(t, Config{Addr: addr, PoolSize: 2})
	const n = 12
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			env, msg := letter(t, i, "press@mfa.example")
			errs <- p.Send(ctxT(t), env, msg)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if got := sink.Connections(); got > 2 {
		t.Errorf("sink saw %d connections, pool size is 2", got)
	}
	if sink.Count() != n {
		t.Errorf("sink accepted %d, want %d", sink.Count(), n)
	}
}

func TestSendHonoursContext(t *testing.T) {
	sink := &Sink{DataDelay: time.Minute}
	addr, _ := startSink(t, sink, "", nil)
	p := newPool(t, Config{Addr: addr, PoolSize: 1})
	env, msg := letter(t, 0, "press@mfa.example")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Send(ctx, env, msg)
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("Send took %v despite a 200ms deadline", elapsed)
	}
	e, ok := AsError(err)
	if !ok || !errors.Is(err, context.DeadlineExceeded) || e.Op != OpData || !e.Temporary || e.RelayDown {
		t.Fatalf("Send = %v (%+v), want a temporary data error wrapping context.DeadlineExceeded", err, e)
	}

	// With the only slot free again (the broken connection was dropped), a
	// cancelled context fails fast without touching the relay.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	err = p.Send(cctx, env, msg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with a cancelled context = %v, want context.Canceled", err)
	}
	if sink.Count() != 0 {
		t.Errorf("sink accepted %d messages", sink.Count())
	}
}

func TestProbe(t *testing.T) {
	sink := &Sink{}
	addr, _ := startSink(t, sink, "", nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()
	tests := []struct {
		name   string
		addr   string
		wantOp string
	}{
		{"usable relay", addr, ""},
		{"nothing listening", deadAddr, OpDial},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, Config{Addr: tc.addr, DialTimeout: 5 * time.Second})
			err := p.Probe(ctxT(t))
			if tc.wantOp == "" {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
				return
			}
			e, ok := AsError(err)
			if !ok || e.Op != tc.wantOp || !e.RelayDown || !e.Temporary || e.Code != 0 {
				t.Fatalf("Probe = %v (%+v), want a temporary relay-down %s error", err, e, tc.wantOp)
			}
		})
	}
}

func TestSendAfterClose(t *testing.T) {
	sink := &Sink{}
	addr, _ := startSink(t, sink, "", nil)
	p, err := NewPool(Config{Addr: addr, TLS: TLSNone, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	env, msg := letter(t, 0, "press@mfa.example")
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Send(ctxT(t), env, msg); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Send after Close = %v, want ErrPoolClosed", err)
	}
}

func TestNewPoolRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no port", Config{Addr: "relay.example"}, "relay address"},
		{"bad tls mode", Config{Addr: "relay.example:587", TLS: "ssl"}, "tls mode"},
		{"password without user", Config{Addr: "relay.example:587", Password: "x"}, "username is empty"},
		{"negative pool", Config{Addr: "relay.example:587", PoolSize: -1}, "pool_size"},
		{"helo with space", Config{Addr: "relay.example:587", HELO: "a b"}, "helo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool(tc.cfg)
			if err == nil {
				p.Close()
				t.Fatal("NewPool accepted a bad config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSendRejectsBadEnvelope(t *testing.T) {
	p := newPool(t, Config{Addr: "127.0.0.1:1"})
	tests := []struct {
		name string
		env  Envelope
	}{
		{"no recipient", Envelope{From: "a@b.example"}},
		{"CRLF in recipient", Envelope{From: "a@b.example", To: "x@y.example\r\nRCPT TO:<z@evil.example>"}},
		{"space in envid", Envelope{From: "a@b.example", To: "x@y.example", EnvID: "a b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Send(ctxT(t), tc.env, []byte("x"))
			e, ok := AsError(err)
			if !ok || e.Temporary || e.RelayDown {
				t.Fatalf("Send = %v (%+v), want a permanent envelope error", err, e)
			}
		})
	}
}

func BenchmarkSend(b *testing.B) {
	for _, size := range []int{1, 4} {
		b.Run(fmt.Sprintf("pool=%d", size), func(b *testing.B) {
			sink := &Sink{Logger: slog.New(slog.DiscardHandler)}
			addr, _ := startSink(b, sink, "", nil)
			p, err := NewPool(Config{Addr: addr, TLS: TLSNone, PoolSize: size, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			env, msg := letter(b, 0, "press@mfa.example")
			ctx := context.Background()
			b.SetParallelism(size)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.Send(ctx, env, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// dsnBackend is a bare go-smtp server that records the envelope parameters
// it was given; the Sink does not expose them.
type dsnBackend struct {
	mu   sync.Mutex
	mail []gosmtp.MailOptions
	rcpt []gosmtp.RcptOptions
}

func (b *dsnBackend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return dsnSession{b}, nil }

type dsnSession struct{ b *dsnBackend }

func (s dsnSession) Mail(_ string, o *gosmtp.MailOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.mail = append(s.b.mail, *o)
	return nil
}

func (s dsnSession) Rcpt(_ string, o *gosmtp.RcptOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.rcpt = append(s.b.rcpt, *o)
	return nil
}

func (s dsnSession) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (s dsnSession) Reset()                 {}
func (s dsnSession) Logout() error          { return nil }

func TestSendRequestsDSN(t *testing.T) {
	be := &dsnBackend{}
	srv := gosmtp.NewServer(be)
	srv.EnableDSN = true
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slogPrinter{testLogger(t)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	p := newPool(t, Config{Addr: l.Addr().String()})
	env, msg := letter(t, 0, "press@mfa.example")
	if err := p.Send(ctxT(t), env, msg); err != nil {
		t.Fatal(err)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.mail) != 1 || len(be.rcpt) != 1 {
		t.Fatalf("server saw %d MAIL and %d RCPT, want 1 each", len(be.mail), len(be.rcpt))
	}
	m, r := be.mail[0], be.rcpt[0]
	if m.EnvelopeID != env.EnvID || m.Return != gosmtp.DSNReturnHeaders || m.Size != int64(len(msg)) {
		t.Errorf("MAIL parameters = ENVID %q RET %q SIZE %d, want %q HDRS %d", m.EnvelopeID, m.Return, m.Size, env.EnvID, len(msg))
	}
	want := []gosmtp.DSNNotify{gosmtp.DSNNotifyFailure, gosmtp.DSNNotifyDelayed}
	if !slices.Equal(r.Notify, want) {
		t.Errorf("RCPT NOTIFY = %v, want %v", r.Notify, want)
	}
}
