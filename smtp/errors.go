package smtp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// Operations an *Error can report.
const (
	OpDial  = "dial"
	OpTLS   = "tls"
	OpAuth  = "auth"
	OpMail  = "mail"
	OpRcpt  = "rcpt"
	OpData  = "data"
	OpReset = "reset"
)

// Error is the one error type Send and Probe return. Callers decide from it:
// RelayDown → pause sending (the relay is unusable, not this message's
// fault); else Temporary → retry this message later; else → the message
// failed for good, classified by Code and EnhancedCode.
type Error struct {
	Op           string // "dial" | "tls" | "auth" | "mail" | "rcpt" | "data" | "reset"
	Code         int    // SMTP reply code, 0 for network errors
	EnhancedCode string // "5.1.1", "" if none
	Message      string
	Temporary    bool // 4xx or network: retry later
	RelayDown    bool // the relay itself is unusable (dial/TLS/auth failure, connection lost before MAIL): not this message's fault
	Err          error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Code != 0 {
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteByte(' ')
		if e.EnhancedCode != "" {
			b.WriteString(e.EnhancedCode)
			b.WriteByte(' ')
		}
	}
	b.WriteString(e.Message)
	if e.Code == 0 && e.Err != nil && !strings.Contains(e.Message, e.Err.Error()) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// AsError finds an *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// classify turns what go-smtp or the network returned into an *Error. ctx is
// the caller's: when it ended the operation, the error says so and does not
// blame the relay.
func classify(ctx context.Context, op string, err error) *Error {
	if e, ok := AsError(err); ok {
		return e
	}
	e := &Error{Op: op, Err: err}
	var se *gosmtp.SMTPError
	switch {
	case errors.As(err, &se):
		e.Code = se.Code
		if se.EnhancedCode != gosmtp.NoEnhancedCode && se.EnhancedCode != (gosmtp.EnhancedCode{}) {
			c := se.EnhancedCode
			e.EnhancedCode = fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
		}
		e.Message = se.Message
		e.Temporary = se.Temporary()
		// 421: the relay is closing the channel, whatever the command.
		e.RelayDown = op == OpDial || op == OpTLS || op == OpAuth || se.Code == 421
		if op == OpAuth && se.Code == 535 {
			e.Message = "relay rejected the credentials: " + se.Message
		}
	case ctxDone(ctx) != nil:
		cerr := ctxDone(ctx)
		if errors.Is(err, cerr) {
			e.Err = err
		} else {
			e.Err = fmt.Errorf("%w (%v)", cerr, err)
		}
		e.Message = "gave up: " + cerr.Error()
		e.Temporary = true
	default:
		e.Message = err.Error()
		e.Temporary = true
		e.RelayDown = op == OpDial || op == OpTLS || op == OpAuth || op == OpReset || op == OpMail
	}
	return e
}

// ctxDone is ctx.Err(), except that it also reports a deadline that has
// passed: the connection deadline derived from it can fire a moment before
// the context's own timer does.
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// connBroken reports whether err leaves the connection in an unknown state:
// anything other than a well-formed SMTP reply (network errors, timeouts,
// protocol errors), and 421, after which the server closes the channel.
func connBroken(err error) bool {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code == 421
	}
	return err != nil
}
