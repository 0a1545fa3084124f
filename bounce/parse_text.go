package bounce

import (
	"strings"
)

// addrHit is one e-mail address found in text.
type addrHit struct {
	addr       string
	start, end int
	url        bool // part of a link or query string, never a recipient
}

func isLocalChar(c byte, allowEq bool) bool {
	if isDigit(c) || isLetter(c) {
		return true
	}
	switch c {
	case '.', '!', '#', '$', '%', '&', '\'', '*', '+', '-', '?', '^', '_', '`', '{', '|', '}', '~':
		return true
	case '=', '/':
		return allowEq
	}
	return c >= 0x80
}

func isDomainChar(c byte) bool {
	return isDigit(c) || isLetter(c) || c == '.' || c == '-' || c == '_' || c >= 0x80
}

// scanAddrs finds the e-mail addresses in s. allowEq admits '=' and '/' in
// local parts, as VERP and SRS addresses in headers use them; in prose they
// mostly belong to URLs.
func scanAddrs(s string, allowEq bool) []addrHit {
	var hits []addrHit
	from := 0
	for from < len(s) {
		at := strings.IndexByte(s[from:], '@')
		if at < 0 {
			break
		}
		at += from
		from = at + 1
		i := at
		for i > 0 && isLocalChar(s[i-1], allowEq) {
			i--
		}
		for i < at && s[i] == '.' {
			i++
		}
		j := at + 1
		for j < len(s) && isDomainChar(s[j]) {
			j++
		}
		for j > at+1 && (s[j-1] == '.' || s[j-1] == '-') {
			j--
		}
		if i == at || j <= at+1 {
			continue
		}
		domain := s[at+1 : j]
		dot := strings.LastIndexByte(domain, '.')
		if dot <= 0 || dot == len(domain)-1 {
			continue
		}
		url := false
		if i > 0 {
			switch s[i-1] {
			case '=', '/', '?', '&':
				url = true
			}
		}
		hits = append(hits, addrHit{addr: s[i:j], start: i, end: j, url: url})
		from = j
	}
	return hits
}

// firstAddress returns the first address in a header-like value.
func firstAddress(v string) string {
	hits := scanAddrs(v, true)
	if len(hits) == 0 {
		return ""
	}
	return hits[0].addr
}

func allAddresses(v string) []string {
	var out []string
	for _, h := range scanAddrs(v, true) {
		out = append(out, h.addr)
	}
	return out
}

// textRecipient is a failed recipient read from a free-text notice.
type textRecipient struct {
	addr  string
	diag  string
	phase string // the SMTP command a transcript line ties to the address
}

type occurrence struct {
	addr   string
	line   int
	strong bool
	rest   string
}

// noticeRecipients reads the failed recipients and their diagnostics from
// the prose of a non-delivery report. An address is a recipient when it
// leads its line ("<user@example.org>:", "  user@example.org") or follows
// a label such as "RCPT TO:"; addresses of the sender and of the reporting
// system are excluded by the caller.
func noticeRecipients(notice string, exclude map[string]bool) []textRecipient {
	lines := strings.Split(notice, "\n")
	var occ []occurrence
	phases := map[string]string{}
	for i, line := range lines {
		if len(line) > 4000 {
			line = line[:4000]
		}
		for _, h := range scanAddrs(line, false) {
			if h.url || exclude[strings.ToLower(h.addr)] {
				continue
			}
			// Transcripts name the command on the address's line
			// (">>> RCPT To:<a>") or on the line before its reply. A
			// "RCPT TO: a" that merely lists the envelope says nothing
			// of which command failed.
			ph := ""
			switch t := strings.TrimSpace(line); {
			case strings.HasPrefix(t, ">>>"):
				ph = smtpPhase(line)
			case strings.HasPrefix(t, "<<<") && i > 0:
				ph = smtpPhase(lines[i-1])
			}
			if ph != "" {
				phases[strings.ToLower(h.addr)] = ph
			}
			occ = append(occ, occurrence{
				addr:   h.addr,
				line:   i,
				strong: leadsLine(line[:h.start]),
				rest:   line[h.end:],
			})
		}
	}
	if len(occ) == 0 {
		return nil
	}
	anyStrong := false
	for _, o := range occ {
		if o.strong {
			anyStrong = true
			break
		}
	}
	strongLine := map[int]bool{}
	for _, o := range occ {
		if o.strong {
			strongLine[o.line] = true
		}
	}
	var out []textRecipient
	index := map[string]int{}
	for _, o := range occ {
		if anyStrong && !o.strong {
			continue
		}
		key := strings.ToLower(o.addr)
		k, seen := index[key]
		if !seen {
			if len(out) >= 1000 {
				break
			}
			k = len(out)
			index[key] = k
			out = append(out, textRecipient{addr: o.addr, phase: phases[key]})
		}
		if !o.strong {
			continue
		}
		block := diagBlock(lines, o, strongLine)
		if block != "" && !strings.Contains(out[k].diag, block) && len(out[k].diag) < maxDiagnostic {
			if out[k].diag != "" {
				out[k].diag += " "
			}
			out[k].diag += block
		}
	}
	return out
}

// leadsLine tells whether the text before an address leaves it as the
// subject of the line: only punctuation, or a recipient label.
func leadsLine(prefix string) bool {
	p := strings.TrimRight(lowerASCII(prefix), " \t<\"'([*")
	p = strings.TrimSpace(p)
	if p == "" || strings.Trim(p, "-*>#:.0123456789)") == "" {
		return true
	}
	for _, l := range recipientLabels {
		if strings.HasSuffix(p, strings.TrimSpace(l)) {
			return true
		}
	}
	return false
}

// diagBlock collects what follows an address: the rest of its line and the
// lines after it, up to a blank line or the next recipient.
func diagBlock(lines []string, o occurrence, strongLine map[int]bool) string {
	var sb strings.Builder
	rest := strings.TrimLeft(o.rest, ">:;,.]) \t")
	rest = strings.TrimSpace(rest)
	sb.WriteString(rest)
	for i := o.line + 1; i < len(lines) && i < o.line+12; i++ {
		t := strings.TrimSpace(lines[i])
		if t == "" {
			if sb.Len() == 0 && i == o.line+1 {
				continue
			}
			break
		}
		if strongLine[i] || strings.HasPrefix(t, "---") || strings.HasPrefix(t, "***") || strings.HasPrefix(t, "===") {
			break
		}
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(t)
		if sb.Len() > maxDiagnostic {
			break
		}
	}
	return compact(sb.String())
}

// codeLines returns the notice lines that carry an SMTP reply or status
// code: the diagnostic of formats that do not tie it to the address.
func codeLines(notice string) string {
	var parts []string
	n := 0
	for line := range strings.SplitSeq(notice, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || len(t) > 2000 {
			continue
		}
		if findReplyCode(t) != "" || findStatus(t) != "" {
			parts = append(parts, t)
			n += len(t)
			if n > maxDiagnostic {
				break
			}
		}
	}
	return compact(strings.Join(parts, " "))
}

// compact collapses runs of white space into one space and trims both
// ends, like strings.Join(strings.Fields(s), " ") for ASCII white space.
func compact(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) && (s[i] != ' ' || i == 0 || i == len(s)-1 || s[i+1] == ' ' || isSpace(s[i+1])) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s))
	pending := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isSpace(c) {
			pending = len(b) > 0
			continue
		}
		if pending {
			b = append(b, ' ')
			pending = false
		}
		b = append(b, c)
	}
	return string(b)
}

// compactLower is lowerASCII(compact(s)) in one pass and one copy.
func compactLower(s string) string {
	b := make([]byte, 0, len(s))
	pending := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isSpace(c) {
			pending = len(b) > 0
			continue
		}
		if pending {
			b = append(b, ' ')
			pending = false
		}
		b = append(b, lowerByte(c))
	}
	return string(b)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	// Do not cut a UTF-8 sequence in half.
	for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xC0 {
		s = s[:len(s)-1]
	}
	return s
}
