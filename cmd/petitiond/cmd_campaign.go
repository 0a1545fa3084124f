package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/petitiond/petitiond/campaign"
)

func runCampaign(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("want a subcommand: apply FILE | list | close ID")
	}
	sub, rest := args[0], args[1:]
	fs, cfgPath := newFlags(e, "campaign "+sub)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	switch sub {
	case "apply":
		if err := wantArgs(fs, 1, "one campaign file"); err != nil {
			return err
		}
	case "list":
		if err := wantArgs(fs, 0, "no arguments"); err != nil {
			return err
		}
	case "close":
		if err := wantArgs(fs, 1, "one campaign id"); err != nil {
			return err
		}
	default:
		return usagef("unknown subcommand %q: want apply, list or close", sub)
	}
	var c *campaign.Campaign
	if sub == "apply" {
		// Parse before connecting: a broken file is reported even when
		// Redis is down.
		data, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		if c, err = campaign.Parse(data); err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
	}
	st, _, err := connect(ctx, e, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "apply":
		if err := st.campaigns.Apply(ctx, c); err != nil {
			return err
		}
		addrs := make([]string, len(c.Targets))
		for i, t := range c.Targets {
			addrs[i] = t.Address
		}
		if err := st.ledger.AddTargets(ctx, addrs...); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "campaign %s applied: %s, %d targets, locales %s\n",
			c.ID, c.Status, len(c.Targets), strings.Join(c.Locales(), ","))
	case "list":
		list, err := st.campaigns.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATUS\tTARGETS\tLOCALES\tVERSION\tUPDATED")
		for _, s := range list {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", s.ID, s.Status, s.Targets,
				strings.Join(s.Locales, ","), s.Version, s.UpdatedAt.Format("2006-01-02 15:04:05Z07:00"))
		}
		return tw.Flush()
	case "close":
		if err := st.campaigns.Close(ctx, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "campaign %s closed: deliveries not yet sent will be dropped\n", fs.Arg(0))
	}
	return nil
}
