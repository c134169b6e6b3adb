package app

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/httpapi"
	"github.com/linkhop/linkhop/internal/replicas"
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
	queue := jobs.NewQueue(rdb, store, jobs.TaskOptions{MaxAttempts: c.ResolveMaxAttempts, Timeout: c.ResolveTimeout, Webhooks: policy})
	queue.RequireReplicas(ReplicaAck(c))
	return httpapi.New(httpapi.Deps{
		Redis:    rdb,
		Keys:     NewKeyStore(c, rdb),
		Jobs:     store,
		Queue:    queue,
		Registry: reg,
		Resolver: svc,
		Limiter:  quota.New(rdb, quota.WithQuotaRetryAfterMax(c.QuotaRetryAfterMax)),
		Logger:   log,
		Metrics:  httpapi.NewMetrics(metrics),
		Gatherer: metrics,

		AllowPrivateTargets:   c.AllowPrivateTargets,
		AuthFailuresPerMinute: c.AuthFailuresPerMinute,
		BatchMaxItems:         c.BatchMaxItems,
		AdminToken:            c.AdminToken,
		TrustedProxies:        c.TrustedProxies,
		QueuesUI:              QueuesUI(rdb, httpapi.QueuesPath),
	}), nil
}

// ReplicaAck is the REDIS_MIN_REPLICAS_ACK policy of c.
func ReplicaAck(c config.Config) replicas.Ack {
	return replicas.Ack{Min: c.RedisMinReplicasAck, Timeout: c.RedisMinReplicasTimeout}
}

// NewKeyStore is the key store of c: new keys wait for REDIS_MIN_REPLICAS_ACK replicas.
func NewKeyStore(c config.Config, rdb redis.UniversalClient) *keys.Store {
	s := keys.NewStore(rdb)
	s.RequireReplicas(ReplicaAck(c))
	return s
}
