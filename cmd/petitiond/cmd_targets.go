package main

import (
	"context"
	"flag"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/petitiond/petitiond/queue/ledger"
)

func runTarget(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("want a subcommand: list | pause ADDR | resume ADDR")
	}
	sub := args[0]
	fs, cfgPath := newFlags(e, "target "+sub)
	reason := fs.String("reason", "paused by an operator", "why the target is paused (pause)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if err := listOrAddress(fs, sub, "pause", "resume"); err != nil {
		return err
	}
	st, _, err := connect(ctx, e, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "list":
		return printTargets(ctx, e, st)
	case "pause":
		if err := st.admin.PauseTarget(ctx, fs.Arg(0), *reason); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "target %s paused: its deliveries wait until it is resumed\n", fs.Arg(0))
	case "resume":
		n, err := st.admin.ResumeTarget(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "target %s resumed: %d held deliveries queued again\n", fs.Arg(0), n)
	}
	return nil
}

func runSuppression(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("want a subcommand: list | add ADDR | release ADDR")
	}
	sub := args[0]
	fs, cfgPath := newFlags(e, "suppression "+sub)
	reason := fs.String("reason", "manual", "why the address is suppressed (add)")
	ttl := fs.Duration("ttl", 0, "how long the suppression lasts (add); default bounces.suppression_ttl")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if err := listOrAddress(fs, sub, "add", "release"); err != nil {
		return err
	}
	st, cfg, err := connect(ctx, e, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "list":
		sups, err := st.ledger.Suppressions(ctx)
		if err != nil {
			return err
		}
		for _, s := range sups {
			fmt.Fprintf(e.stdout, "%s reason=%q at=%s expires=%s evidence=%q\n", s.Address, s.Reason,
				s.At.Format(time.RFC3339), s.ExpiresAt.Format(time.RFC3339), s.Evidence)
		}
	case "add":
		d := *ttl
		if d <= 0 {
			d = cfg.Bounces.SuppressionTTL
		}
		now := time.Now()
		if err := st.ledger.Suppress(ctx, ledger.Suppression{Address: fs.Arg(0), Reason: *reason,
			Evidence: "added by an operator", At: now, ExpiresAt: now.Add(d)}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s suppressed until %s\n", fs.Arg(0), now.Add(d).Format(time.RFC3339))
	case "release":
		ok, err := st.ledger.Unsuppress(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s is not suppressed", fs.Arg(0))
		}
		fmt.Fprintf(e.stdout, "%s released: new deliveries will be sent\n", fs.Arg(0))
	}
	return nil
}

// listOrAddress checks the arguments of "list | VERB ADDR" commands: list
// takes none, each of verbs takes one bare address.
func listOrAddress(fs *flag.FlagSet, sub string, verbs ...string) error {
	if sub == "list" {
		return wantArgs(fs, 0, "no arguments")
	}
	for _, v := range verbs {
		if sub == v {
			if err := wantArgs(fs, 1, "one address"); err != nil {
				return err
			}
			return checkAddr(fs.Arg(0))
		}
	}
	return usagef("unknown subcommand %q: want list, %s", sub, strings.Join(verbs, " or "))
}

func checkAddr(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s {
		return usagef("%q is not a bare email address", s)
	}
	return nil
}
