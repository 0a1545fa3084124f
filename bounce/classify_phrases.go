package bounce

import "strings"

// phraseSet finds any of a fixed list of lower-case phrases in a text in
// one pass: a bitmap of the phrases' first two bytes rules out almost
// every position before any comparison is made. It replaces one
// strings.Index (or LastIndex) per phrase over the same text.
type phraseSet struct {
	phrases []string
	refs    [][]int         // phrase indexes by their first two bytes, via index
	index   [1 << 16]uint16 // bigram -> 1 + position in refs; 0 for none
	bigrams [1 << 16 / 64]uint64
	single  []int // phrases of one byte, compared everywhere
}

func newPhraseSet(phrases ...string) *phraseSet {
	ps := &phraseSet{phrases: phrases}
	for i, p := range phrases {
		if len(p) < 2 {
			if len(p) == 1 {
				ps.single = append(ps.single, i)
			}
			continue
		}
		bg := uint16(p[0])<<8 | uint16(p[1])
		if ps.index[bg] == 0 {
			ps.refs = append(ps.refs, nil)
			ps.index[bg] = uint16(len(ps.refs))
		}
		ps.refs[ps.index[bg]-1] = append(ps.refs[ps.index[bg]-1], i)
		ps.bigrams[bg/64] |= 1 << (bg % 64)
	}
	return ps
}

// scan calls fn with the index of each phrase found and its offset, in
// order of offset, until fn returns false.
func (ps *phraseSet) scan(lower string, fn func(phrase, at int) bool) {
	ps.scanText(lower, false, fn)
}

// scanFold is scan for text of any case: ASCII letters compare without
// case, so that the caller need not lower-case (and copy) the text.
func (ps *phraseSet) scanFold(text string, fn func(phrase, at int) bool) {
	ps.scanText(text, true, fn)
}

func (ps *phraseSet) scanText(s string, fold bool, fn func(phrase, at int) bool) {
	for i := 0; i < len(s); i++ {
		c0 := s[i]
		if fold {
			c0 = lowerTable[c0]
		}
		for _, k := range ps.single {
			if c0 == ps.phrases[k][0] && !fn(k, i) {
				return
			}
		}
		if i+1 >= len(s) {
			break
		}
		c1 := s[i+1]
		if fold {
			c1 = lowerTable[c1]
		}
		bg := uint16(c0)<<8 | uint16(c1)
		if ps.bigrams[bg/64]&(1<<(bg%64)) == 0 {
			continue
		}
		for _, k := range ps.refs[ps.index[bg]-1] {
			p := ps.phrases[k]
			var ok bool
			if fold {
				ok = hasPrefixFold(s[i:], p)
			} else {
				ok = strings.HasPrefix(s[i:], p)
			}
			if ok && !fn(k, i) {
				return
			}
		}
	}
}

func lowerByte(c byte) byte { return lowerTable[c] }

var lowerTable = func() (t [256]byte) {
	for i := range t {
		c := byte(i)
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		t[i] = c
	}
	return t
}()

// hasPrefixFold tells whether s starts with the lower-case prefix p,
// ignoring the case of ASCII letters in s.
func hasPrefixFold(s, p string) bool {
	if len(s) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		if lowerByte(s[i]) != p[i] {
			return false
		}
	}
	return true
}

// first returns the index of the phrase found first in lower, or -1.
func (ps *phraseSet) first(lower string) int {
	found := -1
	ps.scan(lower, func(k, _ int) bool { found = k; return false })
	return found
}

// last returns the index of the phrase that starts last in lower, or -1.
func (ps *phraseSet) last(lower string) int {
	found := -1
	ps.scan(lower, func(k, _ int) bool { found = k; return true })
	return found
}

// contains tells whether any phrase occurs in lower.
func (ps *phraseSet) contains(lower string) bool { return ps.first(lower) >= 0 }
