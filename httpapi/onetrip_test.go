package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// cache writes the cache entry of link rawURL.
func (e *env) cache(rawURL, value string) {
	e.t.Helper()
	entry, err := e.svc.Entry(resolve.Link{Raw: rawURL})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.rdb.Set(context.Background(), entry.Key, value, 0).Err(); err != nil {
		e.t.Fatal(err)
	}
}

// resolveStep is one request of TestResolveOneTripMatchesCluster.
type resolveStep struct {
	name  string
	key   string // which key of the sequence sends it
	body  map[string]any
	trips int // on a single Redis: the round trips it must take (0: not checked)
}

// answer is an answer with what differs between two runs (ids, request ids, times) left out.
type answer struct {
	Status  int
	Headers map[string]string
	Body    map[string]any
}

// resolveSequence sends every request of steps to e, each from its key, and returns the answers,
// what the keys' accounts say afterwards, and the jobs and tasks that exist.
func resolveSequence(t *testing.T, e *env, steps []resolveStep, checkTrips bool) ([]answer, []any, [2]int) {
	t.Helper()
	toks := map[string]string{}
	for name, p := range map[string]keys.CreateParams{
		"c": {Credits: ptr[int64](3), DailyQuota: ptr[int64](100)},
		"u": {},
		"n": {Scopes: []string{}},
		"r": {RateLimit: ptr(1)},
		"q": {DailyQuota: ptr[int64](1)},
	} {
		_, toks[name] = e.key(p)
	}
	e.cache("https://sho.rt/cached", `{"state":"done","url":"https://sho.rt/cached","target_url":"https://example.com/cached"}`)
	e.cache("https://sho.rt/gone", `{"state":"removed","url":"https://sho.rt/gone"}`)
	e.cache("https://sho.rt/junk", `not json`)
	e.cache("https://sho.rt/other", `{"state":"done","url":"https://sho.rt/another","target_url":"https://example.com/x"}`)
	var c counter
	e.rdb.AddHook(&c)
	// Warm up: Redis learns the scripts (and, on the cluster node, the API that it is one).
	e.cache("https://sho.rt/warm2", `not json`)
	for _, u := range []string{"https://sho.rt/warm", "https://sho.rt/warm2"} {
		if r := e.do("POST", "/v1/resolve", toks["u"], map[string]any{"url": u}); r.status != 202 {
			t.Fatalf("warm-up: %d %s", r.status, r.raw)
		}
	}
	var out []answer
	for _, s := range steps {
		c.n.Store(0)
		r := e.do("POST", "/v1/resolve", toks[s.key], s.body)
		n := c.n.Load()
		t.Logf("%s: %d, %d round trips", s.name, r.status, n)
		if checkTrips && s.trips > 0 && n != int64(s.trips) {
			t.Errorf("%s: %d round trips, want %d", s.name, n, s.trips)
		}
		a := answer{Status: r.status, Headers: map[string]string{}, Body: r.body}
		for _, h := range []string{"Content-Type", "Idempotent-Replayed", "X-RateLimit-Limit", "X-RateLimit-Remaining", "RateLimit-Policy"} {
			a.Headers[h] = r.header.Get(h)
		}
		if l := r.header.Get("Location"); l != "" {
			a.Headers["Location"] = "/v1/jobs/<id>"
		}
		if r.header.Get("Retry-After") != "" {
			a.Headers["Retry-After"] = "<set>"
		}
		for _, f := range []string{"job_id", "poll_url", "instance", "retry_after"} {
			if v, ok := a.Body[f].(string); ok && v != "" || f == "retry_after" && a.Body[f] != nil {
				a.Body[f] = "<" + f + ">"
			}
		}
		out = append(out, a)
	}
	var accounts []any
	for _, name := range []string{"c", "u", "n", "r", "q"} {
		r := e.do("GET", "/v1/account", toks[name], nil)
		var acc map[string]any
		if err := json.Unmarshal(r.raw, &acc); err != nil {
			t.Fatalf("account: %s", r.raw)
		}
		accounts = append(accounts, fmt.Sprint(name, " balance ", acc["balance"], " daily_used ", acc["daily_used"]))
	}
	records, tasks := e.jobCount()
	return out, accounts, [2]int{records, tasks}
}

// TestResolveOneTripMatchesCluster: POST /v1/resolve in one round trip (a single Redis) answers
// every request exactly as the path Redis Cluster keeps (admission and cache lookup, then the
// job, then its enqueue: here a plain client on a one-node Cluster, which refuses the one-trip
// script with CROSSSLOT before anything runs, so the API falls back and keeps that path), down
// to status, body and headers, and leaves the same balances, daily counts, jobs and tasks:
// created, replayed, refused for credits with and without a balance, a key without the scope, a
// cached link with and without an idempotency key, a removed link, a cache entry that cannot be
// used (submitted after, a second round trip), the per-minute limit (nothing created), and an
// idempotent replay once the daily quota is used up.
func TestResolveOneTripMatchesCluster(t *testing.T) {
	t.Parallel()
	prem := []resolve.Provider{{ID: "prem", Label: "Prem", Hosts: []string{"prem.rt"}, Tier: resolve.TierPremium}}
	steps := []resolveStep{
		{"created", "c", map[string]any{"url": "https://sho.rt/a"}, 1},
		{"created with an idempotency key", "c", map[string]any{"url": "https://sho.rt/b", "idempotency_key": "k1"}, 1},
		{"replay", "c", map[string]any{"url": "https://sho.rt/b", "idempotency_key": "k1"}, 0},
		{"idempotency conflict", "c", map[string]any{"url": "https://sho.rt/x", "idempotency_key": "k1"}, 0},
		{"out of credits", "c", map[string]any{"url": "https://prem.rt/p"}, 2}, // and the refund of the day's unit
		{"cached", "c", map[string]any{"url": "https://sho.rt/cached"}, 1},
		{"cached, idempotency key used", "c", map[string]any{"url": "https://sho.rt/cached", "idempotency_key": "k1"}, 0},
		{"cached, new idempotency key", "c", map[string]any{"url": "https://sho.rt/cached", "idempotency_key": "k2"}, 2},
		{"removed", "c", map[string]any{"url": "https://sho.rt/gone"}, 2},
		{"unreadable cache entry", "c", map[string]any{"url": "https://sho.rt/junk"}, 2},
		{"another link's cache entry", "u", map[string]any{"url": "https://sho.rt/other", "idempotency_key": "k3"}, 2},
		{"out of credits at 0", "c", map[string]any{"url": "https://sho.rt/d"}, 2},
		{"no balance", "u", map[string]any{"url": "https://sho.rt/a"}, 1},
		{"no balance, premium", "u", map[string]any{"url": "https://prem.rt/p", "webhook_url": "https://hooks.example/x"}, 1},
		{"no scope", "n", map[string]any{"url": "https://sho.rt/a"}, 2},
		{"no scope, bad body", "n", map[string]any{"url": "ftp://sho.rt/a"}, 0},
		{"unsupported link", "c", map[string]any{"url": "https://unknown.example/a"}, 1},
		{"limit: first", "r", map[string]any{"url": "https://sho.rt/r1"}, 1},
		{"limit: refused", "r", map[string]any{"url": "https://sho.rt/r2"}, 0},
		{"quota: first", "q", map[string]any{"url": "https://sho.rt/q", "idempotency_key": "q1"}, 1},
		{"quota: replay", "q", map[string]any{"url": "https://sho.rt/q", "idempotency_key": "q1"}, 0},
		{"quota: used up", "q", map[string]any{"url": "https://sho.rt/q2"}, 0},
	}
	one := newEnv(t, envOptions{extra: prem})
	cluster := newEnv(t, envOptions{extra: prem, clusterNode: true})
	gotOne, accOne, jobsOne := resolveSequence(t, one, steps, true)
	gotCluster, accCluster, jobsCluster := resolveSequence(t, cluster, steps, false)
	for i := range steps {
		if d := cmp.Diff(gotCluster[i], gotOne[i]); d != "" {
			t.Errorf("%s: answers differ (-cluster +one trip):\n%s", steps[i].name, d)
		}
	}
	if d := cmp.Diff(accCluster, accOne); d != "" {
		t.Errorf("accounts differ (-cluster +one trip):\n%s", d)
	}
	if jobsOne != jobsCluster {
		t.Errorf("jobs and tasks: one trip %v, cluster %v", jobsOne, jobsCluster)
	}
	want := []int{202, 202, 202, 409, 402, 200, 409, 200, 410, 202, 202, 402, 202, 202, 403, 403, 422, 202, 429, 202, 202, 429}
	for i, a := range gotOne {
		if a.Status != want[i] {
			t.Errorf("%s: %d, want %d", steps[i].name, a.Status, want[i])
		}
	}
	if !strings.Contains(fmt.Sprint(gotOne[5].Body), "cached:true") || gotOne[2].Headers["Idempotent-Replayed"] != "true" ||
		gotOne[20].Headers["Idempotent-Replayed"] != "true" {
		t.Errorf("answers %+v", gotOne)
	}
	if r := one.do("GET", "/v1/account", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("account without a key: %d", r.status)
	}
}

// loseNextReply makes the replies of the next pipeline look lost after Redis ran it (a
// connection that broke): every command of it fails with io.ErrUnexpectedEOF.
type loseNextReply struct{ armed atomic.Bool }

func (h *loseNextReply) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *loseNextReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *loseNextReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.armed.CompareAndSwap(true, false) {
			for _, c := range cmds {
				c.SetErr(io.ErrUnexpectedEOF)
			}
			return io.ErrUnexpectedEOF
		}
		return err
	}
}

// TestResolveOneTripLostReply: when the admission's script ran (and created the job) but its
// reply was lost, the answer is 503 and the job is taken back: no record, claim or task stays,
// and the credits it took are given back.
func TestResolveOneTripLostReply(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	k, tok := e.key(keys.CreateParams{Credits: ptr[int64](5)})
	e.accepted(tok, map[string]any{"url": "https://sho.rt/warm"})
	var h loseNextReply
	e.rdb.AddHook(&h)
	h.armed.Store(true)
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/lost", "idempotency_key": "i"})
	wantProblem(t, r, http.StatusServiceUnavailable, "service_unavailable")
	e.wantJobs(1)
	if b := e.balanceOf(k.ID); b == nil || *b != 4 {
		t.Errorf("balance %v, want 4 (the warm-up's credit taken, the lost job's given back)", b)
	}
	if c, err := e.jobs.GetClaim(context.Background(), k.ID, "i"); c != nil || err != nil {
		t.Errorf("claim left behind: %+v %v", c, err)
	}
	// The same request again is a new job, not a replay.
	if r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/lost", "idempotency_key": "i"}); r.status != 202 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	e.wantJobs(2)
}
