package mailstack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
)

// TestBounceLoop relays one good and one bad message through Postfix to a
// sink that rejects the bad recipient, and expects Postfix's DSN in the
// bounce mailbox over IMAP. It runs twice in a row, each time with a fresh
// stack, to prove that a stopped stack leaves nothing behind that would stop
// the next one.
func TestBounceLoop(t *testing.T) {
	for _, name := range []string{"first", "second"} {
		var (
			s    *Stack
			pids []int
		)
		t.Run(name, func(t *testing.T) {
			s, pids = bounceLoop(t)
		})
		if s == nil {
			continue
		}
		checkCleanedUp(t, s, pids)
	}
}

// TestConcurrentStacks runs the loop on two stacks at once, as separate
// end-to-end tests in one binary would.
func TestConcurrentStacks(t *testing.T) {
	for _, name := range []string{"one", "two"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bounceLoop(t)
		})
	}
}

func bounceLoop(t *testing.T) (*Stack, []int) {
	sink := startSink(t)

	began := time.Now()
	s := Start(t, Config{
		RelayDomain:  "gov.test",
		NextHop:      sink.addr,
		BounceDomain: "bounce.test",
	})
	startTook := time.Since(began)

	var pids []int
	for _, f := range []string{
		filepath.Join(s.queueDir, "pid", "master.pid"),
		filepath.Join(s.Dir, "dovecot", "run", "master.pid"),
	} {
		pid, err := readPID(f)
		if err != nil {
			t.Fatalf("%v\n%s", err, s.Log())
		}
		if !alive(pid) {
			t.Fatalf("master %d from %s is not running\n%s", pid, f, s.Log())
		}
		pids = append(pids, pid)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const verp = "bounces+abc123@bounce.test"
	if err := send(ctx, s.SMTPAddr, verp, "alive@gov.test", "alive"); err != nil {
		t.Fatalf("send to alive: %v\n%s", err, s.Log())
	}
	if err := send(ctx, s.SMTPAddr, verp, "dead@gov.test", "dead"); err != nil {
		t.Fatalf("send to dead: %v\n%s", err, s.Log())
	}
	sentDead := time.Now()

	if err := sink.waitFor(ctx, "alive@gov.test"); err != nil {
		t.Fatalf("the sink never got the message for alive@gov.test: %v\n%s", err, s.Log())
	}
	if got := sink.count("dead@gov.test"); got != 0 {
		t.Errorf("the sink accepted %d messages for dead@gov.test, want 0", got)
	}

	dsnCtx, dsnCancel := context.WithTimeout(ctx, 30*time.Second)
	defer dsnCancel()
	raw, err := waitForMessage(dsnCtx, s)
	if err != nil {
		t.Fatalf("no DSN in the bounce mailbox: %v\n%s", err, s.Log())
	}
	dsnTook := time.Since(sentDead)
	checkDSN(t, raw, "dead@gov.test", "5.1.1", verp)

	if err := s.Flush(ctx); err != nil {
		t.Errorf("Flush: %v\n%s", err, s.Log())
	}

	t.Logf("timing: Start took %s, the DSN reached IMAP %s after the message was queued",
		startTook.Round(time.Millisecond), dsnTook.Round(time.Millisecond))
	return s, pids
}

// checkCleanedUp runs after the subtest's cleanups: processes gone, ports
// free, directory removed, and main.cf no longer naming the directory.
func checkCleanedUp(t *testing.T, s *Stack, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("master process %d still runs after cleanup", pid)
		}
	}
	for _, addr := range []string{s.SMTPAddr, s.IMAPAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("port %s still taken after cleanup: %v", addr, err)
			continue
		}
		l.Close()
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stack directory %s still exists after cleanup (stat: %v)", s.Dir, err)
	}
	data, err := os.ReadFile(defaultMainCF)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read %s: %v", defaultMainCF, err)
	}
	if strings.Contains(string(data), s.Dir) {
		t.Errorf("%s still names %s after cleanup:\n%s", defaultMainCF, s.Dir, data)
	}
}

func send(ctx context.Context, addr, from, to, tag string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if err := c.Mail(from, nil); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	msg := "From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: mailstack " + tag +
		"\r\nMessage-ID: <" + tag + "@client.test>\r\n\r\nbody of " + tag + "\r\n"
	if _, err := io.WriteString(w, msg); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("QUIT: %w", err)
	}
	return nil
}

// waitForMessage polls the INBOX until a message is there and returns the
// first one.
func waitForMessage(ctx context.Context, s *Stack) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.IMAPAddr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.IMAPAddr, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.Login(s.MailboxUser, s.MailboxPassword).Wait(); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	for {
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			return nil, fmt.Errorf("status INBOX: %w", err)
		}
		if st.NumMessages != nil && *st.NumMessages > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("INBOX still empty: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return nil, fmt.Errorf("select INBOX: %w", err)
	}
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch message 1: %w", err)
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("fetch message 1 returned %d messages", len(msgs))
	}
	return msgs[0].FindBodySection(section), nil
}

// checkDSN asserts that raw is an RFC 3464 report of a permanent failure for
// rcpt, delivered to the VERP address.
func checkDSN(t *testing.T, raw []byte, rcpt, status, verp string) {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse DSN: %v\n%s", err, raw)
	}
	mt, params, err := e.Header.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type is %q %v (err %v), want multipart/report; report-type=delivery-status\n%s", mt, params, err, raw)
	}
	if got := e.Header.Get("Delivered-To") + " " + e.Header.Get("X-Original-To"); !strings.Contains(got, verp) {
		t.Errorf("Delivered-To / X-Original-To are %q, want %s\n%s", got, verp, raw)
	}

	mr := e.MultipartReader()
	var fields []textproto.MIMEHeader
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read DSN parts: %v", err)
		}
		if pt, _, _ := p.Header.ContentType(); pt == "message/delivery-status" {
			fields, err = readStatusFields(p.Body)
			if err != nil {
				t.Fatalf("read delivery-status: %v", err)
			}
		}
	}
	if len(fields) < 2 {
		t.Fatalf("no per-recipient fields in the message/delivery-status part (got %d blocks)\n%s", len(fields), raw)
	}
	recipient := fields[1]
	if got := recipient.Get("Final-Recipient"); !strings.EqualFold(strings.TrimSpace(strings.TrimPrefix(got, "rfc822;")), rcpt) {
		t.Errorf("Final-Recipient is %q, want rfc822; %s", got, rcpt)
	}
	if got := recipient.Get("Status"); got != status {
		t.Errorf("Status is %q, want %s", got, status)
	}
	if got := recipient.Get("Action"); got != "failed" {
		t.Errorf("Action is %q, want failed", got)
	}
}

// readStatusFields splits a message/delivery-status body into its header
// blocks: per-message fields first, then one block per recipient.
func readStatusFields(r io.Reader) ([]textproto.MIMEHeader, error) {
	tr := textproto.NewReader(bufio.NewReader(r))
	var blocks []textproto.MIMEHeader
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			blocks = append(blocks, h)
		}
		if errors.Is(err, io.EOF) {
			return blocks, nil
		}
		if err != nil {
			return blocks, fmt.Errorf("parse fields: %w", err)
		}
	}
}

// sink is a next hop that accepts everything except dead@ recipients.
type sink struct {
	addr string
	mu   sync.Mutex
	got  map[string]int
}

func startSink(t *testing.T) *sink {
	t.Helper()
	sk := &sink{got: map[string]int{}}
	srv := smtp.NewServer(sk)
	srv.Domain = "sink.test"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sink listen: %v", err)
	}
	sk.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("sink close: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("sink serve: %v", err)
		}
	})
	return sk
}

func (sk *sink) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &sinkSession{sink: sk}, nil
}

func (sk *sink) count(rcpt string) int {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	return sk.got[rcpt]
}

func (sk *sink) waitFor(ctx context.Context, rcpt string) error {
	for sk.count(rcpt) == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

type sinkSession struct {
	sink  *sink
	rcpts []string
}

func (s *sinkSession) Reset()        { s.rcpts = nil }
func (s *sinkSession) Logout() error { return nil }

func (s *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }

func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(strings.ToLower(to), "dead@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "user unknown"}
	}
	s.rcpts = append(s.rcpts, strings.ToLower(to))
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	s.sink.mu.Lock()
	defer s.sink.mu.Unlock()
	for _, rc := range s.rcpts {
		s.sink.got[rc]++
	}
	return nil
}
