// Package smtp owns everything petitiond says to and hears from SMTP: message
// composition, VERP bounce addresses, DKIM signing, the pooled relay client
// with its typed error classification, and the development sink that stands
// in for a relay in tests and local runs.
//
// It knows nothing of queues or Redis: callers hand it a Message and an
// Envelope and get back nil (the relay answered 250) or an *Error saying what
// went wrong and whether to retry.
package smtp
