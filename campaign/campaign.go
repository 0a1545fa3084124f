package campaign

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Campaign limits.
const (
	MaxTargets = 50
	// DefaultLocaleTag is the fallback letter when a campaign names none.
	DefaultLocaleTag = "en"
)

// compiled is a campaign's parsed templates. text/template values are safe
// for concurrent Execute, so one compiled campaign serves every worker.
type compiled struct {
	fromName *template.Template
	subject  map[string]*template.Template
	body     map[string]*template.Template
	// locales maps a lower-cased locale to the key used in Subject and Body,
	// so "pt-br" from a signer finds a letter written under "pt-BR".
	locales map[string]string
}

// Parse reads a campaign definition from YAML, validates it, compiles its
// templates and renders every letter with sample data, so that a template
// that fails to parse or to render is rejected now, when an operator applies
// it, and not later when mail is due. Unknown keys are errors.
func Parse(yamlData []byte) (*Campaign, error) {
	dec := yaml.NewDecoder(bytes.NewReader(yamlData))
	dec.KnownFields(true)
	var c Campaign
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fieldErr("input", "empty campaign definition")
		}
		return nil, fmt.Errorf("campaign YAML: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fieldErr("input", "more than one YAML document; put one campaign per file")
	}
	if c.DefaultLocale == "" {
		c.DefaultLocale = DefaultLocaleTag
	}
	if err := c.Compile(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Compile validates c and parses and test-renders its templates, keeping the
// result in c for Render. Parse and the Store return compiled campaigns; a
// Campaign built in Go needs Compile before it is shared between goroutines.
func (c *Campaign) Compile() error {
	cc, err := c.compile()
	if err != nil {
		return err
	}
	c.compiled = cc
	return nil
}

func (c *Campaign) defaultLocale() string {
	if c.DefaultLocale == "" {
		return DefaultLocaleTag
	}
	return c.DefaultLocale
}

// Validate checks the definition (not the templates: Parse and Compile do
// that) and returns a *FieldError for the first problem.
func (c *Campaign) Validate() error {
	if err := checkCampaignID("id", c.ID); err != nil {
		return err
	}
	switch c.Status {
	case "", StatusOpen, StatusClosed:
	default:
		return fieldErr("status", "must be open or closed, got %q", c.Status)
	}
	if strings.TrimSpace(c.FromName) == "" {
		return fieldErr("from_name", "required: a template such as \"{{.Signer.Name}} via LabourStart\"")
	}
	for _, m := range []struct {
		field       string
		this, other map[string]string
		otherField  string
	}{
		{"subject", c.Subject, c.Body, "body"},
		{"body", c.Body, c.Subject, "subject"},
	} {
		if len(m.this) == 0 {
			return fieldErr(m.field, "required: a map of locale to template, such as {en: \"...\"}")
		}
		lower := map[string]string{}
		for _, loc := range slices.Sorted(maps.Keys(m.this)) {
			f := m.field + "." + loc
			if err := checkLocale(f, loc); err != nil {
				return err
			}
			if prev, dup := lower[strings.ToLower(loc)]; dup {
				return fieldErr(f, "same locale as %s.%s", m.field, prev)
			}
			lower[strings.ToLower(loc)] = loc
			if strings.TrimSpace(m.this[loc]) == "" {
				return fieldErr(f, "empty")
			}
			if _, ok := m.other[loc]; !ok {
				return fieldErr(m.otherField+"."+loc, "missing: %s has locale %s, so %s needs it too", m.field, loc, m.otherField)
			}
		}
	}
	dl := c.defaultLocale()
	if err := checkLocale("default_locale", dl); err != nil {
		return err
	}
	if _, ok := c.Subject[dl]; !ok {
		return fieldErr("default_locale", "%s has no subject and body; add them or choose another default_locale", dl)
	}
	if n := len(c.Targets); n == 0 {
		return fieldErr("targets", "at least one target is required")
	} else if n > MaxTargets {
		return fieldErr("targets", "%d targets, at most %d", n, MaxTargets)
	}
	seen := map[string]int{}
	for i, t := range c.Targets {
		f := fmt.Sprintf("targets[%d]", i)
		if err := checkAddress(f+".address", t.Address); err != nil {
			return err
		}
		if j, dup := seen[NormalizeEmail(t.Address)]; dup {
			return fieldErr(f+".address", "%s is already targets[%d]", t.Address, j)
		}
		seen[NormalizeEmail(t.Address)] = i
		if !utf8.ValidString(t.Name) {
			return fieldErr(f+".name", "is not valid UTF-8")
		}
		if err := checkName(f+".name", t.Name, false); err != nil {
			return err
		}
	}
	for _, l := range []struct{ field, v string }{
		{"limits.per_address", c.Limits.PerAddress},
		{"limits.per_domain", c.Limits.PerDomain},
		{"limits.campaign", c.Limits.Campaign},
	} {
		if l.v == "" {
			continue
		}
		if _, _, err := parseRate(l.v); err != nil {
			return fieldErr(l.field, "%v", err)
		}
	}
	return nil
}

// parseRate reads "N/unit" (unit s, m or min, h or hour, d). The pacing
// package has its own parser; this one only has to say whether a campaign's
// override will be understood.
func parseRate(s string) (int64, time.Duration, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, fmt.Errorf("rate %q: want N/unit such as 30/h", s)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 1 {
		return 0, 0, fmt.Errorf("rate %q: %q is not a positive whole number", s, num)
	}
	per, ok := map[string]time.Duration{
		"s": time.Second, "m": time.Minute, "min": time.Minute,
		"h": time.Hour, "hour": time.Hour, "d": 24 * time.Hour,
	}[strings.TrimSpace(unit)]
	if !ok {
		return 0, 0, fmt.Errorf("rate %q: unit %q is not one of s, m, min, h, hour, d", s, unit)
	}
	return n, per, nil
}

func (c *Campaign) compile() (*compiled, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cc := &compiled{
		subject: map[string]*template.Template{},
		body:    map[string]*template.Template{},
		locales: map[string]string{},
	}
	var err error
	if cc.fromName, err = parseTemplate("from_name", c.FromName); err != nil {
		return nil, err
	}
	for loc := range c.Subject {
		cc.locales[strings.ToLower(loc)] = loc
		if cc.subject[loc], err = parseTemplate("subject."+loc, c.Subject[loc]); err != nil {
			return nil, err
		}
		if cc.body[loc], err = parseTemplate("body."+loc, c.Body[loc]); err != nil {
			return nil, err
		}
	}
	// Render every letter for every target with each sample, so a template
	// that only fails on some data (an index past a short name, a multi-line
	// comment in a subject, a slice through a Cyrillic letter) fails here.
	for _, loc := range slices.Sorted(maps.Keys(c.Subject)) {
		for _, t := range c.Targets {
			for _, sig := range sampleSignatures(c.ID) {
				if _, err := cc.render(c, loc, sampleData(c.ID, &sig, t)); err != nil {
					return nil, fmt.Errorf("%w (with sample signer %q)", err, truncate(sig.Signer.Name, 40))
				}
			}
		}
	}
	return cc, nil
}

func parseTemplate(name, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, &FieldError{Field: name, Problem: err.Error()}
	}
	return t, nil
}

// Render writes the letter from sig to target t, in the signer's locale if
// the campaign has it, else its base language ("pt-BR" → "pt"), else the
// campaign's default locale.
func (c *Campaign) Render(sig *Signature, t Target) (Letter, error) {
	if !c.HasTarget(t.Address) {
		return Letter{}, fmt.Errorf("campaign %s: render: %s is not a target of this campaign", c.ID, t.Address)
	}
	cc := c.compiled
	if cc == nil {
		var err error
		if cc, err = c.compile(); err != nil {
			return Letter{}, fmt.Errorf("campaign %s: %w", c.ID, err)
		}
	}
	loc := cc.chooseLocale(sig.Signer.Locale, c.defaultLocale())
	l, err := cc.render(c, loc, sampleData(c.ID, sig, t))
	if err != nil {
		return Letter{}, fmt.Errorf("campaign %s: render signature %s for %s: %w", c.ID, sig.ID, t.Address, err)
	}
	return l, nil
}

// HasTarget reports whether addr is one of the campaign's targets, ignoring
// case.
func (c *Campaign) HasTarget(addr string) bool {
	n := NormalizeEmail(addr)
	for _, t := range c.Targets {
		if NormalizeEmail(t.Address) == n {
			return true
		}
	}
	return false
}

// Locales returns the campaign's letter locales, sorted.
func (c *Campaign) Locales() []string { return slices.Sorted(maps.Keys(c.Body)) }

func (cc *compiled) chooseLocale(want, def string) string {
	want = strings.ToLower(want)
	if loc, ok := cc.locales[want]; ok {
		return loc
	}
	if base, _, ok := strings.Cut(want, "-"); ok {
		if loc, ok := cc.locales[base]; ok {
			return loc
		}
	}
	return def
}

func (cc *compiled) render(c *Campaign, loc string, data LetterData) (Letter, error) {
	l := Letter{Locale: loc}
	var err error
	if l.FromName, err = execLine(cc.fromName, data); err != nil {
		return Letter{}, err
	}
	if l.Subject, err = execLine(cc.subject[loc], data); err != nil {
		return Letter{}, err
	}
	body, err := execText(cc.body[loc], data)
	if err != nil {
		return Letter{}, err
	}
	// Blank lines around the letter are template layout (YAML block
	// scalars end in a newline); inside it, every byte is kept, because the
	// signer's comment must arrive as written.
	body = strings.TrimRight(strings.TrimLeft(body, "\r\n"), " \t\r\n")
	if body == "" {
		return Letter{}, fieldErr(cc.body[loc].Name(), "renders an empty letter")
	}
	l.Body = body + "\n"
	return l, nil
}

func execText(t *template.Template, data LetterData) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", &FieldError{Field: t.Name(), Problem: err.Error()}
	}
	if !utf8.ValidString(b.String()) {
		return "", fieldErr(t.Name(), "renders invalid UTF-8 (does it slice or index a string by bytes?)")
	}
	return b.String(), nil
}

// execLine renders a template whose output becomes a header: one line, not
// empty.
func execLine(t *template.Template, data LetterData) (string, error) {
	s, err := execText(t, data)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", fieldErr(t.Name(), "renders a line break (CR or LF), which cannot go into a header; multi-line fields such as .Comment belong in the body")
	}
	if strings.ContainsRune(s, 0) {
		return "", fieldErr(t.Name(), "renders NUL")
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fieldErr(t.Name(), "renders empty")
	}
	return s, nil
}

func sampleData(campaignID string, sig *Signature, t Target) LetterData {
	return LetterData{
		Campaign:    campaignID,
		SignatureID: sig.ID,
		Signer:      sig.Signer,
		Comment:     sig.Comment,
		SignedAt:    sig.SignedAt,
		Target:      t,
	}
}

// sampleSignatures are what templates are test-rendered with: an ordinary
// signer, one with every optional field empty, and a hostile-looking one at
// the limits (longest name, Cyrillic first letter, markup, template syntax,
// a multi-line comment with CRLF and tabs).
func sampleSignatures(campaignID string) []Signature {
	at := time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC)
	hostileName := "Ёлдос \"O'Brien\" <script>&amp; {{.Nope}} %s عربي "
	for utf8.RuneCountInString(hostileName) < MaxNameRunes {
		hostileName += "ñ"
	}
	return []Signature{
		{
			Version: SignatureVersion, ID: "sample-1", Campaign: campaignID,
			Signer:  Signer{Name: "Maria Santos", Email: "maria@example.org", Country: "PH", Locale: "tl"},
			Comment: "Palayain si Erlan Baltabay!", SignedAt: at,
		},
		{
			Version: SignatureVersion, ID: "s", Campaign: campaignID,
			Signer:   Signer{Name: "A", Email: "a@b.example"},
			SignedAt: at,
		},
		{
			Version: SignatureVersion, ID: strings.Repeat("x", MaxSignatureIDLen), Campaign: campaignID,
			Signer:   Signer{Name: hostileName, Email: "o'brien+tag@sub.example.org", Country: "KZ", Locale: "kk-Cyrl-KZ"},
			Comment:  "Line one\r\nLine two\n\tindented {{.Signer.Email}} <b>bold</b>\n\n" + strings.Repeat("Ж", 1000),
			SignedAt: at.Add(time.Hour),
		},
	}
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
