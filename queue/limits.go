package queue

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/petitiond/petitiond/campaign"
	"github.com/petitiond/petitiond/internal/rkeys"
	"github.com/petitiond/petitiond/queue/pacing"
)

// LimitConfig holds the configured send rates, written like "60/h".
type LimitConfig struct {
	PerAddress  string
	PerDomain   string
	Global      string
	PerCampaign string
	Domains     map[string]string
}

// limitSet is a parsed LimitConfig.
type limitSet struct {
	perAddress  pacing.Rate
	perDomain   pacing.Rate
	global      pacing.Rate
	perCampaign *pacing.Rate
	domains     map[string]pacing.Rate
}

func parseLimits(c LimitConfig) (*limitSet, error) {
	var ls limitSet
	var err error
	if ls.perAddress, err = pacing.ParseRate(c.PerAddress); err != nil {
		return nil, fmt.Errorf("limits.per_address: %w", err)
	}
	if ls.perDomain, err = pacing.ParseRate(c.PerDomain); err != nil {
		return nil, fmt.Errorf("limits.per_domain: %w", err)
	}
	if ls.global, err = pacing.ParseRate(c.Global); err != nil {
		return nil, fmt.Errorf("limits.global: %w", err)
	}
	if c.PerCampaign != "" {
		r, err := pacing.ParseRate(c.PerCampaign)
		if err != nil {
			return nil, fmt.Errorf("limits.per_campaign: %w", err)
		}
		ls.perCampaign = &r
	}
	ls.domains = map[string]pacing.Rate{}
	for d, s := range c.Domains {
		r, err := pacing.ParseRate(s)
		if err != nil {
			return nil, fmt.Errorf("limits.domains.%s: %w", d, err)
		}
		ls.domains[rkeys.Norm(d)] = r
	}
	return &ls, nil
}

// Limits resolves the pacing limits of a delivery. It can be swapped at run
// time (SIGHUP) without stopping deliveries.
type Limits struct {
	cur atomic.Pointer[limitSet]
}

// NewLimits parses a limit configuration.
func NewLimits(c LimitConfig) (*Limits, error) {
	ls, err := parseLimits(c)
	if err != nil {
		return nil, err
	}
	l := &Limits{}
	l.cur.Store(ls)
	return l, nil
}

// Reload replaces the limits; on error the old ones stay.
func (l *Limits) Reload(c LimitConfig) error {
	ls, err := parseLimits(c)
	if err != nil {
		return err
	}
	l.cur.Store(ls)
	return nil
}

// For returns the limits that apply to one delivery: the target address,
// its domain (with per-domain overrides), the campaign when capped, and
// global. A campaign's own limits override the configured ones.
func (l *Limits) For(c *campaign.Campaign, target string) ([]pacing.Limit, error) {
	ls := l.cur.Load()
	addr := rkeys.Norm(target)
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	perAddr, perDomain, perCampaign := ls.perAddress, ls.perDomain, ls.perCampaign
	if r, ok := ls.domains[domain]; ok {
		perDomain = r
	}
	if c != nil {
		if c.Limits.PerAddress != "" {
			r, err := pacing.ParseRate(c.Limits.PerAddress)
			if err != nil {
				return nil, fmt.Errorf("campaign %s: limits.per_address: %w", c.ID, err)
			}
			perAddr = r
		}
		if c.Limits.PerDomain != "" {
			r, err := pacing.ParseRate(c.Limits.PerDomain)
			if err != nil {
				return nil, fmt.Errorf("campaign %s: limits.per_domain: %w", c.ID, err)
			}
			perDomain = r
		}
		if c.Limits.Campaign != "" {
			r, err := pacing.ParseRate(c.Limits.Campaign)
			if err != nil {
				return nil, fmt.Errorf("campaign %s: limits.campaign: %w", c.ID, err)
			}
			perCampaign = &r
		}
	}
	out := []pacing.Limit{
		{Key: rkeys.PaceAddress(addr), Rate: perAddr},
		{Key: rkeys.PaceDomain(domain), Rate: perDomain},
		{Key: rkeys.PaceGlobal, Rate: ls.global},
	}
	if perCampaign != nil && c != nil {
		out = append(out, pacing.Limit{Key: rkeys.PaceCampaign(c.ID), Rate: *perCampaign})
	}
	return out, nil
}
