// Package mailstack owns the real mail servers used by end-to-end tests: it
// starts a Postfix relay and a Dovecot IMAP server from a private directory
// on free loopback ports, wires them so that bounces for a VERP domain land
// in an IMAP mailbox, and tears everything down when the test ends.
//
// Facts learned while building it, beyond the shared notes on the real mail
// stack (Debian 12, Postfix 3.7.11, Dovecot 2.3.19, run as root), and why
// each setting is there:
//
//   - Postfix needs root to start (master binds ports and switches to the
//     postfix user), so Start skips without root and fails under CI.
//   - A "No configuration" install has no /etc/postfix/main.cf at all, and
//     the alternate_config_directories check needs one. Start edits the
//     default main.cf only inside a marked block, under an flock, carrying
//     the operator's own alternate_config_directories value into it (the
//     last definition wins), and removes the block, or the file it created,
//     when the last test instance stops. Entries whose directory is gone
//     (a test process killed before its cleanup) are dropped on the next edit.
//   - postqueue is set-gid, so it repeats the alternate_config_directories
//     check: Flush only works while the instance is registered.
//   - Postfix will not use a config file modified within the current second:
//     it rereads it every 300 ms until it is older. Freshly written main.cf
//     and master.cf files made every start wait 1.5 s; they are backdated.
//   - postfix start runs shell integrity checks (post-install
//     create-missing, postfix check, find over the queue) that cost seconds.
//     Start lays the queue out itself from /etc/postfix/postfix-files and
//     leaves a quick-start marker, which makes postfix-script skip them.
//     With that and the backdating, Start takes about 0.3-0.5 s, not 3.5 s.
//   - The queue and data directories sit beside the config directory: the
//     checks want everything below the config directory owned by root.
//   - meta_directory must point at /etc/postfix: it defaults to the config
//     directory, and postfix-files and dynamicmaps.cf are read from there.
//   - Debian's master.cf chroots most services into the queue directory,
//     which in a private queue directory has no etc/ files (services,
//     localtime, resolv.conf), so every service gets chroot n, not only
//     smtpd.
//   - virtual_minimum_uid defaults to 100: with virtual_uid_maps static:8
//     every bounce is deferred with "bad uid 8 in virtual_uid_maps" until
//     virtual_minimum_uid is lowered to 8.
//   - A 550 from the next hop bounces at once with soft_bounce = no (the
//     default, set explicitly). queue_run_delay and the backoff times are a
//     second or two so that 4xx retries, and Flush, are quick. notify_classes
//     is empty: postmaster copies would have nowhere to go.
//   - The mailbox is pre-created and owned by mail (uid 8) because both the
//     virtual delivery agent and Dovecot's imap process run as that user;
//     the private directory is 0755 under the temp dir (t.TempDir makes 0700
//     directories the postfix, mail and dovecot users cannot enter), and its
//     short path keeps Dovecot's unix sockets under the 108-byte limit.
//   - The Dovecot master daemonises with its stderr still open: reading its
//     output through a pipe blocks until it exits, so command output goes to
//     a file.
//   - Dovecot's imaps listener must be switched off (port = 0), or it binds
//     127.0.0.1:993 and a second stack cannot start.
//   - The Dovecot master needs about a second to exit (it pauses after
//     stopping its log process); doveadm stop polls slowly and took 2.5 s, so
//     the master is signalled directly. postfix stop returns within 0.1 s.
//   - Postfix and Dovecot daemonise, and PID 1 here need not reap orphans, so
//     a stopped master may linger as a zombie: liveness checks read the
//     process state from /proc instead of trusting kill(pid, 0).
//   - The DSN reaches the IMAP inbox 0.1-0.5 s after Postfix accepts the
//     message. It is multipart/report with a message/delivery-status part,
//     and keeps the full VERP address in Delivered-To and X-Original-To.
//   - Several stacks run side by side in one process or several; each has
//     its own ports, queue, base_dir and registration.
//   - Free ports are found by binding port 0 and closing it; another process
//     could take one before Postfix or Dovecot binds it, and Start then fails
//     with that server's log rather than hanging.
package mailstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/testenv"
)

// defaultMainCF is the file Postfix consults before it accepts -c DIR.
const defaultMainCF = "/etc/postfix/main.cf"

// mailUID is Debian's "mail" user. Postfix's virtual agent refuses uid 0
// (virtual_minimum_uid), and Dovecot refuses uids below first_valid_uid.
const mailUID = 8

// Config says which domains the stack handles.
type Config struct {
	// RelayDomain is relayed by Postfix to NextHop, e.g. "gov.test".
	RelayDomain string
	// NextHop is "127.0.0.1:PORT" of a test SMTP server.
	NextHop string
	// BounceDomain is delivered into the mailbox of MailboxUser, e.g.
	// "bounce.test". recipient_delimiter "+" maps MailboxUser+TOKEN@ to it,
	// so VERP local parts must start with MailboxUser.
	BounceDomain string
	// MailboxUser and MailboxPassword are the IMAP login; they default to
	// "bounces" and "secret".
	MailboxUser, MailboxPassword string
}

// Stack is a running Postfix and Dovecot pair.
type Stack struct {
	// SMTPAddr is Postfix's smtpd, which relays for 127.0.0.0/8 without
	// authentication or TLS.
	SMTPAddr string
	// IMAPAddr is Dovecot's IMAP listener, plaintext login allowed.
	IMAPAddr string
	// Dir holds configuration, queue, mailbox and logs.
	Dir string

	MailboxUser, MailboxPassword string

	postfixDir, dovecotConf string
	postqueue               string
	queueDir                string
}

// Start brings up Postfix and Dovecot and registers their shutdown with
// t.Cleanup. It returns only once both accept connections.
func Start(t testing.TB, cfg Config) *Stack {
	t.Helper()
	bins := map[string]string{}
	for _, b := range []string{"postfix", "postqueue", "postconf", "dovecot", "doveadm"} {
		bins[b] = testenv.LookPath(t, b)
	}
	if os.Geteuid() != 0 {
		if testenv.InCI() {
			t.Fatal("mailstack needs root to start Postfix and Dovecot, and CI is set")
		}
		t.Skip("SKIPPING: mailstack needs root to start Postfix and Dovecot")
	}
	if cfg.RelayDomain == "" || cfg.NextHop == "" || cfg.BounceDomain == "" {
		t.Fatalf("mailstack: RelayDomain, NextHop and BounceDomain are required, got %+v", cfg)
	}
	if cfg.MailboxUser == "" {
		cfg.MailboxUser = "bounces"
	}
	if cfg.MailboxPassword == "" {
		cfg.MailboxPassword = "secret"
	}

	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "mailstack-")
	if err != nil {
		t.Fatalf("mailstack: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("mailstack: remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("mailstack: %v", err)
	}

	s := &Stack{
		Dir:             dir,
		MailboxUser:     cfg.MailboxUser,
		MailboxPassword: cfg.MailboxPassword,
		postfixDir:      filepath.Join(dir, "postfix"),
		queueDir:        filepath.Join(dir, "postfix-queue"),
		dovecotConf:     filepath.Join(dir, "dovecot", "dovecot.conf"),
		postqueue:       bins["postqueue"],
	}
	smtpPort, err := freePort(ctx)
	if err != nil {
		t.Fatalf("mailstack: %v", err)
	}
	imapPort, err := freePort(ctx)
	if err != nil {
		t.Fatalf("mailstack: %v", err)
	}
	s.SMTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(smtpPort))
	s.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(imapPort))

	if err := s.writeMailbox(); err != nil {
		t.Fatalf("mailstack: %v", err)
	}
	if err := s.writePostfix(cfg, smtpPort); err != nil {
		t.Fatalf("mailstack: %v", err)
	}
	if err := s.writeDovecot(imapPort); err != nil {
		t.Fatalf("mailstack: %v", err)
	}

	if err := registerConfigDir(ctx, defaultMainCF, s.postfixDir); err != nil {
		t.Fatalf("mailstack: register %s in %s: %v", s.postfixDir, defaultMainCF, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := unregisterConfigDir(ctx, defaultMainCF, s.postfixDir); err != nil {
			t.Errorf("mailstack: unregister %s from %s: %v", s.postfixDir, defaultMainCF, err)
		}
	})

	// Stops are registered before the starts: a start cut short by the
	// deadline may still leave a daemon behind, and a stop finds nothing to
	// do when there is no pid file.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.stopPostfix(ctx, bins["postfix"]); err != nil {
			t.Errorf("mailstack: %v\n%s", err, s.Log())
		}
	})
	if out, err := run(ctx, bins["postfix"], "-c", s.postfixDir, "start"); err != nil {
		t.Fatalf("mailstack: postfix start: %v\n%s\n%s", err, out, s.Log())
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.stopDovecot(ctx, bins["doveadm"]); err != nil {
			t.Errorf("mailstack: %v\n%s", err, s.Log())
		}
	})
	if out, err := run(ctx, bins["dovecot"], "-c", s.dovecotConf); err != nil {
		t.Fatalf("mailstack: dovecot start: %v\n%s\n%s", err, out, s.Log())
	}

	if err := waitGreeting(ctx, s.SMTPAddr, "220 "); err != nil {
		t.Fatalf("mailstack: postfix smtpd on %s: %v\n%s", s.SMTPAddr, err, s.Log())
	}
	if err := waitGreeting(ctx, s.IMAPAddr, "* OK"); err != nil {
		t.Fatalf("mailstack: dovecot imap on %s: %v\n%s", s.IMAPAddr, err, s.Log())
	}
	t.Logf("mailstack: postfix on %s, dovecot on %s, started in %s", s.SMTPAddr, s.IMAPAddr, time.Since(began).Round(time.Millisecond))
	return s
}

// Flush asks Postfix to retry everything in its queue now.
func (s *Stack) Flush(ctx context.Context) error {
	out, err := run(ctx, s.postqueue, "-c", s.postfixDir, "-f")
	if err != nil {
		return fmt.Errorf("postqueue -f: %w: %s", err, out)
	}
	return nil
}

// Log returns the Postfix and Dovecot logs, for failure messages.
func (s *Stack) Log() string {
	var b strings.Builder
	for _, f := range []struct{ name, path string }{
		{"postfix", filepath.Join(s.postfixDir, "postfix.log")},
		{"dovecot", filepath.Join(s.Dir, "dovecot", "dovecot.log")},
	} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			fmt.Fprintf(&b, "--- %s log: %v\n", f.name, err)
			continue
		}
		fmt.Fprintf(&b, "--- %s log (%s)\n%s", f.name, f.path, data)
	}
	return b.String()
}

func (s *Stack) maildir() string {
	return filepath.Join(s.Dir, "mail", s.MailboxUser, "Maildir")
}

func (s *Stack) writeMailbox() error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(s.maildir(), sub), 0o700); err != nil {
			return fmt.Errorf("create maildir: %w", err)
		}
	}
	root := filepath.Join(s.Dir, "mail")
	err := filepath.WalkDir(root, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, mailUID, mailUID)
	})
	if err != nil {
		return fmt.Errorf("chown %s to mail: %w", root, err)
	}
	return nil
}

func (s *Stack) writePostfix(cfg Config, smtpPort int) error {
	hopHost, hopPort, err := net.SplitHostPort(cfg.NextHop)
	if err != nil {
		return fmt.Errorf("next hop %q: %w", cfg.NextHop, err)
	}
	// The queue and data directories sit beside the config directory, not
	// in it: postfix-script checks that everything under the config
	// directory is owned by root and would warn about each queue directory.
	queue := s.queueDir
	data := filepath.Join(s.Dir, "postfix-data")
	for _, d := range []string{s.postfixDir, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	ids, err := lookupIDs("postfix")
	if err != nil {
		return err
	}
	if err := os.Chown(data, ids[0], ids[1]); err != nil {
		return fmt.Errorf("chown %s to postfix: %w", data, err)
	}
	if err := createQueue(queue, ids[0]); err != nil {
		return err
	}

	mainCF := strings.Join([]string{
		// Silences the backwards-compatibility warnings of an unset level.
		"compatibility_level = 3.6",
		"queue_directory = " + queue,
		"data_directory = " + data,
		"meta_directory = /etc/postfix",
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = mailstack.test",
		"mydomain = mailstack.test",
		"myorigin = $myhostname",
		// No local delivery: everything is either relayed or virtual.
		"mydestination =",
		"alias_maps =",
		"alias_database =",
		"local_recipient_maps =",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
		"smtpd_recipient_restrictions =",
		"smtpd_tls_security_level = none",
		"smtp_tls_security_level = none",
		"relay_domains = " + cfg.RelayDomain,
		fmt.Sprintf("transport_maps = inline:{ %s=smtp:[%s]:%s }", cfg.RelayDomain, hopHost, hopPort),
		"virtual_mailbox_domains = " + cfg.BounceDomain,
		fmt.Sprintf("virtual_mailbox_maps = inline:{ %s@%s=%s/Maildir/ }", cfg.MailboxUser, cfg.BounceDomain, cfg.MailboxUser),
		"virtual_mailbox_base = " + filepath.Join(s.Dir, "mail"),
		// virtual_minimum_uid defaults to 100, which rejects uid 8 with
		// "bad uid 8 in virtual_uid_maps" and defers every bounce.
		fmt.Sprintf("virtual_minimum_uid = %d", mailUID),
		fmt.Sprintf("virtual_uid_maps = static:%d", mailUID),
		fmt.Sprintf("virtual_gid_maps = static:%d", mailUID),
		"recipient_delimiter = +",
		"maillog_file = " + filepath.Join(s.postfixDir, "postfix.log"),
		"maillog_file_prefixes = /var, /dev/stdout, " + s.Dir,
		// The sandbox has no DNS; every next hop is a literal address.
		"smtp_dns_support_level = disabled",
		"smtp_host_lookup = native",
		"lmtp_host_lookup = native",
		// Retries and queue scans every second instead of every few minutes.
		"queue_run_delay = 1s",
		"minimal_backoff_time = 1s",
		"maximal_backoff_time = 2s",
		"smtp_connect_timeout = 5s",
		// A 5xx from the next hop must become a DSN at once, never a retry.
		"soft_bounce = no",
		"smtp_skip_5xx_greeting = no",
		// Keeps postmaster notices out of a queue that has nowhere to put them.
		"notify_classes =",
		"biff = no",
		"append_dot_mydomain = no",
		"readme_directory = no",
		"",
	}, "\n")
	if err := writeAged(filepath.Join(s.postfixDir, "main.cf"), []byte(mainCF)); err != nil {
		return err
	}

	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return fmt.Errorf("read the packaged master.cf: %w", err)
	}
	rewritten, err := rewriteMasterCF(string(master), smtpPort)
	if err != nil {
		return err
	}
	return writeAged(filepath.Join(s.postfixDir, "master.cf"), []byte(rewritten))
}

// writeAged writes a Postfix configuration file with an mtime in the past.
// Postfix will not use a file modified within the current second: it rereads
// it every 300 ms until it is older, which costs up to 1.5 s per command.
func writeAged(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return age(path)
}

func age(path string) error {
	past := time.Now().Add(-2 * time.Second)
	if err := os.Chtimes(path, past, past); err != nil {
		return fmt.Errorf("backdate %s: %w", path, err)
	}
	return nil
}

// createQueue lays out the queue directory as the package's postfix-files
// manifest describes it and leaves a quick-start marker, so that postfix
// start skips its integrity checks. Those checks (post-install
// create-missing, postfix check, find over the queue) are shell loops that
// cost about three of the three and a half seconds a start takes.
func createQueue(queue string, postfixUID int) error {
	manifest, err := os.ReadFile("/etc/postfix/postfix-files")
	if err != nil {
		return fmt.Errorf("read the postfix-files manifest: %w", err)
	}
	postdrop, err := user.LookupGroup("postdrop")
	if err != nil {
		return fmt.Errorf("look up group postdrop (installed with postfix): %w", err)
	}
	postdropGID, err := strconv.Atoi(postdrop.Gid)
	if err != nil {
		return fmt.Errorf("parse gid of postdrop: %w", err)
	}
	made := 0
	for _, line := range strings.Split(string(manifest), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 5 || f[1] != "d" || !strings.HasPrefix(f[0], "$queue_directory") {
			continue
		}
		path := queue + strings.TrimPrefix(f[0], "$queue_directory")
		uid, gid := 0, 0
		if f[2] == "$mail_owner" {
			uid = postfixUID
		}
		if f[3] == "$setgid_group" {
			gid = postdropGID
		}
		mode, err := strconv.ParseUint(f[4], 8, 32)
		if err != nil {
			return fmt.Errorf("postfix-files entry %q: bad mode: %w", line, err)
		}
		if err := os.MkdirAll(path, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", path, err)
		}
		// Chmod after mkdir because the umask would strip group bits.
		if err := os.Chmod(path, os.FileMode(mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
		made++
	}
	if made == 0 {
		return errors.New("the postfix-files manifest lists no queue directories")
	}
	if err := os.WriteFile(filepath.Join(queue, "quick-start"), nil, 0o644); err != nil {
		return fmt.Errorf("write quick-start marker: %w", err)
	}
	return nil
}

// rewriteMasterCF moves the smtpd listener to port and turns chroot off for
// every service.
func rewriteMasterCF(master string, port int) (string, error) {
	var out []string
	foundSMTP := false
	for _, line := range strings.Split(master, "\n") {
		if line == "" || line[0] == '#' || line[0] == ' ' || line[0] == '\t' {
			out = append(out, line)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 8 {
			out = append(out, line)
			continue
		}
		if f[0] == "smtp" && f[1] == "inet" {
			f[0] = strconv.Itoa(port)
			foundSMTP = true
		}
		f[4] = "n"
		out = append(out, strings.Join(f, "\t"))
	}
	if !foundSMTP {
		return "", errors.New("the packaged master.cf has no smtp inet service")
	}
	return strings.Join(out, "\n"), nil
}

func (s *Stack) writeDovecot(imapPort int) error {
	ddir := filepath.Join(s.Dir, "dovecot")
	if err := os.MkdirAll(ddir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", ddir, err)
	}
	users := filepath.Join(ddir, "users")
	home := filepath.Join(s.Dir, "mail", s.MailboxUser)
	line := fmt.Sprintf("%s:{PLAIN}%s:%d:%d::%s\n", s.MailboxUser, s.MailboxPassword, mailUID, mailUID, home)
	if err := os.WriteFile(users, []byte(line), 0o644); err != nil {
		return fmt.Errorf("write dovecot users: %w", err)
	}
	conf := fmt.Sprintf(`# Self-contained: nothing from /etc/dovecot is included.
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:%[2]s/%%n/Maildir
first_valid_uid = 1
first_valid_gid = 1
passdb {
  driver = passwd-file
  args = %[3]s
}
userdb {
  driver = passwd-file
  args = %[3]s
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[4]d
  }
  inet_listener imaps {
    port = 0
  }
}
`, ddir, filepath.Join(s.Dir, "mail"), users, imapPort)
	if err := os.WriteFile(s.dovecotConf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write dovecot.conf: %w", err)
	}
	return nil
}

func (s *Stack) stopPostfix(ctx context.Context, postfix string) error {
	pid, err := readPID(filepath.Join(s.queueDir, "pid", "master.pid"))
	if errors.Is(err, os.ErrNotExist) || (err == nil && !alive(pid)) {
		return nil // already stopped; postfix stop would fail
	}
	if out, err := run(ctx, postfix, "-c", s.postfixDir, "stop"); err != nil {
		return fmt.Errorf("postfix stop: %w: %s", err, out)
	}
	if err := waitExit(ctx, pid); err != nil {
		return fmt.Errorf("postfix master: %w", err)
	}
	return nil
}

// stopDovecot signals the master itself rather than running doveadm stop:
// the master needs about a second to exit (it pauses after stopping its log
// process) and doveadm's own polling stretched that to two and a half.
func (s *Stack) stopDovecot(ctx context.Context, doveadm string) error {
	pid, err := readPID(filepath.Join(s.Dir, "dovecot", "run", "master.pid"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // the master removes its pid file on exit
	case err != nil:
		if out, err := run(ctx, doveadm, "-c", s.dovecotConf, "stop"); err != nil {
			return fmt.Errorf("doveadm stop: %w: %s", err, out)
		}
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop dovecot master %d: %w", pid, err)
	}
	if err := waitExit(ctx, pid); err != nil {
		return fmt.Errorf("dovecot master: %w", err)
	}
	return nil
}

// run executes a command with a clean MAIL_CONFIG so that only the explicit
// -c decides which instance it talks to. Output goes to a file, not a pipe:
// the Dovecot master daemonises with the pipe still open as its stderr, and
// reading a pipe to EOF would wait for the daemon to exit.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := os.CreateTemp("", "mailstack-cmd-*.log")
	if err != nil {
		return nil, fmt.Errorf("%s: output file: %w", name, err)
	}
	defer os.Remove(out.Name()) //nolint:errcheck // scratch file
	defer out.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	env := make([]string, 0, len(os.Environ()))
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "MAIL_CONFIG=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	data, err := os.ReadFile(out.Name())
	if err != nil {
		data = []byte(fmt.Sprintf("(output lost: %v)", err))
	}
	if runErr != nil {
		return data, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), runErr)
	}
	return data, nil
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before the server binds it; Start then fails with the server's
// log saying so rather than hanging.
func freePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitGreeting polls addr until a server answers with a line that starts
// with prefix.
func waitGreeting(ctx context.Context, addr, prefix string) error {
	var last error
	for {
		last = greeting(ctx, addr, prefix)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no greeting before deadline: %w (last: %w)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func greeting(ctx context.Context, addr, prefix string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, prefix) {
		return fmt.Errorf("greeting from %s is %q, want %q", addr, line, prefix)
	}
	return nil
}

func readPID(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("parse pid file %s: %w", path, err)
	}
	return pid, nil
}

// alive reports whether pid names a process that has not exited. A zombie
// counts as exited.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may contain
	// spaces or parentheses itself.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 || i+2 >= len(data) {
		return true
	}
	state := data[i+2]
	return state != 'Z' && state != 'X'
}

func waitExit(ctx context.Context, pid int) error {
	if pid <= 0 {
		return nil
	}
	for alive(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("process %d still running: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func lookupIDs(name string) ([2]int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return [2]int{}, fmt.Errorf("look up user %s (installed with postfix): %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return [2]int{}, fmt.Errorf("parse ids of user %s: %w", name, err)
	}
	return [2]int{uid, gid}, nil
}
