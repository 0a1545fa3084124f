package bounce

import (
	"strings"
	"testing"
)

// ruleCases holds at least one real-world wording per rule; the test also
// fails when a rule is never the first to match, so a rule that a reorder
// made unreachable is noticed.
var ruleCases = []struct {
	text   string
	reason string
}{
	{`procmail: Couldn't create "/var/spool/mail/neko"`, "systemerror"},
	{`pipe to |/usr/local/bin/script failed`, "systemerror"},
	{`452 4.3.1 Insufficient system storage`, "systemerror"},
	{`452 4.4.5 Insufficient disk space; try again later`, "systemerror"},
	{`550-5.7.1 Messages with multiple addresses in From: header are not accepted`, "policyviolation"},
	{`554 5.7.0 Header error`, "policyviolation"},
	{`551 User not local; please try <new@example.org>`, "hasmoved"},
	{`550 5.1.6 address has moved`, "hasmoved"},
	{`556 5.1.10 Recipient address has null MX`, "notaccept"},
	{`No mx record found for domain=example.org`, "notaccept"},
	{`Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)`, "notaccept"},
	{`550 5.1.1 <a@example.org>: Recipient address rejected: User unknown in virtual mailbox table`, "userunknown"},
	{`550 sorry, no mailbox here by that name. (#5.1.1)`, "userunknown"},
	{`550-5.1.1 The email account that you tried to reach does not exist.`, "userunknown"},
	{`RESOLVER.ADR.RecipNotFound; not found`, "userunknown"},
	{`This user doesn't have a yahoo.com account`, "userunknown"},
	{`Invalid final delivery userid: a@example.org`, "userunknown"},
	{`Host or domain name not found. Name service error for name=example.invalid type=A: Host not found`, "hostunknown"},
	{`Unrouteable address`, "hostunknown"},
	{`553 neko.example.com does not exist`, "hostunknown"},
	{`550 5.7.26 This message does not pass DMARC`, "securityerror"},
	{`550-Please turn on SMTP Authentication in your mail client.`, "securityerror"},
	{`500 Remote server does not support TLS (state 6).`, "securityerror"},
	{`554 5.7.1 <a@example.org>: Relay access denied`, "rejected"},
	{`Connected to 192.0.2.1 but sender was rejected.`, "rejected"},
	{`554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org`, "blocked"},
	{`550 5.7.1 Mail from IP 192.0.2.1 was rejected due to listing in Spamhaus SBL`, "blocked"},
	{`421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected volume or user complaints`, "blocked"},
	{`550 domain [example.com] mismatches client ip 192.0.2.225.`, "blocked"},
	{`550 5.7.1 Message rejected as spam by Content Filtering.`, "spamdetected"},
	{`554 5.7.1 Your message looks like SPAM or has been reported as SPAM`, "spamdetected"},
	{`421 4.7.0 Too many concurrent SMTP connections from this IP`, "toomanyconn"},
	{`450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages`, "toomanyconn"},
	{`552 5.2.2 Mailbox full`, "mailboxfull"},
	{`452 4.2.2 The email account that you tried to reach is over quota`, "mailboxfull"},
	{`552 5.3.4 Message size exceeds fixed limit`, "mesgtoobig"},
	{`550 5.2.1 The email account that you tried to reach is disabled.`, "suspend"},
	{`550 Mailbox is frozen.`, "suspend"},
	{`550 5.7.1 Message rejected due to local policy`, "policyviolation"},
	{`The group you tried to contact (list) may not exist, or you may not have permission to post messages to the group.`, "rejected"},
	{`550 5.7.1 Refused due to recipient preferences`, "filtered"},
	{`550 Message filtered by the domain filter`, "filtered"},
	{`retry timeout exceeded`, "expired"},
	{`Envelope expired`, "expired"},
	{`this message has been in the queue too long`, "expired"},
	{`connect to mx.example.org[192.0.2.1]:25: Connection timed out`, "networkerror"},
	{`Sorry, I wasn't able to establish an SMTP connection: no route to host`, "networkerror"},
	{`Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)`, "networkerror"},
	{`Unable to contact LDAP server. (#4.4.3)`, "systemerror"},
	{`550 5.7.1 Unable to relay for a@example.org`, "rejected"},
	{`503 Improper sequence of commands`, "systemerror"},
	{`504 Command parameter not implemented`, "systemerror"},
	{`550 Rejected`, "rejected"},
	{`451 Please try again later`, "toomanyconn"},
	{`Message will be retried for 4 more days`, "delayed"},
}

func TestRules(t *testing.T) {
	first := make([]bool, len(rules))
	for _, tc := range ruleCases {
		lower := strings.ToLower(tc.text)
		ru := matchRule(lower, true)
		if ru == nil {
			t.Errorf("%q matched no rule, want %s", tc.text, tc.reason)
			continue
		}
		if ru.reason != tc.reason {
			t.Errorf("%q = %s, want %s", tc.text, ru.reason, tc.reason)
		}
		for i := range rules {
			if &rules[i] == ru {
				first[i] = true
			}
		}
	}
	for i, hit := range first {
		if !hit {
			t.Errorf("rule %d (%s: %.60s) is never the first match of any case", i, rules[i].reason, rules[i].re.String())
		}
	}
}

// TestMatcherAgreesWithRegexps checks that the literal prefilter never
// hides a match the plain regexps would find.
func TestMatcherAgreesWithRegexps(t *testing.T) {
	for _, tc := range ruleCases {
		lower := strings.ToLower(tc.text)
		var want *rule
		for i := range rules {
			if rules[i].re.MatchString(lower) {
				want = &rules[i]
				break
			}
		}
		if got := defaultMatcher.match(lower, true); got != want {
			t.Errorf("%q: matcher gives %v, regexps give %v", tc.text, got, want)
		}
	}
}

func TestWeakRulesWaitForStatus(t *testing.T) {
	if ru := matchRule("550 rejected", false); ru != nil {
		t.Errorf("strong-only match returned weak rule %s", ru.reason)
	}
}

func TestFindStatus(t *testing.T) {
	tests := []struct{ in, want string }{
		{"550 5.1.1 <a@b>... User unknown", "5.1.1"},
		{"host [192.0.2.153] said 550", ""},
		{"10.5.2.1 relay", ""},
		{"#5.4.4", "5.4.4"},
		{"(#4.4.1)", "4.4.1"},
		{"Status: 5.1.10 (null mx)", "5.1.10"},
		{"version 2.6.0a", ""},
		{"4.7.650 blocked", "4.7.650"},
	}
	for _, tc := range tests {
		if got := findStatus(tc.in); got != tc.want {
			t.Errorf("findStatus(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFindReplyCode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"said: 550 5.1.1 user unknown", "550"},
		{"550-5.7.1 first line", "550"},
		{"Thu, 29 Apr 2011 23:34:45 +0900", ""},
		{"port 4500 closed", ""},
		{"id 554abc", ""},
		{"(421) try later", "421"},
		{"192.0.2.45 refused", ""},
	}
	for _, tc := range tests {
		if got := findReplyCode(tc.in); got != tc.want {
			t.Errorf("findReplyCode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		in     classifyInput
		status string
		action string
		reason string
		hard   bool
	}{
		{"explicit", classifyInput{status: "5.1.1", action: "failed", diag: "550 5.1.1 User unknown"}, "5.1.1", "failed", "userunknown", true},
		{"generic status refined by diag", classifyInput{status: "5.0.0", diag: "550 5.2.2 mailbox full"}, "5.2.2", "failed", "mailboxfull", false},
		{"status only", classifyInput{status: "5.1.2"}, "5.1.2", "failed", "hostunknown", true},
		{"reply code only, phase unknown", classifyInput{diag: "550 no such user here"}, "5.2.0", "failed", "filtered", false},
		{"reply code at RCPT TO", classifyInput{diag: "550 no such user here", phase: "rcpt"}, "5.1.1", "failed", "userunknown", true},
		{"reply code with the reporter's verdict", classifyInput{diag: "550 <a@example.org>: User unknown", verdict: true}, "5.1.1", "failed", "userunknown", true},
		{"own wording without a reply code", classifyInput{diag: "Unknown user: a@example.org"}, "5.1.1", "failed", "userunknown", true},
		{"X.1.1 after DATA stays dead", classifyInput{status: "5.1.1", diag: "550 User unknown", phase: "data"}, "5.1.1", "failed", "userunknown", true},
		{"Yahoo account wording after DATA", classifyInput{diag: "554 delivery error: dd This user doesn't have a yahoo.com account", phase: "data"}, "5.1.1", "failed", "userunknown", true},
		{"transcript names RCPT", classifyInput{diag: ">>> RCPT To:<a@example.org> <<< 550 User unknown"}, "5.1.1", "failed", "userunknown", true},
		{"temporary user unknown given up is dead", classifyInput{diag: "450 4.1.1 <a@example.org>: Recipient address rejected: User unknown", action: "failed"}, "4.1.1", "failed", "userunknown", true},
		{"temporary unknown domain is a network error", classifyInput{status: "4.1.2", action: "failed"}, "4.1.2", "failed", "networkerror", false},
		{"cause named beside the expiry wins", classifyInput{status: "4.4.7", action: "failed", diag: "Deferred: Name server: example.org.: host name lookup failure Message could not be delivered for 5 days"}, "4.4.7", "failed", "networkerror", false},
		{"gave up after timeouts at 5.x.x", classifyInput{status: "5.4.1", action: "failed", diag: "The recipient server did not accept our requests to connect."}, "5.4.1", "failed", "expired", false},
		{"gave up after timeouts, expiry wording", classifyInput{action: "failed", diag: "554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.2 Connection timed out>"}, "4.4.7", "failed", "expired", false},
		{"gave up on refused connections", classifyInput{status: "4.4.1", action: "failed", diag: "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1) I'm not going to try again; this message has been in the queue too long."}, "4.4.1", "failed", "networkerror", false},
		{"SES-wrapped reply", classifyInput{status: "5.1.0", action: "failed", diag: "5.1.0 - Unknown address error 550-'5.2.2 <a@example.org>... Mailbox Full' (delivery attempts: 0)"}, "5.2.2", "failed", "mailboxfull", false},
		{"SES-wrapped user unknown", classifyInput{status: "5.1.0", action: "failed", diag: "5.1.0 - Unknown address error 550-'5.1.1 <a@example.org>... User unknown' (delivery attempts: 0)"}, "5.1.1", "failed", "userunknown", true},
		{"local mailer failure", classifyInput{status: "4.3.0", action: "failed", diag: "temporary failure", localMailer: true}, "4.3.0", "failed", "systemerror", false},
		{"remote reply beats the summary", classifyInput{action: "failed", diag: "Connected to 192.0.2.1 but sender was rejected. Remote host said: 421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected volume or user complaints"}, "4.7.0", "failed", "blocked", false},
		{"delay keeps its cause", classifyInput{status: "4.0.0", action: "delayed", diag: "451 4.0.0 Operating system error"}, "4.0.0", "delayed", "systemerror", false},
		{"delay with a network status only", classifyInput{status: "4.4.0", action: "delayed"}, "4.4.0", "delayed", "delayed", false},
		{"delay never carries a dead reason", classifyInput{status: "4.1.1", action: "delayed", diag: "450 4.1.1 User unknown"}, "4.1.1", "delayed", "delayed", false},
		{"sender domain refused after DATA", classifyInput{diag: "SMTP error from remote mail server after end of data: 550 5.2.0 <s@example.com> From: Domain is invalid. Please provide a valid From:"}, "5.2.0", "failed", "rejected", false},
		{"temporary null MX is not dead", classifyInput{status: "4.0.0", action: "failed", diag: "null MX"}, "4.0.0", "failed", "notaccept", false},
		{"permanent null MX is dead", classifyInput{diag: "556 5.1.10 Recipient address has null MX"}, "5.1.10", "failed", "notaccept", true},
		{"temporary user unknown is not dead", classifyInput{diag: "450 4.1.1 user unknown", action: "delayed"}, "4.1.1", "delayed", "delayed", false},
		{"policy block is soft", classifyInput{status: "5.7.1", diag: "550 5.7.1 blocked using zen.spamhaus.org"}, "5.7.1", "failed", "blocked", false},
		{"sender refused at MAIL FROM", classifyInput{diag: "SMTP error from remote mail server after MAIL FROM:<x@y.example>: 553 5.1.8 sender domain does not exist"}, "5.1.8", "failed", "rejected", false},
		{"user unknown after DATA", classifyInput{diag: "550 User unknown (in reply to end of DATA command)"}, "5.2.0", "failed", "filtered", false},
		{"gave up on temporary failure", classifyInput{status: "4.4.1", action: "failed", diag: "connect to x: Connection timed out"}, "4.4.1", "failed", "expired", false},
		{"delivered", classifyInput{status: "2.0.0", action: "delivered"}, "2.0.0", "delivered", "delivered", false},
		{"truncated action", classifyInput{status: "5.1.1", action: "fai"}, "5.1.1", "failed", "userunknown", true},
		{"nothing known", classifyInput{}, "5.0.0", "failed", "undefined", false},
		{"warning prose", classifyInput{diag: "connection timed out", temp: true}, "4.4.1", "delayed", "delayed", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rc Recipient
			classify(&rc, tc.in)
			if rc.Status != tc.status || rc.Action != tc.action || rc.Reason != tc.reason || rc.Hard != tc.hard {
				t.Errorf("got %s %s %s hard=%v, want %s %s %s hard=%v", rc.Status, rc.Action, rc.Reason, rc.Hard, tc.status, tc.action, tc.reason, tc.hard)
			}
		})
	}
}

func TestSMTPPhase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"host mx said: 550 user unknown (in reply to rcpt to command)", "rcpt"},
		{"host mx said: 550 user unknown (in reply to end of data command)", "data"},
		{"smtp error from remote mail server after mail from:<a@example.org>: 553 no", "mail"},
		{">>> rcpt to:<a@example.org> <<< 250 ok >>> data <<< 550 refused", "data"},
		{"192.0.2.1 does not like recipient. remote host said: 550 no", "rcpt"},
		{"550 user unknown", ""},
		{"message details: mail from: a@example.org rcpt to: b@example.org", ""},
		{"sorry, no smtp connection got far enough; most progress was rcpt to response; remote host said: 550 unknown user", "rcpt"},
		{"host mx said: 550 5.1.1 <b@example.org>: recipient address rejected", "rcpt"},
	}
	for _, tc := range tests {
		if got := smtpPhase(tc.in); got != tc.want {
			t.Errorf("smtpPhase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		name   string
		recips []Recipient
		want   Kind
	}{
		{"none", nil, KindNone},
		{"hard wins", []Recipient{{Action: "failed"}, {Action: "failed", Hard: true}}, KindHard},
		{"soft", []Recipient{{Action: "failed"}, {Action: "delayed"}}, KindSoft},
		{"all delayed", []Recipient{{Action: "delayed"}, {Action: "delayed"}}, KindDelayed},
		{"delivered only", []Recipient{{Action: "delivered"}}, KindNone},
	}
	for _, tc := range tests {
		if got := kindOf(tc.recips); got != tc.want {
			t.Errorf("%s: kindOf = %s, want %s", tc.name, got, tc.want)
		}
	}
}
