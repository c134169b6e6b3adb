package quota

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
)

// thenTest is a continuation that shows what it was given (its keys, its arguments, the key
// record's scopes as read), writes its first key, and raises an error when asked to.
var thenTest = NewThen(keys.Script(`
local function after_admit(K, A, f)
  if A[1] == 'fail' then redis.call('SET', K[1], 'partial'); redis.call('INCR', K[2]) end
  redis.call('SET', K[1], 'ran')
  return {table.concat(K, ' '), table.concat(A, ' '), f[{{.Scopes}}] or 'none'}
end
`))

// TestThenRunsOnlyWhenAdmitted: a continuation runs in the admission's step only for a request
// that is authenticated and admitted, with its own keys and arguments and the record as read;
// an error it raises leaves the admission standing and is reported; the first call after a
// restart of Redis's script cache loads it (LoadScripts knows it).
func TestThenRunsOnlyWhenAdmitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	ks := keys.NewStore(rdb)
	rl := 2
	c, err := ks.Create(ctx, keys.CreateParams{Name: "then", RateLimit: &rl})
	if err != nil {
		t.Fatal(err)
	}
	tag := keys.Tag(c.ID)
	l := New(rdb)
	l.blocked = nil
	admit := func(token string, args ...any) Admission {
		t.Helper()
		id, _ := keys.ParseToken(token)
		a, err := l.Admit(ctx, AdmitRequest{KeyID: c.ID, RecordKey: keys.RecordKey(id), Digest: keys.Digest(token),
			Fields: keys.RequestFields, Then: &ThenCall{Script: thenTest, Keys: []string{tag + ":a", tag + ":b"}, Args: args}})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	a := admit(c.Token, "x", 7)
	if !a.Authenticated || !a.Decision.Allowed || a.ThenErr != nil {
		t.Fatalf("first request: %+v", a)
	}
	want := []any{tag + ":a " + tag + ":b", "x 7", keys.ScopeResolve}
	if d := cmp.Diff(want, a.Then); d != "" {
		t.Errorf("the continuation's reply (-want +got):\n%s", d)
	}
	if k, err := keys.CheckRequest(c.ID, keys.Digest(c.Token), a.Record); err != nil || !slices.Equal(k.Scopes, []string{keys.ScopeResolve}) {
		t.Errorf("the record with a continuation: %+v, %v", k, err)
	}

	// An error: the admission stands (the slot is taken), the writes before the error stay.
	rdb.Set(ctx, tag+":b", "not a number", 0)
	a = admit(c.Token, "fail")
	if !a.Decision.Allowed || a.Then != nil || a.ThenErr == nil || !strings.Contains(a.ThenErr.Error(), "not an integer") {
		t.Fatalf("a failing continuation: allowed %v, then %v, error %v", a.Decision.Allowed, a.Then, a.ThenErr)
	}
	if v := rdb.Get(ctx, tag+":a").Val(); v != "partial" {
		t.Errorf("the continuation's write before its error: %q", v)
	}

	// Refused by the limiter (2 a minute): the continuation does not run.
	rdb.Del(ctx, tag+":a")
	if a = admit(c.Token, "x"); a.Decision.Allowed || a.Then != nil || a.ThenErr != nil {
		t.Fatalf("a refused request: %+v", a)
	}
	// Not authenticated: nor then.
	if a = admit(c.Token[:len(c.Token)-1]+"x", "x"); a.Authenticated || a.Then != nil {
		t.Fatalf("a wrong token: %+v", a)
	}
	if n := rdb.Exists(ctx, tag+":a").Val(); n != 0 {
		t.Error("the continuation ran for a request that was not admitted")
	}
}

// TestThenWithFetchMany: a continuation and a read of many keys go together: the continuation
// gets its own keys and arguments, and the read its values (nil for an absent key), which
// follow the continuation's writes, as the reads go after the script.
func TestThenWithFetchMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, c := newTestKey(t, keys.CreateParams{Name: "many"})
	tag := keys.Tag(c.ID)
	if err := rdb.Set(ctx, tag+":x", "one", 0).Err(); err != nil {
		t.Fatal(err)
	}
	l := New(rdb)
	a, err := l.Admit(ctx, AdmitRequest{KeyID: c.ID, RecordKey: keys.RecordKey(c.ID), Digest: keys.Digest(c.Token),
		FetchMany: []string{tag + ":x", tag + ":absent", tag + ":a"},
		Then:      &ThenCall{Script: thenTest, Keys: []string{tag + ":a"}, Args: []any{"y"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Authenticated || !a.Decision.Allowed || a.ThenErr != nil {
		t.Fatalf("admission: %+v", a)
	}
	if d := cmp.Diff([]any{tag + ":a", "y", keys.ScopeResolve}, a.Then); d != "" {
		t.Errorf("continuation (-want +got):\n%s", d)
	}
	if d := cmp.Diff([][]byte{[]byte("one"), nil, []byte("ran")}, a.FetchedMany); d != "" {
		t.Errorf("fetched (-want +got):\n%s", d)
	}
}

// TestAdmitFetch: the key read beside the admission is reported for an authenticated request
// only (nil when absent), and a read that fails is an error.
func TestAdmitFetch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, c := newTestKey(t, keys.CreateParams{Name: "fetch"})
	tag := keys.Tag(c.ID)
	if err := rdb.Set(ctx, tag+":job", "record", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, tag+":hash", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	l := New(rdb)
	admit := func(digest, key string) (Admission, error) {
		return l.Admit(ctx, AdmitRequest{KeyID: c.ID, RecordKey: keys.RecordKey(c.ID), Digest: digest,
			Fields: keys.RequestFields, Fetch: key})
	}
	a, err := admit(keys.Digest(c.Token), tag+":job")
	if err != nil || !a.Authenticated || string(a.Fetched) != "record" {
		t.Fatalf("authenticated: %q, %+v, %v", a.Fetched, a, err)
	}
	if a, err := admit(keys.Digest(c.Token), tag+":absent"); err != nil || !a.Authenticated || a.Fetched != nil {
		t.Fatalf("absent: %q, %v", a.Fetched, err)
	}
	if a, err := admit(keys.Digest("sk_live_wrong"), tag+":job"); err != nil || a.Authenticated || a.Fetched != nil {
		t.Fatalf("wrong token: %+v, %v", a, err)
	}
	if _, err := admit(keys.Digest(c.Token), tag+":hash"); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("a hash read as a string: %v, want WRONGTYPE", err)
	}
}

// TestAdmitManyWindow: a batch's admission takes the free slots of the window, in order, the
// entries that left the window free theirs, and the next slot is reported.
func TestAdmitManyWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rl := 3
	rdb, c := newTestKey(t, keys.CreateParams{Name: "window", RateLimit: &rl})
	clk := &testClock{}
	l := New(rdb, withClock(clk))
	if err := l.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := baseTime()
	admit := func(at time.Duration, n int) Admission {
		t.Helper()
		clk.Set(t0.Add(at))
		var decode func() (Admission, error)
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			decode = l.AdmitManyIn(ctx, p, AdmitRequest{KeyID: c.ID, RecordKey: keys.RecordKey(c.ID), Digest: keys.Digest(c.Token)}, n)
			return nil
		})
		a, err := decode()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if a := admit(0, 2); a.Granted != 2 || a.Decision.Minute.Remaining != 1 {
		t.Fatalf("first batch: granted %d, %+v", a.Granted, a.Decision.Minute)
	}
	a := admit(10*time.Second, 2)
	if a.Granted != 1 || a.Decision.Minute.Remaining != 0 || a.Decision.SlotRetryAfter != 50*time.Second {
		t.Fatalf("second batch: granted %d, %+v, slot in %v; want 1, 0 left, 50s", a.Granted, a.Decision.Minute, a.Decision.SlotRetryAfter)
	}
	// The first two leave at 60 s: two slots free, the third item waits for the 10 s one.
	a = admit(time.Minute, 3)
	if a.Granted != 2 || a.Decision.Minute.Remaining != 0 || !a.Decision.Minute.Reset.Equal(t0.Add(70*time.Second)) ||
		a.Decision.SlotRetryAfter != 10*time.Second {
		t.Fatalf("third batch: granted %d, %+v, slot in %v; want 2, 0 left, reset at 70 s, 10s", a.Granted, a.Decision.Minute, a.Decision.SlotRetryAfter)
	}
	if n := rdb.ZCard(ctx, logKey(c.ID)).Val(); n != 3 {
		t.Errorf("log holds %d entries, want 3", n)
	}
}

// newTestKey creates an API key on a Redis of its own.
func newTestKey(t *testing.T, p keys.CreateParams) (*redis.Client, keys.Created) {
	t.Helper()
	rdb := redistest.New(t)
	c, err := keys.NewStore(rdb).Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return rdb, c
}
