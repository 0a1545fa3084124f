package bounce

import (
	"bytes"
	"strings"
)

// message is the MIME structure of one report, reduced to what matters:
// the human-readable notice, machine-readable report parts and the header
// of the message that came back.
type message struct {
	top        header
	notice     []string // readable text, in order, outside the returned message
	html       []string // HTML notices, used only when there is no plain text
	dsn        []string // message/delivery-status bodies
	feedback   []string // message/feedback-report bodies
	reportType string
	returned   *header
	// returnedRaw is the whole returned message when a MIME part carried
	// it: a gateway may return a bounce that tells more than its own notice.
	returnedRaw []byte
	depth       int // how many returned messages this one is nested in
	parts       int
}

func newMessage(raw []byte) *message { return newMessageDepth(raw, 0) }

func newMessageDepth(raw []byte, depth int) *message {
	m := &message{depth: depth}
	h, body := parseHeader(raw)
	m.top = h
	m.walk(h, body, 0)
	if len(m.notice) == 0 && len(m.html) > 0 {
		m.notice = m.html
	}
	m.cutNotice()
	return m
}

func (m *message) setReturned(b []byte) {
	if m.returned != nil {
		return
	}
	b = bytes.TrimLeft(b, " \t\n")
	h, _ := parseHeader(b)
	if len(h.keys) == 0 {
		return
	}
	m.returned = &h
}

func (m *message) walk(h header, body []byte, depth int) {
	m.parts++
	if depth > maxDepth || m.parts > maxParts {
		return
	}
	ct, params := mediaType(h.get("content-type"))
	cte := h.get("content-transfer-encoding")
	if strings.HasPrefix(ct, "multipart/") {
		if ct == "multipart/report" && m.reportType == "" {
			m.reportType = strings.ToLower(params["report-type"])
		}
		parts := splitMultipart(body, params["boundary"])
		if parts == nil {
			// A boundary that does not match the body (or is missing) is
			// a common breakage; guess it from the first delimiter-like
			// line before giving up and reading the body as text.
			if b := guessBoundary(body); b != "" {
				parts = splitMultipart(body, b)
			}
		}
		if parts == nil {
			m.addText(toUTF8(decodeTransfer(body, cte), params["charset"]), false)
			return
		}
		if ct == "multipart/alternative" {
			parts = preferPlain(parts)
		}
		for _, p := range parts {
			ph, pb := parseHeader(p)
			m.walk(ph, pb, depth+1)
		}
		return
	}
	data := decodeTransfer(body, cte)
	switch ct {
	case "message/delivery-status", "message/global-delivery-status":
		m.dsn = append(m.dsn, toUTF8(data, "utf-8"))
	case "message/feedback-report":
		m.feedback = append(m.feedback, toUTF8(data, "utf-8"))
	case "message/rfc822", "message/global", "message/partial", "text/rfc822-headers",
		"text/rfc822-header", "message/rfc822-headers", "message/global-headers":
		if m.returned == nil && (ct == "message/rfc822" || ct == "message/global") {
			m.returnedRaw = data
		}
		m.setReturned(data)
	case "text/html":
		m.html = append(m.html, stripHTML(toUTF8(data, params["charset"])))
	default:
		if strings.HasPrefix(ct, "text/") || ct == "application/json" {
			text := toUTF8(data, params["charset"])
			m.addText(text, len(m.notice) > 0 || depth > 0 && isAttachment(h))
			return
		}
		if ct == "application/octet-stream" && len(m.dsn) == 0 && looksLikeDSN(string(data)) {
			m.dsn = append(m.dsn, toUTF8(data, "utf-8"))
		}
	}
}

// addText files a text part as notice, or as the returned header when an
// attached text part is nothing but a header block (some gateways attach
// the original header as a .txt file).
func (m *message) addText(text string, maybeHeaders bool) {
	if maybeHeaders && m.returned == nil && looksLikeHeaderBlock(text) {
		m.setReturned([]byte(text))
		return
	}
	m.notice = append(m.notice, text)
}

func isAttachment(h header) bool {
	cd := strings.ToLower(h.get("content-disposition"))
	return strings.HasPrefix(cd, "attachment") || strings.Contains(strings.ToLower(h.get("content-type")), "name=")
}

func looksLikeHeaderBlock(text string) bool {
	h, _ := parseHeader([]byte(strings.TrimLeft(text, " \t\n")))
	n := 0
	for _, k := range h.keys {
		switch k {
		case "received", "from", "to", "subject", "message-id", "date", "return-path":
			n++
		}
	}
	return n >= 2
}

var dsnRecipientFields = newPhraseSet("final-recipient:", "original-recipient:")
var dsnStatusFields = newPhraseSet("action:", "status:")

func looksLikeDSN(text string) bool {
	found := func(ps *phraseSet) bool {
		ok := false
		ps.scanFold(text, func(_, _ int) bool { ok = true; return false })
		return ok
	}
	return found(dsnRecipientFields) && found(dsnStatusFields)
}

func guessBoundary(body []byte) string {
	for line := range bytes.SplitSeq(body, []byte("\n")) {
		if len(line) > 3 && len(line) < 100 && bytes.HasPrefix(line, []byte("--")) &&
			!bytes.Contains(line, []byte(" ")) && !bytes.HasSuffix(bytes.TrimRight(line, "-"), []byte("--")) {
			b := string(bytes.TrimRight(line[2:], " \t"))
			if strings.Trim(b, "-") == "" {
				continue
			}
			return b
		}
	}
	return ""
}

func preferPlain(parts [][]byte) [][]byte {
	for _, p := range parts {
		h, _ := parseHeader(p)
		ct, _ := mediaType(h.get("content-type"))
		if ct == "text/plain" {
			return [][]byte{p}
		}
	}
	return parts
}

// cutNotice ends each notice at the line that introduces the returned
// message, and reads the returned header from there when no MIME part
// carried it.
func (m *message) cutNotice() {
	for i, text := range m.notice {
		at := findReturnedMarker(text)
		if at < 0 {
			continue
		}
		rest := text[at:]
		if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
			rest = rest[nl+1:]
		} else {
			rest = ""
		}
		m.notice[i] = text[:at]
		if m.returned == nil {
			m.setReturned([]byte(rest))
		}
	}
}

var returnedMarkerSet = newPhraseSet(returnedMarkers...)

// findReturnedMarker returns the offset of the first line that introduces
// a copy of the returned message, or -1.
func findReturnedMarker(text string) int {
	best := -1
	returnedMarkerSet.scanFold(text, func(_, at int) bool {
		start := strings.LastIndexByte(text[:at], '\n') + 1
		end := strings.IndexByte(text[at:], '\n')
		if end < 0 {
			end = len(text)
		} else {
			end += at
		}
		if t := strings.TrimSpace(text[start:end]); len(t) > 8 && len(t) < 100 {
			best = start
			return false
		}
		return true
	})
	return best
}

func (m *message) noticeText() string {
	return strings.Join(m.notice, "\n")
}
