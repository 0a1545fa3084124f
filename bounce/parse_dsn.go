package bounce

import (
	"encoding/json"
	"strings"
)

// dsnRecipient is one per-recipient field group of an RFC 3464 report.
type dsnRecipient struct {
	final, original, action, status, diag, remoteMTA string
	diagType                                         string // "smtp", "x-unix", ... lower-cased
}

func (r dsnRecipient) empty() bool {
	return r.final == "" && r.original == "" && r.action == "" && r.status == ""
}

// dsnReport is the machine-readable part of a delivery status notification.
type dsnReport struct {
	envelopeID string
	recips     []dsnRecipient
}

// fieldLines calls fn for each "Name: value" field of a report body, with
// folded lines joined, and with name "" for a blank line. Lines that are no
// field at all are skipped, so that a report embedded in prose still reads.
func fieldLines(text string, fn func(name, value string)) {
	var name, value string
	flush := func() {
		if name != "" {
			fn(name, value)
		}
		name, value = "", ""
	}
	for line := range strings.SplitSeq(text, "\n") {
		if strings.TrimSpace(line) == "" {
			flush()
			fn("", "")
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && name != "" {
			value += " " + strings.TrimSpace(line)
			continue
		}
		flush()
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || !isFieldName([]byte(line[:colon])) {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(line[:colon]))
		value = strings.TrimSpace(line[colon+1:])
	}
	flush()
}

// parseDSN reads the fields of a delivery-status body. It tolerates
// reports that omit the blank lines between recipients.
func parseDSN(text string) dsnReport {
	var rep dsnReport
	var cur dsnRecipient
	push := func() {
		if !cur.empty() {
			rep.recips = append(rep.recips, cur)
		}
		cur = dsnRecipient{}
	}
	fieldLines(text, func(name, value string) {
		switch name {
		case "":
			if cur.final != "" || cur.original != "" {
				push()
			}
		case "original-envelope-id":
			rep.envelopeID = value
		case "final-recipient":
			if cur.final != "" {
				push()
			}
			cur.final = typedValue(value)
		case "original-recipient":
			if cur.original != "" {
				push()
			}
			cur.original = typedValue(value)
		case "x-actual-recipient":
			if cur.final == "" {
				cur.final = typedValue(value)
			}
		case "action":
			cur.action = strings.ToLower(strings.TrimSpace(strings.SplitN(value, " ", 2)[0]))
		case "status":
			cur.status = value
		case "diagnostic-code":
			cur.diag = typedValue(value)
			if t, _, ok := strings.Cut(value, ";"); ok && len(t) < 20 {
				cur.diagType = strings.ToLower(strings.TrimSpace(t))
			}
		case "remote-mta":
			cur.remoteMTA = typedValue(value)
		}
	})
	push()
	return rep
}

// dsnAddress returns the address of an address-type DSN field value
// ("rfc822; user@host"). The value is one address by definition, so a
// host without a dot (a local relay's name) is accepted, which the
// scanner for prose rightly refuses.
func dsnAddress(v string) string {
	a := strings.Trim(strings.TrimSpace(typedValue(v)), "<>")
	if at := strings.IndexByte(a, '@'); at > 0 && at < len(a)-1 && !strings.ContainsAny(a, " \t,;<>()\"") {
		return a
	}
	return firstAddress(v)
}

// typedValue strips the "type;" prefix of DSN fields like
// "rfc822; user@example.org" or "smtp; 550 ...".
func typedValue(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ';'); i > 0 && i < 20 && !strings.ContainsAny(v[:i], " <@") {
		v = strings.TrimSpace(v[i+1:])
	}
	return v
}

// feedbackReport is the machine-readable part of an ARF report.
type feedbackReport struct {
	feedbackType string
	recipients   []string
}

func parseFeedback(text string) feedbackReport {
	var fr feedbackReport
	fieldLines(text, func(name, value string) {
		switch name {
		case "feedback-type":
			fr.feedbackType = strings.ToLower(value)
		case "original-rcpt-to", "removal-recipient":
			if a := firstAddress(value); a != "" {
				fr.recipients = append(fr.recipients, a)
			}
		}
	})
	return fr
}

// sesNotification is the JSON that Amazon SES sends through SNS in place of
// a DSN. Only the fields used here are declared.
type sesNotification struct {
	Type             string `json:"Type"`
	Message          string `json:"Message"`
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           struct {
		BounceType        string `json:"bounceType"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
		ReportingMTA string `json:"reportingMTA"`
	} `json:"bounce"`
	Complaint struct {
		ComplainedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
		FeedbackType string `json:"complaintFeedbackType"`
	} `json:"complaint"`
	Delivery struct {
		Recipients []string `json:"recipients"`
	} `json:"delivery"`
	Mail struct {
		MessageID string `json:"messageId"`
		Source    string `json:"source"`
	} `json:"mail"`
}

// parseSES finds an SES notification in a notice text.
func parseSES(text string) (*sesNotification, bool) {
	i := strings.IndexByte(text, '{')
	if i < 0 || !strings.Contains(text, "Type\"") {
		return nil, false
	}
	j := strings.LastIndexByte(text, '}')
	if j <= i {
		return nil, false
	}
	// Sendmail splits over-long lines with "!" and a folded newline; JSON
	// never needs a newline, so both go.
	body := strings.ReplaceAll(text[i:j+1], "!\n ", "")
	body = strings.ReplaceAll(body, "\n", "")
	var n sesNotification
	if err := json.Unmarshal([]byte(body), &n); err != nil {
		return nil, false
	}
	if n.Message != "" && strings.HasPrefix(strings.TrimSpace(n.Message), "{") {
		var inner sesNotification
		if err := json.Unmarshal([]byte(n.Message), &inner); err == nil {
			n = inner
		}
	}
	if n.NotificationType == "" {
		n.NotificationType = n.EventType
	}
	if n.NotificationType == "" {
		return nil, false
	}
	return &n, true
}
