package bounce

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return raw
}

type wantRecipient struct {
	addr, status, reason string
	hard                 bool
}

func TestParseFixtures(t *testing.T) {
	tests := []struct {
		file     string
		kind     Kind
		isBounce bool
		recips   []wantRecipient
	}{
		{"rfc3464-multi.eml", KindHard, true, []wantRecipient{
			{"press@mfa.example", "5.1.1", "userunknown", true},
			{"mission@geneva.example", "5.2.2", "mailboxfull", false},
		}},
		{"postfix.eml", KindHard, true, []wantRecipient{{"nobody@ministry.example", "5.1.1", "userunknown", true}}},
		{"postfix-crlf.eml", KindHard, true, []wantRecipient{{"nobody@ministry.example", "5.1.1", "userunknown", true}}},
		{"postfix-text.eml", KindSoft, true, []wantRecipient{{"info@closed.example", "5.7.1", "blocked", false}}},
		{"exim.eml", KindHard, true, []wantRecipient{{"ghost@embassy.example", "5.1.1", "userunknown", true}}},
		{"exim-sender.eml", KindSoft, true, []wantRecipient{{"office@un-mission.example", "5.1.8", "rejected", false}}},
		{"qmail.eml", KindHard, true, []wantRecipient{{"minister@gov.example", "5.1.1", "userunknown", true}}},
		{"qmail-cr.eml", KindHard, true, []wantRecipient{{"minister@gov.example", "5.1.1", "userunknown", true}}},
		{"sendmail.eml", KindHard, true, []wantRecipient{{"secretary@ministry.example", "5.1.1", "userunknown", true}}},
		{"exchange.eml", KindHard, true, []wantRecipient{{"chancery@embassy.example", "5.1.10", "userunknown", true}}},
		{"exchange-policy.eml", KindSoft, true, []wantRecipient{{"press@mail.example.gov", "5.7.1", "spamdetected", false}}},
		{"gmail.eml", KindSoft, true, []wantRecipient{{"consul@consulate.example", "5.2.1", "suspend", false}}},
		{"arf.eml", KindComplaint, false, []wantRecipient{{"reader@isp.example", "", "feedback", false}}},
		{"vacation.eml", KindAutoreply, false, []wantRecipient{{"press@mfa.example", "", "vacation", false}}},
		{"delayed.eml", KindDelayed, true, []wantRecipient{{"slow@far.example", "4.4.1", "delayed", false}}},
		{"base64.eml", KindHard, true, []wantRecipient{{"dead@nowhere.example", "5.1.1", "userunknown", true}}},
		{"quoted-printable.eml", KindSoft, true, []wantRecipient{{"postfach@behörde.example", "5.2.2", "mailboxfull", false}}},
		{"truncated.eml", KindHard, true, []wantRecipient{{"cut@short.example", "5.1.1", "userunknown", true}}},
		{"notbounce.eml", KindNone, false, nil},
		// A security gateway returns the bounce it got, whole: the inner
		// report names the reply.
		{"gateway-nested.eml", KindHard, true, []wantRecipient{{"attache@embassy.example", "5.1.1", "userunknown", true}}},
		// m-FILTER: Japanese prose, the reply and the SMTP command under
		// dashed labels; "No such user" answering DATA is a filter.
		{"mfilter.eml", KindSoft, true, []wantRecipient{{"secretariat@ministry.example", "5.2.0", "filtered", false}}},
		{"exim3.eml", KindHard, true, []wantRecipient{{"office@nonexistent-ministry.example", "5.1.2", "hostunknown", true}}},
		{"ses-wrapped.eml", KindSoft, true, []wantRecipient{{"press@full.example", "5.2.2", "mailboxfull", false}}},
		// X-Failed-Recipients has the rewritten domain; the prose has the
		// address as sent, with its diagnostic.
		{"exim-rewritten.eml", KindHard, true, []wantRecipient{{"press@mfa.gov.example", "5.1.1", "userunknown", true}}},
		// A Final-Recipient on a host without a dot is still an address.
		{"postfix-local.eml", KindSoft, true, []wantRecipient{{"clerk@mailhub0", "5.2.0", "systemerror", false}}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			res, err := Parse(readFixture(t, tc.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if res.Kind != tc.kind || res.IsBounce != tc.isBounce {
				t.Fatalf("kind %q bounce %v, want %q %v (recipients %+v)", res.Kind, res.IsBounce, tc.kind, tc.isBounce, res.Recipients)
			}
			if len(res.Recipients) != len(tc.recips) {
				t.Fatalf("got %d recipients %+v, want %d", len(res.Recipients), res.Recipients, len(tc.recips))
			}
			for i, w := range tc.recips {
				g := res.Recipients[i]
				if !strings.EqualFold(g.Address, w.addr) || g.Status != w.status || g.Reason != w.reason || g.Hard != w.hard {
					t.Errorf("recipient %d = %s %s %s hard=%v (diag %q), want %s %s %s hard=%v",
						i, g.Address, g.Status, g.Reason, g.Hard, g.Diagnostic, w.addr, w.status, w.reason, w.hard)
				}
			}
		})
	}
}

func TestParseCorrelation(t *testing.T) {
	res, err := Parse(readFixture(t, "rfc3464-multi.eml"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if res.EnvelopeID != "d1a2b3c4" {
		t.Errorf("EnvelopeID = %q", res.EnvelopeID)
	}
	if res.OriginalMessageID != "d1a2b3c4@petitions.example.org" {
		t.Errorf("OriginalMessageID = %q", res.OriginalMessageID)
	}
	if got := res.OriginalHeaders["X-Petitiond-Delivery"]; got != "d1a2b3c4" {
		t.Errorf("X-Petitiond-Delivery = %q", got)
	}
	found := false
	for _, a := range res.CandidateAddresses {
		if a == "bounces+d1a2b3c4-5e6f@bounces.petitions.example.org" {
			found = true
		}
	}
	if !found {
		t.Errorf("VERP address missing from candidates %v", res.CandidateAddresses)
	}
	if res.MessageID != "dsn-1@mx.example.net" || !strings.Contains(res.From, "MAILER-DAEMON") || res.Subject == "" {
		t.Errorf("bounce identity = %q %q %q", res.MessageID, res.From, res.Subject)
	}
	if res.Recipients[0].RemoteMTA != "mail.mfa.example" {
		t.Errorf("RemoteMTA = %q", res.Recipients[0].RemoteMTA)
	}
}

func TestParseJSONShape(t *testing.T) {
	res, err := Parse(readFixture(t, "notbounce.eml"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	s := string(b)
	if !strings.Contains(s, `"recipients":[]`) || !strings.Contains(s, `"kind":"none"`) || strings.Contains(s, "CandidateAddresses") {
		t.Errorf("JSON = %s", s)
	}
}

func TestParseDegenerate(t *testing.T) {
	huge := "From: MAILER-DAEMON@x.example\nSubject: failure notice\n" + strings.Repeat("X-Junk: "+strings.Repeat("a", 1000)+"\n", 2000) + "\nbody\n"
	tests := []struct {
		name    string
		raw     string
		wantErr bool
	}{
		{"empty", "", true},
		{"blank", " \r\n\r\n", true},
		{"no header end", "From: a@b.example", false},
		{"binary", "\x00\xff\xfe@@@\r\r\n--", false},
		{"huge header", huge, false},
		{"boundary without parts", "Content-Type: multipart/mixed; boundary=x\n\n--x\n", false},
		{"nested too deep", strings.Repeat("Content-Type: multipart/mixed; boundary=b\n\n--b\n", 50), false},
		{"bad base64", "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n!!!!====", false},
		{"bad qp", "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=Z=\n=", false},
		{"unknown charset", "Content-Type: text/plain; charset=x-klingon\n\nhello", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Parse([]byte(tc.raw))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if res == nil || res.Recipients == nil {
				t.Fatalf("result %+v must be non-nil with a non-nil recipient list", res)
			}
			if tc.wantErr && res.Kind != KindNone {
				t.Errorf("kind = %q on error", res.Kind)
			}
		})
	}
}

func TestDSNAddress(t *testing.T) {
	tests := []struct{ in, want string }{
		{"rfc822; user@example.org", "user@example.org"},
		{"rfc822;<user@example.org>", "user@example.org"},
		{"RFC822; clerk@mailhub0", "clerk@mailhub0"},
		{"rfc822; Some One <one@example.org>", "one@example.org"},
		{"rfc822; @host", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := dsnAddress(tc.in); got != tc.want {
			t.Errorf("dsnAddress(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeNewlines(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\r\nb\r\n", "a\nb\n"},
		{"a\rb\r", "a\nb\n"},
		{"a\nb", "a\nb"},
		{"a\r\n\rb", "a\n\nb"},
	}
	for _, tc := range tests {
		if got := string(normalizeNewlines([]byte(tc.in))); got != tc.want {
			t.Errorf("normalizeNewlines(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func fixtures(tb testing.TB) [][]byte {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("no fixtures: %v", err)
	}
	out := make([][]byte, 0, len(names))
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			tb.Fatalf("read fixture: %v", err)
		}
		out = append(out, raw)
	}
	return out
}

// BenchmarkParse reports messages per second over the fixtures; run with
// -cpu 1 for the one-core figure.
func BenchmarkParse(b *testing.B) {
	raws := fixtures(b)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		if _, err := Parse(raws[n%len(raws)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func FuzzParse(f *testing.F) {
	for _, raw := range fixtures(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		res, err := Parse(raw)
		if res == nil || res.Recipients == nil {
			t.Fatalf("nil result or recipients (err %v)", err)
		}
		switch res.Kind {
		case KindHard, KindSoft, KindDelayed, KindAutoreply, KindComplaint, KindNone:
		default:
			t.Fatalf("invalid kind %q", res.Kind)
		}
		if res.IsBounce != (res.Kind == KindHard || res.Kind == KindSoft || res.Kind == KindDelayed) {
			t.Fatalf("IsBounce %v disagrees with kind %q", res.IsBounce, res.Kind)
		}
	})
}

// BenchmarkParseSamples is BenchmarkParse over the real samples beside the
// repository (../shared/bounce-samples), for profiling; it is skipped when
// they are not there.
func BenchmarkParseSamples(b *testing.B) {
	names, _ := filepath.Glob(filepath.Join("..", "..", "shared", "bounce-samples", "*.eml"))
	if len(names) == 0 {
		b.Skip("no samples beside the repository")
	}
	raws := make([][]byte, 0, len(names))
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			b.Fatalf("read sample: %v", err)
		}
		raws = append(raws, raw)
	}
	b.ResetTimer()
	n := 0
	for b.Loop() {
		_, _ = Parse(raws[n%len(raws)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}
