package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// CheckTimeout bounds each readiness check. Orchestrators probe every few
// seconds; a check slower than this is itself a sign of trouble.
const CheckTimeout = 2 * time.Second

// shutdownTimeout bounds the graceful close of the HTTP server. Requests
// here are short, so anything still open after this is a stuck scrape.
const shutdownTimeout = 5 * time.Second

// Check is one readiness condition, such as "Redis answers a PING". Func
// returns nil when ready; its error text is shown in the /readyz body, so it
// must not carry secrets.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// NewHandler serves /metrics from m's registry, /healthz (200 while the
// process runs) and /readyz (200 when every check passes, 503 otherwise,
// with a JSON body naming each check's result).
func NewHandler(m *Metrics, ready []Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		ErrorLog: promLogger{m.logger()},
		// One broken collector must not blank the dashboards.
		ErrorHandling: promhttp.ContinueOnError,
		// Counts failed scrapes in promhttp_metric_handler_errors_total.
		Registry: m.Registry,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		body := runChecks(r.Context(), ready)
		code := http.StatusOK
		if body.Status != "ok" {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
	})
	return mux
}

// runChecks runs the checks in parallel so that /readyz answers within one
// CheckTimeout however many checks there are.
func runChecks(ctx context.Context, checks []Check) readyBody {
	body := readyBody{Status: "ok", Checks: make(map[string]string, len(checks))}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, CheckTimeout)
			defer cancel()
			res := "ok"
			if err := runCheck(cctx, c); err != nil {
				res = err.Error()
			}
			mu.Lock()
			defer mu.Unlock()
			body.Checks[c.Name] = res
			if res != "ok" {
				body.Status = "unavailable"
			}
		}()
	}
	wg.Wait()
	return body
}

// runCheck gives up at the deadline even when the check ignores its
// context, so that a hung dependency shows as a failed check, not a hung
// probe.
func runCheck(ctx context.Context, c Check) error {
	done := make(chan error, 1)
	go func() { done <- c.Func(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s: %w", CheckTimeout, ctx.Err())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client hung up; nothing to do
}

// promLogger adapts slog to promhttp's Println-style error log.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("metrics: serving /metrics", "err", fmt.Sprint(v...))
}

// Serve listens on addr and serves h until ctx ends, then shuts down
// gracefully. It returns an error when it cannot listen or the server
// fails, and nil after a clean shutdown.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, h, log)
}

// ServeListener is Serve on a listener the caller opened, for example on
// port 0 in tests. It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("metrics: serving", "addr", ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// ctx is already done, so the shutdown needs its own deadline.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("metrics: shut down %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	}
	log.Info("metrics: stopped", "addr", ln.Addr().String())
	return nil
}
