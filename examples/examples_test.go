// Package examples_test runs the example producers in other languages
// against a real redis-server and checks that what they write is a
// signature petitiond accepts, with the values they were given.
package examples_test

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/testredis"
)

func TestPythonProducer(t *testing.T) {
	python := testenv.LookPath(t, "python3")
	srv := testredis.Start(t)
	// Database 2, so the script's SELECT is exercised too.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 2})
	t.Cleanup(func() { _ = rdb.Close() })

	tests := []struct {
		name string
		args []string
		want campaign.Signature
	}{
		{
			name: "tagalog with every field",
			args: []string{
				"--id", "sig-000123", "--campaign", "kz-baltabay",
				"--name", "Ñiño Dela Peña", "--email", "nino@example.org",
				"--country", "PH", "--locale", "tl",
				"--comment", "Palayain si Erlan!\nМабуҳай ang unyon. الحرية",
				"--signed-at", "2019-07-20T10:00:00Z",
			},
			want: campaign.Signature{
				Version: 1, ID: "sig-000123", Campaign: "kz-baltabay",
				Signer:   campaign.Signer{Name: "Ñiño Dela Peña", Email: "nino@example.org", Country: "PH", Locale: "tl"},
				Comment:  "Palayain si Erlan!\nМабуҳай ang unyon. الحرية",
				SignedAt: time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC),
			},
		},
		{
			name: "required only, signed now",
			args: []string{
				"--id", "sig-000124", "--campaign", "kz-baltabay",
				"--name", "Ерлан Балтабайұлы", "--email", "erlan@example.org",
			},
			want: campaign.Signature{
				Version: 1, ID: "sig-000124", Campaign: "kz-baltabay",
				Signer: campaign.Signer{Name: "Ерлан Балтабайұлы", Email: "erlan@example.org"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Add(-time.Second).Truncate(time.Second)
			cmd := exec.CommandContext(t.Context(), python, append([]string{"python/submit_signature.py"}, tt.args...)...)
			cmd.Env = append(cmd.Environ(), "REDIS_URL="+srv.URL(2), "PYTHONDONTWRITEBYTECODE=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("submit_signature.py: %v\n%s", err, stderr.String())
			}
			entryID := strings.TrimSpace(string(out))

			msgs, err := rdb.XRange(t.Context(), rkeys.SignatureStream, entryID, entryID).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 1 {
				t.Fatalf("printed entry id %q, but the stream has %d entries with it", entryID, len(msgs))
			}
			raw, ok := msgs[0].Values["json"].(string)
			if !ok || len(msgs[0].Values) != 1 {
				t.Fatalf("entry fields %v, want only json", msgs[0].Values)
			}
			sig, err := campaign.ParseSignature([]byte(raw))
			if err != nil {
				t.Fatalf("petitiond rejects the example's signature: %v\n%s", err, raw)
			}
			want := tt.want
			if want.SignedAt.IsZero() {
				if sig.SignedAt.Before(before) || sig.SignedAt.After(time.Now()) {
					t.Errorf("signed_at %v is not now", sig.SignedAt)
				}
				want.SignedAt = sig.SignedAt
			}
			if !sig.SignedAt.Equal(want.SignedAt) {
				t.Errorf("signed_at %v, want %v", sig.SignedAt, want.SignedAt)
			}
			sig.SignedAt = want.SignedAt
			if sig != want {
				t.Errorf("stream holds %+v\nwant %+v", sig, want)
			}
		})
	}
}

// A producer must learn that it failed: no server, no entry id, exit 1.
func TestPythonProducerReportsFailure(t *testing.T) {
	python := testenv.LookPath(t, "python3")
	srv := testredis.Start(t)
	url := srv.URL(0)
	srv.Stop()
	cmd := exec.CommandContext(t.Context(), python, "python/submit_signature.py",
		"--id", "x", "--campaign", "c", "--name", "n", "--email", "n@example.org")
	cmd.Env = append(cmd.Environ(), "REDIS_URL="+url, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "submit_signature:") {
		t.Errorf("no error message: %s", out)
	}
}
