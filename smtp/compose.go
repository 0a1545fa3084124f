package smtp

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/mail"
)

// DeliveryHeader carries the delivery id in every composed message, so that a
// bounce quoting our headers can be tied back to its delivery even when the
// VERP address was lost.
const DeliveryHeader = "X-Petitiond-Delivery"

// ErrInvalidMessage is wrapped by every Compose error caused by its input.
var ErrInvalidMessage = errors.New("invalid message")

// Message is one petition letter to one target.
type Message struct {
	FromName, FromAddress       string // DMARC-aligned: the campaign's sending address, the signer's display name
	ReplyToName, ReplyToAddress string // the signer
	ToName, ToAddress           string // the target
	Subject, Body               string
	Locale                      string // Content-Language when set
	MessageID                   string // without angle brackets
	DeliveryID                  string // also written as header X-Petitiond-Delivery
	Date                        time.Time
}

// MessageIDFor derives the Message-ID of a delivery. It is deterministic so
// that a retried delivery carries the same id, which lets receivers and our
// own bounce handling recognise it as the same message.
func MessageIDFor(deliveryID, fromAddress string) string {
	domain := fromAddress
	if i := strings.LastIndexByte(fromAddress, '@'); i >= 0 {
		domain = fromAddress[i+1:]
	}
	return deliveryID + "@" + strings.ToLower(domain)
}

var (
	localeRE = regexp.MustCompile(`^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$`)
	msgIDRE  = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~.-]+@[A-Za-z0-9.-]+$`)
)

// Compose renders m as an RFC 5322 message: text/plain UTF-8 body in
// quoted-printable with CRLF line endings (LF and lone CR in Body become
// CRLF), encoded words for non-ASCII subject and display names. A zero Date
// means now.
//
// Input is validated upstream too; Compose checks again because a CR or LF
// smuggled into a header would let a signer inject headers or recipients.
func Compose(m Message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}

	// go-message writes header fields in the reverse order of insertion;
	// fields are added bottom-up so the output reads From, Reply-To, To...
	var h mail.Header
	h.Add("Content-Transfer-Encoding", "quoted-printable")
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Add("MIME-Version", "1.0")
	if m.Locale != "" {
		h.Add("Content-Language", m.Locale)
	}
	if m.DeliveryID != "" {
		h.Add(DeliveryHeader, m.DeliveryID)
	}
	if m.MessageID != "" {
		h.SetMessageID(m.MessageID)
	}
	h.SetDate(date)
	h.SetSubject(m.Subject)
	h.SetAddressList("To", []*mail.Address{{Name: m.ToName, Address: m.ToAddress}})
	if m.ReplyToAddress != "" {
		h.SetAddressList("Reply-To", []*mail.Address{{Name: m.ReplyToName, Address: m.ReplyToAddress}})
	}
	h.SetAddressList("From", []*mail.Address{{Name: m.FromName, Address: m.FromAddress}})

	var buf bytes.Buffer
	buf.Grow(len(m.Body)*3/2 + 1024)
	w, err := mail.CreateSingleInlineWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("compose: write header: %w", err)
	}
	if _, err := w.Write([]byte(normaliseNewlines(m.Body))); err != nil {
		return nil, fmt.Errorf("compose: write body: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compose: finish body: %w", err)
	}
	return buf.Bytes(), nil
}

func (m Message) validate() error {
	text := []struct{ name, value string }{
		{"FromName", m.FromName},
		{"ReplyToName", m.ReplyToName},
		{"ToName", m.ToName},
		{"Subject", m.Subject},
		{"Locale", m.Locale},
		{"MessageID", m.MessageID},
		{"DeliveryID", m.DeliveryID},
	}
	for _, f := range text {
		if err := checkHeaderValue(f.name, f.value); err != nil {
			return err
		}
	}
	addrs := []struct {
		name, value string
		required    bool
	}{
		{"FromAddress", m.FromAddress, true},
		{"ReplyToAddress", m.ReplyToAddress, false},
		{"ToAddress", m.ToAddress, true},
	}
	for _, a := range addrs {
		if a.value == "" && !a.required {
			continue
		}
		if err := checkAddress(a.name, a.value); err != nil {
			return err
		}
	}
	if m.ReplyToAddress == "" && m.ReplyToName != "" {
		return fmt.Errorf("%w: ReplyToName is set but ReplyToAddress is empty", ErrInvalidMessage)
	}
	if m.Locale != "" && !localeRE.MatchString(m.Locale) {
		return fmt.Errorf("%w: Locale %q is not a language tag", ErrInvalidMessage, m.Locale)
	}
	if m.MessageID != "" && !msgIDRE.MatchString(m.MessageID) {
		return fmt.Errorf("%w: MessageID %q is not of the form left@domain (without angle brackets)", ErrInvalidMessage, m.MessageID)
	}
	if !utf8.ValidString(m.Body) {
		return fmt.Errorf("%w: Body is not valid UTF-8", ErrInvalidMessage)
	}
	return nil
}

func checkHeaderValue(field, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("%w: %s contains CR, LF or NUL", ErrInvalidMessage, field)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidMessage, field)
	}
	return nil
}

// checkAddress accepts plain ASCII addr-specs only: an internationalised
// address would need SMTPUTF8 end to end, which the relay path does not
// promise.
func checkAddress(field, addr string) error {
	if err := checkHeaderValue(field, addr); err != nil {
		return err
	}
	if addr == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidMessage, field)
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`<>()[]\,;:"`, c) >= 0 {
			return fmt.Errorf("%w: %s %q contains a character not allowed in an address", ErrInvalidMessage, field, addr)
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || strings.Count(addr, "@") != 1 {
		return fmt.Errorf("%w: %s %q is not of the form local@domain", ErrInvalidMessage, field, addr)
	}
	return nil
}

// normaliseNewlines turns CRLF, lone CR and LF into LF; the quoted-printable
// writer then emits every line break as CRLF.
func normaliseNewlines(s string) string {
	if !strings.ContainsRune(s, '\r') {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
