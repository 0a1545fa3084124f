package bounce

import (
	"regexp"
	"regexp/syntax"
	"strings"
)

// ruleMatcher runs the rule table fast enough for the whole notice of a
// report: each alternative of each rule is compiled on its own with the
// literal it can not match without, and a single pass over the text with
// a two-byte index finds which literals occur. Only the alternatives whose
// literal is present run their regexp.
type ruleMatcher struct {
	alts    []alternative
	refs    [][]litRef      // literals by their first two bytes, via index
	index   [1 << 16]uint16 // bigram -> 1 + position in refs; 0 for none
	bigrams [1 << 16 / 64]uint64
	byRule  [][]int
}

type alternative struct {
	re   *regexp.Regexp
	lits []string // one of these occurs in every match; nil when unknown
	rule int
}

type litRef struct {
	alt int
	lit string
}

func newRuleMatcher(rs []rule) *ruleMatcher {
	m := &ruleMatcher{byRule: make([][]int, len(rs))}
	for ri, ru := range rs {
		re, err := syntax.Parse(ru.re.String(), syntax.Perl)
		if err != nil {
			// The rule compiled with regexp already; keep it whole.
			m.add(ri, ru.re, nil)
			continue
		}
		subs := []*syntax.Regexp{re}
		if re.Op == syntax.OpAlternate {
			subs = re.Sub
		}
		for _, s := range subs {
			m.add(ri, regexp.MustCompile(s.String()), requiredSet(s))
		}
	}
	return m
}

func (m *ruleMatcher) add(ri int, re *regexp.Regexp, lits []string) {
	for _, l := range lits {
		if len(l) < 2 {
			lits = nil
			break
		}
	}
	i := len(m.alts)
	m.alts = append(m.alts, alternative{re: re, lits: lits, rule: ri})
	m.byRule[ri] = append(m.byRule[ri], i)
	for _, l := range lits {
		bg := uint16(l[0])<<8 | uint16(l[1])
		if m.index[bg] == 0 {
			m.refs = append(m.refs, nil)
			m.index[bg] = uint16(len(m.refs))
		}
		k := m.index[bg] - 1
		m.refs[k] = append(m.refs[k], litRef{alt: i, lit: l})
		m.bigrams[bg/64] |= 1 << (bg % 64)
	}
}

// requiredSet returns literals one of which every match of re contains,
// preferring long ones; nil when there is no such set.
func requiredSet(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil
		}
		return []string{string(re.Rune)}
	case syntax.OpCapture, syntax.OpPlus:
		return requiredSet(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min > 0 {
			return requiredSet(re.Sub[0])
		}
	case syntax.OpAlternate:
		var out []string
		for _, s := range re.Sub {
			set := requiredSet(s)
			if set == nil {
				return nil
			}
			out = append(out, set...)
		}
		return out
	case syntax.OpConcat:
		var best []string
		bestLen := 1
		for _, s := range re.Sub {
			set := requiredSet(s)
			if set == nil {
				continue
			}
			shortest := len(set[0])
			for _, l := range set {
				shortest = min(shortest, len(l))
			}
			if shortest > bestLen {
				best, bestLen = set, shortest
			}
		}
		return best
	}
	return nil
}

// match returns the first rule, in table order, that matches lower.
func (m *ruleMatcher) match(lower string, allowWeak bool) *rule {
	strong, any := m.matchBoth(lower, allowWeak)
	if allowWeak {
		return any
	}
	return strong
}

// matchBoth returns the first strong rule and, when withWeak, the first
// rule of any kind that matches lower, from one scan of the text.
func (m *ruleMatcher) matchBoth(lower string, withWeak bool) (strong, any *rule) {
	return m.matchBothSkip(lower, withWeak, "")
}

// matchBothSkip is matchBoth ignoring the rules of one reason.
func (m *ruleMatcher) matchBothSkip(lower string, withWeak bool, skip string) (strong, any *rule) {
	var buf [256]bool
	present := buf[:0]
	if len(m.alts) <= len(buf) {
		present = buf[:len(m.alts)]
	} else {
		present = make([]bool, len(m.alts))
	}
	for i := 0; i+1 < len(lower); i++ {
		bg := uint16(lower[i])<<8 | uint16(lower[i+1])
		if m.bigrams[bg/64]&(1<<(bg%64)) == 0 {
			continue
		}
		for _, ref := range m.refs[m.index[bg]-1] {
			if !present[ref.alt] && strings.HasPrefix(lower[i:], ref.lit) {
				present[ref.alt] = true
			}
		}
	}
	for ri, alts := range m.byRule {
		isWeak := rules[ri].weak
		if isWeak && (!withWeak || any != nil) || !isWeak && strong != nil || rules[ri].reason == skip {
			continue
		}
		for _, a := range alts {
			if (m.alts[a].lits == nil || present[a]) && m.alts[a].re.MatchString(lower) {
				if any == nil {
					any = &rules[ri]
				}
				if !isWeak {
					strong = &rules[ri]
				}
				break
			}
		}
		if strong != nil && (any != nil || !withWeak) {
			break
		}
	}
	return strong, any
}
