package deploy_test

import (
	"regexp"
	"sort"
	"strings"
)

// metricNames returns the metric names a PromQL expression selects. It is a
// lexer, not a parser: it drops strings, label matchers, ranges and
// grouping clauses, then keeps identifiers that are neither keywords nor
// function calls. TestMetricNames pins down what it understands.
func metricNames(expr string) []string {
	for _, re := range []*regexp.Regexp{reString, reGrouping} {
		expr = re.ReplaceAllString(expr, " ")
	}
	// Label matchers and ranges do not nest, but may repeat.
	for _, re := range []*regexp.Regexp{reBraces, reBrackets} {
		for prev := ""; prev != expr; {
			prev = expr
			expr = re.ReplaceAllString(expr, " ")
		}
	}
	seen := map[string]bool{}
	for _, loc := range reIdent.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsRune("0123456789.$", rune(expr[loc[0]-1])) {
			continue // exponent, duration unit or a Grafana variable
		}
		if promqlKeywords[strings.ToLower(name)] {
			continue
		}
		if rest := strings.TrimLeft(expr[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // function or aggregation
		}
		seen[name] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reBraces   = regexp.MustCompile(`\{[^{}]*\}`)
	reBrackets = regexp.MustCompile(`\[[^\[\]]*\]`)
	reGrouping = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

	// labelValues finds the metric of a Grafana label_values(metric, label)
	// variable query; label_values(label) names no metric.
	labelValues = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{,]`)

	promqlKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true, "inf": true, "nan": true,
	}
)

// grafanaToPromQL replaces Grafana's variables with values that make the
// query plain PromQL, so promtool can parse it.
func grafanaToPromQL(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		"${job}", ".*", "$job", ".*", "${campaign}", ".*", "$campaign", ".*",
	).Replace(expr)
}
