package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
)

// snapshot reads a record through GetIn, as the worker does in its first round trip.
func snapshot(t *testing.T, rdb redis.UniversalClient, store *jobs.Store, keyID, id string) (jobs.Snapshot, error) {
	t.Helper()
	var read func() (jobs.Snapshot, error)
	_, _ = rdb.Pipelined(context.Background(), func(p redis.Pipeliner) error {
		read = store.GetIn(context.Background(), p, keyID, id)
		return nil
	})
	return read()
}

// TestUpdateFromReappliesOnConflict: an update from a snapshot that another writer changed
// meanwhile is applied again to the record as it now stands, never written over it.
func TestUpdateFromReappliesOnConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	store := jobs.NewStore(rdb, time.Hour)
	rec := queuedJob(t, store, "key_cas")
	snap, err := snapshot(t, rdb, store, rec.KeyID, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Update(ctx, rec.KeyID, rec.ID, func(r *jobs.Record) error { r.Attempts = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	calls := 0
	out, err := store.UpdateFrom(ctx, snap, func(r *jobs.Record) error {
		calls++
		r.Attempts++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || out.Attempts != 6 {
		t.Fatalf("%d calls, %d attempts: want the change applied again to the current record (2 calls, 6 attempts)", calls, out.Attempts)
	}
	if got, err := store.Get(ctx, rec.KeyID, rec.ID); err != nil || got.Attempts != 6 {
		t.Fatalf("stored attempts %d (%v), want 6", got.Attempts, err)
	}
	if ttl := rdb.TTL(ctx, jobs.RecordKey(rec.KeyID, rec.ID)).Val(); ttl <= 0 {
		t.Fatalf("the record lost its expiry (TTL %s)", ttl)
	}
	// The returned snapshot is the base of the next update: one more from it needs no re-read.
	calls = 0
	if _, err := store.UpdateFrom(ctx, out, func(r *jobs.Record) error { calls++; r.Attempts++; return nil }); err != nil || calls != 1 {
		t.Fatalf("update from the returned snapshot: %d calls, %v; want 1 call", calls, err)
	}
}

// TestUpdateErrors: a missing record is ErrNotFound; ErrNoChange writes nothing; fn's own
// error comes back as it is.
func TestUpdateErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	store := jobs.NewStore(rdb, time.Hour)
	if _, err := store.Update(ctx, "key_x", "nope", func(*jobs.Record) error { return nil }); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("missing record: %v, want ErrNotFound", err)
	}
	if _, err := snapshot(t, rdb, store, "key_x", "nope"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("GetIn of a missing record: %v, want ErrNotFound", err)
	}
	rec := queuedJob(t, store, "key_x")
	snap, err := snapshot(t, rdb, store, rec.KeyID, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	before := rdb.Get(ctx, jobs.RecordKey(rec.KeyID, rec.ID)).Val()
	if _, err := store.UpdateFrom(ctx, snap, func(r *jobs.Record) error { r.Attempts = 9; return jobs.ErrNoChange }); err != nil {
		t.Fatal(err)
	}
	mine := errors.New("mine")
	if _, err := store.UpdateFrom(ctx, snap, func(*jobs.Record) error { return mine }); !errors.Is(err, mine) {
		t.Fatalf("fn's error: %v", err)
	}
	if after := rdb.Get(ctx, jobs.RecordKey(rec.KeyID, rec.ID)).Val(); after != before {
		t.Fatal("an update that wrote nothing changed the record")
	}
	// A record deleted between the read and the write is not found, and not recreated.
	if err := store.Delete(ctx, rec.KeyID, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.UpdateFrom(ctx, snap, func(r *jobs.Record) error { r.Attempts = 1; return nil }); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("deleted record: %v, want ErrNotFound", err)
	}
	if n := rdb.Exists(ctx, jobs.RecordKey(rec.KeyID, rec.ID)).Val(); n != 0 {
		t.Fatal("the update recreated a deleted record")
	}
}
