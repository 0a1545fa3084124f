package mailstack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The default main.cf is shared by every test process on the machine, so
// our edits live in one marked block that is rebuilt under an flock on each
// change. Postfix takes the last definition of a parameter, so the block
// carries the operator's own alternate_config_directories value forward
// instead of hiding it, and removing the block restores the original file.
const (
	blockBegin  = "# BEGIN petitiond mailstack: test instances, removed when they stop"
	blockEnd    = "# END petitiond mailstack"
	createdMark = "# petitiond mailstack created this file"
	altDirsKey  = "alternate_config_directories"
)

// lockFile serialises edits to the default main.cf between processes. It
// lives outside /etc/postfix so that it never shows up in the Postfix
// configuration directory.
func lockFile() string {
	return filepath.Join(os.TempDir(), "petitiond-mailstack-maincf.lock")
}

// withFileLock runs fn while holding an exclusive flock on path. The lock is
// taken with LOCK_NB in a polling loop so that ctx can bound the wait.
func withFileLock(ctx context.Context, path string, fn func() error) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open lock file %s: %w", path, err)
	}
	defer f.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("flock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing the file releases it anyway
	return fn()
}

// registerConfigDir adds dir to alternate_config_directories in the main.cf
// at mainCF, creating the file if there is none.
func registerConfigDir(ctx context.Context, mainCF, dir string) error {
	return withFileLock(ctx, lockFile(), func() error {
		return editMainCF(mainCF, func(ours []string) []string {
			for _, d := range ours {
				if d == dir {
					return ours
				}
			}
			return append(ours, dir)
		})
	})
}

// unregisterConfigDir removes dir again; when no test instance is left the
// block goes, and so does the file if the block created it.
func unregisterConfigDir(ctx context.Context, mainCF, dir string) error {
	return withFileLock(ctx, lockFile(), func() error {
		return editMainCF(mainCF, func(ours []string) []string {
			kept := ours[:0]
			for _, d := range ours {
				if d != dir {
					kept = append(kept, d)
				}
			}
			return kept
		})
	})
}

// editMainCF rewrites the managed block with the directory list that change
// returns. Directories that no longer exist are dropped on the way: they
// belong to test processes that died before their cleanup ran.
func editMainCF(mainCF string, change func(ours []string) []string) error {
	raw, err := os.ReadFile(mainCF)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", mainCF, err)
	}
	mode := fs.FileMode(0o644)
	if existed {
		if st, err := os.Stat(mainCF); err == nil {
			mode = st.Mode().Perm()
		}
	}

	rest, block, created := splitBlock(string(raw))
	if !existed {
		created = true
	}
	base := lastValue(rest, altDirsKey)
	baseSet := map[string]bool{}
	for _, d := range fields(base) {
		baseSet[d] = true
	}
	var ours []string
	for _, d := range fields(lastValue(block, altDirsKey)) {
		if baseSet[d] {
			continue
		}
		if _, err := os.Stat(d); err != nil {
			continue
		}
		ours = append(ours, d)
	}
	ours = change(ours)

	if len(ours) == 0 {
		if created && strings.TrimSpace(rest) == "" {
			if err := os.Remove(mainCF); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", mainCF, err)
			}
			return nil
		}
		return writeAtomic(mainCF, []byte(rest), mode)
	}

	var b strings.Builder
	b.WriteString(rest)
	if rest != "" && !strings.HasSuffix(rest, "\n") {
		b.WriteString("\n")
	}
	b.WriteString(blockBegin + "\n")
	if created {
		b.WriteString(createdMark + "\n")
	}
	value := strings.Join(append(fields(base), ours...), " ")
	fmt.Fprintf(&b, "%s = %s\n", altDirsKey, value)
	b.WriteString(blockEnd + "\n")
	return writeAtomic(mainCF, []byte(b.String()), mode)
}

// splitBlock separates the managed block from the rest of the file.
func splitBlock(s string) (rest, block string, created bool) {
	var restB, blockB strings.Builder
	in := false
	for _, line := range strings.SplitAfter(s, "\n") {
		trimmed := strings.TrimRight(line, "\n")
		switch {
		case trimmed == blockBegin:
			in = true
		case trimmed == blockEnd:
			in = false
		case in:
			if trimmed == createdMark {
				created = true
				continue
			}
			blockB.WriteString(line)
		default:
			restB.WriteString(line)
		}
	}
	return restB.String(), blockB.String(), created
}

// lastValue returns the value of the last definition of key in main.cf text,
// joining continuation lines (lines that start with whitespace) as Postfix
// does.
func lastValue(s, key string) string {
	var value string
	found := false
	collecting := false
	for _, line := range strings.Split(s, "\n") {
		if collecting && line != "" && (line[0] == ' ' || line[0] == '\t') {
			value += " " + strings.TrimSpace(line)
			continue
		}
		collecting = false
		name, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") || strings.TrimSpace(name) != key || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		value, found, collecting = strings.TrimSpace(v), true, true
	}
	if !found {
		return ""
	}
	return value
}

// fields splits a Postfix list value, which may use commas or whitespace.
func fields(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n'
	})
}

func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".main.cf.mailstack-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	// Postfix waits for a config file modified in the current second to
	// settle; backdating spares every postfix command that wait.
	past := time.Now().Add(-2 * time.Second)
	if err := os.Chtimes(tmp.Name(), past, past); err != nil {
		return fmt.Errorf("backdate %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
