package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/petitiond/petitiond/bounce"
	"github.com/petitiond/petitiond/smtp"
)

func runBounce(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "parse" {
		return usagef("want: bounce parse [FILE...]")
	}
	fs, cfgPath := newFlags(e, "bounce parse")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	// The configuration is optional here: with a VERP secret, delivery ids
	// are filled in from tokens that verify; without one they stay empty.
	var verp *smtp.VERP
	if *cfgPath != "" || hasEnv(e, "PETITIOND_SENDER_VERP_SECRET") || hasEnv(e, "PETITIOND_SENDER_VERP_SECRET_FILE") {
		cfg, err := loadClientConfig(e, *cfgPath)
		if err != nil {
			return err
		}
		if cfg.Sender.VERPSecret != "" {
			verp = &smtp.VERP{Secret: []byte(cfg.Sender.VERPSecret), Domain: cfg.Sender.BounceDomain}
		}
	}
	out := json.NewEncoder(e.stdout)
	parse := func(name string, r io.Reader) error {
		raw, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		res, _ := bounce.Parse(raw)
		res.File = name
		if verp != nil {
			if v := bounce.VerifiedDeliveries(*verp, res); len(v) > 0 {
				res.DeliveryID = v[0].ID
			}
		}
		return out.Encode(res)
	}
	if fs.NArg() == 0 {
		return parse("-", e.stdin)
	}
	failed := 0
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(e.stderr, "petitiond bounce parse: %v\n", err)
			failed++
			continue
		}
		err = parse(name, f)
		f.Close()
		if err != nil {
			fmt.Fprintf(e.stderr, "petitiond bounce parse: %v\n", err)
			failed++
		}
	}
	if failed > 0 {
		return errReported
	}
	return ctx.Err()
}

func hasEnv(e *env, name string) bool {
	for _, kv := range e.environ {
		if len(kv) > len(name) && kv[:len(name)+1] == name+"=" {
			return true
		}
	}
	return false
}
