package smtp

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestVERP(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	v := VERP{Secret: []byte("0123456789abcdef-verp-secret"), Domain: "bounces.petitions.example.org"}
	if err := v.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	addr := v.Address(id)
	if !regexp.MustCompile(`^bounces\+[a-z0-9]+@bounces\.petitions\.example\.org$`).MatchString(addr) {
		t.Fatalf("Address = %q: token is not lowercase [a-z0-9]", addr)
	}
	if local := addr[:strings.IndexByte(addr, '@')]; len(local) > 64 {
		t.Fatalf("local part is %d bytes, over the RFC 5321 limit of 64", len(local))
	}
	local, _, _ := strings.Cut(addr, "@")
	token := strings.TrimPrefix(local, "bounces+")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}

	tests := []struct {
		name    string
		v       VERP
		addr    string
		wantErr error
	}{
		{name: "round trip", v: v, addr: addr},
		{name: "upper-cased address", v: v, addr: strings.ToUpper(addr)},
		{name: "angle brackets", v: v, addr: "<" + addr + ">"},
		{name: "domain in other case", v: VERP{Secret: v.Secret, Domain: "Bounces.Petitions.Example.ORG"}, addr: addr},
		{name: "tampered id", v: v, addr: "bounces+" + flip(token, 3) + "@" + v.Domain, wantErr: ErrBadToken},
		{name: "tampered mac", v: v, addr: "bounces+" + flip(token, len(token)-2) + "@" + v.Domain, wantErr: ErrBadToken},
		{name: "truncated mac", v: v, addr: "bounces+" + token[:len(token)-1] + "@" + v.Domain, wantErr: ErrBadToken},
		{name: "non-hex id", v: v, addr: "bounces+" + "z" + token[1:] + "@" + v.Domain, wantErr: ErrBadToken},
		{name: "wrong secret", v: VERP{Secret: []byte("another-secret-of-enough-length"), Domain: v.Domain}, addr: addr, wantErr: ErrBadToken},
		{name: "no secret", v: VERP{Domain: v.Domain}, addr: addr, wantErr: ErrBadToken},
		{name: "wrong domain", v: v, addr: local + "@evil.example", wantErr: ErrNotVERP},
		{name: "missing token", v: v, addr: "bounces+@" + v.Domain, wantErr: ErrNotVERP},
		{name: "missing prefix", v: v, addr: token + "@" + v.Domain, wantErr: ErrNotVERP},
		{name: "plain bounce address", v: v, addr: "bounces@" + v.Domain, wantErr: ErrNotVERP},
		{name: "no at sign", v: v, addr: "bounces+" + token, wantErr: ErrNotVERP},
		{name: "empty", v: v, addr: "", wantErr: ErrNotVERP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.v.Parse(tc.addr)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Parse(%q) = %q, %v; want error %v", tc.addr, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != id {
				t.Fatalf("Parse(%q) = %q, %v; want %q", tc.addr, got, err, id)
			}
		})
	}
}

func TestVERPAddressLowercasesID(t *testing.T) {
	v := VERP{Secret: []byte("0123456789abcdef-verp-secret"), Domain: "B.example"}
	addr := v.Address("0123456789ABCDEF0123456789ABCDEF")
	if addr != strings.ToLower(addr) {
		t.Fatalf("Address = %q, want all lower case", addr)
	}
	if got, err := v.Parse(addr); err != nil || got != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("Parse = %q, %v", got, err)
	}
}

func TestVERPValidate(t *testing.T) {
	tests := []struct {
		name string
		v    VERP
		ok   bool
	}{
		{"good", VERP{Secret: make([]byte, 16), Domain: "b.example"}, true},
		{"short secret", VERP{Secret: make([]byte, 15), Domain: "b.example"}, false},
		{"no domain", VERP{Secret: make([]byte, 32)}, false},
		{"address as domain", VERP{Secret: make([]byte, 32), Domain: "x@b.example"}, false},
	}
	for _, tc := range tests {
		if err := tc.v.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
