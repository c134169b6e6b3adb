// Package httpapi is linkhop's HTTP API: routing (every route in router.go), middleware,
// authentication, request validation and the handlers of docs/api.md.
package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/go-playground/validator/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
	"github.com/linkhop/linkhop/resolve"
)

// Deps are what the API needs; the mains build them from config.
type Deps struct {
	Redis    redis.UniversalClient
	Keys     *keys.Store
	Jobs     *jobs.Store
	Queue    *jobs.Queue
	Registry *resolve.Registry
	Resolver *resolve.Service // cache lookups and provider latencies
	Limiter  *quota.Limiter
	Logger   *slog.Logger
	Metrics  *Metrics
	Gatherer prometheus.Gatherer // what /metrics serves; nil: the default registry

	// TrustedProxies (TRUSTED_PROXIES) are the peers whose forwarding headers name the client
	// (docs/operations.md#client-addresses); empty: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// AllowPrivateTargets relaxes the webhook_url rules (dev and tests).
	AllowPrivateTargets bool
	// BatchMaxItems is BATCH_MAX_ITEMS, the most items of one POST /v1/resolve/batch
	// (0: DefaultBatchMaxItems; at most HardMaxBatchItems).
	BatchMaxItems int
	// AuthFailuresPerMinute limits failed authentications per client address.
	AuthFailuresPerMinute int
	// AdminToken (LINKHOP_ADMIN_TOKEN) guards /admin/*; empty: /admin/* is 404.
	AdminToken string
	// QueuesUI is the asynq web UI served at QueuesPath behind the admin token; nil: none.
	QueuesUI http.Handler
}

// Server is the API's http.Handler.
type Server struct {
	Deps
	log      *slog.Logger
	metrics  *Metrics
	validate *validator.Validate
	handler  http.Handler // the API without tracing
	traced   http.Handler // handler inside the tracing middleware
}

// New builds the API handler.
func New(d Deps) *Server {
	s := &Server{Deps: d, log: d.Logger, metrics: d.Metrics, validate: newValidator()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.Gatherer == nil {
		s.Gatherer = prometheus.DefaultGatherer
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	s.handler = s.outer(s.routes())
	// Outermost, so the request's span (docs/operations.md#tracing) covers everything and the
	// job it creates carries its trace. Its own query string is never recorded: the span is
	// named by route (routeName) and the URL attribute is the path.
	s.traced = otelhttp.NewHandler(s.handler, "linkhop-api",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))
	return s
}

// ServeHTTP implements http.Handler. The tracing middleware runs only while tracing is on:
// with the no-op provider it would record nothing and still cost several µs per request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tracing.On() {
		s.traced.ServeHTTP(w, r)
		return
	}
	s.handler.ServeHTTP(w, r)
}

// writeJSON sends v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSONBytes sends body, JSON already encoded (with encoding/json's final newline), as
// writeJSON would send the value it encodes.
func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
