package bounce

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// Kind is the class of a whole returned message.
type Kind string

// The kinds a message can have; bounce policy switches on these.
const (
	KindHard      Kind = "hard"
	KindSoft      Kind = "soft"
	KindDelayed   Kind = "delayed"
	KindAutoreply Kind = "autoreply"
	KindComplaint Kind = "complaint"
	KindNone      Kind = "none"
)

// Recipient is one address a report speaks about.
type Recipient struct {
	Address    string `json:"address"`
	Status     string `json:"status"`
	Action     string `json:"action"`
	Diagnostic string `json:"diagnostic"`
	Reason     string `json:"reason"`
	Hard       bool   `json:"hard"`
	RemoteMTA  string `json:"remote_mta,omitempty"`
}

// Result is what Parse learned from one message.
type Result struct {
	File       string      `json:"file,omitempty"`
	IsBounce   bool        `json:"is_bounce"`
	Kind       Kind        `json:"kind"`
	Recipients []Recipient `json:"recipients"`
	DeliveryID string      `json:"delivery_id"`

	// CandidateAddresses holds the addresses that may carry a VERP token:
	// where the bounce was delivered to, and the envelope sender of the
	// returned message.
	CandidateAddresses []string          `json:"-"`
	EnvelopeID         string            `json:"-"`
	OriginalMessageID  string            `json:"-"`
	OriginalHeaders    map[string]string `json:"-"`
	MessageID          string            `json:"-"`
	From               string            `json:"-"`
	Subject            string            `json:"-"`
}

// Limits that keep hostile or broken input from costing more than a
// normal bounce; real reports are far below all of them.
const (
	maxInput       = 8 << 20
	maxHeaderBytes = 256 << 10
	maxFields      = 2000
	maxParts       = 200
	maxDepth       = 12
	maxDiagnostic  = 1000
)

// ErrEmpty is returned when there is nothing at all to read.
var ErrEmpty = errors.New("bounce: empty message")

// Parse reads one raw message and classifies it. It never panics; when the
// input is not a report it returns Kind none. The error is non-nil only when
// nothing could be read, and the Result is non-nil even then.
func Parse(raw []byte) (res *Result, err error) {
	res = &Result{Kind: KindNone, Recipients: []Recipient{}}
	defer func() {
		// Parsing arbitrary mail must not take the watcher down; a bug
		// here degrades to "not a bounce", which goes to a human.
		if p := recover(); p != nil {
			*res = Result{Kind: KindNone, Recipients: []Recipient{}}
			err = fmt.Errorf("bounce: parse failed: %v", p)
		}
	}()
	if len(bytes.TrimSpace(raw)) == 0 {
		return res, ErrEmpty
	}
	if len(raw) > maxInput {
		raw = raw[:maxInput]
	}
	m := newMessage(normalizeNewlines(raw))
	m.analyse(res)
	return res, nil
}

// maxNested is how deep analyse follows bounces returned inside bounces.
const maxNested = 2

// normalizeNewlines turns CRLF and bare CR into LF so that everything after
// it only deals with one line ending.
func normalizeNewlines(b []byte) []byte {
	if bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '\r' {
			if i+1 < len(b) && b[i+1] == '\n' {
				continue
			}
			c = '\n'
		}
		out = append(out, c)
	}
	return out
}

// header is an ordered list of fields with lower-case names.
type header struct {
	keys []string
	vals []string
}

func (h *header) get(k string) string {
	for i, key := range h.keys {
		if key == k {
			return h.vals[i]
		}
	}
	return ""
}

func (h *header) has(k string) bool {
	for _, key := range h.keys {
		if key == k {
			return true
		}
	}
	return false
}

func (h *header) all(k string) []string {
	var out []string
	for i, key := range h.keys {
		if key == k {
			out = append(out, h.vals[i])
		}
	}
	return out
}

// parseHeader reads a header block and returns it with the rest of the
// input. It stops at the first empty line, and also at the first line that
// can not be a field, so that a message without a blank line after its
// header still yields a body.
func parseHeader(b []byte) (header, []byte) {
	var h header
	// An mbox "From " separator line is not a field.
	if bytes.HasPrefix(b, []byte("From ")) {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		} else {
			return h, nil
		}
	}
	// First find where the header ends, then make it one string that
	// unfolded values are slices of.
	pos, fields, rest := 0, 0, -1
	for pos < len(b) && fields < maxFields && pos < maxHeaderBytes {
		end := bytes.IndexByte(b[pos:], '\n')
		line, next := b[pos:], len(b)
		if end >= 0 {
			line, next = b[pos:pos+end], pos+end+1
		}
		if len(bytes.TrimSpace(line)) == 0 {
			rest = next
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 || !isFieldName(line[:colon]) {
				rest = pos
				break
			}
			fields++
		}
		pos = next
	}
	blockEnd := pos
	if rest < 0 && pos < len(b) {
		rest = pos
	}
	hs := string(b[:blockEnd])
	h.keys = make([]string, 0, fields)
	h.vals = make([]string, 0, fields)
	var folded []byte
	isFolded := false
	for pos = 0; pos < len(hs); {
		end := strings.IndexByte(hs[pos:], '\n')
		line, next := hs[pos:], len(hs)
		if end >= 0 {
			line, next = hs[pos:pos+end], pos+end+1
		}
		pos = next
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			n := len(h.vals)
			if n == 0 || len(h.vals[n-1])+len(folded) >= maxHeaderBytes/4 {
				continue
			}
			if !isFolded {
				if folded == nil {
					folded = make([]byte, 0, 512)
				}
				folded = append(folded[:0], h.vals[n-1]...)
				isFolded = true
			}
			folded = append(folded, ' ')
			folded = append(folded, strings.TrimSpace(line)...)
			continue
		}
		if isFolded {
			h.vals[len(h.vals)-1] = string(folded)
			isFolded = false
		}
		colon := strings.IndexByte(line, ':')
		h.keys = append(h.keys, lowerKey(strings.TrimSpace(line[:colon])))
		h.vals = append(h.vals, strings.TrimSpace(line[colon+1:]))
	}
	if isFolded {
		h.vals[len(h.vals)-1] = string(folded)
	}
	if rest < 0 || rest >= len(b) {
		return h, nil
	}
	return h, b[rest:]
}

// lowerKey returns a field name in lower case, without copying it when
// it is lower case already.
func lowerKey(k string) string {
	switch k {
	case "To":
		return "to"
	case "From":
		return "from"
	case "Received":
		return "received"
	}
	return lowerASCII(k)
}

// lowerASCII lower-cases the ASCII letters of s and leaves every other
// byte alone, so that offsets into the result are offsets into s. All the
// phrases and rules it is matched against are lower-case ASCII or
// caseless scripts.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := make([]byte, len(s))
	copy(b, s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return string(b)
}

func isFieldName(b []byte) bool {
	b = bytes.TrimRight(b, " \t")
	if len(b) == 0 || len(b) > 76 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// decodeWords decodes RFC 2047 encoded words, keeping the raw value when
// the encoding is broken.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

// mediaType parses a Content-Type value leniently: a broken parameter list
// still yields the type, and the boundary is recovered by hand if needed.
func mediaType(v string) (string, map[string]string) {
	if v == "" {
		return "text/plain", map[string]string{}
	}
	t, params, err := mime.ParseMediaType(v)
	if err == nil {
		return t, params
	}
	t = strings.ToLower(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]))
	params = map[string]string{}
	for _, p := range strings.Split(v, ";")[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		val = strings.Trim(val, `"`)
		params[strings.ToLower(strings.TrimSpace(k))] = val
	}
	return t, params
}

// decodeTransfer undoes a Content-Transfer-Encoding without ever failing:
// broken input yields as much as could be decoded.
func decodeTransfer(b []byte, cte string) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return decodeBase64(b)
	case "quoted-printable":
		return decodeQP(b)
	}
	return b
}

func decodeBase64(b []byte) []byte {
	out := make([]byte, 0, len(b)*3/4)
	var acc uint32
	n := 0
	for _, c := range b {
		var v byte
		switch {
		case c >= 'A' && c <= 'Z':
			v = c - 'A'
		case c >= 'a' && c <= 'z':
			v = c - 'a' + 26
		case c >= '0' && c <= '9':
			v = c - '0' + 52
		case c == '+' || c == '-':
			v = 62
		case c == '/' || c == '_':
			v = 63
		default:
			continue
		}
		acc = acc<<6 | uint32(v)
		n++
		if n == 4 {
			out = append(out, byte(acc>>16), byte(acc>>8), byte(acc))
			acc, n = 0, 0
		}
	}
	switch n {
	case 2:
		out = append(out, byte(acc>>4))
	case 3:
		out = append(out, byte(acc>>10), byte(acc>>2))
	}
	return out
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func decodeQP(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		// Soft line break, possibly with trailing blanks before it.
		j := i + 1
		for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			i = j
			continue
		}
		if j >= len(b) {
			break
		}
		if i+2 < len(b) {
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if ok1 && ok2 {
				out = append(out, hi<<4|lo)
				i += 2
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// toUTF8 converts text in the named charset to UTF-8, falling back to the
// raw bytes with invalid sequences replaced.
func toUTF8(b []byte, cs string) string {
	cs = strings.ToLower(strings.Trim(strings.TrimSpace(cs), `"`))
	if plainASCII(b) && !strings.HasPrefix(cs, "utf-16") && !strings.HasPrefix(cs, "utf-32") && cs != "utf-7" {
		// Every other charset a mail part declares reads printable
		// ASCII as itself; no decoder needed.
		return string(b)
	}
	switch cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8", "us_ascii", "ansi_x3.4-1968":
		// Undeclared ISO-2022-JP is common in Japanese bounces; its
		// escape sequences make it safe to recognise.
		if bytes.Contains(b, []byte("\x1b$B")) || bytes.Contains(b, []byte("\x1b$@")) {
			cs = "iso-2022-jp"
		} else if utf8.Valid(b) {
			return string(b)
		} else if cs == "" || strings.HasPrefix(cs, "us") || cs == "ascii" || strings.HasPrefix(cs, "ansi") {
			cs = "windows-1252"
		} else {
			return strings.ToValidUTF8(string(b), "\uFFFD")
		}
	}
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	out, err := io.ReadAll(r)
	if err != nil && len(out) == 0 {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

// plainASCII tells whether b is 7-bit text without the escape and NUL bytes
// that stateful and wide charsets use.
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || c == 0x1b || c == 0 {
			return false
		}
	}
	return true
}

// splitMultipart returns the bodies between boundary delimiter lines, or nil
// when the boundary never occurs.
func splitMultipart(body []byte, boundary string) [][]byte {
	if boundary == "" {
		return nil
	}
	delim := []byte("--" + boundary)
	var parts [][]byte
	pos := indexLineStart(body, delim, 0)
	for pos >= 0 && len(parts) < maxParts {
		rest := body[pos+len(delim):]
		if bytes.HasPrefix(rest, []byte("--")) {
			break
		}
		lineEnd := bytes.IndexByte(body[pos:], '\n')
		if lineEnd < 0 {
			break
		}
		start := pos + lineEnd + 1
		next := indexLineStart(body, delim, start)
		end := next
		if next < 0 {
			end = len(body)
		}
		p := body[start:end]
		p = bytes.TrimSuffix(p, []byte("\n"))
		parts = append(parts, p)
		pos = next
	}
	return parts
}

func indexLineStart(b, delim []byte, from int) int {
	for from <= len(b) {
		i := bytes.Index(b[from:], delim)
		if i < 0 {
			return -1
		}
		at := from + i
		if at == 0 || b[at-1] == '\n' {
			return at
		}
		from = at + 1
	}
	return -1
}

// stripHTML reduces an HTML body to its text, good enough to read a
// diagnostic out of it.
func stripHTML(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	in := false
	lower := strings.ToLower(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if in {
			if c == '>' {
				in = false
			}
			continue
		}
		if c == '<' {
			// Skip style and script bodies entirely.
			for _, tag := range [...]string{"<style", "<script"} {
				if strings.HasPrefix(lower[i:], tag) {
					closing := "</" + tag[1:]
					if j := strings.Index(lower[i:], closing); j >= 0 {
						i += j
					}
				}
			}
			rest := lower[i:]
			if strings.HasPrefix(rest, "<br") || strings.HasPrefix(rest, "<p") || strings.HasPrefix(rest, "</p") ||
				strings.HasPrefix(rest, "<div") || strings.HasPrefix(rest, "</div") || strings.HasPrefix(rest, "<tr") ||
				strings.HasPrefix(rest, "</tr") || strings.HasPrefix(rest, "<li") {
				sb.WriteByte('\n')
			}
			in = true
			continue
		}
		sb.WriteByte(c)
	}
	return htmlEntities.Replace(sb.String())
}

var htmlEntities = strings.NewReplacer("&nbsp;", " ", "&lt;", "<", "&gt;", ">", "&amp;", "&", "&quot;", `"`, "&#39;", "'")
