package rkeys_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/petitiond/petitiond/internal/rkeys"
)

const docPath = "../../docs/redis-keys.md"

// sample is the argument every key function is called with; the key's
// pattern is what comes before it. Lower case, because some functions
// normalise their argument.
const sample = "sample-arg"

// keys lists every key rkeys builds: the exported constants as they are,
// the functions called with the sample argument.
var keys = []struct {
	name string
	key  string
}{
	{"SignatureStream", rkeys.SignatureStream},
	{"RejectedStream", rkeys.RejectedStream},
	{"IngestGroup", rkeys.IngestGroup},
	{"CampaignIndex", rkeys.CampaignIndex},
	{"Campaign", rkeys.Campaign(sample)},
	{"Signature", rkeys.Signature(sample)},
	{"Signer", rkeys.Signer(sample, sample)},
	{"Delivery", rkeys.Delivery(sample)},
	{"SuppressionIndex", rkeys.SuppressionIndex},
	{"TargetIndex", rkeys.TargetIndex},
	{"Suppression", rkeys.Suppression(sample)},
	{"Target", rkeys.Target(sample)},
	{"Held", rkeys.Held(sample)},
	{"PauseUntil", rkeys.PauseUntil},
	{"SoftBounces", rkeys.SoftBounces(sample)},
	{"PaceAddress", rkeys.PaceAddress(sample)},
	{"PaceDomain", rkeys.PaceDomain(sample)},
	{"PaceCampaign", rkeys.PaceCampaign(sample)},
	{"PaceGlobal", rkeys.PaceGlobal},
	{"Breaker", rkeys.Breaker},
	{"BreakerProbeLock", rkeys.BreakerProbeLock},
	{"IMAPCheckpoint", rkeys.IMAPCheckpoint(sample)},
	{"IMAPSeen", rkeys.IMAPSeen(sample)},
	{"IMAPLease", rkeys.IMAPLease(sample)},
	{"BounceLog", rkeys.BounceLog},
}

// notKeys are exported names of rkeys that build no key.
var notKeys = map[string]bool{"Norm": true}

// pattern returns what the doc must show for a key: the key itself for a
// constant, the part before the sample argument for a function.
func pattern(key string) (p string, isPrefix bool) {
	if i := strings.Index(key, sample); i >= 0 {
		return key[:i], true
	}
	return key, false
}

func readDoc(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatalf("read %s: %v", docPath, err)
	}
	return string(doc)
}

// codeSpans returns the inline code spans of a Markdown document.
func codeSpans(doc string) []string {
	var out []string
	for _, m := range regexp.MustCompile("`([^`\n]+)`").FindAllStringSubmatch(doc, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestDocListsEveryKey fails when a key built by rkeys is not in
// docs/redis-keys.md as a code span: a constant exactly, a function as its
// prefix followed by a <placeholder>.
func TestDocListsEveryKey(t *testing.T) {
	spans := codeSpans(readDoc(t))
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			p, isPrefix := pattern(k.key)
			if p == "" {
				t.Fatalf("%s builds %q: no prefix before the sample argument", k.name, k.key)
			}
			for _, s := range spans {
				if !isPrefix && s == p {
					return
				}
				if isPrefix && strings.HasPrefix(s, p) && strings.HasPrefix(s[len(p):], "<") {
					return
				}
			}
			want := "`" + p + "`"
			if isPrefix {
				want = "`" + p + "<...>`"
			}
			t.Errorf("%s: %s does not show %s (built: %q)", k.name, docPath, want, k.key)
		})
	}
}

// TestDocListsNoOtherKeys fails when the doc names a petitiond: key that
// rkeys no longer builds, so a renamed key cannot leave a stale entry.
func TestDocListsNoOtherKeys(t *testing.T) {
	// Spans that start like a key but are none: the common prefix and the
	// asynq task types.
	other := map[string]bool{"petitiond:": true, "petitiond:fanout": true, "petitiond:deliver": true}
	for _, s := range codeSpans(readDoc(t)) {
		name, _, _ := strings.Cut(s, " ")
		if !strings.HasPrefix(name, "petitiond:") || other[name] {
			continue
		}
		known := false
		for _, k := range keys {
			p, isPrefix := pattern(k.key)
			if name == p || (isPrefix && strings.HasPrefix(name, p+"<")) {
				known = true
				break
			}
		}
		if !known {
			t.Errorf("%s names %q, which internal/rkeys does not build", docPath, name)
		}
	}
}

// TestTableCoversPackage fails when rkeys gains an exported name that the
// table above does not call, so the doc check cannot silently skip it.
func TestTableCoversPackage(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "rkeys.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var exported []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil && d.Name.IsExported() {
				exported = append(exported, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if v, ok := s.(*ast.ValueSpec); ok {
					for _, n := range v.Names {
						if n.IsExported() {
							exported = append(exported, n.Name)
						}
					}
				}
			}
		}
	}
	sort.Strings(exported)
	inTable := map[string]bool{}
	for _, k := range keys {
		inTable[k.name] = true
	}
	if len(exported) < len(keys) {
		t.Fatalf("found %d exported names in rkeys.go, fewer than the %d in the table: %v", len(exported), len(keys), exported)
	}
	for _, n := range exported {
		if !inTable[n] && !notKeys[n] {
			t.Errorf("rkeys.%s is not in the table of keys in rkeys_test.go; add it, and document it in %s", n, docPath)
		}
	}
}
