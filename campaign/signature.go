package campaign

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of signature version 1. docs/signature.md and
// docs/signature.schema.json state the same numbers; the schema agreement
// test keeps the three in step.
const (
	MaxSignatureIDLen = 128
	MaxCampaignIDLen  = 64
	MaxNameRunes      = 200
	MaxEmailLen       = 254
	// MaxEmailLocalLen is the RFC 5321 limit on the part before the @.
	MaxEmailLocalLen = 64
	MaxLocaleLen     = 35
	MaxCommentRunes  = 5000
	// MaxSignatureBytes bounds the whole JSON document before it is
	// decoded. The largest valid signature (a 5000-character comment
	// written entirely as \uXXXX escapes) is about 31 KiB.
	MaxSignatureBytes = 64 << 10
	// MaxFutureSkew is how far ahead of the receiving clock signed_at may be:
	// enough for a frontend whose clock runs fast or sits in another time
	// zone with a wrong offset, not enough to post-date a petition.
	MaxFutureSkew = 24 * time.Hour
)

var (
	signatureIDRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	campaignIDRe  = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	localeRe      = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
	// emailRe is a dot-atom local part and a host name of letters, digits
	// and hyphens. It is deliberately ASCII-only: the address ends up in a
	// Reply-To header, and relays without SMTPUTF8 mangle anything else.
	// Internationalised domains must arrive in their A-label (xn--) form.
	emailRe = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*" +
		`@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// FieldError says which field of a signature or campaign is at fault and why.
// Field is a dotted path ("signer.email", "targets[2].address", "body.tl"),
// or "input" when the problem is the document as a whole.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// ParseSignature decodes and validates one signature. It is the single
// validated path: the Go producer, the Redis stream ingester and the CLI all
// call it, so a signature accepted by one is accepted by all.
//
// Decoding is strict: the input must be one JSON object in valid UTF-8, with
// no unknown, duplicate or null fields, and version 1. The first problem is
// returned as a *FieldError.
func ParseSignature(data []byte) (Signature, error) {
	if len(data) > MaxSignatureBytes {
		return Signature{}, fieldErr("input", "too large: %d bytes, at most %d", len(data), MaxSignatureBytes)
	}
	// encoding/json replaces invalid UTF-8 with U+FFFD without complaint,
	// which would let mojibake reach a header, so check the raw bytes first.
	if !utf8.Valid(data) {
		return Signature{}, fieldErr(locateInvalidUTF8(data), "is not valid UTF-8")
	}
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		return Signature{}, fieldErr("input", "is not valid JSON: %v", err)
	}
	if first := bytes.TrimLeft(data, " \t\r\n"); len(first) == 0 || first[0] != '{' {
		return Signature{}, fieldErr("input", "must be a JSON object")
	}
	// The version decides what the rest means, so it is checked before
	// anything else: a version 2 signature with a field version 1 does not
	// know should say "unsupported version", not "unknown field".
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return Signature{}, fieldErr("input", "is not a JSON object: %v", err)
	}
	if err := checkRawVersion(top["version"]); err != nil {
		return Signature{}, err
	}
	if err := walkStrict(data); err != nil {
		return Signature{}, err
	}
	var w struct {
		Version  int    `json:"version"`
		ID       string `json:"id"`
		Campaign string `json:"campaign"`
		Signer   Signer `json:"signer"`
		Comment  string `json:"comment"`
		SignedAt string `json:"signed_at"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		// walkStrict has already checked names and types; this is a
		// backstop, not the usual path.
		return Signature{}, fieldErr("input", "%v", err)
	}
	sig := Signature{
		Version:  w.Version,
		ID:       w.ID,
		Campaign: w.Campaign,
		Signer:   w.Signer,
		Comment:  w.Comment,
	}
	if _, ok := top["signed_at"]; !ok {
		return Signature{}, fieldErr("signed_at", "required (an RFC 3339 date-time such as 2019-07-20T10:00:00Z)")
	}
	// UnmarshalText is Go's strict RFC 3339 parser (time.Parse is lenient
	// about some ranges).
	if err := sig.SignedAt.UnmarshalText([]byte(w.SignedAt)); err != nil {
		return Signature{}, fieldErr("signed_at", "must be an RFC 3339 date-time such as 2019-07-20T10:00:00Z, got %q", w.SignedAt)
	}
	if err := sig.Validate(); err != nil {
		return Signature{}, err
	}
	return sig, nil
}

func checkRawVersion(raw json.RawMessage) error {
	if raw == nil {
		return fieldErr("version", "required, want %d", SignatureVersion)
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return fieldErr("version", "must be the number %d, got %s", SignatureVersion, raw)
	}
	if n.String() != fmt.Sprint(SignatureVersion) {
		return fieldErr("version", "unsupported version %s, want %d", n, SignatureVersion)
	}
	return nil
}

// Validate checks every field against the limits of version 1 and returns a
// *FieldError for the first problem. Go producers that build a Signature
// directly get the same checks as JSON producers.
func (s *Signature) Validate() error {
	return s.validateAt(time.Now())
}

func (s *Signature) validateAt(now time.Time) error {
	switch {
	case s.Version == 0:
		return fieldErr("version", "required, want %d", SignatureVersion)
	case s.Version != SignatureVersion:
		return fieldErr("version", "unsupported version %d, want %d", s.Version, SignatureVersion)
	}
	if err := checkUTF8(s); err != nil {
		return err
	}
	switch {
	case s.ID == "":
		return fieldErr("id", "required")
	case len(s.ID) > MaxSignatureIDLen:
		return fieldErr("id", "too long: %d characters, at most %d", len(s.ID), MaxSignatureIDLen)
	case !signatureIDRe.MatchString(s.ID):
		return fieldErr("id", "may contain only A-Z a-z 0-9 . _ : -")
	}
	if err := checkCampaignID("campaign", s.Campaign); err != nil {
		return err
	}
	if err := checkName("signer.name", s.Signer.Name, true); err != nil {
		return err
	}
	if err := checkAddress("signer.email", s.Signer.Email); err != nil {
		return err
	}
	if c := s.Signer.Country; c != "" && !IsCountry(c) {
		return fieldErr("signer.country", "must be an ISO 3166-1 alpha-2 code in upper case such as PH, got %q", c)
	}
	if l := s.Signer.Locale; l != "" {
		if err := checkLocale("signer.locale", l); err != nil {
			return err
		}
	}
	if n := utf8.RuneCountInString(s.Comment); n > MaxCommentRunes {
		return fieldErr("comment", "too long: %d characters, at most %d", n, MaxCommentRunes)
	}
	for _, r := range s.Comment {
		if r == '\n' || r == '\r' || r == '\t' {
			continue
		}
		if unicode.IsControl(r) {
			return fieldErr("comment", "contains control character %U (only line breaks and tabs are allowed)", r)
		}
	}
	switch {
	case s.SignedAt.IsZero():
		return fieldErr("signed_at", "required (an RFC 3339 date-time such as 2019-07-20T10:00:00Z)")
	case s.SignedAt.After(now.Add(MaxFutureSkew)):
		return fieldErr("signed_at", "%s is more than %s in the future", s.SignedAt.Format(time.RFC3339), MaxFutureSkew)
	}
	return nil
}

func checkUTF8(s *Signature) error {
	for _, f := range []struct{ name, v string }{
		{"id", s.ID}, {"campaign", s.Campaign},
		{"signer.name", s.Signer.Name}, {"signer.email", s.Signer.Email},
		{"signer.country", s.Signer.Country}, {"signer.locale", s.Signer.Locale},
		{"comment", s.Comment},
	} {
		if !utf8.ValidString(f.v) {
			return fieldErr(f.name, "is not valid UTF-8")
		}
	}
	return nil
}

func checkCampaignID(field, id string) error {
	switch {
	case id == "":
		return fieldErr(field, "required")
	case len(id) > MaxCampaignIDLen:
		return fieldErr(field, "too long: %d characters, at most %d", len(id), MaxCampaignIDLen)
	case !campaignIDRe.MatchString(id):
		return fieldErr(field, "may contain only a-z 0-9 and -, got %q", id)
	}
	return nil
}

func checkLocale(field, l string) error {
	if len(l) > MaxLocaleLen || !localeRe.MatchString(l) {
		return fieldErr(field, "must be a language tag such as en, tl or pt-BR, got %q", l)
	}
	return nil
}

// checkName rejects every control character, not only CR and LF: a name goes
// into a From display name, and a tab or NUL there is at best mangled.
func checkName(field, name string, required bool) error {
	if strings.TrimSpace(name) == "" {
		if required {
			return fieldErr(field, "required")
		}
		if name == "" {
			return nil
		}
	}
	if n := utf8.RuneCountInString(name); n > MaxNameRunes {
		return fieldErr(field, "too long: %d characters, at most %d", n, MaxNameRunes)
	}
	for _, r := range name {
		switch {
		case r == '\r' || r == '\n':
			return fieldErr(field, "contains a line break (CR or LF)")
		case unicode.IsControl(r):
			return fieldErr(field, "contains control character %U", r)
		}
	}
	return nil
}

// checkAddress accepts a bare addr-spec (no display name, no comments, no
// angle brackets, no quoting) that net/mail parses back to exactly itself.
func checkAddress(field, addr string) error {
	if addr == "" {
		return fieldErr(field, "required")
	}
	if strings.ContainsAny(addr, "\r\n") {
		return fieldErr(field, "contains a line break (CR or LF)")
	}
	if strings.ContainsRune(addr, 0) {
		return fieldErr(field, "contains NUL")
	}
	if len(addr) > MaxEmailLen {
		return fieldErr(field, "too long: %d characters, at most %d", len(addr), MaxEmailLen)
	}
	parsed, err := mail.ParseAddress(addr)
	if err != nil || parsed.Name != "" || parsed.Address != addr || !emailRe.MatchString(addr) {
		return fieldErr(field, "must be a bare address such as maria@example.org, got %q", addr)
	}
	if at := strings.LastIndexByte(addr, '@'); at > MaxEmailLocalLen {
		return fieldErr(field, "the part before @ is %d characters, at most %d", at, MaxEmailLocalLen)
	}
	return nil
}
