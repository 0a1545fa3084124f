package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// SetScrapeTimeout lets tests exercise the timeout without waiting for the
// production value.
func SetScrapeTimeout(m *Metrics, d time.Duration) { m.scrapeTimeout = d }

// CollectorErrors reads petitiond_scrape_collector_errors_total directly:
// a gather collects in parallel, so the same gather may not see its own
// increment.
func CollectorErrors(m *Metrics, collector string) float64 {
	return testutil.ToFloat64(m.collectorErrors.WithLabelValues(collector))
}
