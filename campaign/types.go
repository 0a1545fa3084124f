// Package campaign owns campaigns, their targets and the signatures people
// send to them: the types, their validation, the letters rendered per locale,
// and the Redis store where campaigns live.
package campaign

import "time"

// SignatureVersion is the only signature format version petitiond accepts.
const SignatureVersion = 1

// Signer is the person who signed. Nothing here may contain CR, LF or NUL:
// names and addresses reach message headers.
type Signer struct {
	Name    string `json:"name"`
	Email   string `json:"email"`
	Country string `json:"country,omitempty"`
	Locale  string `json:"locale,omitempty"`
}

// Signature is one signed petition as a producer submits it (version 1 of
// the JSON format, docs/signature.md and docs/signature.schema.json).
type Signature struct {
	Version  int       `json:"version"`
	ID       string    `json:"id"`
	Campaign string    `json:"campaign"`
	Signer   Signer    `json:"signer"`
	Comment  string    `json:"comment,omitempty"`
	SignedAt time.Time `json:"signed_at"`
}

// Status says whether a campaign still sends.
type Status string

const (
	StatusOpen   Status = "open"
	StatusClosed Status = "closed"
)

// Target is one official address a campaign writes to. Targets come only
// from the campaign, never from a signature.
type Target struct {
	Name    string `yaml:"name" json:"name"`
	Address string `yaml:"address" json:"address"`
}

// Limits are a campaign's optional overrides of the configured send rates,
// written like "30/h" or "20/s". Empty means "use the configured default".
type Limits struct {
	PerAddress string `yaml:"per_address,omitempty" json:"per_address,omitempty"`
	PerDomain  string `yaml:"per_domain,omitempty" json:"per_domain,omitempty"`
	// Campaign caps the send rate of the whole campaign.
	Campaign string `yaml:"campaign,omitempty" json:"campaign,omitempty"`
}

// Campaign is a campaign definition as applied from YAML.
type Campaign struct {
	ID string `yaml:"id" json:"id"`
	// Status in a definition file may be left out: a new campaign then
	// opens, and a re-applied one keeps the status it has (so re-applying a
	// file to fix a typo does not reopen a campaign an operator closed).
	// Campaigns returned by the Store always carry their current status.
	Status   Status `yaml:"status" json:"status"`
	FromName string `yaml:"from_name" json:"from_name"`
	// Subject and Body map a locale ("en", "tl", "ru") to a text/template.
	Subject map[string]string `yaml:"subject" json:"subject"`
	Body    map[string]string `yaml:"body" json:"body"`
	// DefaultLocale is used when the signer's locale has no letter; "en"
	// when empty.
	DefaultLocale string   `yaml:"default_locale,omitempty" json:"default_locale,omitempty"`
	Targets       []Target `yaml:"targets" json:"targets"`
	Limits        Limits   `yaml:"limits,omitempty" json:"limits,omitempty"`

	// compiled holds the parsed templates once Parse or the Store has
	// checked them; nil for a Campaign built by hand.
	compiled *compiled
}

// Letter is one rendered message text, ready to be composed into mail.
type Letter struct {
	Locale   string
	FromName string
	Subject  string
	Body     string
}

// LetterData is what a campaign's templates see: {{.Signer.Name}},
// {{.Comment}}, {{.Target.Name}}, {{.Campaign}}, {{.SignedAt}}.
type LetterData struct {
	Campaign    string
	SignatureID string
	Signer      Signer
	Comment     string
	SignedAt    time.Time
	Target      Target
}
