package mailstack

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigDirRegistrationCreatesAndRemovesMainCF(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	etc := t.TempDir()
	mainCF := filepath.Join(etc, "main.cf")
	a, b := mkdir(t, "a"), mkdir(t, "b")

	if err := registerConfigDir(ctx, mainCF, a); err != nil {
		t.Fatal(err)
	}
	if err := registerConfigDir(ctx, mainCF, b); err != nil {
		t.Fatal(err)
	}
	if got, want := effective(t, mainCF), a+" "+b; got != want {
		t.Fatalf("alternate_config_directories = %q, want %q", got, want)
	}
	if err := unregisterConfigDir(ctx, mainCF, a); err != nil {
		t.Fatal(err)
	}
	if got := effective(t, mainCF); got != b {
		t.Fatalf("after removing %s: alternate_config_directories = %q, want %q", a, got, b)
	}
	if err := unregisterConfigDir(ctx, mainCF, b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mainCF); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("main.cf should be gone again, stat: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(etc, "*")); len(left) != 0 {
		t.Fatalf("files left in the config directory: %v", left)
	}
}

func TestConfigDirRegistrationKeepsOperatorSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mainCF := filepath.Join(t.TempDir(), "main.cf")
	orig := "# operator's file\nmyhostname = mx.example.org\n" +
		"alternate_config_directories = /srv/one,\n    /srv/two\nrelayhost = [smtp.example.org]\n"
	if err := os.WriteFile(mainCF, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := age(mainCF); err != nil {
		t.Fatal(err)
	}
	a := mkdir(t, "a")

	if err := registerConfigDir(ctx, mainCF, a); err != nil {
		t.Fatal(err)
	}
	if got, want := effective(t, mainCF), "/srv/one /srv/two "+a; got != want {
		t.Fatalf("alternate_config_directories = %q, want %q (the operator's dirs must stay)", got, want)
	}
	if err := unregisterConfigDir(ctx, mainCF, a); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(mainCF)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != orig {
		t.Fatalf("main.cf not restored:\n got %q\nwant %q", got, orig)
	}
	st, err := os.Stat(mainCF)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("main.cf mode is %v, want 0640", st.Mode().Perm())
	}
}

func TestConfigDirRegistrationDropsDirsOfDeadProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mainCF := filepath.Join(t.TempDir(), "main.cf")
	stale, b := mkdir(t, "stale"), mkdir(t, "b")
	if err := registerConfigDir(ctx, mainCF, stale); err != nil {
		t.Fatal(err)
	}
	// A test process that was killed leaves its entry, then its directory
	// is cleaned away.
	if err := os.Remove(stale); err != nil {
		t.Fatal(err)
	}
	if err := registerConfigDir(ctx, mainCF, b); err != nil {
		t.Fatal(err)
	}
	if got := effective(t, mainCF); got != b {
		t.Fatalf("alternate_config_directories = %q, want only %q", got, b)
	}
}

func TestRewriteMasterCF(t *testing.T) {
	in := "# comment\nsmtp      inet  n       -       y       -       -       smtpd\n" +
		"  -o smtpd_sasl_auth_enable=yes\n" +
		"pickup    unix  n       -       y       60      1       pickup\n" +
		"postlog   unix-dgram n  -       n       -       1       postlogd\n"
	out, err := rewriteMasterCF(in, 2525)
	if err != nil {
		t.Fatal(err)
	}
	want := "# comment\n2525\tinet\tn\t-\tn\t-\t-\tsmtpd\n" +
		"  -o smtpd_sasl_auth_enable=yes\n" +
		"pickup\tunix\tn\t-\tn\t60\t1\tpickup\n" +
		"postlog\tunix-dgram\tn\t-\tn\t-\t1\tpostlogd\n"
	if out != want {
		t.Fatalf("rewritten master.cf:\n%s\nwant:\n%s", out, want)
	}
	if _, err := rewriteMasterCF("pickup unix n - y 60 1 pickup\n", 2525); err == nil {
		t.Fatal("a master.cf without an smtp inet service must be an error")
	}
}

// effective returns alternate_config_directories as Postfix reads it, asking
// postconf itself when it is installed so that the check does not rest on
// this package's own parser alone.
func effective(t *testing.T, mainCF string) string {
	t.Helper()
	data, err := os.ReadFile(mainCF)
	if err != nil {
		t.Fatal(err)
	}
	mine := strings.Join(fields(lastValue(string(data), altDirsKey)), " ")
	postconf, err := exec.LookPath("postconf")
	if err != nil {
		postconf, err = exec.LookPath("/usr/sbin/postconf")
	}
	if err != nil {
		return mine
	}
	out, err := exec.Command(postconf, "-c", filepath.Dir(mainCF), "-h", altDirsKey).Output()
	if err != nil {
		t.Fatalf("postconf -h %s: %v", altDirsKey, err)
	}
	theirs := strings.Join(fields(string(out)), " ")
	if theirs != mine {
		t.Fatalf("postconf reads %q from %s, this package reads %q", theirs, mainCF, mine)
	}
	return theirs
}

func mkdir(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
