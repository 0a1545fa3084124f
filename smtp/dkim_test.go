package smtp

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

func testMessage(t testing.TB) []byte {
	t.Helper()
	raw, err := Compose(Message{
		FromName: "Maria Santos via LabourStart", FromAddress: "petitions@petitions.example.org",
		ReplyToName: "Maria Santos", ReplyToAddress: "maria@example.org",
		ToName: "Press office", ToAddress: "press@mfa.example",
		Subject:    "Palayain si Erlan Baltabay, ñ, ã",
		Body:       "Mahal na Pangulo,\nPalayain si Erlan Baltabay.\n",
		Locale:     "tl",
		DeliveryID: "0123456789abcdef0123456789abcdef",
		MessageID:  "0123456789abcdef0123456789abcdef@petitions.example.org",
		Date:       time.Date(2019, 7, 20, 10, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestDKIMRoundTrip(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	tests := []struct {
		name string
		pem  []byte
		algo string
	}{
		{"rsa pkcs1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), "rsa-sha256"},
		{"rsa pkcs8", pkcs8(rsaKey), "rsa-sha256"},
		{"ed25519 pkcs8", pkcs8(edKey), "ed25519-sha256"},
	}
	msg := testMessage(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewDKIMSigner("petitions.example.org", "s1", tc.pem)
			if err != nil {
				t.Fatalf("NewDKIMSigner: %v", err)
			}
			signed, err := s.Sign(msg)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !bytes.HasPrefix(signed, []byte("DKIM-Signature:")) || !bytes.HasSuffix(signed, msg) {
				t.Fatalf("signed message is not the original with a DKIM-Signature prepended")
			}
			if !bytes.Contains(signed, []byte("a="+tc.algo)) {
				t.Errorf("signature does not use %s", tc.algo)
			}
			record, err := s.DNSRecord()
			if err != nil {
				t.Fatal(err)
			}
			lookup := func(domain string) ([]string, error) {
				if domain != s.DNSName() {
					return nil, fmt.Errorf("unexpected lookup of %q", domain)
				}
				return []string{record}, nil
			}
			verify := func(m []byte) error {
				vs, err := dkim.VerifyWithOptions(bytes.NewReader(m), &dkim.VerifyOptions{LookupTXT: lookup})
				if err != nil {
					return err
				}
				if len(vs) != 1 {
					return fmt.Errorf("%d verifications, want 1", len(vs))
				}
				if vs[0].Domain != "petitions.example.org" {
					return fmt.Errorf("signing domain %q", vs[0].Domain)
				}
				return vs[0].Err
			}
			if err := verify(signed); err != nil {
				t.Fatalf("verify: %v", err)
			}
			// A relay's benign refolding must not break the signature...
			refolded := bytes.Replace(signed, []byte("Subject: "), []byte("Subject:   "), 1)
			if err := verify(refolded); err != nil {
				t.Errorf("relaxed canonicalisation did not absorb whitespace: %v", err)
			}
			// ...but a changed body, or an added From, must.
			tampered := bytes.Replace(signed, []byte("Pangulo"), []byte("pangulo"), 1)
			if err := verify(tampered); err == nil {
				t.Error("tampered body still verifies")
			}
			extraFrom := append([]byte("From: someone@evil.example\r\n"), signed...)
			if err := verify(extraFrom); err == nil {
				t.Error("message with an added From still verifies")
			}
		})
	}
}

func TestNewDKIMSignerRejects(t *testing.T) {
	// crypto/rsa refuses to make a key this short unless told otherwise; the
	// point is that NewDKIMSigner refuses it with a clear error at startup.
	t.Setenv("GODEBUG", "rsa1024min=0")
	small, err := rsa.GenerateKey(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, domain, selector string
		pem                    []byte
		want                   string
	}{
		{"not pem", "d.example", "s1", []byte("not a key"), "not PEM"},
		{"certificate", "d.example", "s1", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "not a private key"},
		{"garbage pkcs1", "d.example", "s1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1, 2}}), "PKCS#1"},
		{"short rsa", "d.example", "s1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)}), "512 bits"},
		{"no selector", "d.example", "", nil, "selector"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDKIMSigner(tc.domain, tc.selector, tc.pem)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
