package bounce

import (
	"regexp"
	"strings"
)

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// findStatus returns the first RFC 3463 code ("5.1.1") in s. It is a hand
// scanner rather than a regexp because IP addresses and version numbers
// look alike: the code must not be part of a longer dotted number.
func findStatus(s string) string {
	for i := 0; i+4 < len(s); i++ {
		c := s[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || s[i-1] == '.' || isLetter(s[i-1])) {
			continue
		}
		if s[i+1] != '.' {
			continue
		}
		j := i + 2
		k := j
		for k < len(s) && isDigit(s[k]) && k-j < 3 {
			k++
		}
		if k == j || k >= len(s) || s[k] != '.' {
			continue
		}
		l := k + 1
		m := l
		for m < len(s) && isDigit(s[m]) && m-l < 3 {
			m++
		}
		if m == l {
			continue
		}
		if m < len(s) && (isDigit(s[m]) || (s[m] == '.' && m+1 < len(s) && isDigit(s[m+1])) || isLetter(s[m])) {
			continue
		}
		return s[i:m]
	}
	return ""
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// findReplyCode returns the first SMTP reply code (4xx or 5xx) that stands
// alone in s, as in "550 5.1.1", "550-", "said: 554" or "(550)".
func findReplyCode(s string) string {
	for i := 0; i+2 < len(s); i++ {
		c := s[i]
		if c != '4' && c != '5' {
			continue
		}
		if !isDigit(s[i+1]) || !isDigit(s[i+2]) || s[i+1] > '5' {
			continue
		}
		if i > 0 {
			p := s[i-1]
			if isDigit(p) || isLetter(p) || p == '.' || p == ':' && i > 1 && isDigit(s[i-2]) || p == '-' || p == '/' || p == '_' || p == '+' || p == '#' {
				continue
			}
		}
		e := i + 3
		if e < len(s) {
			n := s[e]
			if n != ' ' && n != '-' && n != '\t' && n != '\n' && n != ')' && n != ']' && n != ',' && n != ':' {
				continue
			}
			// "550-5.7.1" is a multi-line reply; "2011-04" is a date.
			if n == '-' && e+1 < len(s) && isDigit(s[e+1]) && (e+2 >= len(s) || s[e+2] != '.') {
				continue
			}
			if n == ':' && e+1 < len(s) && isDigit(s[e+1]) {
				continue
			}
		}
		return s[i:e]
	}
	return ""
}

// statusClass returns the first digit of a status or reply code.
func statusClass(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

// matchRule returns the first rule matching the lower-cased text, skipping
// weak rules unless allowWeak.
func matchRule(lower string, allowWeak bool) *rule {
	if lower == "" {
		return nil
	}
	return defaultMatcher.match(lower, allowWeak)
}

// defaultMatcher is built once from the immutable rule table.
var defaultMatcher = newRuleMatcher(rules)

// reasonForStatus maps an RFC 3463 code to a reason; "" for codes that say
// nothing specific (X.0.0).
func reasonForStatus(st string) string {
	if len(st) < 5 {
		return ""
	}
	rest := st[2:]
	if r, ok := statusReasons[rest]; ok {
		return r
	}
	if rest[0] == '0' || len(rest) > 1 && rest[1] != '.' {
		return ""
	}
	// Subjects alone are vague; only use them for the unambiguous ones.
	switch rest[0] {
	case '1', '2', '4':
		return subjectReasons[rest[0]]
	}
	return ""
}

// classifyInput is what is known about one recipient before classifying.
type classifyInput struct {
	status  string // from the report, may be empty or unparsed
	action  string // from the report, may be empty
	diag    string // the recipient's own diagnostic text
	context string // the wider notice, consulted when diag says nothing
	// notice is context prepared once per message; when nil, context is
	// prepared here.
	notice *noticeContext
	// noticePhase lets the phase named anywhere in the notice stand for
	// this recipient's (when it is the only one).
	noticePhase bool
	temp        bool   // the notice says the failure is temporary (a warning)
	phase       string // the SMTP command the failure answered, when the prose says
	verdict     bool   // the reporting MTA itself says the address does not exist
	// localMailer says the diagnostic comes from a local delivery program
	// (Diagnostic-Code type x-unix: pipe, procmail, a mailer script).
	localMailer bool
}

// sesWrapped matches the way Amazon SES (and relays built like it) wrap
// the remote server's reply in a status of their own:
// "5.1.0 - Unknown address error 550-'5.2.2 <a@example.org>... Mailbox Full'".
var sesWrapped = regexp.MustCompile(`^([245]\.\d{1,3}\.\d{1,3}) - [^'"]{0,60}?([245]\d\d[ -]['"]?[245]\.\d{1,3}\.\d{1,3}.*)$`)

// unwrapReply returns the remote reply inside a wrapping status and the
// wrapper's status, or diag and "" when it is not wrapped.
func unwrapReply(diag string) (inner, wrapper string) {
	if len(diag) < 12 || !isDigit(diag[0]) || !strings.Contains(diag[:min(len(diag), 16)], " - ") {
		return diag, ""
	}
	m := sesWrapped.FindStringSubmatch(diag)
	if m == nil {
		return diag, ""
	}
	return m[2], m[1]
}

// classify fills Status, Action, Reason and Hard of rc.
func classify(rc *Recipient, in classifyInput) {
	if inner, wrapper := unwrapReply(in.diag); wrapper != "" {
		// The wrapper's code is the relay's guess; the remote reply in
		// it is what the receiving server said.
		in.diag = inner
		if findStatus(in.status) == wrapper {
			in.status = ""
		}
	}
	st := findStatus(in.status)
	diagLower := lowerASCII(in.diag)
	ds := findStatus(in.diag)
	code := findReplyCode(in.diag)
	if ds != "" && (st == "" || isGeneric(st) && ds[0] == st[0]) {
		st = ds
	}
	if in.notice == nil {
		nc := newNoticeContext(in.context)
		in.notice = &nc
	}
	ctxLower := ""
	if in.notice.lower != diagLower {
		ctxLower = in.notice.lower
	}
	if code == "" && st == "" && ctxLower != "" {
		code = findReplyCode(ctxLower)
		if s := findStatus(ctxLower); s != "" {
			st = s
		}
	}

	explicit := st
	action := strings.ToLower(in.action)
	switch action {
	case "failed", "delayed", "delivered", "relayed", "expanded":
	default:
		// Truncated or invented actions are derived like missing ones.
		action = ""
	}
	class := statusClass(st)
	if class == 0 {
		class = statusClass(code)
	}
	if class == 0 {
		switch {
		case action == "delayed" || in.temp:
			class = '4'
		case action == "delivered" || action == "relayed" || action == "expanded":
			class = '2'
		}
	}

	reason := ""
	var ru *rule
	if class != '2' {
		var anyRule *rule
		if remote := remoteReply(diagLower); remote != "" {
			// What the remote server said is more specific than the
			// reporting MTA's summary around it ("sender was rejected").
			ru = matchRule(remote, false)
		}
		if diagLower != "" {
			var strong *rule
			strong, anyRule = in.notice.matchBoth(diagLower)
			if ru == nil {
				ru = strong
			}
		}
		if ru != nil && ru.reason == "expired" {
			// "Gave up after N hours" says when, not why: a cause named
			// beside it (a DNS failure, a refused connection, a local
			// error) is the better reason.
			if cause, _ := defaultMatcher.matchBothSkip(diagLower, false, "expired"); cause != nil {
				ru = cause
			}
		}
		if ru != nil {
			reason = ru.reason
		}
		if reason == "" {
			reason = reasonForStatus(st)
		}
		if reason == "" {
			if ru = anyRule; ru != nil {
				reason = ru.reason
			}
		}
		if reason == "" && ctxLower != "" {
			if ru = in.notice.anyRule(); ru != nil {
				reason = ru.reason
			}
		}
	}
	if class == 0 {
		class = '5'
		if ru != nil && ru.reason == "delayed" {
			class = '4'
		}
	}
	if st == "" {
		switch {
		case class == '2':
			st = "2.0.0"
		case ru != nil && ru.status != "":
			st = string(class) + ru.status[1:]
		default:
			st = string(class) + ".0.0"
		}
	} else if st[0] != class && class != 0 && statusClass(st) == 0 {
		st = string(class) + st[1:]
	}

	if action == "" {
		switch {
		case class == '2':
			action = "delivered"
		case class == '4' && in.temp:
			action = "delayed"
		default:
			action = "failed"
		}
	}
	switch {
	case action == "delivered" || action == "relayed" || action == "expanded":
		reason = "delivered"
	case action == "delayed":
		// A warning is not a verdict: keep a cause it names, but never
		// one that would make the address dead, and call a timeout or
		// an unexplained wait a delay.
		switch {
		case reason == "hostunknown":
			reason = "networkerror"
		case reason == "" || reason == "undefined" || reason == "expired" || isDeadReason(reason) ||
			reason == "networkerror" && (timedOut(diagLower) || ru == nil):
			// A network status code alone (4.4.x) only says it waits.
			reason = "delayed"
		}
	case reason == "":
		reason = "undefined"
	case reason == "delayed":
		// A failure that was a delay in the end has expired.
		reason = "expired"
	}
	phase := in.phase
	if phase == "" && (isDeadReason(reason) || reason == "hostunknown") {
		phase = smtpPhase(diagLower)
		if phase == "" && in.noticePhase {
			phase = in.notice.smtpPhase()
		}
	}
	verdict := in.verdict || reason == "userunknown" && in.notice.hasVerdict()
	if action == "failed" && isDeadReason(reason) && phase == "mail" {
		// A refusal at MAIL FROM is about our sender address; it must
		// never suppress the recipient.
		reason = "rejected"
	}
	if reason == "hostunknown" && phase == "data" && (strings.Contains(diagLower, "from:") || strings.Contains(diagLower, "sender")) {
		// After the recipient was accepted, an unknown domain that the
		// reply ties to From or the sender is ours, not the recipient's.
		reason = "rejected"
	}
	if reason == "userunknown" && !strings.HasPrefix(explicit[min(1, len(explicit)):], ".1.") &&
		(phase == "data" || phase == "" && code != "" && !verdict) && !verdictSet.contains(diagLower) {
		// The server refused with "user unknown" wording but neither its
		// status code nor the phase says it refused the recipient: after
		// DATA that is a content or sender filter speaking (mobile
		// carriers answer this way), and a bare reply of unknown phase
		// is no better evidence. Only a refusal at RCPT TO, an X.1.x
		// status or the reporting MTA's own verdict make the address dead.
		reason = "filtered"
		if explicit == "" {
			st = string(st[0]) + ".2.0"
		}
	}
	if in.localMailer && action == "failed" {
		switch reason {
		case "undefined", "expired", "networkerror", "delayed":
			// A local delivery program failed; whatever it printed,
			// the fault is on the receiving system.
			reason = "systemerror"
		}
	}
	if action == "failed" && reason == "hostunknown" && statusClass(st) == '4' {
		// A temporary DNS answer (SERVFAIL, a lookup timeout) is a
		// network problem, not proof that the domain does not exist.
		reason = "networkerror"
	}
	if action == "failed" {
		switch {
		case reason == "networkerror" && timedOut(diagLower):
			// The MTA gave up after its connections kept timing out.
			reason = "expired"
		case class == '4' && (reason == "undefined" || reason == "delayed"):
			// The MTA gave up retrying a temporary failure.
			reason = "expired"
		}
	}
	rc.Status = st
	rc.Action = action
	rc.Reason = reason
	rc.Hard = action == "failed" && isHard(reason, st)
}

// isHard tells whether a failure means the address is dead: the mailbox or
// domain does not exist or has moved, at whatever status class the MTA
// gave up with, or the domain does not exist or accepts no mail at all
// (permanently only).
func isHard(reason, status string) bool {
	switch reason {
	case "userunknown", "hasmoved":
		return true
	case "hostunknown", "notaccept":
		// A temporary DNS answer is no proof the domain is gone.
		return statusClass(status) == '5'
	}
	return false
}

// phaseMarkers are lower-case phrases that tell which SMTP command a
// reply answered, as MTAs write it in diagnostics and transcripts.
var phaseMarkers = []struct{ text, phase string }{
	// Protocol text, not a "RCPT TO: a@b" line that lists the envelope.
	{"after rcpt to", "rcpt"}, {"in reply to rcpt to", "rcpt"}, {">>> rcpt to", "rcpt"},
	{"rcpt to:<", "rcpt"}, {"rcpt to: <", "rcpt"}, {"rcpt to command", "rcpt"}, {"rcpt to response", "rcpt"},
	{"rcpt_to", "rcpt"}, {"smtp:rcpt", "rcpt"},
	{"does not like recipient", "rcpt"}, {"recipient address rejected", "rcpt"},
	{"after mail from", "mail"}, {"in reply to mail from", "mail"}, {">>> mail from", "mail"},
	{"smtp:mail", "mail"}, {"does not like sender", "mail"}, {"didn't like the sender", "mail"},
	{"end of data", "data"}, {"in reply to data command", "data"}, {"after data", "data"},
	{">>> data", "data"}, {"smtp command data", "data"}, {"failed after i sent the message", "data"},
	{"in reply to end of data", "data"}, {"data command", "data"},
}

var phaseSet = func() *phraseSet {
	texts := make([]string, len(phaseMarkers))
	for i, m := range phaseMarkers {
		texts[i] = m.text
	}
	return newPhraseSet(texts...)
}()

// smtpPhase returns the SMTP command ("mail", "rcpt", "data") that a text
// says a refusal answered, or "". When several are named (a transcript),
// the last one is the command that failed.
func smtpPhase(text string) string {
	found := -1
	phaseSet.scanFold(text, func(k, _ int) bool { found = k; return true })
	if found >= 0 {
		return phaseMarkers[found].phase
	}
	return ""
}

// verdictPhrases are lower-case phrases with which a reporting MTA gives
// its own verdict that an address does not exist (rather than quoting a
// remote reply).
var verdictPhrases = []string{
	"address not found", "address couldn't be found", "address could not be found",
	"doesn't have a yahoo", // Yahoo answers this after DATA for accounts that do not exist
}

var verdictSet = newPhraseSet(verdictPhrases...)

// remoteReplyMarkers introduce, in a reporting MTA's prose, the reply the
// remote server gave.
var remoteReplyMarkers = []string{"remote host said:", "the error that the other server returned was:", "the response was:", "the response from the remote server was:"}

// remoteReply returns the lower-cased text after a remoteReplyMarkers
// phrase, or "".
func remoteReply(lower string) string {
	for _, m := range remoteReplyMarkers {
		if i := strings.Index(lower, m); i >= 0 {
			return lower[i+len(m):]
		}
	}
	return ""
}

// timedOut tells whether a lower-cased diagnostic blames timeouts, the
// usual story of a delivery that was retried until the MTA gave up.
func timedOut(lower string) bool {
	return strings.Contains(lower, "timed out") || strings.Contains(lower, "timeout") ||
		strings.Contains(lower, "time out") || strings.Contains(lower, "did not accept our requests to connect") ||
		strings.Contains(lower, "server did not respond") || strings.Contains(lower, "server didn't respond")
}

func isGeneric(st string) bool {
	return strings.HasSuffix(st, ".0.0") || strings.HasPrefix(st[1:], ".0.")
}

// isDeadReason tells whether a reason means the address can not receive
// mail at all, as opposed to refusing this message or this sender.
func isDeadReason(reason string) bool {
	switch reason {
	case "userunknown", "hostunknown", "hasmoved", "notaccept":
		return true
	}
	return false
}

// kindOf decides the kind of a report from its recipients.
func kindOf(recips []Recipient) Kind {
	if len(recips) == 0 {
		return KindNone
	}
	failed, delayed := 0, 0
	hard := false
	for _, rc := range recips {
		switch rc.Action {
		case "delivered", "relayed", "expanded":
			continue
		case "delayed":
			delayed++
			continue
		}
		failed++
		if rc.Hard {
			hard = true
		}
	}
	switch {
	case hard:
		return KindHard
	case failed > 0:
		return KindSoft
	case delayed > 0:
		return KindDelayed
	}
	return KindNone
}
