package app

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/httpapi"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
	"github.com/linkhop/linkhop/resolve"
)

// NewAPI assembles the HTTP API of c, the counterpart of NewWorker: the key and job stores,
// the queue (whose delivery tasks carry the WEBHOOK_* policy of c), the limiter, the provider
// registry and resolver, and /admin with the asynq web UI. Its collectors and asynq's queue
// collector are registered on metrics, which its /metrics serves. cmd/api, dev mode, the
// benchmarks and the tests all build the API here, so none of them can drift from the others.
func NewAPI(c config.Config, rdb redis.UniversalClient, log *slog.Logger, reg *resolve.Registry, svc *resolve.Service, metrics *prometheus.Registry) (*httpapi.Server, error) {
	policy, err := WebhookPolicy(c)
	if err != nil {
		return nil, err
	}
	RegisterQueueMetrics(metrics, rdb)
	store := jobs.NewStore(rdb, c.JobRetention)
	return httpapi.New(httpapi.Deps{
		Redis:    rdb,
		Keys:     keys.NewStore(rdb),
		Jobs:     store,
		Queue:    jobs.NewQueue(rdb, store, jobs.TaskOptions{MaxAttempts: c.ResolveMaxAttempts, Timeout: c.ResolveTimeout, Webhooks: policy}),
		Registry: reg,
		Resolver: svc,
		Limiter:  quota.New(rdb),
		Logger:   log,
		Metrics:  httpapi.NewMetrics(metrics),
		Gatherer: metrics,

		AllowPrivateTargets:   c.AllowPrivateTargets,
		AuthFailuresPerMinute: c.AuthFailuresPerMinute,
		AdminToken:            c.AdminToken,
		TrustedProxies:        c.TrustedProxies,
		QueuesUI:              QueuesUI(rdb, httpapi.QueuesPath),
	}), nil
}
