package webhooks

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Delivery(OutcomeRetrying)
	m.Delivery(OutcomeRetrying)
	m.Delivery(OutcomeDelivered)
	m.HeldBack()
	m.Attempt(Outcome{StatusCode: 500, Err: &StatusError{Code: 500}, Duration: 30 * time.Millisecond})
	m.Attempt(Outcome{Err: ErrTimeout, Duration: time.Second})
	want := `
# HELP linkhop_webhook_delivery_attempts_total Webhook delivery attempts by outcome: delivered, retrying (failed, retry scheduled), failed (final).
# TYPE linkhop_webhook_delivery_attempts_total counter
linkhop_webhook_delivery_attempts_total{outcome="delivered"} 1
linkhop_webhook_delivery_attempts_total{outcome="failed"} 0
linkhop_webhook_delivery_attempts_total{outcome="retrying"} 2
# HELP linkhop_webhook_deliveries_total Deprecated: use linkhop_webhook_delivery_attempts_total (the same counts); this name goes in the next release.
# TYPE linkhop_webhook_deliveries_total counter
linkhop_webhook_deliveries_total{outcome="delivered"} 1
linkhop_webhook_deliveries_total{outcome="failed"} 0
linkhop_webhook_deliveries_total{outcome="retrying"} 2
# HELP linkhop_webhook_held_back_total Webhook attempts delayed by the per-URL rate limit (they spend no retry).
# TYPE linkhop_webhook_held_back_total counter
linkhop_webhook_held_back_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"linkhop_webhook_delivery_attempts_total", "linkhop_webhook_deliveries_total", "linkhop_webhook_held_back_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.latency); n != 2 {
		t.Errorf("%d latency series, want 2 (5xx, timeout)", n)
	}
	// Registering twice on one registry is an error, not a panic.
	if _, err := NewMetrics(reg); err == nil {
		t.Error("second registration succeeded")
	}
	// A nil *Metrics records nothing and does not panic.
	var none *Metrics
	none.Delivery(OutcomeFailed)
	none.HeldBack()
	none.Attempt(Outcome{})
}
