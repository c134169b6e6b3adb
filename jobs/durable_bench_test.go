package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
)

// BenchmarkSubmitReplicaAck measures what REDIS_MIN_REPLICAS_ACK costs a submit
// (docs/operations.md#durability-of-accepted-jobs): Submit on a primary with one replica on
// loopback, without the wait and with REDIS_MIN_REPLICAS_ACK=1, one at a time (the latency a
// client sees) and from 16 goroutines per CPU (the throughput of one process).
//
//	go test -run '^$' -bench SubmitReplicaAck -benchtime 3s ./jobs/
func BenchmarkSubmitReplicaAck(b *testing.B) {
	primary, _ := redistest.PrimaryWithReplica(b)
	rdb := primary.Client(redis.Options{PoolSize: 64})
	store := jobs.NewStore(rdb, time.Hour)
	k, err := keys.NewStore(rdb).Create(context.Background(), keys.CreateParams{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	for _, ack := range []int{0, 1} {
		q := jobs.NewQueue(rdb, store, jobs.TaskOptions{MaxAttempts: 1, Timeout: time.Second})
		q.RequireReplicas(replicas.Ack{Min: ack, Timeout: replicas.DefaultTimeout})
		name := map[int]string{0: "off", 1: "ack=1"}[ack]
		submit := func(b *testing.B) {
			rec := &jobs.Record{ID: uuid.NewString(), KeyID: k.ID, URL: "https://sho.rt/x", Provider: "short", Tier: "standard"}
			if _, err := q.Submit(context.Background(), rec, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name+"/serial", func(b *testing.B) {
			for range b.N {
				submit(b)
			}
		})
		b.Run(name+"/parallel-16", func(b *testing.B) {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					submit(b)
				}
			})
		})
	}
}
