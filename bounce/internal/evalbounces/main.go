// Command evalbounces scores the bounce parser against a directory of real
// messages with expected results (expected.jsonl, one JSON object per
// file), per family and overall, and measures its throughput on one core.
//
// Expectations come from another parser whose reason vocabulary is finer
// than petitiond's; those reasons are compared through the equivalence
// table below, which is printed with the results.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/petitiond/petitiond/bounce"
)

// reasonEquivalents maps reasons of the expectation vocabulary that
// DESIGN.md does not have to the word petitiond uses for the same thing.
var reasonEquivalents = map[string]string{
	"authfailure":     "securityerror",
	"failedstarttls":  "securityerror",
	"requireptr":      "blocked",
	"badreputation":   "blocked",
	"norelaying":      "rejected",
	"speeding":        "toomanyconn",
	"systemfull":      "systemerror",
	"syntaxerror":     "systemerror",
	"mailererror":     "systemerror",
	"notcompliantrfc": "policyviolation",
	"contenterror":    "policyviolation",
	"exceedlimit":     "mesgtoobig",
	"virusdetected":   "spamdetected",
	"onhold":          "undefined",
}

type expRecipient struct {
	Address string `json:"address"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Hard    bool   `json:"hard"`
	Pseudo  bool   `json:"status_is_sisimai_pseudo"`
}

type expected struct {
	File       string         `json:"file"`
	Kind       string         `json:"kind"`
	Recipients []expRecipient `json:"recipients"`
}

// score counts hits over attempts for one measure.
type score struct{ ok, n int }

func (s *score) add(ok bool) {
	s.n++
	if ok {
		s.ok++
	}
}

func (s score) String() string {
	if s.n == 0 {
		return "      -      "
	}
	return fmt.Sprintf("%3d/%-3d %5.1f%%", s.ok, s.n, 100*float64(s.ok)/float64(s.n))
}

type tally struct {
	detected, address, class, reason, hard score
}

func (t *tally) merge(o tally) {
	for _, p := range [][2]*score{{&t.detected, &o.detected}, {&t.address, &o.address}, {&t.class, &o.class}, {&t.reason, &o.reason}, {&t.hard, &o.hard}} {
		p[0].ok += p[1].ok
		p[0].n += p[1].n
	}
}

func main() {
	dir := flag.String("dir", "", "directory of samples with expected.jsonl (default ../shared/bounce-samples from the repository root)")
	verbose := flag.Bool("v", false, "print every mismatch")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *dir == "" {
		*dir = defaultDir()
	}
	if _, err := os.Stat(filepath.Join(*dir, "expected.jsonl")); errors.Is(err, fs.ErrNotExist) {
		fmt.Printf("evalbounces: no samples at %s, nothing to evaluate\n", *dir)
		return
	}
	if err := run(*dir, *verbose); err != nil {
		log.Error("evaluation failed", "dir", *dir, "err", err)
		os.Exit(1)
	}
}

// defaultDir finds the repository root (the directory holding go.mod) from
// the working directory and points beside it.
func defaultDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return filepath.Join("..", "shared", "bounce-samples")
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "..", "shared", "bounce-samples")
		}
		if filepath.Dir(d) == d {
			return filepath.Join(wd, "..", "shared", "bounce-samples")
		}
	}
}

func family(file string) string {
	base := strings.TrimSuffix(file, filepath.Ext(file))
	if i := strings.LastIndexByte(base, '-'); i > 0 {
		return base[:i]
	}
	return base
}

func sameReason(want, got string, action string) bool {
	if e, ok := reasonEquivalents[want]; ok {
		want = e
	}
	if want == got {
		return true
	}
	// The expectations call a delay that is still being retried
	// "expired"; petitiond says "delayed" until the MTA gives up.
	return want == "expired" && got == "delayed" && action == "delayed"
}

func run(dir string, verbose bool) error {
	f, err := os.Open(filepath.Join(dir, "expected.jsonl"))
	if err != nil {
		return fmt.Errorf("open expectations: %w", err)
	}
	defer f.Close()
	var exps []expected
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e expected
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("read expectations: %w", err)
		}
		exps = append(exps, e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read expectations: %w", err)
	}

	raws := make([][]byte, 0, len(exps))
	families := map[string]*tally{}
	var total tally
	for _, e := range exps {
		raw, err := os.ReadFile(filepath.Join(dir, e.File))
		if err != nil {
			return fmt.Errorf("read sample: %w", err)
		}
		raws = append(raws, raw)
		res, err := bounce.Parse(raw)
		if err != nil {
			fmt.Printf("%s: parse error: %v\n", e.File, err)
		}
		t := scoreOne(e, res, verbose)
		fam := family(e.File)
		if families[fam] == nil {
			families[fam] = &tally{}
		}
		families[fam].merge(t)
		total.merge(t)
	}

	names := make([]string, 0, len(families))
	for k := range families {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Printf("%-24s %-15s %-15s %-15s %-15s %-15s\n", "family", "detected", "address", "status class", "reason", "hard/soft")
	for _, n := range names {
		t := families[n]
		fmt.Printf("%-24s %-15s %-15s %-15s %-15s %-15s\n", n, t.detected, t.address, t.class, t.reason, t.hard)
	}
	fmt.Printf("%-24s %-15s %-15s %-15s %-15s %-15s\n", "OVERALL", total.detected, total.address, total.class, total.reason, total.hard)
	fmt.Println("reason equivalences (expected → petitiond):", equivalences())

	runtime.GOMAXPROCS(1)
	n := 0
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		for _, raw := range raws {
			_, _ = bounce.Parse(raw)
			n++
		}
	}
	el := time.Since(start)
	fmt.Printf("throughput: %d messages in %v on GOMAXPROCS=1: %.0f messages/s\n", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
	return nil
}

func equivalences() string {
	keys := make([]string, 0, len(reasonEquivalents))
	for k := range reasonEquivalents {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		parts = append(parts, k+"→"+reasonEquivalents[k])
	}
	parts = append(parts, "expired→delayed (for Action: delayed)")
	return strings.Join(parts, ", ")
}

func scoreOne(e expected, res *bounce.Result, verbose bool) tally {
	var t tally
	miss := func(what string, want, got any) {
		if verbose {
			fmt.Printf("MISS %-32s %-8s want %v got %v\n", e.File, what, want, got)
		}
	}
	var det bool
	switch e.Kind {
	case "bounce":
		det = res.IsBounce
	case "feedback":
		det = res.Kind == bounce.KindComplaint
	case "vacation":
		det = res.Kind == bounce.KindAutoreply
	default:
		det = !res.IsBounce
	}
	t.detected.add(det)
	if !det {
		miss("detect", e.Kind, res.Kind)
	}
	if e.Kind == "delivered" {
		return t
	}
	for i, want := range e.Recipients {
		var got *bounce.Recipient
		for j := range res.Recipients {
			if strings.EqualFold(res.Recipients[j].Address, want.Address) {
				got = &res.Recipients[j]
				break
			}
		}
		t.address.add(got != nil)
		if got == nil {
			miss("address", want.Address, addrs(res))
			// Judge the rest against the recipient in the same place, so
			// a wrong address does not hide a wrong classification.
			if i < len(res.Recipients) {
				got = &res.Recipients[i]
			} else if len(res.Recipients) > 0 {
				got = &res.Recipients[0]
			}
		}
		gr := bounce.Recipient{}
		if got != nil {
			gr = *got
		}
		ok := sameReason(want.Reason, gr.Reason, gr.Action)
		t.reason.add(ok)
		if !ok {
			miss("reason", want.Reason, gr.Reason+" ["+truncate(gr.Diagnostic, 140)+"]")
		}
		if e.Kind != "bounce" {
			continue
		}
		if want.Status != "" {
			ok := gr.Status != "" && gr.Status[0] == want.Status[0]
			t.class.add(ok)
			if !ok {
				miss("class", want.Status, gr.Status)
			}
		}
		t.hard.add(gr.Hard == want.Hard)
		if gr.Hard != want.Hard {
			miss("hard", want.Hard, gr.Hard)
		}
	}
	return t
}

func addrs(res *bounce.Result) []string {
	out := make([]string, 0, len(res.Recipients))
	for _, r := range res.Recipients {
		out = append(out, r.Address)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
