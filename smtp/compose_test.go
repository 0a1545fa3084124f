package smtp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

func TestComposeRoundTrip(t *testing.T) {
	date := time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		msg  Message
	}{
		{
			name: "tagalog",
			msg: Message{
				FromName: "Maria Santos via LabourStart", FromAddress: "petitions@petitions.example.org",
				ReplyToName: "Maria Santos", ReplyToAddress: "maria@example.org",
				ToName: "Press office", ToAddress: "press@mfa.example",
				Subject: "Palayain si Erlan Baltabay, ñ, ã",
				Body:    "Mahal na Pangulo,\r\n\r\nPalayain si Erlan Baltabay, ñ, ã. Salamat po.\r\n",
				Locale:  "tl",
			},
		},
		{
			name: "kazakh and russian cyrillic",
			msg: Message{
				FromName: "Әлия Нұрланқызы via LabourStart", FromAddress: "petitions@petitions.example.org",
				ReplyToName: "Әлия Нұрланқызы", ReplyToAddress: "aliya@example.kz",
				ToName: "Пресс-служба МИД", ToAddress: "press@mfa.example",
				Subject: "Ерлан Балтабайға бостандық! Свободу Ерлану Балтабаю!",
				Body:    "Құрметті Президент,\r\nОсвободите Ерлана Балтабая — қазір, ғ, ү, ұ, і, ң, ө, қ, һ.\r\n" + strings.Repeat("Длинная строка без переносов. ", 20) + "\r\n",
				Locale:  "kk",
			},
		},
		{
			name: "arabic",
			msg: Message{
				FromName: "مريم الصالح via LabourStart", FromAddress: "petitions@petitions.example.org",
				ReplyToName: "مريم الصالح", ReplyToAddress: "mariam@example.org",
				ToName: "بعثة كازاخستان", ToAddress: "mission@kz-geneva.example",
				Subject: "أطلقوا سراح إرلان بالتاباي",
				Body:    "السيد الرئيس،\r\nنطالب بالإفراج الفوري عن إرلان بالتاباي.\r\n",
				Locale:  "ar",
			},
		},
		{
			name: "ascii with specials and dots",
			msg: Message{
				FromName: `Jo "JJ" O'Neil, Jr. via LabourStart`, FromAddress: "petitions@petitions.example.org",
				ToAddress: "press@mfa.example",
				Subject:   "Free Erlan Baltabay",
				Body:      ".\r\n.leading dot\r\nFrom the start\r\ntrailing space \r\n=equals=\r\n",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg
			m.Date = date
			m.DeliveryID = "0123456789abcdef0123456789abcdef"
			m.MessageID = MessageIDFor(m.DeliveryID, m.FromAddress)
			raw, err := Compose(m)
			if err != nil {
				t.Fatalf("Compose: %v", err)
			}
			checkWireFormat(t, raw)

			r, err := mail.CreateReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("CreateReader: %v", err)
			}
			subject, err := r.Header.Subject()
			if err != nil || subject != m.Subject {
				t.Errorf("Subject = %q (%v), want %q", subject, err, m.Subject)
			}
			checkAddr(t, &r.Header, "From", m.FromName, m.FromAddress)
			checkAddr(t, &r.Header, "To", m.ToName, m.ToAddress)
			if m.ReplyToAddress != "" {
				checkAddr(t, &r.Header, "Reply-To", m.ReplyToName, m.ReplyToAddress)
			}
			if id, err := r.Header.MessageID(); err != nil || id != m.MessageID {
				t.Errorf("Message-ID = %q (%v), want %q", id, err, m.MessageID)
			}
			if got := r.Header.Get(DeliveryHeader); got != m.DeliveryID {
				t.Errorf("%s = %q, want %q", DeliveryHeader, got, m.DeliveryID)
			}
			if got := r.Header.Get("Content-Language"); got != m.Locale {
				t.Errorf("Content-Language = %q, want %q", got, m.Locale)
			}
			if d, err := r.Header.Date(); err != nil || !d.Equal(date) {
				t.Errorf("Date = %v (%v), want %v", d, err, date)
			}
			p, err := r.NextPart()
			if err != nil {
				t.Fatalf("NextPart: %v", err)
			}
			ih, ok := p.Header.(*mail.InlineHeader)
			if !ok {
				t.Fatalf("part header is %T, want an inline text part", p.Header)
			}
			ct, params, err := ih.ContentType()
			if err != nil || ct != "text/plain" || params["charset"] != "utf-8" {
				t.Errorf("Content-Type = %q %v (%v), want text/plain; charset=utf-8", ct, params, err)
			}
			if cte := p.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
				t.Errorf("Content-Transfer-Encoding = %q", cte)
			}
			body, err := io.ReadAll(p.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if !bytes.Equal(body, []byte(m.Body)) {
				t.Errorf("body does not round-trip:\n got %q\nwant %q", body, m.Body)
			}
			if _, err := r.NextPart(); err != io.EOF {
				t.Errorf("second part: err = %v, want io.EOF", err)
			}
		})
	}
}

// checkWireFormat asserts what relays insist on: 7-bit clean, CRLF only,
// lines within the RFC 5322 limit.
func checkWireFormat(t *testing.T, raw []byte) {
	t.Helper()
	for i, b := range raw {
		if b >= 0x80 {
			t.Fatalf("byte %d is not 7-bit: %q", i, raw[max(0, i-20):min(len(raw), i+20)])
		}
		if b == '\n' && (i == 0 || raw[i-1] != '\r') {
			t.Fatalf("bare LF at byte %d", i)
		}
		if b == '\r' && (i+1 == len(raw) || raw[i+1] != '\n') {
			t.Fatalf("bare CR at byte %d", i)
		}
	}
	for n, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line %d is %d bytes long", n+1, len(line))
		}
	}
}

func checkAddr(t *testing.T, h *mail.Header, key, name, addr string) {
	t.Helper()
	l, err := h.AddressList(key)
	if err != nil {
		t.Errorf("%s: %v (raw %q)", key, err, h.Get(key))
		return
	}
	if len(l) != 1 || l[0].Name != name || l[0].Address != addr {
		t.Errorf("%s = %+v, want %q <%s>", key, l, name, addr)
	}
}

func TestComposeNormalisesLineEndings(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"lf", "one\ntwo\n", "one\r\ntwo\r\n"},
		{"lone cr", "one\rtwo", "one\r\ntwo"},
		{"mixed", "a\r\nb\nc\rd", "a\r\nb\r\nc\r\nd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := Compose(Message{FromAddress: "a@example.org", ToAddress: "b@example.org", Body: tc.in})
			if err != nil {
				t.Fatal(err)
			}
			r, err := mail.CreateReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			p, err := r.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(p.Body)
			if string(body) != tc.want {
				t.Errorf("body = %q, want %q", body, tc.want)
			}
		})
	}
}

func TestComposeRejects(t *testing.T) {
	valid := Message{FromAddress: "petitions@example.org", ToAddress: "press@mfa.example", Subject: "s", Body: "b"}
	tests := []struct {
		name   string
		mutate func(*Message)
		field  string
	}{
		{"CR in subject", func(m *Message) { m.Subject = "hi\rBcc: x@evil.example" }, "Subject"},
		{"LF in from name", func(m *Message) { m.FromName = "Maria\nBcc: x@evil.example" }, "FromName"},
		{"NUL in to name", func(m *Message) { m.ToName = "a\x00b" }, "ToName"},
		{"LF in reply-to name", func(m *Message) { m.ReplyToAddress = "m@example.org"; m.ReplyToName = "a\nb" }, "ReplyToName"},
		{"CRLF in reply-to address", func(m *Message) { m.ReplyToAddress = "m@example.org\r\nBcc: x@evil.example" }, "ReplyToAddress"},
		{"LF in delivery id", func(m *Message) { m.DeliveryID = "abc\n" }, "DeliveryID"},
		{"invalid UTF-8 in subject", func(m *Message) { m.Subject = "caf\xe9" }, "Subject"},
		{"invalid UTF-8 in body", func(m *Message) { m.Body = "caf\xe9" }, "Body"},
		{"invalid UTF-8 in from name", func(m *Message) { m.FromName = "\xff" }, "FromName"},
		{"missing from address", func(m *Message) { m.FromAddress = "" }, "FromAddress"},
		{"missing to address", func(m *Message) { m.ToAddress = "" }, "ToAddress"},
		{"to address with space", func(m *Message) { m.ToAddress = "a b@example.org" }, "ToAddress"},
		{"to address without domain", func(m *Message) { m.ToAddress = "press@" }, "ToAddress"},
		{"non-ASCII address", func(m *Message) { m.ReplyToAddress = "maría@example.org" }, "ReplyToAddress"},
		{"message id with brackets", func(m *Message) { m.MessageID = "<x@y>" }, "MessageID"},
		{"bad locale", func(m *Message) { m.Locale = "en us" }, "Locale"},
		{"reply-to name without address", func(m *Message) { m.ReplyToName = "Maria" }, "ReplyToName"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := valid
			tc.mutate(&m)
			_, err := Compose(m)
			if err == nil {
				t.Fatal("Compose accepted invalid input")
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("error %v does not wrap ErrInvalidMessage", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name the field %s", err, tc.field)
			}
		})
	}
	if _, err := Compose(valid); err != nil {
		t.Fatalf("the valid base message was rejected: %v", err)
	}
}

func TestMessageIDFor(t *testing.T) {
	tests := []struct{ id, from, want string }{
		{"0123456789abcdef0123456789abcdef", "petitions@Petitions.Example.org", "0123456789abcdef0123456789abcdef@petitions.example.org"},
		{"ffff", "a@b.example", "ffff@b.example"},
	}
	for _, tc := range tests {
		if got := MessageIDFor(tc.id, tc.from); got != tc.want {
			t.Errorf("MessageIDFor(%q, %q) = %q, want %q", tc.id, tc.from, got, tc.want)
		}
		if again := MessageIDFor(tc.id, tc.from); again != MessageIDFor(tc.id, tc.from) {
			t.Errorf("MessageIDFor is not deterministic")
		}
	}
}

func BenchmarkCompose(b *testing.B) {
	m := Message{
		FromName: "Maria Santos via LabourStart", FromAddress: "petitions@petitions.example.org",
		ReplyToName: "Maria Santos", ReplyToAddress: "maria@example.org",
		ToName: "Press office", ToAddress: "press@mfa.example",
		Subject:    "Palayain si Erlan Baltabay, ñ, ã",
		Body:       strings.Repeat("Palayain si Erlan Baltabay. Ерлан Балтабайға бостандық!\n", 30),
		Locale:     "tl",
		DeliveryID: "0123456789abcdef0123456789abcdef",
		MessageID:  "0123456789abcdef0123456789abcdef@petitions.example.org",
		Date:       time.Now(),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compose(m); err != nil {
			b.Fatal(err)
		}
	}
}
