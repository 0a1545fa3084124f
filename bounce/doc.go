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
package bounce
