package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// TestUpdateInPipeline: an update joins the caller's pipeline, and the refund of a failed job
// reaches its key's balance in the same write; a key without a balance grows none. Redis
// forgets its scripts first (as after a restart): the update then runs again on its own.
func TestUpdateInPipeline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t) // its own server: SCRIPT FLUSH below must not reach other tests
	store := NewStore(rdb, time.Hour)
	ks := keys.NewStore(rdb)
	credits := int64(10)
	withBalance, err := ks.Create(ctx, keys.CreateParams{Name: "cas", Credits: &credits})
	if err != nil {
		t.Fatal(err)
	}
	unlimited, err := ks.Create(ctx, keys.CreateParams{Name: "unlimited"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []keys.Key{withBalance.Key, unlimited.Key} {
		now := time.Now().UTC()
		rec := Record{ID: uuid.NewString(), KeyID: k.ID, Status: StatusRunning, URL: "https://sho.rt/x",
			CreatedAt: now, UpdatedAt: now, Hops: []resolve.Hop{}, CreditsHeld: 1}
		if err := store.Create(ctx, &rec); err != nil {
			t.Fatal(err)
		}
		var read func() (Snapshot, error)
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error { read = store.GetIn(ctx, p, k.ID, rec.ID); return nil })
		snap, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		var update func() (Snapshot, error)
		var other *redis.StatusCmd
		// The pipeline's error is the NOSCRIPT of the update; each reply is read on its own.
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			update = store.UpdateIn(ctx, p, snap, func(r *Record) error {
				finish(r, resolve.Result{}, &resolve.Error{Code: resolve.CodeResolveFailed, Detail: "test"})
				return nil
			})
			other = p.Set(ctx, "unrelated", "1", time.Minute)
			return nil
		})
		out, err := update()
		if err != nil || out.Status != StatusFailed || out.CreditsHeld != 0 || other.Err() != nil {
			t.Fatalf("update %v (%s, held %d), other command %v", err, out.Status, out.CreditsHeld, other.Err())
		}
		got, err := ks.Get(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case k.ID == withBalance.ID && (got.Credits == nil || *got.Credits != 11):
			t.Fatalf("balance %v: want 11, the held credit given back", got.Credits)
		case k.ID == unlimited.ID && got.Credits != nil:
			t.Fatalf("a key without a balance got one: %d", *got.Credits)
		}
	}
}
