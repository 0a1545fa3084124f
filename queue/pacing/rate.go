package pacing

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Rate is N sends per Per.
type Rate struct {
	N   int
	Per time.Duration
}

// units maps the unit words accepted after the slash to their durations.
// The first spelling of each duration is the one String writes.
var units = []struct {
	names []string
	per   time.Duration
}{
	{[]string{"s", "sec", "second", "seconds"}, time.Second},
	{[]string{"m", "min", "minute", "minutes"}, time.Minute},
	{[]string{"h", "hr", "hour", "hours"}, time.Hour},
	{[]string{"d", "day", "days"}, 24 * time.Hour},
}

// ParseRate reads a rate written "N/unit" ("60/h", "20/s", "30/min",
// "600/hour", "1/d") or "N/duration" ("10/90s", "5/1h30m"). The error names
// the input, because rates come from operator-edited config and campaign files.
func ParseRate(s string) (Rate, error) {
	in := strings.TrimSpace(s)
	num, unit, ok := strings.Cut(in, "/")
	if !ok {
		return Rate{}, fmt.Errorf("pacing: rate %q: want N/unit, e.g. \"60/h\" or \"20/s\"", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil {
		return Rate{}, fmt.Errorf("pacing: rate %q: count %q is not a whole number", s, num)
	}
	if n <= 0 {
		return Rate{}, fmt.Errorf("pacing: rate %q: count must be at least 1", s)
	}
	unit = strings.ToLower(strings.TrimSpace(unit))
	per, err := parsePer(unit)
	if err != nil {
		return Rate{}, fmt.Errorf("pacing: rate %q: %w", s, err)
	}
	r := Rate{N: n, Per: per}
	if r.Interval() < time.Microsecond {
		return Rate{}, fmt.Errorf("pacing: rate %q: faster than one send per microsecond", s)
	}
	return r, nil
}

func parsePer(unit string) (time.Duration, error) {
	for _, u := range units {
		for _, name := range u.names {
			if unit == name {
				return u.per, nil
			}
		}
	}
	d, err := time.ParseDuration(unit)
	if err != nil {
		return 0, fmt.Errorf("unknown unit %q (use s, m, h, d or a duration like 90s)", unit)
	}
	if d <= 0 {
		return 0, fmt.Errorf("period %q must be positive", unit)
	}
	return d, nil
}

// MustParseRate is ParseRate for constants in code and tests; it panics on a
// malformed rate.
func MustParseRate(s string) Rate {
	r, err := ParseRate(s)
	if err != nil {
		panic(err)
	}
	return r
}

// Interval is the minimum spacing between two sends under r.
func (r Rate) Interval() time.Duration {
	if r.N <= 0 {
		return 0
	}
	return r.Per / time.Duration(r.N)
}

// intervalMicros rounds the interval up, so rounding can only make pacing
// slower than the rate, never faster.
func (r Rate) intervalMicros() int64 {
	us := int64(r.Per / time.Microsecond)
	if r.Per%time.Microsecond != 0 {
		us++
	}
	n := int64(r.N)
	return (us + n - 1) / n
}

// String writes r in the form ParseRate reads back.
func (r Rate) String() string {
	for _, u := range units {
		if r.Per == u.per {
			return fmt.Sprintf("%d/%s", r.N, u.names[0])
		}
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

func (r Rate) valid() error {
	if r.N <= 0 || r.Per <= 0 {
		return fmt.Errorf("rate %d per %s is not positive", r.N, r.Per)
	}
	if r.Interval() < time.Microsecond {
		return fmt.Errorf("rate %s is faster than one send per microsecond", r)
	}
	return nil
}

// bucket returns the width in µs and the capacity of the buckets a shared key
// at rate r is booked in: one interval wide and holding one booking when the
// interval is a second or more, else one second wide and holding the whole
// sends r allows in a second (computed from N and Per, not from the rounded
// interval, so 3/s holds 3 and not 2).
func (r Rate) bucket() (width, capacity int64) {
	iv := r.intervalMicros()
	if iv >= int64(time.Second/time.Microsecond) {
		return iv, 1
	}
	// N × 1 s / Per without overflow; the quotient is at most 1,000,000
	// because valid rates allow at most one send per microsecond.
	hi, lo := bits.Mul64(uint64(r.N), uint64(time.Second))
	c, _ := bits.Div64(hi, lo, uint64(r.Per))
	return int64(time.Second / time.Microsecond), max(1, int64(c))
}
