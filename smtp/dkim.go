package smtp

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"

	"github.com/emersion/go-msgauth/dkim"
)

// dkimHeaders are the fields a DKIM signature covers. From, To, Subject and
// Reply-To appear twice: the second, absent instance "oversigns" them, so a
// receiver rejects a copy with a second From or Subject added in transit.
var dkimHeaders = []string{
	"From", "From", "Reply-To", "Reply-To", "To", "To", "Subject", "Subject",
	"Date", "Message-Id", "Content-Type", "Content-Transfer-Encoding",
	"Mime-Version", "Content-Language", DeliveryHeader,
}

// minRSABits: receivers treat shorter RSA keys as no signature at all.
const minRSABits = 1024

// DKIMSigner signs composed messages for one domain and selector.
type DKIMSigner struct {
	domain, selector string
	key              crypto.Signer
}

// NewDKIMSigner parses an RSA or Ed25519 private key in PEM (PKCS#1
// "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY").
func NewDKIMSigner(domain, selector string, keyPEM []byte) (*DKIMSigner, error) {
	if domain == "" || selector == "" {
		return nil, fmt.Errorf("dkim: domain and selector are required (got %q, %q)", domain, selector)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("dkim: key for %s._domainkey.%s is not PEM", selector, domain)
	}
	var key crypto.Signer
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("dkim: parse PKCS#1 RSA key: %w", err)
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("dkim: parse PKCS#8 key: %w", err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			key = k
		case ed25519.PrivateKey:
			key = k
		default:
			return nil, fmt.Errorf("dkim: PKCS#8 key type %T is not RSA or Ed25519", k)
		}
	default:
		return nil, fmt.Errorf("dkim: PEM block %q is not a private key (want \"RSA PRIVATE KEY\" or \"PRIVATE KEY\")", block.Type)
	}
	if k, ok := key.(*rsa.PrivateKey); ok && k.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("dkim: RSA key has %d bits, want at least %d", k.N.BitLen(), minRSABits)
	}
	return &DKIMSigner{domain: domain, selector: selector, key: key}, nil
}

// Sign returns msg with a DKIM-Signature header prepended. Canonicalisation
// is relaxed/relaxed, which survives the whitespace and folding changes
// relays commonly make.
func (s *DKIMSigner) Sign(msg []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(msg) + 1024)
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain:                 s.domain,
		Selector:               s.selector,
		Signer:                 s.key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             dkimHeaders,
	})
	if err != nil {
		return nil, fmt.Errorf("dkim: sign for %s: %w", s.domain, err)
	}
	return out.Bytes(), nil
}

// DNSName is where receivers look up the public key.
func (s *DKIMSigner) DNSName() string {
	return s.selector + "._domainkey." + s.domain
}

// DNSRecord is the TXT record to publish at DNSName.
func (s *DKIMSigner) DNSRecord() (string, error) {
	switch pub := s.key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("dkim: encode public key: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	default:
		return "", fmt.Errorf("dkim: unsupported public key %T", pub)
	}
}
