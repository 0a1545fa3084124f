// Package rkeys is the one place that names petitiond's Redis keys. Every key
// petitiond reads or writes is built here, and docs/redis-keys.md documents
// the same list for operators; keep the two in step.
//
// All keys start with "petitiond:". asynq keeps its own keys under "asynq:".
// Keys that one Lua script touches together share a Redis Cluster hash tag
// ({pace}), so the script runs on one slot.
package rkeys

import "strings"

const prefix = "petitiond:"

// Submission.
const (
	// SignatureStream (stream) is where producers in any language XADD a
	// field "json" holding one signature. Trimmed by the ingester after ack.
	SignatureStream = prefix + "signatures"
	// RejectedStream (stream) keeps every rejected stream entry with its
	// reason; capped at about 100,000 entries.
	RejectedStream = prefix + "signatures:rejected"
	// IngestGroup is the consumer group on SignatureStream.
	IngestGroup = "petitiond"
)

// Campaigns.
const (
	// CampaignIndex (set) holds every applied campaign id; never expires.
	CampaignIndex = prefix + "campaigns"
)

// Campaign (hash: definition, status, version, updated_at) is one campaign;
// never expires.
func Campaign(id string) string { return prefix + "campaign:" + id }

// Signature (hash) is one accepted signature: campaign, outcome, delivery
// ids; lives as long as the ledger (bounded by the ledger TTL).
func Signature(id string) string { return prefix + "signature:" + id }

// Signer (string: signature id) marks a (campaign, signer) pair as seen, so a
// second signature by the same person is a duplicate. Hash of the normalised
// email, never the address itself.
func Signer(campaign, emailHash string) string {
	return prefix + "signer:" + campaign + ":" + emailHash
}

// Delivery (hash) is one ledger record keyed by delivery id.
func Delivery(id string) string { return prefix + "delivery:" + id }

// Suppressions.
const (
	// SuppressionIndex (sorted set: address → expiry unix seconds) lists
	// suppressed addresses; members past their score are expired.
	SuppressionIndex = prefix + "suppressions"
	// TargetIndex (set) holds every target address petitiond has seen.
	TargetIndex = prefix + "targets"
)

// Suppression (hash: reason, at, evidence, expires_at) with a Redis TTL equal
// to the suppression's expiry.
func Suppression(addr string) string { return prefix + "suppression:" + Norm(addr) }

// Target (hash: paused, reason, since, until) is a target's pause state.
func Target(addr string) string { return prefix + "target:" + Norm(addr) }

// Held (list of delivery task payloads) keeps deliveries of a paused target
// until it is resumed; costs nothing while it waits.
func Held(addr string) string { return prefix + "held:" + Norm(addr) }

// PauseUntil (sorted set: address → unix seconds) lists targets paused for a
// cool-down that ends by itself; never expires, members removed on resume.
const PauseUntil = prefix + "pause-until"

// SoftBounces (sorted set: bounce id → unix seconds) counts soft bounces of a
// target within the configured window.
func SoftBounces(addr string) string { return prefix + "softbounces:" + Norm(addr) }

// Pacing keys share the {pace} hash tag so one Lua script may touch them all.
const paceTag = prefix + "{pace}:"

// PaceAddress is the pacing state of one target address.
func PaceAddress(addr string) string { return paceTag + "addr:" + Norm(addr) }

// PaceDomain is the pacing state of one target domain.
func PaceDomain(domain string) string { return paceTag + "domain:" + Norm(domain) }

// PaceCampaign is the pacing state of one campaign.
func PaceCampaign(id string) string { return paceTag + "campaign:" + id }

// PaceGlobal is the pacing state shared by every send.
const PaceGlobal = paceTag + "global"

// Relay circuit breaker.
const (
	// Breaker (hash: state, since, reason, opened_total) is the relay breaker
	// shared by every instance.
	Breaker = prefix + "relay:breaker"
	// BreakerProbeLock (string with TTL) lets one instance probe at a time.
	BreakerProbeLock = prefix + "relay:probe-lock"
)

// IMAP watcher.

// IMAPCheckpoint (hash: uidvalidity, last_uid) is the watcher's position in
// one mailbox.
func IMAPCheckpoint(mailbox string) string { return prefix + "imap:checkpoint:" + mailbox }

// IMAPSeen (set of message fingerprints) remembers which messages were
// already acted on, so a UIDVALIDITY rescan acts on nothing twice.
func IMAPSeen(mailbox string) string { return prefix + "imap:seen:" + mailbox }

// IMAPLease (string: owner token, with a TTL renewed while held) lets one
// instance at a time watch a mailbox, so several instances sharing one Redis
// never handle the same bounce concurrently.
func IMAPLease(mailbox string) string { return prefix + "imap:lease:" + mailbox }

// BounceLog (stream) records every bounce-mailbox message with its parse
// result and the action taken; capped at about 100,000 entries.
const BounceLog = prefix + "bounces"

// Norm lower-cases an address or domain for use in a key.
func Norm(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
