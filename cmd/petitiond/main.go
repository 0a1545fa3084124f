// Command petitiond delivers signed petitions as email. main only wires: it
// parses the command line, loads the configuration, builds the packages'
// dependencies and handles signals. Everything else lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit statuses: 0 success, 1 failure, 2 bad usage.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// usageError marks an error as bad usage (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// env is what a command sees of the process: its streams and environment,
// passed explicitly so commands can be tested in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	environ        []string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the daemon (ingest, fan-out, delivery, bounce watcher, HTTP)", runServe},
		{"enqueue", "submit signatures: JSON Lines on stdin, one result line per input", runEnqueue},
		{"campaign", "manage campaigns: apply FILE | list | close ID", runCampaign},
		{"status", "queues, targets, backlogs, suppressions; --signature ID for one signature", runStatus},
		{"suppression", "manage suppressions: list | add ADDR | release ADDR", runSuppression},
		{"target", "target states and backlogs: list | pause ADDR | resume ADDR", runTarget},
		{"bounce", "bounce parse [FILE...]: parse raw messages, one JSON object each", runBounce},
		{"sink", "development SMTP sink: --listen ADDR --dir DIR [--reject REGEX]", runSink},
		{"check-config", "validate the configuration and print it with secrets redacted", runCheckConfig},
		{"version", "print version and build info", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue *usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "petitiond %s: %v\n", c.name, err)
			return exitUsage
		case errors.Is(err, errReported):
			return exitFail
		default:
			fmt.Fprintf(e.stderr, "petitiond %s: %v\n", c.name, err)
			return exitFail
		}
	}
	fmt.Fprintf(e.stderr, "petitiond: unknown command %q\n\n", args[0])
	printUsage(e.stderr)
	return exitUsage
}

// errReported means the command already told the user what went wrong and
// only the exit status remains.
var errReported = errors.New("failure already reported")

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: petitiond COMMAND [--config FILE] [flags] [args]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every configuration key can be overridden by PETITIOND_SECTION_KEY (e.g. PETITIOND_REDIS_URL).")
}

// newFlags returns a flag set that reports errors instead of exiting, with
// the shared --config flag.
func newFlags(e *env, name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("petitiond "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfg := fs.String("config", "", "configuration file (YAML); PETITIOND_* variables override it")
	return fs, cfg
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	return nil
}

func wantArgs(fs *flag.FlagSet, n int, what string) error {
	if fs.NArg() != n {
		return usagef("want %s, got %d argument(s): %s", what, fs.NArg(), strings.Join(fs.Args(), " "))
	}
	return nil
}
