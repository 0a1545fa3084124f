// Package bounce owns everything petitiond knows about mail that comes back:
// parsing and classifying delivery status notifications (RFC 3464 and the
// free-text formats real MTAs still send), feedback reports (ARF, RFC 5965)
// and auto-replies (RFC 3834), the IMAP watcher that feeds them in, and the
// bounce policy applied to the deliveries they belong to.
//
// Parse never acts on anything: it turns one raw message into a Result that
// names the failed recipients, their RFC 3463 status, a reason word from
// DESIGN.md's vocabulary and whether the address is dead (Hard). It also
// collects the identifiers (VERP return path, envelope id, Message-ID, our
// own X- headers) that correlation uses to tie the bounce to a delivery.
//
// # Hard and soft
//
// A recipient is Hard when the MTA gave up (Action failed) and the reason
// says the address is dead, following the convention of the Sisimai
// project, whose expectations the evaluation uses:
//
//   - userunknown and hasmoved are hard at any status class: a mailbox that
//     does not exist stays so after the MTA's last retry;
//   - hostunknown and notaccept (null MX, "accepts no mail") are hard only
//     with a 5.x.x status, since a temporary DNS answer proves nothing;
//   - everything else is soft: blocked, filtered, rejected, spamdetected,
//     policyviolation, securityerror, mailboxfull, suspend, expired,
//     networkerror, systemerror, toomanyconn, mesgtoobig, undefined (no
//     reason was found, so nothing says the address is dead) and delays.
//
// User-unknown wording alone is not enough: the reply must have answered
// RCPT TO, carry an X.1.x status, or come with the reporting MTA's own
// verdict ("address not found"). The same words after DATA, or in a bare
// reply whose phase nobody names, are classified filtered: mobile carriers
// and content filters answer that way for mail they merely refuse. A
// refusal at MAIL FROM is about the sender and is classified rejected.
//
// The Kind of a message is hard when any recipient is Hard, so the bounce
// policy suppresses an address only when it is dead; reputation and policy
// refusals reach it as soft with their reason (blocked, spamdetected,
// policyviolation, securityerror) and a 5.7.x status.
package bounce
