package app

import (
	"net/http"

	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// QueuesUI is the asynq web UI (asynqmon) serving under root (for example "/admin/queues"),
// on the process's own Redis client. It does no authentication: the caller puts it behind
// the admin token.
func QueuesUI(rdb redis.UniversalClient, root string) http.Handler {
	return asynqmon.New(asynqmon.Options{RootPath: root, RedisConnOpt: sharedConn{rdb}})
}

// sharedConn hands asynq the process's client instead of a description to dial from, so the
// UI follows REDIS_URL and REDIS_CLUSTER_ADDRS exactly as the rest of the process does and
// opens no second pool. Nothing may Close what it returns: the process owns the client.
type sharedConn struct{ c redis.UniversalClient }

// MakeRedisClient implements asynq.RedisConnOpt.
func (s sharedConn) MakeRedisClient() any { return s.c }

// RegisterQueueMetrics adds the asynq queue collector to reg: linkhop_asynq_queue_size,
// linkhop_asynq_tasks, linkhop_asynq_queue_latency_seconds, … . The values are read from Redis
// at every scrape and describe the whole deployment, not this process.
func RegisterQueueMetrics(reg prometheus.Registerer, rdb redis.UniversalClient) {
	reg.MustRegister(newQueueCollector(rdb))
}
