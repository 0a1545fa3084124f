package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const validYAML = `
redis: {url: "redis://127.0.0.1:6379/0"}
smtp: {relay: "smtp.example.org:587", username: campaigns, password: "inline-secret"}
sender:
  from: petitions@petitions.example.org
  bounce_domain: bounces.petitions.example.org
  verp_secret: "0123456789abcdef0123"
limits: {per_address: "60/h", domains: {"gmail.com": "300/h"}}
`

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	path := write(t, "c.yaml", validYAML)
	secret := write(t, "smtp", "from-file\n")
	cases := []struct {
		name    string
		environ []string
		check   func(t *testing.T, c Config)
	}{
		{"file and defaults", nil, func(t *testing.T, c Config) {
			if c.SMTP.Relay != "smtp.example.org:587" || c.SMTP.TLS != "starttls" || c.Bounces.SuppressionTTL != 720*time.Hour {
				t.Errorf("got %+v", c.SMTP)
			}
			if c.Limits.Domains["gmail.com"] != "300/h" || c.Limits.Global != "20/s" {
				t.Errorf("limits %+v", c.Limits)
			}
		}},
		{"env overrides", []string{"PETITIOND_SMTP_RELAY=relay.test:25", "PETITIOND_SMTP_POOL_SIZE=3",
			"PETITIOND_DELIVERY_MAX_AGE=48h", "PETITIOND_LIMITS_DOMAINS=a.example=1/s,b.example=2/m", "HOME=/x"},
			func(t *testing.T, c Config) {
				if c.SMTP.Relay != "relay.test:25" || c.SMTP.PoolSize != 3 || c.Delivery.MaxAge != 48*time.Hour {
					t.Errorf("overrides not applied: %+v %+v", c.SMTP, c.Delivery)
				}
				if c.Limits.Domains["b.example"] != "2/m" || len(c.Limits.Domains) != 2 {
					t.Errorf("domains %v", c.Limits.Domains)
				}
			}},
		{"secret file wins", []string{"PETITIOND_SMTP_PASSWORD_FILE=" + secret}, func(t *testing.T, c Config) {
			if c.SMTP.Password != "from-file" {
				t.Errorf("password = %q; want from-file", c.SMTP.Password)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(path, tc.environ)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name, yaml string
		environ    []string
		want       string
	}{
		{"bad tls", validYAML + "\n", []string{"PETITIOND_SMTP_TLS=maybe"}, "smtp.tls"},
		{"bad rate", validYAML, []string{"PETITIOND_LIMITS_GLOBAL=fast"}, "limits.global"},
		{"bad domain rate", validYAML, []string{"PETITIOND_LIMITS_DOMAINS=x.example=0/s"}, "limits.domains.x.example"},
		{"from with name", strings.Replace(validYAML, "from: petitions@", "from: Petitions <petitions@", 1) + "", nil, "sender.from"},
		{"short verp secret", validYAML, []string{"PETITIOND_SENDER_VERP_SECRET=short"}, "sender.verp_secret"},
		{"unknown env", validYAML, []string{"PETITIOND_SMTP_RELAYY=x:1"}, "PETITIOND_SMTP_RELAYY"},
		{"unknown key", validYAML + "smtp2: {}\n", nil, "smtp2"},
		{"bad int", validYAML, []string{"PETITIOND_SMTP_POOL_SIZE=many"}, "PETITIOND_SMTP_POOL_SIZE"},
		{"imap without user", validYAML, []string{"PETITIOND_IMAP_ENABLED=true", "PETITIOND_IMAP_ADDR=imap.example:993"}, "imap.username"},
		{"missing secret file", validYAML, []string{"PETITIOND_IMAP_PASSWORD_FILE=/nonexistent/x"}, "imap.password_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, "c.yaml", tc.yaml), tc.environ)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v; want one naming %q", err, tc.want)
			}
		})
	}
}

func TestLoadPartialNeedsNoSender(t *testing.T) {
	if _, err := LoadPartial("", nil); err != nil {
		t.Fatalf("LoadPartial with defaults: %v", err)
	}
	if _, err := Load("", nil); err == nil || !strings.Contains(err.Error(), "sender.from") {
		t.Fatalf("Load with defaults = %v; want sender.from error", err)
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	c, err := Load(write(t, "c.yaml", validYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, secret := range []string{"inline-secret", "0123456789abcdef0123"} {
		if strings.Contains(s, secret) {
			t.Errorf("redacted output contains %q:\n%s", secret, s)
		}
	}
	if !strings.Contains(s, "<redacted>") || !strings.Contains(s, "smtp.example.org:587") {
		t.Errorf("redacted output lacks expected content:\n%s", s)
	}
	if c.SMTP.Password != "inline-secret" {
		t.Error("Redacted changed the original config")
	}
}

// The example in the repository must stay loadable: operators copy it.
func TestExampleConfigLoads(t *testing.T) {
	secret := write(t, "s", "a-long-enough-secret-value\n")
	c, err := Load("../../petitiond.example.yaml", []string{
		"PETITIOND_SMTP_PASSWORD_FILE=" + secret,
		"PETITIOND_SENDER_VERP_SECRET_FILE=" + secret,
		"PETITIOND_IMAP_PASSWORD_FILE=" + secret,
	})
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	def := Default()
	if c.Delivery != def.Delivery || c.Bounces != def.Bounces || c.SMTP.PoolSize != def.SMTP.PoolSize {
		t.Errorf("example config drifted from the defaults:\n%+v\n%+v", c.Delivery, def.Delivery)
	}
}

func TestDemoConfigLoads(t *testing.T) {
	if _, err := Load("../../demo/petitiond.yaml", nil); err != nil {
		t.Fatalf("demo config: %v", err)
	}
}
