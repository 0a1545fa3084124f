// Package metrics owns petitiond's Prometheus instrumentation: one registry
// per process with every petitiond_* collector (the names are the contract
// in DESIGN.md and docs/metrics.md), the scrape-time collectors for target
// and queue state, and the HTTP endpoint that serves /metrics, /healthz and
// /readyz.
//
// Labels are bounded by configuration: campaign and target come from
// applied campaigns, outcomes and reasons are fixed words. Nothing that
// identifies a signer is ever a label value.
package metrics

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "petitiond"

// Signature outcomes (label "outcome" of petitiond_signatures_total).
const (
	SignatureAccepted        = "accepted"
	SignatureDuplicate       = "duplicate"
	SignatureRejected        = "rejected"
	SignatureCampaignClosed  = "campaign_closed"
	SignatureUnknownCampaign = "unknown_campaign"
)

// Delivery outcomes (label "outcome" of petitiond_deliveries_total).
const (
	DeliverySent      = "sent"
	DeliveryFailed    = "failed"
	DeliveryDropped   = "dropped"
	DeliveryDuplicate = "duplicate"
)

// Deferral reasons (label "reason" of petitiond_deferrals_total).
const (
	DeferralRateLimited  = "rate_limited"
	DeferralTempFailure  = "temp_failure"
	DeferralTargetPaused = "target_paused"
	DeferralRelayDown    = "relay_down"
)

// IMAP message results (label "result" of petitiond_imap_messages_total).
const (
	IMAPProcessed    = "processed"
	IMAPUnrecognized = "unrecognized"
	IMAPError        = "error"
)

// Bounce kinds (label "kind" of petitiond_bounces_total), the words of
// `petitiond bounce parse`.
const (
	BounceHard      = "hard"
	BounceSoft      = "soft"
	BounceDelayed   = "delayed"
	BounceAutoreply = "autoreply"
	BounceComplaint = "complaint"
)

// Ingest sources (label "source" of petitiond_ingest_rejected_total).
const (
	SourceStream = "stream"
	SourceAPI    = "api"
	SourceCLI    = "cli"
)

// Target states (label "state" of petitiond_target_state).
const (
	TargetActive     = "active"
	TargetPaused     = "paused"
	TargetSuppressed = "suppressed"
)

var (
	signatureOutcomes = []string{SignatureAccepted, SignatureDuplicate, SignatureRejected, SignatureCampaignClosed, SignatureUnknownCampaign}
	deliveryOutcomes  = []string{DeliverySent, DeliveryFailed, DeliveryDropped, DeliveryDuplicate}
	deferralReasons   = []string{DeferralRateLimited, DeferralTempFailure, DeferralTargetPaused, DeferralRelayDown}
	bounceKinds       = []string{BounceHard, BounceSoft, BounceDelayed, BounceAutoreply, BounceComplaint}
	imapResults       = []string{IMAPProcessed, IMAPUnrecognized, IMAPError}
	targetStates      = []string{TargetActive, TargetPaused, TargetSuppressed}
)

// SMTPBuckets spans one relay transaction: a healthy relay answers in tens
// of milliseconds, a struggling one takes seconds, and the client gives up
// after a couple of minutes.
var SMTPBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// LatencyBuckets spans signature acceptance to relay acceptance. Pacing
// holds mail for hours when a campaign is popular (60 per hour per target
// is the default), so the buckets reach a week.
var LatencyBuckets = []float64{
	1, 5, 15, 30, 60, 120, 300, 600, 1800, // up to half an hour
	3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, // hours
	86400, 2 * 86400, 4 * 86400, 7 * 86400, // days
}

// BuildInfo describes the running binary for petitiond_build_info.
type BuildInfo struct {
	Version   string
	Revision  string
	GoVersion string // runtime.Version() when empty
}

// Metrics holds every collector petitiond updates. Build it once per process
// with New and pass it to the packages that record events.
type Metrics struct {
	Registry *prometheus.Registry

	Signatures       *prometheus.CounterVec // {campaign,outcome}
	Deliveries       *prometheus.CounterVec // {campaign,target,outcome}
	Deferrals        *prometheus.CounterVec // {target,reason}
	Bounces          *prometheus.CounterVec // {campaign,target,kind}
	SMTPTransaction  prometheus.Histogram
	DeliveryLatency  prometheus.Histogram
	RelayUp          prometheus.Gauge
	RelayBreakerOpen prometheus.Gauge
	IMAPEnabled      prometheus.Gauge
	IMAPUp           prometheus.Gauge
	IMAPLastSuccess  prometheus.Gauge
	IMAPMessages     *prometheus.CounterVec // {result}
	Rejected         *prometheus.CounterVec // {source,reason}

	// Logger receives scrape-time collector errors. Set it before the
	// endpoint serves; nil means slog.Default().
	Logger *slog.Logger

	collectorErrors *prometheus.CounterVec // {collector}
	scrapeTimeout   time.Duration
}

// New builds the registry with the Go and process collectors, every
// petitiond collector, and petitiond_build_info.
func New(build BuildInfo) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if build.GoVersion == "" {
		build.GoVersion = runtime.Version()
	}
	if build.Version == "" {
		build.Version = "unknown"
	}
	if build.Revision == "" {
		build.Revision = "unknown"
	}

	m := &Metrics{
		Registry: reg,
		Signatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "signatures_total",
			Help: "Signatures handled, by campaign and outcome (accepted, duplicate, rejected, campaign_closed, unknown_campaign).",
		}, []string{"campaign", "outcome"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "deliveries_total",
			Help: "Deliveries that reached a final state, by campaign, target address and outcome (sent, failed, dropped, duplicate).",
		}, []string{"campaign", "target", "outcome"}),
		Deferrals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "deferrals_total",
			Help: "Delivery attempts put off for later, by target address and reason (rate_limited, temp_failure, target_paused, relay_down).",
		}, []string{"target", "reason"}),
		Bounces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "bounces_total",
			Help: "Bounces tied to a delivery, by campaign, target address and kind (hard, soft, delayed, autoreply, complaint).",
		}, []string{"campaign", "target", "kind"}),
		SMTPTransaction: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "smtp_transaction_seconds",
			Help:    "Duration of one SMTP transaction with the relay, MAIL FROM to the final reply, whatever the outcome.",
			Buckets: SMTPBuckets,
		}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "delivery_latency_seconds",
			Help:    "Time from a signature's acceptance to the relay's 250 for one of its deliveries, pacing included.",
			Buckets: LatencyBuckets,
		}),
		RelayUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "relay_up",
			Help: "1 when the last contact with the SMTP relay succeeded, 0 when it failed.",
		}),
		RelayBreakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "relay_breaker_open",
			Help: "1 while the relay circuit breaker is open and sending is paused, 0 otherwise.",
		}),
		IMAPEnabled: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "imap_enabled",
			Help: "1 when the IMAP bounce watcher is enabled in the configuration, 0 when it is disabled.",
		}),
		IMAPUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "imap_up",
			Help: "1 while the IMAP bounce watcher is connected and logged in, 0 otherwise.",
		}),
		IMAPLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "imap_last_success_timestamp_seconds",
			Help: "Unix time of the IMAP watcher's last successful round trip with the server.",
		}),
		IMAPMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "imap_messages_total",
			Help: "Messages the IMAP watcher handled, by result (processed, unrecognized, error).",
		}, []string{"result"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "ingest_rejected_total",
			Help: "Submitted signatures refused before fan-out, by source (stream, api, cli) and reason.",
		}, []string{"source", "reason"}),
		collectorErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "scrape_collector_errors_total",
			Help: "Scrape-time collectors that failed and reported nothing, by collector (targets, queues).",
		}, []string{"collector"}),
		scrapeTimeout: defaultScrapeTimeout,
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{
			"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion,
		},
	})
	buildInfo.Set(1)
	// A watcher that is wired but forgets to say it is disabled should
	// page someone, not hide: start as enabled.
	m.IMAPEnabled.Set(1)

	reg.MustRegister(
		m.Signatures, m.Deliveries, m.Deferrals, m.Bounces,
		m.SMTPTransaction, m.DeliveryLatency,
		m.RelayUp, m.RelayBreakerOpen,
		m.IMAPEnabled, m.IMAPUp, m.IMAPLastSuccess, m.IMAPMessages,
		m.Rejected, m.collectorErrors, buildInfo,
	)

	// Series that exist from the start make rate() and absent-based alerts
	// behave from the first scrape instead of after the first event.
	for _, r := range imapResults {
		m.IMAPMessages.WithLabelValues(r)
	}
	for _, c := range []string{collectorTargets, collectorQueues} {
		m.collectorErrors.WithLabelValues(c)
	}
	return m
}

// PrepareCampaign creates the zero-valued series of one campaign and its
// targets, so that dashboards and rate-based alerts see them before the
// first event. Call it whenever campaigns are (re)loaded; it is idempotent.
func (m *Metrics) PrepareCampaign(campaign string, targets []string) {
	for _, o := range signatureOutcomes {
		m.Signatures.WithLabelValues(campaign, o)
	}
	for _, t := range targets {
		for _, o := range deliveryOutcomes {
			m.Deliveries.WithLabelValues(campaign, t, o)
		}
		for _, k := range bounceKinds {
			m.Bounces.WithLabelValues(campaign, t, k)
		}
		for _, r := range deferralReasons {
			m.Deferrals.WithLabelValues(t, r)
		}
	}
}

func (m *Metrics) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}
