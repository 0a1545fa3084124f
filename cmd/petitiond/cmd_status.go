package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/petitiond/petitiond/queue/ledger"
)

func runStatus(ctx context.Context, e *env, args []string) error {
	fs, cfgPath := newFlags(e, "status")
	sigID := fs.String("signature", "", "show one signature's deliveries")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wantArgs(fs, 0, "no arguments"); err != nil {
		return err
	}
	st, _, err := connect(ctx, e, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	if *sigID != "" {
		return signatureStatus(ctx, e, st, *sigID)
	}

	br, err := st.admin.Breaker(ctx)
	if err != nil {
		return err
	}
	if br.Open {
		fmt.Fprintf(e.stdout, "relay: DOWN, breaker open since %s (%s); opened %d time(s)\n",
			br.Since.Format(time.RFC3339), br.Reason, br.OpenedTotal)
	} else {
		fmt.Fprintf(e.stdout, "relay: breaker closed; opened %d time(s)\n", br.OpenedTotal)
	}

	qs, err := st.admin.QueueStats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "\nqueues:")
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  QUEUE\tPAUSED\tPENDING\tACTIVE\tSCHEDULED\tRETRY\tARCHIVED")
	byQueue := map[string]map[string]int{}
	paused := map[string]bool{}
	var order []string
	for _, q := range qs {
		if byQueue[q.Queue] == nil {
			byQueue[q.Queue] = map[string]int{}
			order = append(order, q.Queue)
		}
		byQueue[q.Queue][q.State] = q.Tasks
		paused[q.Queue] = q.Paused
	}
	for _, q := range order {
		m := byQueue[q]
		fmt.Fprintf(tw, "  %s\t%v\t%d\t%d\t%d\t%d\t%d\n", q, paused[q], m["pending"], m["active"], m["scheduled"], m["retry"], m["archived"])
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(e.stdout, "\ntargets:")
	if err := printTargets(ctx, e, st); err != nil {
		return err
	}
	sups, err := st.ledger.Suppressions(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\nsuppressions: %d (petitiond suppression list)\n", len(sups))
	return nil
}

func printTargets(ctx context.Context, e *env, st *stores) error {
	ts, err := st.admin.Targets(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TARGET\tSTATE\tBACKLOG\tHELD\tREASON")
	for _, t := range ts {
		reason := t.Reason
		if !t.Until.IsZero() {
			reason += " (until " + t.Until.Format(time.RFC3339) + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", t.Address, t.State(), t.Backlog.Round(time.Second), t.Held, reason)
	}
	return tw.Flush()
}

func signatureStatus(ctx context.Context, e *env, st *stores, id string) error {
	s, err := st.admin.Signature(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("signature %q: not found (never submitted, not yet fanned out, or expired)", id)
	}
	if err != nil {
		return err
	}
	rec := s.Signature
	fmt.Fprintf(e.stdout, "signature %s, campaign %s: %s", rec.ID, rec.Campaign, rec.Outcome)
	if rec.DuplicateOf != "" {
		fmt.Fprintf(e.stdout, " (same signer as %s)", rec.DuplicateOf)
	}
	fmt.Fprintf(e.stdout, "\ndelivered to %d of %d targets\n", s.Sent, len(s.Deliveries))
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DELIVERY\tTARGET\tSTATE\tATTEMPTS\tUPDATED\tDETAIL")
	for _, d := range s.Deliveries {
		detail := strings.TrimSpace(strings.Join([]string{d.BounceKind, d.Reason, d.LastReply}, " "))
		updated := ""
		if !d.UpdatedAt.IsZero() {
			updated = d.UpdatedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Target, d.State, d.Attempts, updated, detail)
	}
	return tw.Flush()
}
