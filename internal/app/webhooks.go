package app

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// WebhookPolicy is the WEBHOOK_* policy of c, validated: the policy is built only here, for
// the API's redelivery tasks and the worker's deliveries alike.
func WebhookPolicy(c config.Config) (webhooks.Policy, error) {
	p := webhooks.Policy{
		RatePerSecond: c.WebhookRatePerSecond,
		MaxRetries:    c.WebhookMaxRetries,
		Timeout:       c.WebhookTimeout,
		BackoffBase:   c.WebhookBackoffBase,
	}
	if err := p.Validate(); err != nil {
		return webhooks.Policy{}, &config.Error{Var: "WEBHOOK_*", Reason: oneLine(err.Error())}
	}
	return p, nil
}

// NewWebhookHandler builds the delivery handler of c: requests go through the address guard
// (checked at dial time, like resolves), attempts are paced per URL across all workers, and
// its collectors are registered on reg.
func NewWebhookHandler(c config.Config, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer) (*jobs.WebhookHandler, error) {
	return newWebhookHandler(c, rdb, log, reg, nil)
}

// newWebhookHandler is NewWebhookHandler holding a lease on each attempt and giving held-back
// attempts places in line, where they wait in the worker, with the leases, the line and the
// room of worker w (nil: none).
func newWebhookHandler(c config.Config, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, w *jobs.Worker) (*jobs.WebhookHandler, error) {
	m, err := webhooks.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("webhook metrics: %w", err)
	}
	p, err := WebhookPolicy(c)
	if err != nil {
		return nil, err
	}
	var leases *jobs.Leases
	var line *jobs.Line
	if w != nil {
		leases, line = w.Leases(), w.Line()
	}
	return jobs.NewWebhookHandler(rdb, jobs.WebhookDeps{
		Store:    jobs.NewStore(rdb, c.JobRetention),
		Keys:     keys.NewStore(rdb),
		Limiter:  webhooks.NewRateLimiter(rdb, p.Rate()),
		Sender:   webhooks.NewSender(resolve.NewTransport(Guard(c)), p),
		Policy:   p,
		Metrics:  m,
		Logger:   log.With("component", "webhooks"),
		Leases:   leases,
		Line:     line,
		Room:     WebhookRoom(c, w),
		Complete: TaskCompletions(c, w),
	}), nil
}

// WebhookRoom is where worker w's held-back webhook attempts wait for their places in line
// (WebhookDeps.Room; docs/webhooks.md#rate-per-webhook-url): nil with REDIS_MIN_REPLICAS_ACK
// on. A run whose attempt goes to wait there completes its task at once, and the attempt's
// job lease stands for the task from then on; the replicas' wait after a run
// (jobs.Replicated) covers the job's record, not the lease index, so there every held-back
// attempt keeps its task.
func WebhookRoom(c config.Config, w *jobs.Worker) *jobs.Room {
	if w == nil || ReplicaAck(c).On() {
		return nil
	}
	return w.Room()
}
