package bounce

import (
	"net/textproto"
	"strings"
)

// analyse fills res from the message structure. The order matters: a
// feedback report or a machine-readable DSN is trusted over prose, and
// prose is only read as a bounce when the message looks like one, since
// every auto-reply and mailing-list notice also carries addresses.
func (m *message) analyse(res *Result) {
	h := &m.top
	res.MessageID = strings.Trim(h.get("message-id"), "<> ")
	res.From = decodeWords(h.get("from"))
	res.Subject = decodeWords(h.get("subject"))
	m.correlation(res)

	notice := m.noticeText()
	exclude := m.senderAddresses()
	nc := newNoticeContext(notice)

	switch {
	case len(m.feedback) > 0 || m.reportType == "feedback-report":
		m.complaint(res)
	case m.fromSES(res, notice):
	case m.fromDSN(res, notice, exclude, &nc):
	case m.looksLikeBounce(&nc) && m.fromText(res, notice, exclude, &nc):
	case m.isAutoReply():
		res.Kind = KindAutoreply
		if a := firstAddress(res.From); a != "" {
			res.Recipients = []Recipient{{Address: a, Reason: "vacation"}}
		}
	}
	if m.needsNested(res) {
		m.useNested(res)
	}
	if res.Kind == "" {
		res.Kind = KindNone
	}
	if res.Recipients == nil {
		res.Recipients = []Recipient{}
	}
	res.IsBounce = res.Kind == KindHard || res.Kind == KindSoft || res.Kind == KindDelayed
}

// correlation collects the identifiers that tie a report to a delivery.
func (m *message) correlation(res *Result) {
	h := &m.top
	seen := map[string]bool{}
	add := func(v string) {
		for _, a := range allAddresses(v) {
			if k := strings.ToLower(a); !seen[k] {
				seen[k] = true
				res.CandidateAddresses = append(res.CandidateAddresses, a)
			}
		}
	}
	for _, k := range [...]string{"delivered-to", "x-original-to", "envelope-to", "to"} {
		for _, v := range h.all(k) {
			add(v)
		}
	}
	if rh := m.returned; rh != nil {
		add(rh.get("return-path"))
		add(rh.get("x-envelope-from"))
		res.OriginalMessageID = strings.Trim(rh.get("message-id"), "<> ")
		for i, k := range rh.keys {
			if strings.HasPrefix(k, "x-petitiond-") {
				if res.OriginalHeaders == nil {
					res.OriginalHeaders = map[string]string{}
				}
				res.OriginalHeaders[textproto.CanonicalMIMEHeaderKey(k)] = rh.vals[i]
			}
		}
	}
}

// senderAddresses are the addresses that appear in a report without being
// a failed recipient: whoever the report goes to, and whoever sent it.
func (m *message) senderAddresses() map[string]bool {
	ex := map[string]bool{}
	addAll := func(h *header, keys ...string) {
		for _, k := range keys {
			for _, v := range h.all(k) {
				for _, a := range allAddresses(v) {
					ex[strings.ToLower(a)] = true
				}
			}
		}
	}
	if m.depth == 0 {
		addAll(&m.top, "to", "cc", "delivered-to", "x-original-to")
	}
	addAll(&m.top, "from", "return-path", "reply-to")
	if m.returned != nil {
		addAll(m.returned, "from", "return-path", "sender", "reply-to", "x-envelope-from")
	}
	return ex
}

func (m *message) complaint(res *Result) {
	res.Kind = KindComplaint
	var addrs []string
	for _, f := range m.feedback {
		addrs = append(addrs, parseFeedback(f).recipients...)
	}
	if len(addrs) == 0 && m.returned != nil {
		addrs = allAddresses(m.returned.get("to"))
	}
	for _, a := range addrs {
		res.Recipients = append(res.Recipients, Recipient{Address: a, Reason: "feedback"})
	}
}

func (m *message) fromSES(res *Result, notice string) bool {
	if !strings.Contains(notice, "notificationType") && !strings.Contains(notice, "eventType") {
		return false
	}
	n, ok := parseSES(notice)
	if !ok {
		return false
	}
	switch strings.ToLower(n.NotificationType) {
	case "complaint":
		res.Kind = KindComplaint
		for _, c := range n.Complaint.ComplainedRecipients {
			res.Recipients = append(res.Recipients, Recipient{Address: c.EmailAddress, Reason: "feedback"})
		}
		return true
	case "bounce":
		for _, b := range n.Bounce.BouncedRecipients {
			rc := Recipient{Address: b.EmailAddress, Diagnostic: truncate(compact(typedValue(b.DiagnosticCode)), maxDiagnostic)}
			classify(&rc, classifyInput{
				status: b.Status, action: b.Action, diag: rc.Diagnostic,
				temp: strings.EqualFold(n.Bounce.BounceType, "Transient"),
			})
			if strings.EqualFold(n.Bounce.BounceType, "Transient") && rc.Hard {
				rc.Hard = false
			}
			res.Recipients = append(res.Recipients, rc)
		}
		res.Kind = kindOf(res.Recipients)
		return len(res.Recipients) > 0
	case "delivery":
		res.Kind = KindNone
		return true
	}
	return false
}

func (m *message) fromDSN(res *Result, notice string, exclude map[string]bool, nc *noticeContext) bool {
	var reps []dsnReport
	for _, d := range m.dsn {
		reps = append(reps, parseDSN(d))
	}
	if len(m.dsn) == 0 && looksLikeDSN(notice) {
		reps = append(reps, parseDSN(notice))
	}
	var text []textRecipient
	textRead := false
	global := ""
	for _, rep := range reps {
		if rep.envelopeID != "" && res.EnvelopeID == "" {
			res.EnvelopeID = rep.envelopeID
		}
		for _, d := range rep.recips {
			addr := dsnAddress(d.final)
			if addr == "" {
				addr = dsnAddress(d.original)
			}
			if addr == "" && len(rep.recips) == 1 {
				// A report that names no usable recipient (seen: a bare
				// "@host") still has the returned message to go by.
				addr = m.returnedRecipient(notice, exclude)
			}
			if addr == "" {
				continue
			}
			diag := compact(d.diag)
			if findStatus(diag) == "" && findReplyCode(diag) == "" || nc.anyRuleOf(lowerASCII(diag)) == nil {
				// The report gave no usable diagnostic: the prose often has it.
				if !textRead {
					text = noticeRecipients(notice, exclude)
					global = codeLines(notice)
					textRead = true
				}
				extra := ""
				for _, t := range text {
					if strings.EqualFold(t.addr, addr) {
						extra = t.diag
					}
				}
				if extra == "" && len(rep.recips) == 1 {
					extra = global
				}
				if extra != "" && !strings.Contains(diag, extra) {
					diag = strings.TrimSpace(diag + " " + extra)
				}
			}
			if !textRead {
				text = noticeRecipients(notice, exclude)
				global = codeLines(notice)
				textRead = true
			}
			phase := smtpPhase(diag)
			if phase == "" {
				for _, t := range text {
					if strings.EqualFold(t.addr, addr) {
						phase = t.phase
						if phase == "" {
							phase = smtpPhase(t.diag)
						}
					}
				}
			}
			rc := Recipient{Address: addr, Diagnostic: truncate(diag, maxDiagnostic), RemoteMTA: d.remoteMTA}
			classify(&rc, classifyInput{status: d.status, action: d.action, diag: diag, notice: nc, noticePhase: len(rep.recips) == 1, phase: phase,
				localMailer: d.diagType == "x-unix"})
			res.Recipients = append(res.Recipients, rc)
		}
	}
	if len(res.Recipients) == 0 {
		return false
	}
	res.Kind = kindOf(res.Recipients)
	return true
}

// returnedRecipient guesses the one failed recipient from the prose or,
// failing that, the To of the returned message.
func (m *message) returnedRecipient(notice string, exclude map[string]bool) string {
	if t := noticeRecipients(notice, exclude); len(t) == 1 {
		return t[0].addr
	}
	if m.returned != nil {
		if a := allAddresses(m.returned.get("to")); len(a) == 1 {
			return a[0]
		}
	}
	return ""
}

// looksLikeBounce tells whether a message without a machine-readable
// report is a non-delivery report, from its sender, subject and wording.
func (m *message) looksLikeBounce(nc *noticeContext) bool {
	if m.top.has("x-failed-recipients") {
		return true
	}
	from := strings.ToLower(m.top.get("from"))
	subject := strings.ToLower(decodeWords(m.top.get("subject")))
	sender := containsAny(from, bounceSenders)
	subj := containsAny(subject, bounceSubjects)
	phrase := bouncePhraseSet.contains(nc.lower)
	// A message returned inside a bounce is read as one on its wording
	// alone: its own header is whatever the wrapping gateway made of it.
	null := strings.TrimSpace(m.top.get("return-path")) == "<>" || m.depth > 0
	switch {
	case phrase && (sender || subj || null):
		return true
	case sender && subj:
		return true
	}
	return false
}

func (m *message) fromText(res *Result, notice string, exclude map[string]bool, nc *noticeContext) bool {
	text := noticeRecipients(notice, exclude)
	global := codeLines(notice)
	if xf := m.top.all("x-failed-recipients"); len(xf) > 0 {
		var fixed []textRecipient
		matched := 0
		for _, v := range xf {
			for _, a := range allAddresses(v) {
				tr := textRecipient{addr: a}
				for _, t := range text {
					if strings.EqualFold(t.addr, a) {
						tr.diag, tr.phase = t.diag, t.phase
						matched++
					}
				}
				fixed = append(fixed, tr)
			}
		}
		// The header decides which addresses failed, unless the prose
		// names as many, each with its own diagnostic, and the two
		// differ only in spelling (a rewritten domain, an alias): the
		// prose then shows the address as it was sent.
		if len(fixed) > 0 && !(matched < len(fixed) && len(text) == len(fixed) && sameMailboxes(fixed, text)) {
			text = fixed
		}
	}
	if len(text) == 0 && m.returned != nil {
		for _, k := range [...]string{"x-envelope-to", "envelope-to", "to"} {
			for _, a := range allAddresses(m.returned.get(k)) {
				text = append(text, textRecipient{addr: a})
			}
			if len(text) > 0 {
				break
			}
		}
	}
	if len(text) == 0 {
		return false
	}
	temp := m.isWarning(nc)
	for _, t := range text {
		diag := t.diag
		if findStatus(diag) == "" && findReplyCode(diag) == "" && global != "" && (len(text) == 1 || diag == "") {
			if !strings.Contains(diag, global) {
				diag = strings.TrimSpace(diag + " " + global)
			}
		}
		phase := t.phase
		if phase == "" {
			phase = smtpPhase(diag)
		}
		rc := Recipient{Address: t.addr, Diagnostic: truncate(diag, maxDiagnostic)}
		classify(&rc, classifyInput{diag: diag, notice: nc, noticePhase: len(text) == 1, temp: temp, phase: phase})
		res.Recipients = append(res.Recipients, rc)
	}
	res.Kind = kindOf(res.Recipients)
	return true
}

// isWarning tells whether a free-text report announces a delay rather than
// a failure.
func (m *message) isWarning(nc *noticeContext) bool {
	l := nc.lower
	subject := strings.ToLower(decodeWords(m.top.get("subject")))
	if strings.Contains(l, "permanent") || strings.Contains(l, "given up") || strings.Contains(l, "giving up") {
		return false
	}
	return containsAny(subject, []string{"delayed", "warning", "delay"}) ||
		containsAny(l, []string{"will be retried", "will retry", "will continue to try", "still trying",
			"not yet been delivered", "has been delayed", "delivery is delayed", "will try again"})
}

func (m *message) isAutoReply() bool {
	h := &m.top
	as := strings.ToLower(h.get("auto-submitted"))
	if strings.HasPrefix(as, "auto-replied") {
		return true
	}
	if h.has("x-autoreply") || h.has("x-autorespond") || h.has("x-autoresponder") {
		return true
	}
	if p := strings.ToLower(h.get("precedence")); p == "auto_reply" {
		return true
	}
	subject := strings.ToLower(decodeWords(h.get("subject")))
	return containsAny(subject, autoReplySubjects)
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}

// noticeContext is what classification consults of the whole notice,
// computed once per message and, for the costlier parts, only when asked.
type noticeContext struct {
	lower string // the notice with white space collapsed, lower-cased

	phaseDone, ruleDone, verdictDone bool
	phase                            string
	rule                             *rule
	verdict                          bool

	// memo keeps the rule matches of the last diagnostics: the same
	// text is looked at when deciding whether to read the prose and
	// again when classifying.
	memo [4]ruleMemo
	next int
}

type ruleMemo struct {
	lower       string
	strong, any *rule
	set         bool
}

// matchBoth is defaultMatcher.matchBoth, remembered for the message.
func (nc *noticeContext) matchBoth(lower string) (strong, any *rule) {
	for _, m := range nc.memo {
		if m.set && m.lower == lower {
			return m.strong, m.any
		}
	}
	strong, any = defaultMatcher.matchBoth(lower, true)
	nc.memo[nc.next] = ruleMemo{lower: lower, strong: strong, any: any, set: true}
	nc.next = (nc.next + 1) % len(nc.memo)
	return strong, any
}

// anyRuleOf is the first rule, weak ones included, that lower matches.
func (nc *noticeContext) anyRuleOf(lower string) *rule {
	_, any := nc.matchBoth(lower)
	return any
}

// maxContext caps how much of a notice classification reads: the
// diagnostic of a real report is in its first pages, and a notice that
// runs on (a returned message nobody marked) must not cost more.
const maxContext = 32 << 10

func newNoticeContext(notice string) noticeContext {
	if len(notice) > maxContext {
		notice = truncate(notice, maxContext)
	}
	return noticeContext{lower: compactLower(notice)}
}

// smtpPhase is the SMTP command the notice says failed, or "".
func (nc *noticeContext) smtpPhase() string {
	if !nc.phaseDone {
		nc.phase, nc.phaseDone = smtpPhase(nc.lower), true
	}
	return nc.phase
}

// anyRule is the first rule, weak ones included, that the notice matches.
func (nc *noticeContext) anyRule() *rule {
	if !nc.ruleDone {
		nc.rule, nc.ruleDone = matchRule(nc.lower, true), true
	}
	return nc.rule
}

// hasVerdict tells whether the notice says, in the reporting MTA's own
// words, that the address does not exist.
func (nc *noticeContext) hasVerdict() bool {
	if !nc.verdictDone {
		nc.verdict, nc.verdictDone = verdictSet.contains(nc.lower), true
	}
	return nc.verdict
}

var bouncePhraseSet = newPhraseSet(bouncePhrases...)

// needsNested tells whether the report said too little about its failed
// recipients to stand alone: no recipient, or no reason for any of them.
// Gateways and virus scanners that relay a bounce wrap it whole, and the
// wrapped one then names the recipient and the remote server's reply.
func (m *message) needsNested(res *Result) bool {
	if len(m.returnedRaw) == 0 || m.depth >= maxNested {
		return false
	}
	if res.Kind == KindComplaint || res.Kind == KindAutoreply {
		return false
	}
	for _, rc := range res.Recipients {
		if rc.Reason != "undefined" && rc.Reason != "" {
			return false
		}
	}
	return m.returned != nil
}

// useNested reads the returned message as a report of its own and takes
// its recipients when it has a reason for them, keeping the identifiers of
// both for correlation.
func (m *message) useNested(res *Result) {
	inner := newMessageDepth(normalizeNewlines(m.returnedRaw), m.depth+1)
	var nr Result
	nr.Kind = KindNone
	inner.analyse(&nr)
	if !nr.IsBounce || len(nr.Recipients) == 0 {
		return
	}
	for _, rc := range nr.Recipients {
		if rc.Reason == "undefined" {
			return
		}
	}
	res.Recipients = nr.Recipients
	res.Kind = nr.Kind
	res.CandidateAddresses = append(res.CandidateAddresses, nr.CandidateAddresses...)
	if nr.EnvelopeID != "" {
		res.EnvelopeID = nr.EnvelopeID
	}
	if nr.OriginalMessageID != "" {
		res.OriginalMessageID = nr.OriginalMessageID
	}
	for k, v := range nr.OriginalHeaders {
		if res.OriginalHeaders == nil {
			res.OriginalHeaders = map[string]string{}
		}
		res.OriginalHeaders[k] = v
	}
}

// sameMailboxes tells whether the prose names, with a diagnostic each,
// the same local parts as the header, in the same order.
func sameMailboxes(header, prose []textRecipient) bool {
	for i, t := range prose {
		if t.diag == "" || !strings.EqualFold(localPart(t.addr), localPart(header[i].addr)) {
			return false
		}
	}
	return true
}

func localPart(addr string) string {
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		return addr[:at]
	}
	return addr
}
