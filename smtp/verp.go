package smtp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// VERP errors. Parse wraps one of them with detail.
var (
	// ErrNotVERP: the address is not one of ours (wrong domain, wrong
	// prefix, no token). Mail to it can not be tied to a delivery.
	ErrNotVERP = errors.New("not a VERP bounce address")
	// ErrBadToken: the address looks like ours but the token is malformed
	// or its HMAC does not verify (forged, or signed with another secret).
	ErrBadToken = errors.New("bad VERP token")
)

const (
	verpPrefix = "bounces+"
	idLen      = 32 // delivery ids: 32 lowercase hex characters
	// 80 bits of HMAC: far beyond what an attacker can guess by sending
	// bounces, and exactly 16 base32 characters with no padding.
	macBytes = 10
	macLen   = 16
	tokenLen = idLen + macLen
	// MinVERPSecret is the shortest secret Validate accepts.
	MinVERPSecret = 16
)

// Lowercase base32 keeps the token within [a-z2-7], so a relay that
// lower-cases local parts can not break it.
var verpEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// VERP builds and checks envelope senders of the form bounces+TOKEN@Domain
// where TOKEN is the delivery id followed by a truncated HMAC-SHA256 of it.
// A bounce to such an address names its delivery, and only petitiond can
// mint addresses that verify.
type VERP struct {
	Secret []byte
	Domain string
}

// Validate reports a configuration that can not produce trustworthy
// addresses; call it once at startup.
func (v VERP) Validate() error {
	if len(v.Secret) < MinVERPSecret {
		return fmt.Errorf("verp: secret is %d bytes, want at least %d", len(v.Secret), MinVERPSecret)
	}
	if v.Domain == "" || strings.ContainsAny(v.Domain, "@ \t\r\n<>") {
		return fmt.Errorf("verp: bounce domain %q is not a domain name", v.Domain)
	}
	return nil
}

// Address returns the envelope sender for a delivery. deliveryID must be 32
// hex characters; it is lower-cased so the token survives case folding.
func (v VERP) Address(deliveryID string) string {
	id := strings.ToLower(deliveryID)
	return verpPrefix + id + verpEncoding.EncodeToString(v.mac(id)) + "@" + strings.ToLower(v.Domain)
}

// Parse returns the delivery id carried by a VERP address. It accepts the
// address in any case and with or without angle brackets, as found in a
// Return-Path or a DSN's recipient field.
func (v VERP) Parse(addr string) (deliveryID string, err error) {
	if len(v.Secret) == 0 {
		return "", fmt.Errorf("verp: %w: no secret configured", ErrBadToken)
	}
	a := strings.ToLower(strings.TrimSpace(addr))
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return "", fmt.Errorf("verp: %w: %q has no domain", ErrNotVERP, addr)
	}
	local, domain := a[:at], a[at+1:]
	if domain != strings.ToLower(v.Domain) {
		return "", fmt.Errorf("verp: %w: %q is not in bounce domain %s", ErrNotVERP, addr, v.Domain)
	}
	token, ok := strings.CutPrefix(local, verpPrefix)
	if !ok || token == "" {
		return "", fmt.Errorf("verp: %w: %q carries no token", ErrNotVERP, addr)
	}
	if len(token) != tokenLen {
		return "", fmt.Errorf("verp: %w: token in %q has length %d, want %d", ErrBadToken, addr, len(token), tokenLen)
	}
	id, macText := token[:idLen], token[idLen:]
	if !isLowerHex(id) {
		return "", fmt.Errorf("verp: %w: delivery id in %q is not hex", ErrBadToken, addr)
	}
	got, err := verpEncoding.DecodeString(macText)
	if err != nil || len(got) != macBytes {
		return "", fmt.Errorf("verp: %w: malformed mac in %q", ErrBadToken, addr)
	}
	if !hmac.Equal(got, v.mac(id)) {
		return "", fmt.Errorf("verp: %w: mac does not verify for %q", ErrBadToken, addr)
	}
	return id, nil
}

func (v VERP) mac(id string) []byte {
	h := hmac.New(sha256.New, v.Secret)
	// The label keeps these MACs distinct from any other use of the secret.
	h.Write([]byte("petitiond verp v1\x00"))
	h.Write([]byte(id))
	return h.Sum(nil)[:macBytes]
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
