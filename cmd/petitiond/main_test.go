package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petitiond/petitiond/internal/testredis"
)

// cli runs the command in process with its own streams.
func cli(t *testing.T, environ []string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, environ: environ}, args)
	return code, out.String(), errb.String()
}

func TestUsageErrorsExitTwo(t *testing.T) {
	cases := [][]string{
		{},
		{"no-such-command"},
		{"campaign"},
		{"campaign", "apply"},
		{"campaign", "frobnicate"},
		{"target", "pause", "not-an-address"},
		{"suppression", "add"},
		{"status", "--no-such-flag"},
		{"sink"},
		{"bounce"},
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr := cli(t, nil, "", args...)
			if code != exitUsage || stderr == "" {
				t.Fatalf("exit %d, stderr %q; want 2 with a message", code, stderr)
			}
		})
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "verp")
	if err := os.WriteFile(secret, []byte("a-verp-secret-of-some-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"PETITIOND_SENDER_FROM=petitions@petitions.test", "PETITIOND_SENDER_BOUNCE_DOMAIN=bounces.petitions.test",
		"PETITIOND_SENDER_VERP_SECRET_FILE=" + secret, "PETITIOND_SMTP_PASSWORD=hunter2-hunter2", "PETITIOND_SMTP_USERNAME=u"}
	code, out, stderr := cli(t, base, "", "check-config")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, "a-verp-secret") || !strings.Contains(out, "<redacted>") {
		t.Fatalf("secrets not redacted:\n%s", out)
	}
	code, _, stderr = cli(t, append(base, "PETITIOND_SMTP_TLS=sometimes"), "", "check-config")
	if code != exitFail || !strings.Contains(stderr, "smtp.tls") {
		t.Fatalf("exit %d, stderr %q; want 1 naming smtp.tls", code, stderr)
	}
}

const campaignYAML = `id: demo
from_name: "{{.Signer.Name}} via LabourStart"
subject: {en: "Free Erlan Baltabay"}
body: {en: "Dear {{.Target.Name}}, free him. {{.Signer.Name}}"}
targets:
  - {name: "Press office", address: "press@mfa.example"}
  - {name: "Mission", address: "mission@un.example"}
`

func TestCampaignEnqueueAndStatus(t *testing.T) {
	srv := testredis.Start(t)
	environ := []string{"PETITIOND_REDIS_URL=" + srv.URL(0)}
	dir := t.TempDir()
	good := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(good, []byte(campaignYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(campaignYAML, "{{.Target.Name}}", "{{.Target.Nope}}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, environ, "", "campaign", "apply", bad); code != exitFail || !strings.Contains(stderr, "body.en") {
		t.Fatalf("apply broken template: exit %d, %q; want 1 naming body.en", code, stderr)
	}
	if code, out, stderr := cli(t, environ, "", "campaign", "apply", good); code != exitOK || !strings.Contains(out, "demo applied") {
		t.Fatalf("apply: exit %d, %q %q", code, out, stderr)
	}
	if code, out, _ := cli(t, environ, "", "campaign", "list"); code != exitOK || !strings.Contains(out, "demo") || !strings.Contains(out, "open") {
		t.Fatalf("list: %d %q", code, out)
	}

	lines := strings.Join([]string{
		`{"version":1,"id":"s1","campaign":"demo","signer":{"name":"Ann","email":"ann@example.org"},"signed_at":"2019-07-20T10:00:00Z"}`,
		`{"version":1,"id":"s1","campaign":"demo","signer":{"name":"Ann","email":"ann@example.org"},"signed_at":"2019-07-20T10:00:00Z"}`,
		`{"version":2,"id":"s2","campaign":"demo","signer":{"name":"Bob","email":"bob@example.org"},"signed_at":"2019-07-20T10:00:00Z"}`,
		`not json`,
	}, "\n")
	code, out, _ := cli(t, environ, lines, "enqueue")
	if code != exitFail {
		t.Fatalf("enqueue with a rejected line: exit %d; want 1", code)
	}
	var results []enqueueResult
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r enqueueResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		results = append(results, r)
	}
	want := []string{"accepted", "duplicate", "rejected", "rejected"}
	if len(results) != len(want) {
		t.Fatalf("got %d result lines; want %d: %s", len(results), len(want), out)
	}
	for i, w := range want {
		if results[i].Result != w || results[i].Line != i+1 {
			t.Errorf("line %d: %+v; want %s", i+1, results[i], w)
		}
	}
	if !strings.Contains(results[2].Error, "version") {
		t.Errorf("version rejection does not name the field: %+v", results[2])
	}

	if code, _, _ := cli(t, environ, "", "target", "pause", "press@mfa.example"); code != exitOK {
		t.Fatalf("pause: %d", code)
	}
	if code, out, _ := cli(t, environ, "", "target", "list"); code != exitOK || !strings.Contains(out, "paused") {
		t.Fatalf("target list: %d %q", code, out)
	}
	if code, out, _ := cli(t, environ, "", "target", "resume", "press@mfa.example"); code != exitOK || !strings.Contains(out, "resumed") {
		t.Fatalf("resume: %d %q", code, out)
	}
	if code, _, _ := cli(t, environ, "", "suppression", "add", "--reason", "test", "dead@mfa.example"); code != exitOK {
		t.Fatalf("suppression add: %d", code)
	}
	if code, out, _ := cli(t, environ, "", "suppression", "list"); code != exitOK || !strings.HasPrefix(out, "dead@mfa.example ") || !strings.Contains(out, "expires=") {
		t.Fatalf("suppression list: %d %q", code, out)
	}
	if code, _, _ := cli(t, environ, "", "suppression", "release", "dead@mfa.example"); code != exitOK {
		t.Fatalf("release: %d", code)
	}
	if code, _, stderr := cli(t, environ, "", "suppression", "release", "dead@mfa.example"); code != exitFail || !strings.Contains(stderr, "not suppressed") {
		t.Fatalf("second release: %d %q", code, stderr)
	}
	if code, out, stderr := cli(t, environ, "", "status"); code != exitOK || !strings.Contains(out, "queues:") || !strings.Contains(out, "press@mfa.example") {
		t.Fatalf("status: %d %q %q", code, out, stderr)
	}
	if code, _, stderr := cli(t, environ, "", "status", "--signature", "nope"); code != exitFail || !strings.Contains(stderr, "not found") {
		t.Fatalf("status of unknown signature: %d %q", code, stderr)
	}
	if code, out, _ := cli(t, environ, "", "campaign", "close", "demo"); code != exitOK || !strings.Contains(out, "closed") {
		t.Fatalf("close: %d %q", code, out)
	}
}

func TestBounceParse(t *testing.T) {
	raw := "Delivered-To: bounces@bounces.test\r\nFrom: MAILER-DAEMON@relay.test\r\nSubject: Undelivered Mail\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; relay.test\r\n\r\nFinal-Recipient: rfc822; press@mfa.example\r\nAction: failed\r\n" +
		"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B--\r\n"
	code, out, stderr := cli(t, nil, raw, "bounce", "parse")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res struct {
		File       string `json:"file"`
		IsBounce   bool   `json:"is_bounce"`
		Kind       string `json:"kind"`
		DeliveryID string `json:"delivery_id"`
		Recipients []struct {
			Address, Status, Action, Reason string
			Hard                            bool
		} `json:"recipients"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !res.IsBounce || res.Kind != "hard" || len(res.Recipients) != 1 || res.Recipients[0].Address != "press@mfa.example" ||
		res.Recipients[0].Status != "5.1.1" || !res.Recipients[0].Hard || res.Recipients[0].Reason != "userunknown" || res.File != "-" {
		t.Fatalf("parse result %+v", res)
	}
	if code, _, _ := cli(t, nil, "", "bounce", "parse", "/nonexistent/file.eml"); code != exitFail {
		t.Fatalf("missing file: exit %d; want 1", code)
	}
}
