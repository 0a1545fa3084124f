package campaign

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func readExample(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/kz-baltabay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseExample(t *testing.T) {
	c, err := Parse(readExample(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.ID != "kz-baltabay" || c.Status != StatusOpen || len(c.Targets) != 6 {
		t.Errorf("got id %q status %q with %d targets", c.ID, c.Status, len(c.Targets))
	}
	if got := strings.Join(c.Locales(), ","); got != "en,ru,tl" {
		t.Errorf("locales %s, want en,ru,tl", got)
	}
	if c.Limits.PerAddress != "30/h" {
		t.Errorf("limits.per_address = %q", c.Limits.PerAddress)
	}
}

// baseCampaign is a small valid definition that each case below breaks in
// one place.
func baseCampaign() map[string]any {
	return map[string]any{
		"id":        "kz-baltabay",
		"from_name": "{{.Signer.Name}} via LabourStart",
		"subject":   map[string]any{"en": "Free Erlan Baltabay", "tl": "Palayain si Erlan Baltabay"},
		"body": map[string]any{
			"en": "Dear {{.Target.Name}},\n\n{{.Comment}}\n\n{{.Signer.Name}}\n",
			"tl": "Mahal na {{.Target.Name}},\n\n{{.Comment}}\n\n{{.Signer.Name}}\n",
		},
		"targets": []any{
			map[string]any{"name": "Press office", "address": "press@mfa.example"},
			map[string]any{"name": "Mission in Geneva", "address": "mission@kz-geneva.example"},
		},
	}
}

func campaignYAML(t *testing.T, edit func(m map[string]any)) []byte {
	t.Helper()
	m := baseCampaign()
	edit(m)
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

func TestParseRejects(t *testing.T) {
	manyTargets := make([]any, MaxTargets+1)
	for i := range manyTargets {
		manyTargets[i] = map[string]any{"address": fmt.Sprintf("t%d@gov.example", i)}
	}
	tests := []struct {
		name      string
		in        []byte
		field     string // empty: not a FieldError, check text only
		problemIn string
	}{
		{"template does not parse", campaignYAML(t, func(m map[string]any) { sub(m, "body")["tl"] = "Mahal na {{.Target.Name" }), "body.tl", "template: body.tl"},
		{"unknown function", campaignYAML(t, func(m map[string]any) { sub(m, "body")["tl"] = "{{shout .Signer.Name}}" }), "body.tl", "template: body.tl"},
		{"unknown field of LetterData", campaignYAML(t, func(m map[string]any) { sub(m, "body")["tl"] = "{{.Nope}}" }), "body.tl", "Nope"},
		{"index past a short name", campaignYAML(t, func(m map[string]any) { sub(m, "subject")["en"] = "{{index .Signer.Name 99}}" }), "subject.en", "index"},
		{"comment in subject renders a line break", campaignYAML(t, func(m map[string]any) { sub(m, "subject")["en"] = "Note: {{.Comment}}" }), "subject.en", "line break"},
		{"byte slice splits a Cyrillic letter", campaignYAML(t, func(m map[string]any) { m["from_name"] = "{{slice .Signer.Name 0 1}}. via LabourStart" }), "from_name", "UTF-8"},
		{"from_name renders empty", campaignYAML(t, func(m map[string]any) { m["from_name"] = "{{if false}}x{{end}}" }), "from_name", "empty"},
		{"from_name missing", campaignYAML(t, func(m map[string]any) { delete(m, "from_name") }), "from_name", "required"},
		{"body lacks a subject locale", campaignYAML(t, func(m map[string]any) { delete(sub(m, "body"), "tl") }), "body.tl", "missing"},
		{"subject lacks a body locale", campaignYAML(t, func(m map[string]any) { sub(m, "body")["ru"] = "Уважаемые" }), "subject.ru", "missing"},
		{"letter empty without a comment", campaignYAML(t, func(m map[string]any) { sub(m, "body")["en"] = "{{.Comment}}" }), "body.en", "empty letter"},
		{"empty letter", campaignYAML(t, func(m map[string]any) { sub(m, "body")["tl"] = "  " }), "body.tl", "empty"},
		{"no subject", campaignYAML(t, func(m map[string]any) { delete(m, "subject") }), "subject", "required"},
		{"default locale without letter", campaignYAML(t, func(m map[string]any) { m["default_locale"] = "ru" }), "default_locale", "ru"},
		{"english missing, default en", campaignYAML(t, func(m map[string]any) {
			delete(sub(m, "body"), "en")
			delete(sub(m, "subject"), "en")
		}), "default_locale", "en"},
		{"bad locale key", campaignYAML(t, func(m map[string]any) {
			sub(m, "body")["EN_us"] = "x"
			sub(m, "subject")["EN_us"] = "x"
		}), "subject.EN_us", "language tag"},
		{"duplicate target ignoring case", campaignYAML(t, func(m map[string]any) {
			m["targets"] = append(m["targets"].([]any), map[string]any{"address": "Press@MFA.example"})
		}), "targets[2].address", "targets[0]"},
		{"target name with CRLF", campaignYAML(t, func(m map[string]any) {
			m["targets"] = []any{map[string]any{"name": "Press\r\nBcc: x@y.example", "address": "press@mfa.example"}}
		}), "targets[0].name", "line break"},
		{"target with display name", campaignYAML(t, func(m map[string]any) {
			m["targets"] = []any{map[string]any{"address": "Press <press@mfa.example>"}}
		}), "targets[0].address", "bare address"},
		{"no targets", campaignYAML(t, func(m map[string]any) { m["targets"] = []any{} }), "targets", "at least one"},
		{"too many targets", campaignYAML(t, func(m map[string]any) { m["targets"] = manyTargets }), "targets", "at most 50"},
		{"bad limit unit", campaignYAML(t, func(m map[string]any) { m["limits"] = map[string]any{"per_address": "30/week"} }), "limits.per_address", "unit"},
		{"bad limit number", campaignYAML(t, func(m map[string]any) { m["limits"] = map[string]any{"per_domain": "0/h"} }), "limits.per_domain", "positive"},
		{"bad status", campaignYAML(t, func(m map[string]any) { m["status"] = "paused" }), "status", "open or closed"},
		{"bad id", campaignYAML(t, func(m map[string]any) { m["id"] = "KZ Baltabay" }), "id", "a-z"},
		{"unknown key", campaignYAML(t, func(m map[string]any) { m["colour"] = "red" }), "", "colour"},
		{"unknown target key", campaignYAML(t, func(m map[string]any) {
			m["targets"] = []any{map[string]any{"address": "press@mfa.example", "cc": "x@y.example"}}
		}), "", "cc"},
		{"two documents", append(campaignYAML(t, func(map[string]any) {}), []byte("---\nid: other\n")...), "input", "more than one"},
		{"empty", []byte("\n"), "input", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			if !strings.Contains(err.Error(), tt.problemIn) {
				t.Errorf("error %q does not mention %q", err, tt.problemIn)
			}
			if tt.field == "" {
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("field = %q, want %q (error: %v)", fe.Field, tt.field, err)
			}
			if !strings.HasPrefix(err.Error(), tt.field+": ") {
				t.Errorf("error %q does not start with the field", err)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(campaignYAML(t, func(map[string]any) {}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultLocale != "en" {
		t.Errorf("default_locale = %q, want en", c.DefaultLocale)
	}
	// Left out on purpose: the Store keeps a stored status on re-apply.
	if c.Status != "" {
		t.Errorf("status = %q, want it left empty", c.Status)
	}
}

func testSignature(name, locale, comment string) *Signature {
	return &Signature{
		Version: 1, ID: "sig-1", Campaign: "kz-baltabay",
		Signer:   Signer{Name: name, Email: "signer@example.org", Locale: locale},
		Comment:  comment,
		SignedAt: time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC),
	}
}

func TestRenderLocaleChoice(t *testing.T) {
	c, err := Parse(campaignYAML(t, func(m map[string]any) {
		for _, loc := range []string{"ru", "pt", "pt-BR"} {
			sub(m, "subject")[loc] = "subject " + loc
			sub(m, "body")[loc] = "body " + loc
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ signer, want string }{
		{"tl", "tl"},
		{"ru", "ru"},
		{"ru-KZ", "ru"},      // base language
		{"pt-BR", "pt-BR"},   // exact beats base
		{"pt-br", "pt-BR"},   // region case does not matter
		{"pt-PT", "pt"},      // base language
		{"kk", "en"},         // no letter: default
		{"kk-Cyrl-KZ", "en"}, // no base either
		{"", "en"},           // no locale
		{"tlh", "en"},        // "tl" is not a prefix match
	}
	for _, tt := range tests {
		t.Run(tt.signer, func(t *testing.T) {
			l, err := c.Render(testSignature("Maria", tt.signer, ""), c.Targets[0])
			if err != nil {
				t.Fatal(err)
			}
			if l.Locale != tt.want {
				t.Errorf("locale %q chose %q, want %q", tt.signer, l.Locale, tt.want)
			}
			if want := "subject " + tt.want; tt.want != "en" && tt.want != "tl" && l.Subject != want {
				t.Errorf("subject %q, want %q", l.Subject, want)
			}
		})
	}
}

func TestRenderKeepsEveryScript(t *testing.T) {
	c, err := Parse(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, locale, signer, comment, subject string
	}{
		{"tagalog", "tl", "Ñiño Dela Peña", "Salamat po sa inyong pag-unawà. Mabuhay ang manggagawà!", "Palayain si Erlan Baltabay"},
		{"kazakh cyrillic", "kk", "Ерлан Балтабайұлы", "Ерлан Балтабайға бостандық! Қазақстанның мұнайшылары үшін.", "Free Erlan Baltabay"},
		{"russian", "ru", "Наталья Слёзкина", "Свободу профсоюзам!\r\nС уважением к вашему труду.", "Свободу Ерлану Балтабаю"},
		{"arabic", "ar", "فاطمة الزهراء", "الحرية لإرلان بالتاباي والتضامن مع عمال النفط", "Free Erlan Baltabay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := c.Targets[5]
			l, err := c.Render(testSignature(tt.signer, tt.locale, tt.comment), target)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.signer + " via LabourStart"; l.FromName != want {
				t.Errorf("from_name %q, want %q", l.FromName, want)
			}
			if l.Subject != tt.subject {
				t.Errorf("subject %q, want %q", l.Subject, tt.subject)
			}
			for _, want := range []string{tt.comment, tt.signer, target.Name} {
				if !strings.Contains(l.Body, want) {
					t.Errorf("body lost %q byte for byte:\n%s", want, l.Body)
				}
			}
			if strings.HasPrefix(l.Body, "\n") || !strings.HasSuffix(l.Body, "\n") || strings.HasSuffix(l.Body, "\n\n") {
				t.Errorf("body not trimmed to start with text and end in one newline: %q", l.Body)
			}
		})
	}
}

func TestRenderRefusesOtherAddresses(t *testing.T) {
	c, err := Parse(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Render(testSignature("Maria", "en", ""), Target{Name: "x", Address: "anyone@elsewhere.example"})
	if err == nil || !strings.Contains(err.Error(), "not a target") {
		t.Errorf("Render to a non-target: err = %v", err)
	}
	if !c.HasTarget("PRESS@MFA.example") || c.HasTarget("press@mfa.example.org") {
		t.Error("HasTarget does not match ignoring case only")
	}
}

// A Campaign built in Go renders too, compiled on the way. (Its body must
// not be only {{.Comment}}: that renders empty for signers without one, and
// compiling says so.)
func TestRenderUncompiled(t *testing.T) {
	c := &Campaign{
		ID: "kz-baltabay", FromName: "{{.Signer.Name}}",
		Subject: map[string]string{"en": "Free {{.Campaign}}"},
		Body:    map[string]string{"en": "\n\nHello from {{.Signer.Name}}\n\n\n"},
		Targets: []Target{{Address: "press@mfa.example"}},
	}
	l, err := c.Render(testSignature("Maria", "", "Hello"), c.Targets[0])
	if err != nil {
		t.Fatal(err)
	}
	if l.Subject != "Free kz-baltabay" || l.Body != "Hello from Maria\n" || l.Locale != "en" {
		t.Errorf("got %+v", l)
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in  string
		n   int64
		per time.Duration
		ok  bool
	}{
		{"30/h", 30, time.Hour, true},
		{"20/s", 20, time.Second, true},
		{"5/min", 5, time.Minute, true},
		{"5/m", 5, time.Minute, true},
		{"600/hour", 600, time.Hour, true},
		{"1000/d", 1000, 24 * time.Hour, true},
		{"30", 0, 0, false},
		{"-1/h", 0, 0, false},
		{"1.5/h", 0, 0, false},
		{"10/week", 0, 0, false},
	}
	for _, tt := range tests {
		n, per, err := parseRate(tt.in)
		if (err == nil) != tt.ok || n != tt.n || per != tt.per {
			t.Errorf("parseRate(%q) = %d, %v, %v; want %d, %v, ok=%v", tt.in, n, per, err, tt.n, tt.per, tt.ok)
		}
	}
}
