// Package config owns petitiond's configuration: the YAML file of
// docs/configuration.md, its defaults, the PETITIOND_SECTION_KEY environment
// overrides, secrets read from *_file paths (systemd credentials), validation
// that names the field at fault, and a redacted rendering for check-config.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/petitiond/petitiond/queue/pacing"
)

// Config is the whole configuration. Field tags give the YAML key; the
// environment override of a field is PETITIOND_ + SECTION + _ + KEY in upper
// case (PETITIOND_SMTP_RELAY). Fields tagged secret:"true" are redacted when
// printed.
type Config struct {
	Redis    Redis    `yaml:"redis"`
	SMTP     SMTP     `yaml:"smtp"`
	Sender   Sender   `yaml:"sender"`
	Limits   Limits   `yaml:"limits"`
	Delivery Delivery `yaml:"delivery"`
	IMAP     IMAP     `yaml:"imap"`
	Bounces  Bounces  `yaml:"bounces"`
	HTTP     HTTP     `yaml:"http"`
	Log      Log      `yaml:"log"`
}

// Redis says where the shared Redis is.
type Redis struct {
	// URL is a redis:// or rediss:// URL (redis://127.0.0.1:6379/0).
	URL string `yaml:"url"`
	// SentinelMaster, when set with SentinelAddrs, connects through Sentinel.
	SentinelMaster string   `yaml:"sentinel_master"`
	SentinelAddrs  []string `yaml:"sentinel_addrs"`
	Password       string   `yaml:"password" secret:"true"`
	PasswordFile   string   `yaml:"password_file"`
}

// SMTP is the relay petitiond hands mail to.
type SMTP struct {
	Relay              string        `yaml:"relay"`
	TLS                string        `yaml:"tls"`
	CAFile             string        `yaml:"ca_file"`
	Username           string        `yaml:"username"`
	Password           string        `yaml:"password" secret:"true"`
	PasswordFile       string        `yaml:"password_file"`
	HELO               string        `yaml:"helo"`
	PoolSize           int           `yaml:"pool_size"`
	MaxMessagesPerConn int           `yaml:"max_messages_per_conn"`
	IdleTimeout        time.Duration `yaml:"idle_timeout"`
	Timeout            time.Duration `yaml:"timeout"`
}

// Sender is how petitiond's mail identifies itself.
type Sender struct {
	From           string `yaml:"from"`
	BounceDomain   string `yaml:"bounce_domain"`
	VERPSecret     string `yaml:"verp_secret" secret:"true"`
	VERPSecretFile string `yaml:"verp_secret_file"`
	DKIM           DKIM   `yaml:"dkim"`
}

// DKIM signs outgoing mail when Domain is set.
type DKIM struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	KeyFile  string `yaml:"key_file"`
}

// Limits are the send rates, written "N/unit" (s, m, h, d).
type Limits struct {
	PerAddress  string            `yaml:"per_address"`
	PerDomain   string            `yaml:"per_domain"`
	Global      string            `yaml:"global"`
	PerCampaign string            `yaml:"per_campaign"`
	Domains     map[string]string `yaml:"domains"`
}

// Delivery tunes the delivery engine.
type Delivery struct {
	// Concurrency is the number of delivery tasks one instance runs at once.
	Concurrency int `yaml:"concurrency"`
	// MaxAge is how long a delivery is retried before it fails as expired.
	MaxAge time.Duration `yaml:"max_age"`
	// DrainTimeout bounds how long SIGTERM waits for in-flight SMTP
	// transactions.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// BreakerThreshold is how many relay failures in a row open the breaker.
	BreakerThreshold int `yaml:"breaker_threshold"`
	// BreakerProbeInterval is how often a paused relay is probed.
	BreakerProbeInterval time.Duration `yaml:"breaker_probe_interval"`
	// LedgerTTL is how long delivery records are kept after their last change.
	LedgerTTL time.Duration `yaml:"ledger_ttl"`
	// RetryBase is the first retry delay after a temporary failure; it
	// doubles per attempt up to RetryMax, with jitter.
	RetryBase time.Duration `yaml:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max"`
}

// IMAP is the bounce mailbox.
type IMAP struct {
	Enabled      bool          `yaml:"enabled"`
	Addr         string        `yaml:"addr"`
	TLS          string        `yaml:"tls"`
	CAFile       string        `yaml:"ca_file"`
	Username     string        `yaml:"username"`
	Password     string        `yaml:"password" secret:"true"`
	PasswordFile string        `yaml:"password_file"`
	Mailbox      string        `yaml:"mailbox"`
	Processed    string        `yaml:"processed"`
	Unrecognized string        `yaml:"unrecognized"`
	PollInterval time.Duration `yaml:"poll_interval"`
}

// Bounces is the bounce policy.
type Bounces struct {
	SuppressionTTL time.Duration `yaml:"suppression_ttl"`
	SoftThreshold  int           `yaml:"soft_threshold"`
	SoftWindow     time.Duration `yaml:"soft_window"`
	SoftCooldown   time.Duration `yaml:"soft_cooldown"`
}

// HTTP serves /metrics, /healthz and /readyz.
type HTTP struct {
	Listen string `yaml:"listen"`
}

// Log sets the log level and format.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the configuration used for every key a file leaves out.
func Default() Config {
	return Config{
		Redis: Redis{URL: "redis://127.0.0.1:6379/0"},
		SMTP: SMTP{
			Relay: "127.0.0.1:25", TLS: "starttls", PoolSize: 8,
			MaxMessagesPerConn: 100, IdleTimeout: 30 * time.Second, Timeout: 60 * time.Second,
		},
		Limits: Limits{PerAddress: "60/h", PerDomain: "600/h", Global: "20/s"},
		Delivery: Delivery{
			Concurrency: 16, MaxAge: 120 * time.Hour, DrainTimeout: 30 * time.Second,
			BreakerThreshold: 3, BreakerProbeInterval: 10 * time.Second, LedgerTTL: 90 * 24 * time.Hour,
			RetryBase: 30 * time.Second, RetryMax: time.Hour,
		},
		IMAP: IMAP{
			TLS: "implicit", Mailbox: "INBOX", Processed: "Processed",
			Unrecognized: "Unrecognized", PollInterval: 30 * time.Second,
		},
		Bounces: Bounces{
			SuppressionTTL: 720 * time.Hour, SoftThreshold: 5,
			SoftWindow: 168 * time.Hour, SoftCooldown: 24 * time.Hour,
		},
		HTTP: HTTP{Listen: "127.0.0.1:9464"},
		Log:  Log{Level: "info", Format: "json"},
	}
}

// Load reads the file at path (none when path is empty), applies the
// environment overrides from environ (os.Environ() form), reads *_file
// secrets and validates the result.
func Load(path string, environ []string) (Config, error) {
	return load(path, environ, true)
}

// LoadPartial is Load for commands that only talk to Redis (campaign,
// enqueue, status...): the sending settings need not be complete.
func LoadPartial(path string, environ []string) (Config, error) {
	return load(path, environ, false)
}

func load(path string, environ []string, full bool) (Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		// An empty file means "all defaults", so io.EOF is not an error.
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return Config{}, err
	}
	if err := cfg.readSecrets(); err != nil {
		return Config{}, err
	}
	if err := cfg.validate(full); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

const envPrefix = "PETITIOND_"

// applyEnv walks the sections and keys and applies PETITIOND_SECTION_KEY.
// Unknown PETITIOND_ variables are an error: a typo must not silently leave
// the default in place.
func applyEnv(cfg *Config, environ []string) error {
	known := map[string]reflect.Value{}
	collectEnv(reflect.ValueOf(cfg).Elem(), strings.TrimSuffix(envPrefix, "_"), known)
	var names []string
	vals := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, envPrefix) {
			continue
		}
		names = append(names, k)
		vals[k] = v
	}
	sort.Strings(names)
	for _, k := range names {
		f, ok := known[k]
		if !ok {
			return fmt.Errorf("environment: %s is not a configuration key", k)
		}
		if err := setFromString(f, vals[k]); err != nil {
			return fmt.Errorf("environment: %s: %w", k, err)
		}
	}
	return nil
}

func collectEnv(v reflect.Value, name string, out map[string]reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		n := name + "_" + strings.ToUpper(tag)
		f := v.Field(i)
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Duration(0)) {
			collectEnv(f, n, out)
			continue
		}
		out[n] = f
	}
}

func setFromString(f reflect.Value, s string) error {
	switch {
	case f.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration: %q", s)
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		f.SetInt(int64(n))
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		f.SetBool(b)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.Set(reflect.ValueOf(parts))
	case f.Kind() == reflect.Map:
		// "gmail.com=300/h,example.org=10/m"
		m := map[string]string{}
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				return fmt.Errorf("want key=value pairs separated by commas, got %q", p)
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		f.Set(reflect.ValueOf(m))
	default:
		return fmt.Errorf("cannot set a %s from the environment", f.Kind())
	}
	return nil
}

// readSecrets fills each secret from its *_file path when one is given. The
// file wins over an inline value so that a credential mounted by systemd is
// never shadowed by a stale inline default.
func (c *Config) readSecrets() error {
	for _, s := range []struct {
		field string
		file  string
		dst   *string
	}{
		{"redis.password_file", c.Redis.PasswordFile, &c.Redis.Password},
		{"smtp.password_file", c.SMTP.PasswordFile, &c.SMTP.Password},
		{"sender.verp_secret_file", c.Sender.VERPSecretFile, &c.Sender.VERPSecret},
		{"imap.password_file", c.IMAP.PasswordFile, &c.IMAP.Password},
	} {
		if s.file == "" {
			continue
		}
		data, err := os.ReadFile(s.file)
		if err != nil {
			return fmt.Errorf("%s: %w", s.field, err)
		}
		*s.dst = strings.TrimRight(string(data), "\r\n")
	}
	return nil
}

// Validate checks every field and names each one at fault.
func (c *Config) Validate() error { return c.validate(true) }

func (c *Config) validate(full bool) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Redis.URL == "" && c.Redis.SentinelMaster == "" {
		bad("redis.url", "required")
	}
	if (c.Redis.SentinelMaster == "") != (len(c.Redis.SentinelAddrs) == 0) {
		bad("redis.sentinel_addrs", "sentinel_master and sentinel_addrs go together")
	}
	if full {
		c.validateSending(bad)
	}
	for _, l := range []struct{ field, v string }{
		{"limits.per_address", c.Limits.PerAddress},
		{"limits.per_domain", c.Limits.PerDomain},
		{"limits.global", c.Limits.Global},
	} {
		if _, err := pacing.ParseRate(l.v); err != nil {
			bad(l.field, "%v", err)
		}
	}
	if c.Limits.PerCampaign != "" {
		if _, err := pacing.ParseRate(c.Limits.PerCampaign); err != nil {
			bad("limits.per_campaign", "%v", err)
		}
	}
	for _, d := range sortedKeys(c.Limits.Domains) {
		if _, err := pacing.ParseRate(c.Limits.Domains[d]); err != nil {
			bad("limits.domains."+d, "%v", err)
		}
	}
	if c.Delivery.Concurrency < 1 {
		bad("delivery.concurrency", "must be at least 1, got %d", c.Delivery.Concurrency)
	}
	if c.Delivery.MaxAge <= 0 {
		bad("delivery.max_age", "must be positive")
	}
	if c.Delivery.DrainTimeout <= 0 {
		bad("delivery.drain_timeout", "must be positive")
	}
	if c.Delivery.BreakerThreshold < 1 {
		bad("delivery.breaker_threshold", "must be at least 1")
	}
	if c.Delivery.BreakerProbeInterval <= 0 {
		bad("delivery.breaker_probe_interval", "must be positive")
	}
	if c.Delivery.RetryBase <= 0 || c.Delivery.RetryMax < c.Delivery.RetryBase {
		bad("delivery.retry_base", "retry_base must be positive and retry_max at least retry_base")
	}
	if c.Delivery.LedgerTTL < 24*time.Hour {
		bad("delivery.ledger_ttl", "must be at least 24h, got %s", c.Delivery.LedgerTTL)
	}
	if full && c.IMAP.Enabled {
		if _, _, err := net.SplitHostPort(c.IMAP.Addr); err != nil {
			bad("imap.addr", "want host:port, got %q", c.IMAP.Addr)
		}
		if !oneOf(c.IMAP.TLS, "implicit", "starttls", "none") {
			bad("imap.tls", "must be implicit, starttls or none, got %q", c.IMAP.TLS)
		}
		if c.IMAP.Username == "" {
			bad("imap.username", "required when imap.enabled")
		}
		if c.IMAP.Mailbox == "" || c.IMAP.Processed == "" || c.IMAP.Unrecognized == "" {
			bad("imap.mailbox", "mailbox, processed and unrecognized must all be set")
		}
	}
	if c.Bounces.SuppressionTTL <= 0 {
		bad("bounces.suppression_ttl", "must be positive")
	}
	if c.Bounces.SoftThreshold < 1 {
		bad("bounces.soft_threshold", "must be at least 1")
	}
	if c.Bounces.SoftWindow <= 0 || c.Bounces.SoftCooldown <= 0 {
		bad("bounces.soft_window", "soft_window and soft_cooldown must be positive")
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			bad("http.listen", "want host:port, got %q", c.HTTP.Listen)
		}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "json", "text") {
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// Redacted renders the effective configuration as YAML with every secret
// replaced, for check-config.
func (c Config) Redacted() ([]byte, error) {
	cp := c
	redact(reflect.ValueOf(&cp).Elem())
	out, err := yaml.Marshal(cp)
	if err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	return out, nil
}

func redact(v reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Duration(0)) {
			redact(f)
			continue
		}
		if t.Field(i).Tag.Get("secret") == "true" && f.String() != "" {
			f.SetString("<redacted>")
		}
	}
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validateSending checks what serve needs to send mail and the other
// commands do not.
func (c *Config) validateSending(bad func(field, format string, args ...any)) {
	if _, _, err := net.SplitHostPort(c.SMTP.Relay); err != nil {
		bad("smtp.relay", "want host:port, got %q", c.SMTP.Relay)
	}
	if !oneOf(c.SMTP.TLS, "starttls", "implicit", "none") {
		bad("smtp.tls", "must be starttls, implicit or none, got %q", c.SMTP.TLS)
	}
	if c.SMTP.Username != "" && c.SMTP.Password == "" {
		bad("smtp.password", "required when smtp.username is set (or give smtp.password_file)")
	}
	if c.SMTP.PoolSize < 1 {
		bad("smtp.pool_size", "must be at least 1, got %d", c.SMTP.PoolSize)
	}
	if c.SMTP.MaxMessagesPerConn < 1 {
		bad("smtp.max_messages_per_conn", "must be at least 1, got %d", c.SMTP.MaxMessagesPerConn)
	}
	if a, err := mail.ParseAddress(c.Sender.From); err != nil || a.Name != "" || a.Address != c.Sender.From {
		bad("sender.from", "want a bare address like petitions@example.org, got %q", c.Sender.From)
	}
	if c.Sender.BounceDomain == "" || strings.ContainsAny(c.Sender.BounceDomain, "@ \r\n") {
		bad("sender.bounce_domain", "want a domain like bounces.example.org, got %q", c.Sender.BounceDomain)
	}
	if len(c.Sender.VERPSecret) < 16 {
		bad("sender.verp_secret", "required, at least 16 characters (or give sender.verp_secret_file)")
	}
	if d := c.Sender.DKIM; d.Domain != "" && (d.Selector == "" || d.KeyFile == "") {
		bad("sender.dkim", "domain, selector and key_file go together")
	}
}
