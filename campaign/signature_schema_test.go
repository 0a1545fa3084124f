package campaign

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaFile = "../docs/signature.schema.json"

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaFile, err)
	}
	c := jsonschema.NewCompiler()
	// Producers that validate formats should see what petitiond enforces.
	c.AssertFormat()
	if err := c.AddResource("signature.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("signature.schema.json")
	if err != nil {
		t.Fatalf("compile %s: %v", schemaFile, err)
	}
	return sch
}

// The schema and ParseSignature must agree on every case a JSON Schema can
// express; the few it cannot are listed with the reason, and the test checks
// that the gap is exactly that (schema accepts, petitiond rejects).
func TestSignatureSchemaAgrees(t *testing.T) {
	sch := compileSchema(t)
	future := time.Now().Add(MaxFutureSkew + time.Hour).UTC().Format(time.RFC3339)
	ok := func(m, s map[string]any) {}
	tests := []struct {
		name   string
		in     []byte
		valid  bool
		goOnly string // why only petitiond can reject it
	}{
		{"design example", with(t, ok), true, ""},
		{"required only", with(t, func(m, s map[string]any) {
			delete(m, "comment")
			delete(s, "country")
			delete(s, "locale")
		}), true, ""},
		{"cyrillic, tagalog, arabic", with(t, func(m, s map[string]any) {
			s["name"] = "Ñiño Балтабай فاطمة"
			m["comment"] = "Line\r\n\tМабуҳай!"
		}), true, ""},
		{"limits exactly", with(t, func(m, s map[string]any) {
			m["id"] = strings.Repeat("a", MaxSignatureIDLen)
			m["campaign"] = strings.Repeat("k", MaxCampaignIDLen)
			s["name"] = strings.Repeat("Ж", MaxNameRunes)
			m["comment"] = strings.Repeat("ñ", MaxCommentRunes)
			s["email"] = strings.Repeat("a", MaxEmailLocalLen) + "@example.org"
		}), true, ""},
		{"offset date", with(t, func(m, s map[string]any) { m["signed_at"] = "2019-07-20T16:00:00.25+06:00" }), true, ""},
		{"locale with script", with(t, func(m, s map[string]any) { s["locale"] = "kk-Cyrl-KZ" }), true, ""},
		{"email plus tag", with(t, func(m, s map[string]any) { s["email"] = "a.b+c@mail.example.org" }), true, ""},

		{"CRLF in name", with(t, func(m, s map[string]any) { s["name"] = "M\r\nBcc: x@example.org" }), false, ""},
		{"tab in name", with(t, func(m, s map[string]any) { s["name"] = "M\tS" }), false, ""},
		{"blank name", with(t, func(m, s map[string]any) { s["name"] = "  " }), false, ""},
		{"name too long", with(t, func(m, s map[string]any) { s["name"] = strings.Repeat("Ж", MaxNameRunes+1) }), false, ""},
		{"CRLF in email", with(t, func(m, s map[string]any) { s["email"] = "m@example.org\r\nBcc: x@example.org" }), false, ""},
		{"email display name", with(t, func(m, s map[string]any) { s["email"] = "M <m@example.org>" }), false, ""},
		{"email no at", with(t, func(m, s map[string]any) { s["email"] = "m.example.org" }), false, ""},
		{"email no dot in domain", with(t, func(m, s map[string]any) { s["email"] = "m@localhost" }), false, ""},
		{"email double dot", with(t, func(m, s map[string]any) { s["email"] = "m..s@example.org" }), false, ""},
		{"email quoted", with(t, func(m, s map[string]any) { s["email"] = `"m s"@example.org` }), false, ""},
		{"email local part too long", with(t, func(m, s map[string]any) { s["email"] = strings.Repeat("a", MaxEmailLocalLen+1) + "@example.org" }), false, ""},
		{"email too long", with(t, func(m, s map[string]any) { s["email"] = "a@" + strings.Repeat("abcdefghi.", 25) + "example" }), false, ""},
		{"comment too long", with(t, func(m, s map[string]any) { m["comment"] = strings.Repeat("x", MaxCommentRunes+1) }), false, ""},
		{"NUL in comment", with(t, func(m, s map[string]any) { m["comment"] = "a\x00b" }), false, ""},
		{"C1 control in comment", with(t, func(m, s map[string]any) { m["comment"] = "a\u0085b" }), false, ""},
		{"missing id", with(t, func(m, s map[string]any) { delete(m, "id") }), false, ""},
		{"id with slash", with(t, func(m, s map[string]any) { m["id"] = "a/b" }), false, ""},
		{"campaign upper case", with(t, func(m, s map[string]any) { m["campaign"] = "KZ" }), false, ""},
		{"version 2", with(t, func(m, s map[string]any) { m["version"] = 2 }), false, ""},
		{"version missing", with(t, func(m, s map[string]any) { delete(m, "version") }), false, ""},
		{"version string", with(t, func(m, s map[string]any) { m["version"] = "1" }), false, ""},
		{"unknown field", with(t, func(m, s map[string]any) { m["target"] = "x@example.org" }), false, ""},
		{"unknown signer field", with(t, func(m, s map[string]any) { s["phone"] = "1" }), false, ""},
		{"null comment", with(t, func(m, s map[string]any) { m["comment"] = nil }), false, ""},
		{"country lower case", with(t, func(m, s map[string]any) { s["country"] = "ph" }), false, ""},
		{"country unassigned", with(t, func(m, s map[string]any) { s["country"] = "ZZ" }), false, ""},
		{"locale underscore", with(t, func(m, s map[string]any) { s["locale"] = "pt_BR" }), false, ""},
		{"date with space", with(t, func(m, s map[string]any) { m["signed_at"] = "2019-07-20 10:00:00Z" }), false, ""},
		{"date lower-case t", with(t, func(m, s map[string]any) { m["signed_at"] = "2019-07-20t10:00:00Z" }), false, ""},
		{"date hour 24", with(t, func(m, s map[string]any) { m["signed_at"] = "2019-07-20T24:00:00Z" }), false, ""},
		{"date only", with(t, func(m, s map[string]any) { m["signed_at"] = "2019-07-20" }), false, ""},
		{"array", []byte(`[]`), false, ""},

		{"future date", with(t, func(m, s map[string]any) { m["signed_at"] = future }), false, "depends on the clock"},
		{"zero date", with(t, func(m, s map[string]any) { m["signed_at"] = "0001-01-01T00:00:00Z" }), false, "zero time means unset in Go"},
		{"version 1.0", with(t, func(m, s map[string]any) { m["version"] = json.Number("1.0") }), false, "JSON Schema treats 1.0 as equal to 1"},
		{"duplicate key", []byte(`{"version":1,"id":"a","id":"b","campaign":"c","signer":{"name":"M","email":"m@example.org"},"signed_at":"2019-07-20T10:00:00Z"}`), false, "decoded JSON keeps one of the two"},
		{"invalid UTF-8", []byte("{\"version\":1,\"id\":\"a\",\"campaign\":\"c\",\"signer\":{\"name\":\"M\xff\",\"email\":\"m@example.org\"},\"signed_at\":\"2019-07-20T10:00:00Z\"}"), false, "decoding replaces it before the schema sees it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, goErr := ParseSignature(tt.in)
			inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(tt.in)))
			if err != nil {
				t.Fatalf("test input is not JSON: %v", err)
			}
			schemaErr := sch.Validate(inst)
			if (goErr == nil) != tt.valid {
				t.Errorf("ParseSignature: err = %v, want valid=%v", goErr, tt.valid)
			}
			wantSchemaValid := tt.valid || tt.goOnly != ""
			if (schemaErr == nil) != wantSchemaValid {
				t.Errorf("schema: err = %v, want valid=%v", schemaErr, wantSchemaValid)
			}
		})
	}
}

// The schema states the same limits as the code; read them back so neither
// can change alone.
func TestSignatureSchemaLimits(t *testing.T) {
	b, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	type prop struct {
		Pattern   string          `json:"pattern"`
		MaxLength int             `json:"maxLength"`
		Enum      []string        `json:"enum"`
		AllOf     []prop          `json:"allOf"`
		Props     map[string]prop `json:"properties"`
	}
	var doc prop
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	p, signer := doc.Props, doc.Props["signer"].Props
	checks := []struct {
		name      string
		got, want any
	}{
		{"id pattern", p["id"].Pattern, signatureIDRe.String()},
		{"campaign pattern", p["campaign"].Pattern, campaignIDRe.String()},
		{"locale pattern", signer["locale"].Pattern, localeRe.String()},
		{"locale maxLength", signer["locale"].MaxLength, MaxLocaleLen},
		{"email pattern", signer["email"].AllOf[0].Pattern, emailRe.String()},
		{"email maxLength", signer["email"].MaxLength, MaxEmailLen},
		{"name maxLength", signer["name"].MaxLength, MaxNameRunes},
		{"comment maxLength", p["comment"].MaxLength, MaxCommentRunes},
		{"countries", strings.Join(signer["country"].Enum, " "), strings.Join(CountryCodes(), " ")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: schema has %v, code has %v", c.name, c.got, c.want)
		}
	}
	if !slices.IsSorted(signer["country"].Enum) {
		t.Error("schema country enum is not sorted")
	}
}
