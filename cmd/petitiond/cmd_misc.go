package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func buildInfo() (ver, rev string) {
	ver, rev = version, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
		if ver == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			ver = bi.Main.Version
		}
	}
	return ver, rev
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs, _ := newFlags(e, "version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ver, rev := buildInfo()
	fmt.Fprintf(e.stdout, "petitiond %s (revision %s, %s, %s/%s)\n", ver, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func runCheckConfig(_ context.Context, e *env, args []string) error {
	fs, cfgPath := newFlags(e, "check-config")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wantArgs(fs, 0, "no arguments"); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	out, err := cfg.Redacted()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "# configuration is valid; effective values, secrets redacted\n%s", out)
	return nil
}
