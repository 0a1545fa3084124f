package sdnotify_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sdnotify"
)

// listen opens a unixgram socket as systemd would and points NOTIFY_SOCKET
// at it. The directory is short-named because socket paths are limited to
// 108 bytes and t.TempDir embeds the test name.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// recv reads one datagram; the deadline only turns a missing datagram into
// a failure instead of a hang.
func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read notify datagram: %v", err)
	}
	return string(buf[:n])
}

func TestNotices(t *testing.T) {
	tests := []struct {
		name string
		send func() error
		want *regexp.Regexp
	}{
		{"ready", sdnotify.Ready, regexp.MustCompile(`^READY=1$`)},
		{"stopping", sdnotify.Stopping, regexp.MustCompile(`^STOPPING=1$`)},
		{"reloading", sdnotify.Reloading, regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`)},
		{"status", func() error { return sdnotify.Status("draining 3 deliveries") }, regexp.MustCompile(`^STATUS=draining 3 deliveries$`)},
		{"status keeps to one line", func() error { return sdnotify.Status("a\nREADY=1") }, regexp.MustCompile(`^STATUS=a READY=1$`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := listen(t)
			if err := tt.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			if got := recv(t, conn); !tt.want.MatchString(got) {
				t.Fatalf("datagram = %q, want match for %s", got, tt.want)
			}
		})
	}
}

func TestNoopOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	for name, f := range map[string]func() error{
		"ready":     sdnotify.Ready,
		"stopping":  sdnotify.Stopping,
		"reloading": sdnotify.Reloading,
		"status":    func() error { return sdnotify.Status("x") },
		"watchdog":  func() error { return sdnotify.Watchdog(context.Background()) },
	} {
		if err := f(); err != nil {
			t.Errorf("%s outside systemd: %v", name, err)
		}
	}
}

func TestNotifySocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing"))
	if err := sdnotify.Ready(); err == nil {
		t.Fatal("Ready with a dead NOTIFY_SOCKET returned nil")
	}
}

func TestWatchdog(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: pings every 10 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sdnotify.Watchdog(ctx) }()

	for i := 0; i < 3; i++ {
		if got := recv(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("ping %d = %q, want WATCHDOG=1", i, got)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watchdog after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return after its context ended")
	}
}

func TestWatchdogForAnotherProcess(t *testing.T) {
	listen(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	// systemd sets WATCHDOG_PID to the main process; a child that inherits
	// the environment must not ping on its behalf.
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sdnotify.Watchdog(ctx); err != nil {
		t.Fatalf("Watchdog: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Watchdog ran until its deadline instead of returning at once")
	}
}
