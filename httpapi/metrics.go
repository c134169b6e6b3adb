package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the API's Prometheus collectors (namespace linkhop).
type Metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	enqueueErrors prometheus.Counter
	limiter       *prometheus.CounterVec
	allowed       prometheus.Counter // limiter's "allowed" child, looked up once: every admitted request counts
}

// NewMetrics creates the collectors and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by route template, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "linkhop", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request latency by route template.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		enqueueErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "api", Name: "enqueue_errors_total",
			Help: "Accepted resolves that could not be queued (answered 503).",
		}),
		limiter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "limiter", Name: "decisions_total",
			Help: "Rate limiter decisions: allowed, rate_limited, quota_exceeded, auth_limited.",
		}, []string{"decision"}),
	}
	m.allowed = m.limiter.WithLabelValues("allowed")
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.enqueueErrors, m.limiter)
	}
	return m
}

func (m *Metrics) observeRequest(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}
