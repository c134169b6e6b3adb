package app

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/buildinfo"
	"github.com/linkhop/linkhop/problem"
)

// NewMetricsRegistry is a process's Prometheus registry with the Go and process collectors.
// A registry per process (not the global one) keeps tests that build several servers apart.
func NewMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	return reg
}

// buildInfo is linkhop_build_info: always 1, with the build in its labels, so dashboards can
// tell which version each process runs (and join it onto other series).
func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "linkhop", Name: "build_info",
		Help: "The running build: version, VCS revision and Go version; always 1.",
	}, []string{"version", "revision", "go_version"})
	g.WithLabelValues(buildinfo.Version, buildinfo.Revision(), buildinfo.GoVersion()).Set(1)
	return g
}

// OpsHandler serves the worker's /healthz, /readyz and /metrics.
func OpsHandler(rdb redis.UniversalClient, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := rdb.Ping(ctx).Err(); err != nil {
			problem.Write(w, "", problem.New(problem.ServiceUnavailable, "Redis is not reachable.").WithRetryAfter(5*time.Second))
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, "", problem.New(problem.NotFound, "The worker serves only /healthz, /readyz and /metrics."))
	})
	return mux
}
