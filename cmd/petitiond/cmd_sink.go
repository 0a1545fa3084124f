package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/petitiond/petitiond/smtp"
)

func runSink(ctx context.Context, e *env, args []string) error {
	fs, _ := newFlags(e, "sink")
	listen := fs.String("listen", "127.0.0.1:2525", "address to listen on")
	dir := fs.String("dir", "", "directory for the accepted messages (.eml) and arrivals.jsonl (required)")
	reject := fs.String("reject", "", "recipients matching this regular expression get 550 5.1.1")
	certFile := fs.String("tls-cert", "", "certificate (PEM) to offer STARTTLS")
	keyFile := fs.String("tls-key", "", "key (PEM) for --tls-cert")
	auth := fs.String("auth", "", "require AUTH with user:password")
	delay := fs.Duration("delay", 0, "wait this long before answering DATA (simulates a slow relay)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wantArgs(fs, 0, "no arguments"); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	s := &smtp.Sink{Dir: *dir, DataDelay: *delay, Logger: slog.New(slog.NewTextHandler(e.stderr, nil))}
	if *reject != "" {
		re, err := regexp.Compile(*reject)
		if err != nil {
			return usagef("--reject: %v", err)
		}
		s.Reject = re
	}
	if (*certFile == "") != (*keyFile == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("--tls-cert: %w", err)
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if *auth != "" {
		u, p, ok := strings.Cut(*auth, ":")
		if !ok || u == "" {
			return usagef("--auth wants user:password")
		}
		s.Users = map[string]string{u: p}
	}
	fmt.Fprintf(e.stderr, "petitiond sink: listening on %s, writing to %s (%s)\n", *listen, *dir, time.Now().Format(time.RFC3339))
	return s.ListenAndServe(ctx, *listen)
}
