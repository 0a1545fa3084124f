package campaign

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// validSignature is the JSON of DESIGN.md, a signature every check accepts.
func validSignature() map[string]any {
	return map[string]any{
		"version":  1,
		"id":       "sig-000123",
		"campaign": "kz-baltabay",
		"signer": map[string]any{
			"name": "Maria Santos", "email": "maria@example.org",
			"country": "PH", "locale": "tl",
		},
		"comment":   "optional personal note, plain text",
		"signed_at": "2019-07-20T10:00:00Z",
	}
}

// with returns the JSON of validSignature changed by edit.
func with(t *testing.T, edit func(m, signer map[string]any)) []byte {
	t.Helper()
	m := validSignature()
	edit(m, m["signer"].(map[string]any))
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSignatureAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"design example", with(t, func(m, s map[string]any) {})},
		{"only required fields", with(t, func(m, s map[string]any) {
			delete(m, "comment")
			delete(s, "country")
			delete(s, "locale")
		})},
		{"tagalog diacritics and cyrillic", with(t, func(m, s map[string]any) {
			s["name"] = "Ñiño Dela Peña"
			m["comment"] = "Palayain si Erlan! Бостандық Ерланға!\r\n\tСалем."
		})},
		{"arabic name", with(t, func(m, s map[string]any) { s["name"] = "فاطمة الزهراء" })},
		{"plus tag and subdomain", with(t, func(m, s map[string]any) { s["email"] = "a.b+union@mail.example.org" })},
		{"name at limit", with(t, func(m, s map[string]any) { s["name"] = strings.Repeat("Ж", MaxNameRunes) })},
		{"comment at limit", with(t, func(m, s map[string]any) { m["comment"] = strings.Repeat("ñ", MaxCommentRunes) })},
		{"largest document: comment of escapes", []byte(strings.Replace(string(with(t, func(m, s map[string]any) { m["comment"] = "@" })),
			`"@"`, `"`+strings.Repeat(`\u0416`, MaxCommentRunes)+`"`, 1))},
		{"locale with region and script", with(t, func(m, s map[string]any) { s["locale"] = "kk-Cyrl-KZ" })},
		{"kosovo", with(t, func(m, s map[string]any) { s["country"] = "XK" })},
		{"offset time", with(t, func(m, s map[string]any) { m["signed_at"] = "2019-07-20T16:00:00.5+06:00" })},
		{"id at limit", with(t, func(m, s map[string]any) { m["id"] = strings.Repeat("a", MaxSignatureIDLen) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := ParseSignature(tt.in)
			if err != nil {
				t.Fatalf("ParseSignature(%s): %v", tt.in, err)
			}
			if sig.Version != 1 || sig.ID == "" || sig.SignedAt.IsZero() {
				t.Errorf("incomplete result %+v", sig)
			}
		})
	}
}

func TestParseSignatureKeepsValues(t *testing.T) {
	sig, err := ParseSignature(with(t, func(m, s map[string]any) {
		s["name"] = "Ерлан Балтабай"
		m["comment"] = "line 1\r\nline 2"
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Signature{
		Version: 1, ID: "sig-000123", Campaign: "kz-baltabay",
		Signer:   Signer{Name: "Ерлан Балтабай", Email: "maria@example.org", Country: "PH", Locale: "tl"},
		Comment:  "line 1\r\nline 2",
		SignedAt: time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC),
	}
	if !sig.SignedAt.Equal(want.SignedAt) {
		t.Errorf("signed_at = %v, want %v", sig.SignedAt, want.SignedAt)
	}
	sig.SignedAt = want.SignedAt
	if sig != want {
		t.Errorf("got %+v\nwant %+v", sig, want)
	}
}

func TestParseSignatureRejects(t *testing.T) {
	future := time.Now().Add(MaxFutureSkew + time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name      string
		in        []byte
		field     string
		problemIn string // a piece of the problem text
	}{
		// The hostile inputs of the foundation issue.
		{"CRLF in name", with(t, func(m, s map[string]any) { s["name"] = "Maria\r\nBcc: all@example.org" }), "signer.name", "line break"},
		{"LF in name", with(t, func(m, s map[string]any) { s["name"] = "Maria\nSantos" }), "signer.name", "line break"},
		{"CRLF in email", with(t, func(m, s map[string]any) { s["email"] = "maria@example.org\r\nBcc: x@example.org" }), "signer.email", "line break"},
		{"oversize comment", with(t, func(m, s map[string]any) { m["comment"] = strings.Repeat("x", MaxCommentRunes+1) }), "comment", "too long"},
		{"invalid UTF-8 in name", []byte("{\"version\":1,\"id\":\"a\",\"campaign\":\"c\",\"signer\":{\"name\":\"Mar\xffia\",\"email\":\"m@example.org\"},\"signed_at\":\"2019-07-20T10:00:00Z\"}"), "signer.name", "UTF-8"},
		{"invalid UTF-8 in comment", []byte("{\"version\":1,\"id\":\"a\",\"campaign\":\"c\",\"signer\":{\"name\":\"M\",\"email\":\"m@example.org\"},\"comment\":\"\xc3\x28\",\"signed_at\":\"2019-07-20T10:00:00Z\"}"), "comment", "UTF-8"},
		{"invalid UTF-8 outside strings", []byte("\xff{}"), "input", "UTF-8"},
		{"missing id", with(t, func(m, s map[string]any) { delete(m, "id") }), "id", "required"},
		{"empty id", with(t, func(m, s map[string]any) { m["id"] = "" }), "id", "required"},
		{"version 2", with(t, func(m, s map[string]any) { m["version"] = 2 }), "version", "unsupported version 2, want 1"},
		{"version 2 with new fields", with(t, func(m, s map[string]any) { m["version"] = 2; m["pronouns"] = "she" }), "version", "unsupported version 2"},
		{"missing version", with(t, func(m, s map[string]any) { delete(m, "version") }), "version", "required"},
		{"version as string", with(t, func(m, s map[string]any) { m["version"] = "1" }), "version", "must be a number"},
		{"unknown field", with(t, func(m, s map[string]any) { m["target"] = "boss@example.org" }), "target", "unknown field"},
		{"unknown signer field", with(t, func(m, s map[string]any) { s["phone"] = "123" }), "signer.phone", "unknown field"},
		{"bad email", with(t, func(m, s map[string]any) { s["email"] = "not-an-address" }), "signer.email", "bare address"},
		{"email with display name", with(t, func(m, s map[string]any) { s["email"] = "Maria <maria@example.org>" }), "signer.email", "bare address"},
		{"email quoted local part", with(t, func(m, s map[string]any) { s["email"] = `"maria"@example.org` }), "signer.email", "bare address"},
		{"email without domain dot", with(t, func(m, s map[string]any) { s["email"] = "root@localhost" }), "signer.email", "bare address"},
		{"email non-ASCII", with(t, func(m, s map[string]any) { s["email"] = "ñ@example.org" }), "signer.email", "bare address"},
		{"email NUL", with(t, func(m, s map[string]any) { s["email"] = "m\x00@example.org" }), "signer.email", "NUL"},
		{"email too long", with(t, func(m, s map[string]any) {
			s["email"] = "a@" + strings.Repeat("abcdefghi.", 25) + "example"
		}), "signer.email", "too long"},
		{"email local part too long", with(t, func(m, s map[string]any) { s["email"] = strings.Repeat("a", 65) + "@example.org" }), "signer.email", "before @"},
		{"future date", with(t, func(m, s map[string]any) { m["signed_at"] = future }), "signed_at", "in the future"},
		{"zero date", with(t, func(m, s map[string]any) { m["signed_at"] = "0001-01-01T00:00:00Z" }), "signed_at", "required"},
		{"date not RFC 3339", with(t, func(m, s map[string]any) { m["signed_at"] = "20/07/2019" }), "signed_at", "RFC 3339"},
		{"missing date", with(t, func(m, s map[string]any) { delete(m, "signed_at") }), "signed_at", "required"},
		{"NUL in name", with(t, func(m, s map[string]any) { s["name"] = "Ma\x00ria" }), "signer.name", "U+0000"},
		{"tab in name", with(t, func(m, s map[string]any) { s["name"] = "Ma\tria" }), "signer.name", "U+0009"},
		{"blank name", with(t, func(m, s map[string]any) { s["name"] = "   " }), "signer.name", "required"},
		{"name too long", with(t, func(m, s map[string]any) { s["name"] = strings.Repeat("Ж", MaxNameRunes+1) }), "signer.name", "too long"},
		{"NUL in comment", with(t, func(m, s map[string]any) { m["comment"] = "a\x00b" }), "comment", "U+0000"},
		{"escape in comment", with(t, func(m, s map[string]any) { m["comment"] = "a\x1b[31mb" }), "comment", "U+001B"},
		{"id with space", with(t, func(m, s map[string]any) { m["id"] = "sig 1" }), "id", "only"},
		{"id too long", with(t, func(m, s map[string]any) { m["id"] = strings.Repeat("a", MaxSignatureIDLen+1) }), "id", "too long"},
		{"campaign upper case", with(t, func(m, s map[string]any) { m["campaign"] = "KZ" }), "campaign", "a-z"},
		{"missing campaign", with(t, func(m, s map[string]any) { delete(m, "campaign") }), "campaign", "required"},
		{"country lower case", with(t, func(m, s map[string]any) { s["country"] = "ph" }), "signer.country", "ISO 3166"},
		{"country unassigned", with(t, func(m, s map[string]any) { s["country"] = "ZZ" }), "signer.country", "ISO 3166"},
		{"locale underscore", with(t, func(m, s map[string]any) { s["locale"] = "pt_BR" }), "signer.locale", "language tag"},
		{"null comment", with(t, func(m, s map[string]any) { m["comment"] = nil }), "comment", "null"},
		{"signer not object", with(t, func(m, s map[string]any) { m["signer"] = []string{"x"} }), "signer", "must be an object"},
		{"name is number", with(t, func(m, s map[string]any) { s["name"] = 42 }), "signer.name", "must be a string"},
		{"array", []byte(`[{"version":1}]`), "input", "JSON object"},
		{"oversize document", with(t, func(m, s map[string]any) { m["comment"] = strings.Repeat(" ", MaxSignatureBytes) }), "input", "too large"},
		{"string", []byte(`"hello"`), "input", "JSON object"},
		{"empty", []byte(``), "input", "JSON"},
		{"broken JSON", []byte(`{"version":1,`), "input", "not valid JSON"},
		{"two objects", append(with(t, func(m, s map[string]any) {}), []byte(` {}`)...), "input", "JSON"},
		{"duplicate field", []byte(`{"version":1,"id":"a","id":"b","campaign":"c","signer":{"name":"M","email":"m@example.org"},"signed_at":"2019-07-20T10:00:00Z"}`), "id", "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSignature(tt.in)
			if err == nil {
				t.Fatalf("ParseSignature(%q) accepted it", tt.in)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("field = %q, want %q (error: %v)", fe.Field, tt.field, err)
			}
			if !strings.Contains(fe.Problem, tt.problemIn) {
				t.Errorf("problem = %q, want it to mention %q", fe.Problem, tt.problemIn)
			}
			if !strings.HasPrefix(err.Error(), tt.field+": ") {
				t.Errorf("Error() = %q, want it to start with %q", err, tt.field+": ")
			}
		})
	}
}

func TestFieldErrorText(t *testing.T) {
	err := (&Signature{Version: 1, ID: "a", Campaign: "c", Signer: Signer{Name: "A\nB"}}).Validate()
	if got, want := err.Error(), "signer.name: contains a line break (CR or LF)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	err = (&Signature{Version: 2}).Validate()
	if got, want := err.Error(), "version: unsupported version 2, want 1"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// A Go producer that builds a Signature by hand gets the checks JSON
// producers get, including on invalid UTF-8 it could not have sent as JSON.
func TestValidateGoValues(t *testing.T) {
	ok := Signature{
		Version: 1, ID: "go-1", Campaign: "kz-baltabay",
		Signer:   Signer{Name: "Maria", Email: "maria@example.org"},
		SignedAt: time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC),
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid signature rejected: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(s *Signature)
		field string
	}{
		{"invalid UTF-8 name", func(s *Signature) { s.Signer.Name = "Ma\xffria" }, "signer.name"},
		{"invalid UTF-8 comment", func(s *Signature) { s.Comment = "\xc3" }, "comment"},
		{"version 0", func(s *Signature) { s.Version = 0 }, "version"},
		{"zero time", func(s *Signature) { s.SignedAt = time.Time{} }, "signed_at"},
		{"CR in email", func(s *Signature) { s.Signer.Email = "maria@example.org\r" }, "signer.email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.edit(&s)
			var fe *FieldError
			if err := s.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("Validate() = %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
}

func TestCountryCodes(t *testing.T) {
	codes := CountryCodes()
	if len(codes) != 250 { // 249 ISO 3166-1 codes and XK
		t.Errorf("%d country codes, want 250", len(codes))
	}
	for i, c := range codes {
		if !IsCountry(c) {
			t.Errorf("IsCountry(%q) = false", c)
		}
		if i > 0 && codes[i-1] >= c {
			t.Errorf("codes not sorted and unique at %q, %q", codes[i-1], c)
		}
	}
	for _, c := range []string{"", "ph", "UK", "EU", "ZZ", "PHL", "P"} {
		if IsCountry(c) {
			t.Errorf("IsCountry(%q) = true", c)
		}
	}
}

func TestDeliveryID(t *testing.T) {
	id := DeliveryID("kz-baltabay", "Maria@Example.org", "Press@MFA.example")
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("DeliveryID = %q, want 32 lower-case hex digits", id)
	}
	tests := []struct {
		name             string
		campaign, signer string
		target           string
		same             bool
	}{
		{"identical", "kz-baltabay", "Maria@Example.org", "Press@MFA.example", true},
		{"case of email and target", "kz-baltabay", "maria@example.org", "press@mfa.example", true},
		{"surrounding space", "kz-baltabay", " maria@example.org ", "press@mfa.example\t", true},
		{"other target", "kz-baltabay", "maria@example.org", "mission@kz-geneva.example", false},
		{"other signer", "kz-baltabay", "mariasantos@example.org", "press@mfa.example", false},
		{"plus tag is another signer", "kz-baltabay", "maria+x@example.org", "press@mfa.example", false},
		{"other campaign", "kz-other", "maria@example.org", "press@mfa.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DeliveryID(tt.campaign, tt.signer, tt.target)
			if (got == id) != tt.same {
				t.Errorf("DeliveryID(%q, %q, %q) = %s, same as reference = %v, want %v", tt.campaign, tt.signer, tt.target, got, got == id, tt.same)
			}
		})
	}
	// Moving bytes between parts must change the id.
	if DeliveryID("a", "bc@x.example", "d@y.example") == DeliveryID("ab", "c@x.example", "d@y.example") {
		t.Error("parts collide across the separator")
	}
	// A fixed value, so a change of the hash (which would re-send every
	// letter already sent) cannot go unnoticed.
	if got, want := id, "c029c44e252f62eef20b1652b957ff4b"; got != want {
		t.Errorf("DeliveryID changed: %s, was %s; every delivery id already in Redis would no longer match", got, want)
	}
}

func TestSignerKey(t *testing.T) {
	k := SignerKey("kz-baltabay", "Maria@Example.org")
	if len(k) != 32 || strings.Contains(k, "maria") {
		t.Fatalf("SignerKey = %q, want a 32-digit hash without the address", k)
	}
	if SignerKey("kz-baltabay", " maria@example.org") != k {
		t.Error("SignerKey depends on case or spaces")
	}
	if SignerKey("other", "maria@example.org") == k {
		t.Error("SignerKey is the same across campaigns")
	}
	if SignerKey("kz-baltabay", "maria@example.org") == DeliveryID("kz-baltabay", "maria@example.org", "") {
		t.Error("SignerKey and DeliveryID share a hash domain")
	}
}
