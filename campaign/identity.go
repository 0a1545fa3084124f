package campaign

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// NormalizeEmail is the form of an address used for identity: trimmed and
// lower-cased. Dots and +tags are kept: "maria.santos@" and "mariasantos@",
// or "a+union@" and "a@", may be different people at many providers, and
// merging them would silently drop a real signature.
func NormalizeEmail(addr string) string {
	return strings.ToLower(strings.TrimSpace(addr))
}

// DeliveryID identifies the one message a signer sends to one target of a
// campaign: 32 lower-case hex digits, the same however the addresses are
// capitalised, so a resubmitted signature maps onto the same delivery.
func DeliveryID(campaignID, signerEmail, targetAddress string) string {
	return hashParts("petitiond delivery v1", campaignID, NormalizeEmail(signerEmail), NormalizeEmail(targetAddress))
}

// SignerKey identifies a signer within a campaign for Redis keys, so that no
// key name holds an address. It is a plain hash, not anonymisation: anyone
// who has a list of addresses can test them against it.
func SignerKey(campaignID, signerEmail string) string {
	return hashParts("petitiond signer v1", campaignID, NormalizeEmail(signerEmail))
}

// hashParts hashes length-prefixed parts, so no choice of part contents can
// make two different tuples hash the same input ("a","bc" vs "ab","c").
func hashParts(domain string, parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range append([]string{domain}, parts...) {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
