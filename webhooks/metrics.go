package webhooks

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery outcomes counted by [Metrics.Delivery], one per attempt.
const (
	// OutcomeDelivered: the attempt got a 2xx.
	OutcomeDelivered = "delivered"
	// OutcomeRetrying: the attempt failed and a retry is scheduled.
	OutcomeRetrying = "retrying"
	// OutcomeFailed: the attempt failed and was the last (retries used up or 410).
	OutcomeFailed = "failed"
)

// Metrics are the Prometheus collectors of webhook deliveries (namespace linkhop, subsystem
// webhook). A nil *Metrics records nothing, so code paths without metrics need no checks.
type Metrics struct {
	attempts   *prometheus.CounterVec
	deliveries *prometheus.CounterVec // the deprecated name of attempts, kept for one release
	latency    *prometheus.HistogramVec
	heldBack   prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered):
//
//	linkhop_webhook_delivery_attempts_total{outcome}  attempts by outcome: delivered|retrying|failed
//	linkhop_webhook_deliveries_total{outcome}          the same, under its deprecated name
//	linkhop_webhook_attempt_duration_seconds{class}    attempt latency by result: 2xx|3xx|4xx|5xx|timeout|error
//	linkhop_webhook_held_back_total                    attempts the per-URL rate delayed
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "webhook", Name: "delivery_attempts_total",
			Help: "Webhook delivery attempts by outcome: delivered, retrying (failed, retry scheduled), failed (final).",
		}, []string{"outcome"}),
		// The name said deliveries but counted attempts (docs/operations.md#metrics).
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "webhook", Name: "deliveries_total",
			Help: "Deprecated: use linkhop_webhook_delivery_attempts_total (the same counts); this name goes in the next release.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "linkhop", Subsystem: "webhook", Name: "attempt_duration_seconds",
			Help: "Duration of webhook delivery attempts by result class (2xx, 3xx, 4xx, 5xx, timeout, error).",
			// From a fast local receiver to the 30 s default timeout.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"class"}),
		heldBack: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "webhook", Name: "held_back_total",
			Help: "Webhook attempts delayed by the per-URL rate limit (they spend no retry).",
		}),
	}
	// Pre-create the label values so dashboards see zeros instead of missing series.
	for _, o := range []string{OutcomeDelivered, OutcomeRetrying, OutcomeFailed} {
		m.attempts.WithLabelValues(o)
		m.deliveries.WithLabelValues(o)
	}
	if reg != nil {
		var errs []error
		for _, c := range []prometheus.Collector{m.attempts, m.deliveries, m.latency, m.heldBack} {
			if err := reg.Register(c); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("webhooks: registering metrics: %w", err)
		}
	}
	return m, nil
}

// Attempt records the latency of one finished attempt under its [Outcome.Class].
func (m *Metrics) Attempt(o Outcome) {
	if m == nil {
		return
	}
	m.latency.WithLabelValues(o.Class()).Observe(o.Duration.Seconds())
}

// Delivery counts one attempt's outcome: [OutcomeDelivered], [OutcomeRetrying] or
// [OutcomeFailed].
func (m *Metrics) Delivery(outcome string) {
	if m == nil {
		return
	}
	m.attempts.WithLabelValues(outcome).Inc()
	m.deliveries.WithLabelValues(outcome).Inc()
}

// HeldBack counts one attempt delayed by the per-URL rate.
func (m *Metrics) HeldBack() {
	if m == nil {
		return
	}
	m.heldBack.Inc()
}
