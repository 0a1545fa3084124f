// Package testenv owns the rules for tests that need system binaries
// (redis-server, postfix, dovecot, promtool): under CI=true a missing binary
// is a failure, elsewhere the test is skipped with a loud message.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI, where nothing may be skipped
// for lack of a binary.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "0" && v != "false"
}

// LookPath returns the path of a required binary. When it is missing the test
// fails under CI and is skipped, loudly, elsewhere.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if p, err := exec.LookPath(dir + "/" + name); err == nil {
			return p
		}
	}
	if InCI() {
		t.Fatalf("required binary %q not found and CI is set: install it (make test does this with apt-get)", name)
	}
	t.Skipf("SKIPPING: required binary %q not found (install it with apt-get; under CI=true this is a failure)", name)
	return ""
}
