// Package replicas makes a write wait until Redis replicas hold it (REDIS_MIN_REPLICAS_ACK),
// so that an answer that promises the write survives the primary's death and the promotion
// of a replica; docs/operations.md#durability-of-accepted-jobs.
//
// Redis replication is asynchronous: a primary answers a write before any replica has it.
// WAIT numreplicas timeout blocks until that many replicas acknowledge every write the
// connection sent before it. The writes to wait for are sent elsewhere (asynq's client, a
// pipeline on another pooled connection), so Wait first sends one write of its own to each
// primary involved, on the connection that then sends WAIT: replication offsets are global
// to a primary, so a replica that acknowledges that write holds every earlier one too.
package replicas

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTimeout is REDIS_MIN_REPLICAS_TIMEOUT's default: long enough for a replica in the
// same region (a few milliseconds behind), short enough that a client refused for a replica
// that fell behind hears it promptly.
const DefaultTimeout = 500 * time.Millisecond

// MaxTimeout bounds REDIS_MIN_REPLICAS_TIMEOUT below go-redis' default read timeout (3 s),
// so the wait always ends in Redis' answer and never in a read timeout that would drop the
// connection.
const MaxTimeout = 2 * time.Second

// ErrTooFew says fewer replicas than required acknowledged a write within the timeout.
var ErrTooFew = errors.New("replicas: too few replicas acknowledged the write in time")

// Ack is the policy: Min replicas must acknowledge, within Timeout. The zero value (Min 0)
// waits for nothing.
type Ack struct {
	Min     int
	Timeout time.Duration
}

// On reports whether the policy waits at all.
func (a Ack) On() bool { return a.Min > 0 }

// Wait returns once a.Min replicas of each primary that owns one of keys hold every write
// that primary answered before the call, or ErrTooFew (wrapped) when they do not within
// a.Timeout; another error when a primary cannot be reached. keys name the keys written;
// on a single server or through Sentinel they all live on one primary, on Cluster each
// distinct owner is waited for, concurrently. Without keys there is nothing to wait for.
func (a Ack) Wait(ctx context.Context, rdb redis.UniversalClient, keys ...string) error {
	if !a.On() || len(keys) == 0 {
		return nil
	}
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return a.waitOn(ctx, rdb, keys[0])
	}
	nodes := map[string]struct {
		c   *redis.Client
		key string
	}{}
	for _, k := range keys {
		n, err := cc.MasterForKey(ctx, k)
		if err != nil {
			return fmt.Errorf("replicas: finding the primary of %s: %w", k, err)
		}
		nodes[n.Options().Addr] = struct {
			c   *redis.Client
			key string
		}{n, k}
	}
	if len(nodes) == 1 {
		for _, n := range nodes {
			return a.waitOn(ctx, n.c, n.key)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, n := range nodes {
		wg.Go(func() {
			if err := a.waitOn(ctx, n.c, n.key); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitOn sends the marker write and WAIT on one connection of c (a pipeline keeps them on
// one connection), to the primary that owns key.
func (a Ack) waitOn(ctx context.Context, c redis.Cmdable, key string) error {
	timeout := max(a.Timeout.Milliseconds(), 1) // WAIT 0 would block for ever
	var wait *redis.Cmd
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		// Short-lived: the marker only has to reach the replication stream.
		p.Set(ctx, Marker(key), "1", 10*time.Second)
		wait = p.Do(ctx, "WAIT", a.Min, timeout)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replicas: waiting for replicas: %w", err)
	}
	n, err := wait.Int64()
	if err != nil {
		return fmt.Errorf("replicas: waiting for replicas: %w", err)
	}
	if n < int64(a.Min) {
		return fmt.Errorf("%w: %d of %d within %v", ErrTooFew, n, a.Min, time.Duration(timeout)*time.Millisecond)
	}
	return nil
}

// Marker is the key Wait writes next to key: in key's hash slot, so on Cluster it lives on
// the primary that owns key. A key with a hash tag ({…}) shares its tag; a key without one
// is hashed whole, so it becomes the marker's tag.
func Marker(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return "linkhop:" + key[i:i+j+2] + ":replicated"
		}
	}
	return "linkhop:{" + key + "}:replicated"
}
