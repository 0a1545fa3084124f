package bounce

import "regexp"

// rule infers a reason, and a status when the report gave none, from the
// wording of a diagnostic. Rules are tried in order on the lower-cased
// text, so the specific ones come before the generic ones. A weak rule is
// only consulted after the reason implied by an explicit status code, since
// its wording ("rejected", "denied") says less than a code does.
type rule struct {
	re     *regexp.Regexp
	status string // subject.detail matter; the class comes from context when known
	reason string
	weak   bool
}

func r(expr, status, reason string) rule {
	return rule{re: regexp.MustCompile(expr), status: status, reason: reason}
}

func weak(expr, status, reason string) rule {
	x := r(expr, status, reason)
	x.weak = true
	return x
}

// rules is the wording table. Phrases come from the documented and
// observed texts of Postfix, Sendmail, Exim, qmail, Exchange/Office 365,
// Gmail, Yahoo, Courier, Notes, OpenSMTPD and large providers; each rule
// has a test case in rules_test.go.
var rules = []rule{
	// Failures of the local delivery agent say nothing about the address,
	// even when they quote "no such user" from a script.
	r(`procmail: |maildrop: |command died with status|mail\.local: |pipe to \||operating system error|insufficient permission|error while writing|local delivery failed|mailer error`, "5.3.0", "systemerror"),
	// Server-side storage, not the recipient's quota.
	r(`insufficient (?:disk|system) (?:space|storage)|system storage|disk (?:is )?full|upstream error`, "4.3.1", "systemerror"),
	r(`multiple addresses in from|header error|(?:its|message|the) content (?:presents|is|was|has)|potential security issue`, "5.7.1", "policyviolation"),

	// Dead addresses first: these decide suppression.
	r(`has moved|address (?:has )?changed|user not local; please try|moved (?:permanently|to a new address)|no longer (?:at|with) this (?:address|company)`, "5.1.6", "hasmoved"),
	r(`null mx|does not accept (?:e-?)?mail|not accept(?:ing)? (?:any )?(?:e-?)?mail|accepts no mail|no mail service|domain does not receive mail|no (?:valid )?mx (?:record|host)|(?:couldn'?t|could not|can'?t|unable to) find (?:a|any) mail exchanger|no mail(?:-| )?exchanger`, "5.1.10", "notaccept"),
	r(`recipnotfound|recipientnotfound|user (?:is )?unknown|unknown (?:user|recipient|local[- ]part|address|mailbox|account|alias)|no such (?:user|mailbox|recipient|account|address|person|local user)|(?:user|recipient|mailbox|addressee|account|address|e-?mail address)(?: name)? (?:is )?(?:unknown|not (?:found|known|recogni[sz]ed|valid|listed|exist)|invalid|does(?: ?n[o']t| not) exist|doesn[o']t exist)|recipient (?:address )?rejected: (?:user unknown|undeliverable|unknown|invalid)|(?:invalid|bad|unknown) (?:destination )?(?:mailbox|recipient|user)|bad destination mailbox|not a valid (?:mailbox|user|recipient|address)|mailbox (?:not found|unavailable: user)|email account that you tried to reach does not exist|account (?:does not exist|not found|unknown)|(?:user|mailbox) doesn'?t exist|(?:doesn't|does not) have an? (?:\S+ )?account|no (?:such )?mailbox (?:here|by that name)|addressee unknown|no account by that name|unknown or illegal alias|recipient not (?:found|recogni[sz]ed)|address (?:couldn'?t|could not) be found|address not found|invalid (?:final delivery )?userid|unknown recipient|is not a known user|user does not exist|no valid recipients|recipient no longer on server|(?:user|recipient) not (?:local|on this server)|dest(?:ination)? address (?:is )?invalid|rejected: unknown user|mailbox does not exist|address does not exist|invalid recipient|no such recipient|userunknown|user account not (?:found|exist)|cannot find the recipient|unknown local user|recipient address rejected: access denied.*(?:not found|unknown)|not listed in (?:domino|public) directory|vdeliver: invalid or unknown virtual user|sorry, no mailbox here|mailbox unknown`, "5.1.1", "userunknown"),
	r(`(?:host|domain)(?: name)? (?:is )?(?:not found|unknown|does(?: ?n[o']t| not) exist)|unknown (?:host|domain)|no such (?:host|domain)|unroutable|unrouteable|nxdomain|name or service not known|domain (?:name )?(?:lookup|resolution) failed|host or domain name not found|illegal host/domain|bad destination system|no (?:valid )?mx (?:record|host)|mx (?:record )?(?:not found|lookup failed)|can'?t (?:resolve|find) (?:the )?(?:host|domain)|recipient domain .*(?:does not exist|not found|invalid)|domain (?:is )?(?:invalid|not exist)|dns error.*(?:domain|nxdomain|name)|invalid domain|no mail(?:-| )?(?:exchanger|server) (?:for|found)|does not exist in dns|domain not valid|domain (?:is )?not reachable|(?:^|\s)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,} does not exist`, "5.1.2", "hostunknown"),

	// Policy and reputation: pause, never suppress.
	r(`\bdmarc\b|\bspf\b|\bdkim\b|authentication (?:required|failed|failure|information)|smtp authentication|unauthenticated|not authenticated|authenticated sender|tls (?:is )?(?:required|failed)|starttls|encryption (?:is )?required|must (?:use|issue a) (?:tls|starttls)|(?:does not|doesn'?t|not) support (?:tls|starttls|secure)|tls (?:is )?not (?:supported|available)|certificate|security polic|sender (?:id|address) (?:verification|check) fail|arc (?:validation|check)`, "5.7.1", "securityerror"),
	r(`relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed)|prohibited)|sender (?:was |is )?rejected|sender address rejected`, "5.7.1", "rejected"),
	r(`user complaints|mismatches client ip|does not match (?:the )?(?:client|sender|connecting) ip|please use the smtp server|access denied|spamhaus|spamcop|barracuda(?:central)?|sorbs|dnsbl|rbl|blacklist|black list|block ?list(?:ed)?|deny ?list(?:ed)?|listed (?:in|on|at|by)|poor reputation|bad reputation|reputation|client host .*(?:rejected|blocked)|(?:ip|address|host|sender|domain|connection|client) (?:is |was |has been |have been )?(?:blocked|banned|blacklisted)|blocked (?:by|for|due|because|using)|access denied.*(?:ip|client)|reverse (?:dns|lookup|resolution)|ptr record|no ptr|rdns|dynamic ip|residential|not allowed to send (?:from|mail from) this|refused to talk to me|service unavailable;? client host|your (?:ip|network|server) (?:address )?(?:is|has)|rejected because .*ip|ip .* (?:is not allowed|not permitted)|\bblocked\b|mail from your (?:ip|domain|server) .* refused`, "5.7.1", "blocked"),
	r(`spam|junk mail|bulk mail|unsolicited|scored as|suspicious|phish|virus|malware|content (?:was )?rejected|message (?:content|body) (?:rejected|not accepted)|looks like (?:spam|junk)|classified as|mail rejete|mail rejected\.`, "5.7.1", "spamdetected"),
	r(`too many (?:connections|sessions|concurrent|simultaneous)|connection (?:rate )?limit|(?:rate|sending) limit|rate[- ]limited|too many (?:messages|recipients|mails)|exceeded (?:the )?(?:\S+ )?(?:rate|number of)|throttl|too fast|slow down|temporarily deferred|receiving mail at a rate|has exceeded .*(?:per|limit)`, "4.7.0", "toomanyconn"),
	r(`mailbox (?:is )?full|(?:quota|storage|mailbox size|disk space) (?:exceeded|limit|full)|over ?quota|exceeded (?:\S+ )?(?:storage|quota|mailbox)|insufficient (?:disk |system )?(?:space|storage)|mail ?folder is full|user.*over.*quota|full mailbox|exceeds? (?:his |her |the |its )?(?:mailbox|storage|quota)|mailbox has exceeded|mailbox .* (?:exceeded|over) (?:the )?(?:limit|quota|size)|too many messages in (?:this|the) mailbox|messages in recipient'?s mailbox exceeded|no space left|out of (?:disk )?space|mailbox (?:is )?over|quota`, "5.2.2", "mailboxfull"),
	r(`message (?:is )?too (?:big|large)|(?:message|mail) size (?:exceeds|exceeded|too|limit)|exceeds? (?:the )?(?:maximum|max|size)(?: allowed)? (?:message )?(?:size|length)|message length exceeds|size limit|too large|message exceeds .*(?:size|limit)|exceeded maximum message size|maximum message size`, "5.3.4", "mesgtoobig"),
	r(`disabled|suspended|inactive|deactivated|account (?:is |has been )?(?:locked|frozen|expired|closed|blocked)|(?:mailbox|account|address) (?:is )?(?:not active|unavailable: account)|no longer (?:active|in use|valid)|has been (?:closed|terminated|deleted)|temporarily disabled|is not (?:active|enabled)|mailbox (?:is )?(?:locked|on hold)|(?:mailbox|account) (?:is |has been )?(?:frozen|locked)|temporar(?:y|ily) locked`, "5.2.1", "suspend"),
	r(`polic(?:y|ies)|not (?:rfc )?compliant|rfc ?(?:5321|5322|2821|2822|822)|(?:header|message-id|from header).*(?:invalid|missing|malformed|required)|(?:invalid|missing|malformed) (?:\S+ )?header|violat|prohibited|not permitted by|forbidden|message refused|not allowed by (?:the )?(?:recipient|administrator)`, "5.7.1", "policyviolation"),
	r(`group you tried to contact|may not have permission to post|投稿する権限|groups\.google\.com/support`, "5.7.1", "rejected"),
	r(`filter(?:ed)?|not authori[sz]ed to (?:send|post)|permission to post|not (?:a )?member|only members|moderat|refused by (?:the )?recipient|recipient preferences|recipient has (?:rejected|blocked)|does not wish to receive|recipient (?:refuses|rejected your)`, "5.2.0", "filtered"),
	r(`envelope expired|retry time(?:out)? (?:exceeded|expired)|timeout exceeded|could not be delivered (?:with)?in|message (?:has )?expired|delivery time expired|cannot send message for \d+|was not delivered (?:for|within)|retry timeout|too long in (?:the )?queue|in the queue too long|exceeded (?:the )?max(?:imum)? (?:time|age|queue)|message (?:timed out|is too old)|could not deliver (?:for|within)|delivery (?:period|expired)|queue lifetime|max(?:imum)? (?:queue )?(?:life|retry) time|has been delayed .* (?:gave up|giving up)|giving up after|ttl expired|lifetime expired|mail could not be delivered for|expired after`, "4.4.7", "expired"),
	r(`connection (?:timed? ?out|refused|reset|closed|dropped|lost|failed)|timed? ?out|no route to host|network (?:is )?unreachable|host (?:is )?unreachable|(?:could|can)n?o?t connect|unable to connect|(?:wasn'?t|was not|not) able to establish|failed to connect|connect to .* failed|lost connection|no answer|(?:dns|lookup) (?:lookup )?(?:failed|failure|timeout|error)|temporary (?:dns|lookup|resolver) failure|loops? back to myself|mail loop|routing loop|loop detected|too many hops|hop count exceeded|mail forwarding loop|server (?:did not|didn'?t) (?:respond|accept our requests to connect)|tls handshake|broken pipe|name server`, "4.4.1", "networkerror"),
	r(`not permitted to relay|unable to relay|cannot relay|relay not permitted|rcpthosts|not (?:a )?(?:local|permitted) (?:domain|recipient)|sender (?:address |domain )?(?:rejected|not (?:allowed|permitted|verified)|verify failed|invalid|unknown)|(?:domain|address) of sender|sender (?:is )?(?:not|un)(?:allowed|verified)|from address (?:rejected|not)|envelope sender|bad sender|mail from.*(?:rejected|refused|denied|not allowed)|(?:reject|refus|deni)(?:ed)? (?:by|for) (?:the )?sender|sender verif|your (?:domain|email) .* not allowed|mailer-daemon .* rejected|return address|system (?:has )?rejected your`, "5.7.1", "rejected"),
	r(`command (?:parameter )?not implemented|improper sequence|bad sequence of commands|command unrecognized|unrecognized command|system (?:error|failure)|internal (?:server )?error|server error|local (?:error|delivery failed|configuration)|configuration error|i/o error|out of memory|insufficient (?:system )?resources|error (?:in|while) processing|mailer (?:error|failed)|(?:mail|delivery) (?:system|subsystem) (?:error|failure|problem)|unable to (?:process|complete)|command (?:died|failed|not found)|temporary local (?:problem|failure|error)|temporary (?:problem|error)|(?:directory|ldap) (?:server|lookup)|service (?:currently )?(?:unavailable|not available)|transaction failed|mail system (?:is )?(?:full|busy)|loop|duplicated message-id|program (?:failed|exited|error)|exit code|child status`, "5.3.0", "systemerror"),

	// Generic refusals say less than a status code, so they only decide
	// when there is none.
	weak(`rejected|refused|denied|not accepted|declined|not allowed|unacceptable|blocked`, "5.7.1", "rejected"),
	weak(`try (?:again )?later|resources temporarily`, "4.7.0", "toomanyconn"),
	weak(`delay(?:ed)?|defer(?:red)?|will (?:be )?retr(?:y|ied)|still trying|will keep trying|not yet been delivered`, "4.4.7", "delayed"),
}

// statusReasons gives the reason an RFC 3463 code implies, keyed by
// "subject.detail"; codes not listed fall back to their subject in
// subjectReasons.
var statusReasons = map[string]string{
	"1.1": "userunknown", "1.0": "userunknown", "1.3": "userunknown", "1.4": "userunknown",
	"1.2": "hostunknown", "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected",
	"1.10": "notaccept",
	"2.1":  "suspend", "2.2": "mailboxfull", "2.3": "mesgtoobig", "2.4": "systemerror",
	"3.1": "systemerror", "3.2": "notaccept", "3.4": "mesgtoobig",
	"4.1": "networkerror", "4.2": "networkerror", "4.3": "systemerror", "4.4": "hostunknown",
	"4.5": "toomanyconn", "4.6": "networkerror", "4.7": "expired",
	"5.3": "toomanyconn",
	"6.0": "policyviolation",
	"7.1": "rejected", "7.3": "securityerror", "7.4": "securityerror", "7.5": "securityerror", "7.6": "securityerror", "7.2": "rejected", "7.7": "policyviolation",
	"7.8": "securityerror", "7.9": "securityerror", "7.10": "securityerror", "7.11": "securityerror",
	"7.13": "suspend", "7.23": "securityerror", "7.24": "securityerror", "7.25": "blocked",
	"7.26": "securityerror", "7.27": "notaccept", "7.28": "spamdetected", "7.30": "securityerror",
}

var subjectReasons = map[byte]string{
	'1': "userunknown", '2': "mailboxfull", '3': "systemerror", '4': "networkerror",
	'5': "systemerror", '6': "policyviolation", '7': "policyviolation",
}

// returnedMarkers are lower-case phrases of the line that introduces the
// copy of the original message in free-text bounces.
var returnedMarkers = []string{
	"below this line is a copy of the message",
	"this is a copy of the message",
	"copy of the original message",
	"original message follows",
	"original message as follows",
	"original mail as follows",
	"original message headers",
	"----- original message -----",
	"------- returned message",
	"-------original message",
	"original message:",
	"original message header",
	"unsent message follows",
	"message header follows",
	"header of the original message",
	"copy of the message header",
	"headers of the original message",
	"original message below",
	"returned message follows",
	"content of the original message",
	"message follows",
	"--- original message",
	"the attachment contains the original",
	"-------original mail info", // m-FILTER
	"message text follows",      // Exim 3, smail
}

// recipientLabels are lower-case words that, right before an address,
// mark it as the failed recipient rather than a sender or a host.
var recipientLabels = []string{
	"rcpt to:", "rcpt to: ", "recipient:", "recipients:", "recipient address:", "address:",
	"unknown user:", "user unknown:", "failed:", "deliver message to:", "delivery to",
	"errors:", "could not be delivered to:", "not delivered to:", "to the following address:",
	"original-recipient:", "final-recipient:", "rfc822;", "your message to", "addressed to",
	"for", "message to", "mailbox", "user", "unable to deliver to",
}

// bounceSubjects are lower-case subject fragments of non-delivery reports.
var bounceSubjects = []string{
	"undeliverable", "undelivered", "delivery status notification", "delivery failure",
	"delivery failed", "delivery has failed", "failure notice", "returned mail", "mail delivery failed",
	"non-delivery", "nondelivery", "not delivered", "could not be delivered", "delivery notification",
	"mail system error", "delivery problem", "error sending", "there was an error", "delivery report",
	"mail delivery system", "delivery status", "warning: could not", "delayed mail", "delivery delayed",
	"returned to sender", "rejected", "bounce", "nicht zustellbar", "non remis", "no entregado",
	"message not delivered", "unable to deliver", "failed delivery", "mail error", "loop alert",
}

// bounceSenders are lower-case fragments of the From of non-delivery
// reports.
var bounceSenders = []string{
	"mailer-daemon", "mailer_daemon", "mail-daemon", "maildaemon", "postmaster", "post_master",
	"mail delivery", "mail administrator", "system administrator", "mail system", "ndr", "bounce",
	"mdaemon", "mail-router", "mailerdaemon",
}

// bouncePhrases are lower-case phrases of free-text non-delivery reports,
// by format.
var bouncePhrases = []string{
	"this is the qmail-send program",                                   // qmail
	"this message was created automatically by mail delivery software", // Exim
	"could not be delivered to one or more",                            // Exim and others
	"transcript of session follows",                                    // Sendmail
	"the following addresses had permanent fatal errors",               // Sendmail
	"rcpt to:",                                          // SMTP transcripts
	"this is the mail system at host",                   // Postfix
	"delivery has failed to these recipients",           // Exchange
	"couldn't be delivered",                             // Office 365
	"did not reach the following recipient",             // Exchange 2003
	"delivery to the following recipient",               // Gmail
	"sorry, we were unable to deliver your message",     // Yahoo
	"unable to deliver",                                 // many
	"an error has occurred while attempting to deliver", // OpenSMTPD
	"failure reasons",                                   // Notes
	"could not be delivered",                            // many
	"delivery failed",                                   // many
	"the following addresses had delivery problems",     // Biglobe and others
	"failed to deliver",                                 // many
	"permanent error",                                   // many
	"undeliverable",                                     // many
	"was not delivered",                                 // many
	"had delivery errors",                               // Mail2000
	"was rejected by",                                   // many
	"we had trouble delivering your message",            // X6
	"message could not be delivered",                    // many
	"returned mail",                                     // many
	"remote server returned",                            // Exchange
	"smtp error from remote",                            // Exim
	"delivery to the following recipients failed",       // Exchange
	"your message wasn't delivered",                     // Office 365
	"your message to",                                   // Notes, Courier
	"error: invalid user",                               // James
	"duplicated message-id",                             // fml loop alert
	"-------server message",                             // m-FILTER
	"failed addresses follow",                           // Exim 3, smail
}

// autoReplySubjects are lower-case subject fragments of auto-replies.
var autoReplySubjects = []string{
	"out of office", "out of the office", "automatic reply", "auto reply", "auto-reply", "autoreply",
	"autoresponse", "auto response", "auto-response", "vacation", "away from", "i am away", "i'm away",
	"away until", "on leave", "abwesenheit", "réponse automatique", "respuesta automática",
	"risposta automatica", "resposta automática", "automatisch antwoord", "自動応答", "自動返信", "absence",
	"auto:", "autosvar", "automaattinen vastaus",
}
