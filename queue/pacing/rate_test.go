package pacing

import (
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		str  string
	}{
		{"60/h", Rate{60, time.Hour}, "60/h"},
		{"20/s", Rate{20, time.Second}, "20/s"},
		{"30/m", Rate{30, time.Minute}, "30/m"},
		{"30/min", Rate{30, time.Minute}, "30/m"},
		{"600/hour", Rate{600, time.Hour}, "600/h"},
		{"1/d", Rate{1, 24 * time.Hour}, "1/d"},
		{" 5 / Hours ", Rate{5, time.Hour}, "5/h"},
		{"10/90s", Rate{10, 90 * time.Second}, "10/1m30s"},
		{"1000000/s", Rate{1000000, time.Second}, "1000000/s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if err != nil {
				t.Fatalf("ParseRate(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseRate(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Fatalf("String() = %q, want %q", s, tt.str)
			}
			back, err := ParseRate(got.String())
			if err != nil || back != got {
				t.Fatalf("ParseRate(String()) = %+v, %v; want %+v", back, err, got)
			}
		})
	}
}

func TestParseRateRejects(t *testing.T) {
	tests := []struct {
		in     string
		reason string
	}{
		{"", "want N/unit"},
		{"0", "want N/unit"},
		{"60", "want N/unit"},
		{"0/h", "at least 1"},
		{"-5/s", "at least 1"},
		{"abc/s", "not a whole number"},
		{"1.5/s", "not a whole number"},
		{"10/fortnight", "unknown unit"},
		{"10/", "unknown unit"},
		{"10/0s", "must be positive"},
		{"10/-1s", "must be positive"},
		{"2000000/s", "one send per microsecond"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRate(tt.in)
			if err == nil {
				t.Fatalf("ParseRate(%q) = %+v, want an error", tt.in, r)
			}
			if !strings.Contains(err.Error(), `"`+tt.in+`"`) {
				t.Errorf("error %q does not name the input %q", err, tt.in)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
		})
	}
}

func TestRateInterval(t *testing.T) {
	tests := []struct {
		rate       Rate
		want       time.Duration
		wantMicros int64
	}{
		{Rate{60, time.Hour}, time.Minute, 60_000_000},
		{Rate{20, time.Second}, 50 * time.Millisecond, 50_000},
		{Rate{10, time.Second}, 100 * time.Millisecond, 100_000},
		// Rounding up keeps three sends from fitting in under a second.
		{Rate{3, time.Second}, 333333333 * time.Nanosecond, 333_334},
		{Rate{7, time.Millisecond}, 142857 * time.Nanosecond, 143},
	}
	for _, tt := range tests {
		t.Run(tt.rate.String(), func(t *testing.T) {
			if got := tt.rate.Interval(); got != tt.want {
				t.Errorf("Interval() = %v, want %v", got, tt.want)
			}
			if got := tt.rate.intervalMicros(); got != tt.wantMicros {
				t.Errorf("intervalMicros() = %d, want %d", got, tt.wantMicros)
			}
		})
	}
}

func TestRateBucket(t *testing.T) {
	tests := []struct {
		rate          string
		width, capcty int64
	}{
		{"50/s", 1_000_000, 50},
		{"10/s", 1_000_000, 10},
		{"3/s", 1_000_000, 3}, // not 2, as 1 s / the rounded-up interval would give
		{"120/m", 1_000_000, 2},
		{"3/2s", 1_000_000, 1}, // 1.5 per second rounds down
		{"1/s", 1_000_000, 1},
		{"600/h", 6_000_000, 1},
		{"1/m", 60_000_000, 1},
		{"10/90s", 9_000_000, 1},
		{"7/1ms", 1_000_000, 7000},
		{"1000000/s", 1_000_000, 1_000_000},
		{"1000000000000/1000000h", 1_000_000, 277}, // large N does not overflow
	}
	for _, tt := range tests {
		t.Run(tt.rate, func(t *testing.T) {
			w, c := MustParseRate(tt.rate).bucket()
			if w != tt.width || c != tt.capcty {
				t.Fatalf("bucket() = %d µs × %d, want %d µs × %d", w, c, tt.width, tt.capcty)
			}
		})
	}
}
