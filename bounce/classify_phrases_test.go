package bounce

import (
	"strings"
	"testing"
)

func TestPhraseSet(t *testing.T) {
	ps := newPhraseSet("rcpt to", "end of data", "x")
	tests := []struct {
		text        string
		first, last int
		foldFirst   int
	}{
		{"nothing here", -1, -1, -1},
		{"after rcpt to: and end of data", 0, 1, 0},
		{"end of data, then rcpt to", 1, 0, 1},
		{"a box", 2, 2, 2},
		{"After RCPT TO:<a@b.org>", -1, -1, 0},
	}
	for _, tc := range tests {
		if got := ps.first(tc.text); got != tc.first {
			t.Errorf("first(%q) = %d, want %d", tc.text, got, tc.first)
		}
		if got := ps.last(tc.text); got != tc.last {
			t.Errorf("last(%q) = %d, want %d", tc.text, got, tc.last)
		}
		got := -1
		ps.scanFold(tc.text, func(k, _ int) bool { got = k; return false })
		if got != tc.foldFirst {
			t.Errorf("scanFold(%q) first = %d, want %d", tc.text, got, tc.foldFirst)
		}
	}
}

func TestCompactAndLower(t *testing.T) {
	tests := []string{"", "a", " a ", "a  b", "a\tb\nc", "already clean", "  \n ", "Ünïcode  Äb\r\nC"}
	for _, in := range tests {
		if got, want := compact(in), strings.Join(strings.Fields(in), " "); got != want {
			t.Errorf("compact(%q) = %q, want %q", in, got, want)
		}
		if got, want := compactLower(in), lowerASCII(compact(in)); got != want {
			t.Errorf("compactLower(%q) = %q, want %q", in, got, want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", ""}, {"abc", "abc"}, {"User Unknown", "user unknown"}, {"ÄBC", "Äbc"},
	} {
		if got := lowerASCII(tc.in); got != tc.want {
			t.Errorf("lowerASCII(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFindReturnedMarker(t *testing.T) {
	tests := []struct {
		text string
		want int
	}{
		{"no marker\n", -1},
		{"diag\n------ This is a copy of the message, including all the headers. ------\nFrom: a", 5},
		{"Original message follows.\n", 0},
		// A marker inside a long line of prose is not a separator.
		{strings.Repeat("x", 120) + " original message follows " + "\n", -1},
	}
	for _, tc := range tests {
		if got := findReturnedMarker(tc.text); got != tc.want {
			t.Errorf("findReturnedMarker(%q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		keys []string
		vals []string
		rest string
	}{
		{"blank line ends it", "From: a@example.org\nSubject: hi\n\nbody\n", []string{"from", "subject"}, []string{"a@example.org", "hi"}, "body\n"},
		{"folded value", "Received: from x\n\tby y\n  for z\nTo: b@example.org\n\nB", []string{"received", "to"}, []string{"from x by y for z", "b@example.org"}, "B"},
		{"no blank line before prose", "Subject: x\nThis is not a field.\n", []string{"subject"}, []string{"x"}, "This is not a field.\n"},
		{"mbox separator", "From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nX-Y: z\n\n", []string{"x-y"}, []string{"z"}, ""},
		{"header only", "Content-Type: text/plain", []string{"content-type"}, []string{"text/plain"}, ""},
		{"fold before any field is dropped", " stray\nA: b\n\n", []string{"a"}, []string{"b"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, rest := parseHeader([]byte(tc.in))
			if strings.Join(h.keys, "|") != strings.Join(tc.keys, "|") || strings.Join(h.vals, "|") != strings.Join(tc.vals, "|") || string(rest) != tc.rest {
				t.Errorf("got %q %q rest %q, want %q %q rest %q", h.keys, h.vals, rest, tc.keys, tc.vals, tc.rest)
			}
		})
	}
}
