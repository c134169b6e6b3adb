package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
)

// items builds a batch body of the given urls.
func items(urls ...string) map[string]any {
	its := make([]map[string]any, len(urls))
	for i, u := range urls {
		its[i] = map[string]any{"url": u}
	}
	return map[string]any{"items": its}
}

// entries returns the entries of a 200 batch answer.
func entries(t *testing.T, r resp) []map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("batch: %d %s", r.status, r.raw)
	}
	var body struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(r.raw, &body); err != nil {
		t.Fatalf("batch body: %v: %s", err, r.raw)
	}
	return body.Items
}

// wantEntry checks an entry: "queued", "cached", or a problem code with its complete members.
func wantEntry(t *testing.T, i int, e map[string]any, want string) {
	t.Helper()
	switch want {
	case "queued":
		id, _ := e["job_id"].(string)
		if e["status"] != "queued" || id == "" || e["poll_url"] != "/v1/jobs/"+id {
			t.Errorf("item %d: %v, want queued", i, e)
		}
	case "cached":
		if e["status"] != "done" || e["target_url"] == nil {
			t.Errorf("item %d: %v, want a done answer", i, e)
		}
	default:
		if e["code"] != want {
			t.Errorf("item %d: %v, want problem %s", i, e, want)
			return
		}
		for _, f := range []string{"type", "title", "status", "detail"} {
			if _, ok := e[f]; !ok {
				t.Errorf("item %d: problem lacks %s: %v", i, f, e)
			}
		}
		if _, ok := e["instance"]; ok {
			t.Errorf("item %d: an entry carries instance: %v", i, e)
		}
		switch want {
		case "rate_limited", "quota_exceeded":
			if ra, _ := e["retry_after"].(float64); ra < 1 {
				t.Errorf("item %d: retry_after %v", i, e["retry_after"])
			}
		case "invalid_request":
			if errs, _ := e["errors"].([]any); len(errs) == 0 {
				t.Errorf("item %d: no errors: %v", i, e)
			}
		case "out_of_credits":
			if _, ok := e["balance"].(float64); !ok {
				t.Errorf("item %d: no balance: %v", i, e)
			}
		}
	}
}

func wantEntries(t *testing.T, got []map[string]any, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		wantEntry(t, i, got[i], want[i])
	}
}

// Mixed items: each entry is what a single request would get, in order; the jobs run.
func TestBatchMixedItems(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true, shortFn: func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/gone") {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusFound)
	}})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(100), DailyQuota: ptr[int64](50)})
	e.waitJob(tok, e.accepted(tok, map[string]any{"url": "http://sho.rt/cached"}))
	e.waitJob(tok, e.accepted(tok, map[string]any{"url": "http://sho.rt/gone"}))
	r := e.do("POST", "/v1/resolve/batch", tok, map[string]any{
		"webhook_url": "https://hooks.example.com/default",
		"items": []map[string]any{
			{"url": "http://sho.rt/new"},
			{"url": "http://sho.rt/cached"},
			{"url": "https://example.com/x"},
			{"url": "https://sho.rt/hook", "webhook_url": "https://10.0.0.1/in"},
			{"url": "http://sho.rt/gone"},
			{"url": "https://sho.rt/own", "webhook_url": "https://hooks.example.com/own"},
			{"url": "ftp://sho.rt/x"},
			{"url": ""},
		},
	})
	got := entries(t, r)
	wantEntries(t, got, "queued", "cached", "unsupported_link", "invalid_request", "link_removed", "queued", "unsupported_link", "invalid_request")
	if errs := got[3]["errors"].([]any); errs[0].(map[string]any)["field"] != "webhook_url" {
		t.Errorf("invalid webhook named %v, want webhook_url (as a single request names it)", errs)
	}
	if got[1]["cached"] != true || got[1]["job_id"] != nil || got[1]["provider"] != "short" {
		t.Errorf("cached entry %v", got[1])
	}
	// The top-level webhook_url applies to items without their own.
	ctx := context.Background()
	for i, want := range map[int]string{0: "https://hooks.example.com/default", 5: "https://hooks.example.com/own"} {
		rec, err := e.jobs.Get(ctx, e.keyID(tok), got[i]["job_id"].(string))
		if err != nil || rec.WebhookURL != want {
			t.Errorf("item %d: webhook %q, %v; want %s", i, rec.WebhookURL, err, want)
		}
	}
	// The minute: 2 singles, their 2 reads, and the 4 valid items (invalid ones cost nothing).
	// The day: 2 singles, new, cached and own (a removed link is not accepted).
	if got, want := r.header.Get("X-RateLimit-Remaining"), "92"; got != want {
		t.Errorf("X-RateLimit-Remaining %s, want %s", got, want)
	}
	if !strings.Contains(r.header.Get("RateLimit"), `"day";r=45;`) {
		t.Errorf("RateLimit %q, want day r=45 after the batch", r.header.Get("RateLimit"))
	}
	job := e.waitJob(tok, got[0]["job_id"].(string))
	if job["status"] != "done" || job["target_url"] != "https://example.com/dest/new" {
		t.Errorf("the batch's job: %v", job)
	}
}

// Partial admission: the per-minute limit, the daily quota and the balance are taken in item
// order; the items past a budget get their own problems and nothing is created for them.
func TestBatchPartialAdmission(t *testing.T) {
	t.Parallel()
	t.Run("per-minute limit", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{})
		_, tok := e.key(keys.CreateParams{RateLimit: ptr(3)})
		body := items("https://sho.rt/1", "https://example.com/bad", "https://sho.rt/2", "https://sho.rt/3", "https://sho.rt/4", "https://sho.rt/5")
		r := e.do("POST", "/v1/resolve/batch", tok, body)
		wantEntries(t, entries(t, r), "queued", "unsupported_link", "queued", "queued", "rate_limited", "rate_limited")
		if r.header.Get("X-RateLimit-Remaining") != "0" {
			t.Errorf("remaining %q after the batch", r.header.Get("X-RateLimit-Remaining"))
		}
		e.wantJobs(3)
		// Not even the first item fits: the whole answer is that 429.
		wantProblem(t, e.do("POST", "/v1/resolve/batch", tok, items("https://sho.rt/6")), 429, "rate_limited")
		// Invalid items cost nothing, but a key with no room left cannot make any request.
		wantProblem(t, e.do("POST", "/v1/resolve/batch", tok, items("https://example.com/x")), 429, "rate_limited")
		e.wantJobs(3)
	})
	t.Run("invalid items cost nothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{})
		_, tok := e.key(keys.CreateParams{RateLimit: ptr(2)})
		for range 3 {
			r := e.do("POST", "/v1/resolve/batch", tok, items("https://example.com/x", "ftp://sho.rt/y"))
			wantEntries(t, entries(t, r), "unsupported_link", "unsupported_link")
		}
		if r := e.do("GET", "/v1/account", tok, nil); r.status != 200 || r.header.Get("X-RateLimit-Remaining") != "1" {
			t.Errorf("account %d, remaining %q; want 1 (only the account read counted)", r.status, r.header.Get("X-RateLimit-Remaining"))
		}
	})
	t.Run("daily quota", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{tweakCfg: func(c *config.Config) { c.QuotaRetryAfterMax = 30 * time.Second }})
		_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), DailyQuota: ptr[int64](2)})
		r := e.do("POST", "/v1/resolve/batch", tok, items("https://sho.rt/1", "https://sho.rt/2", "https://sho.rt/3", "https://sho.rt/4"))
		got := entries(t, r)
		wantEntries(t, got, "queued", "queued", "quota_exceeded", "quota_exceeded")
		if ra := got[2]["retry_after"].(float64); ra > 30 {
			t.Errorf("retry_after %v over QUOTA_RETRY_AFTER_MAX", ra)
		}
		if !strings.Contains(r.header.Get("RateLimit"), `"day";r=0;`) {
			t.Errorf("RateLimit %q", r.header.Get("RateLimit"))
		}
		e.wantJobs(2)
		acc := e.do("GET", "/v1/account", tok, nil)
		if acc.body["daily_used"] != 2.0 {
			t.Errorf("daily_used %v", acc.body["daily_used"])
		}
		// A later batch: every item over the quota; a single request too.
		wantEntries(t, entries(t, e.do("POST", "/v1/resolve/batch", tok, items("https://sho.rt/5"))), "quota_exceeded")
		wantProblem(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/6"}), 429, "quota_exceeded")
		e.wantJobs(2)
	})
	t.Run("balance", func(t *testing.T) {
		t.Parallel()
		e := premiumEnv(t, envOptions{})
		c, tok := e.key(keys.CreateParams{RateLimit: ptr(0), Credits: ptr[int64](3)})
		r := e.do("POST", "/v1/resolve/batch", tok, items("https://pre.mi/1", "https://pre.mi/2", "https://sho.rt/3", "https://sho.rt/4"))
		got := entries(t, r)
		wantEntries(t, got, "queued", "out_of_credits", "queued", "out_of_credits")
		if got[1]["balance"] != 1.0 || got[3]["balance"] != 0.0 {
			t.Errorf("402 balances %v and %v, want 1 and 0", got[1]["balance"], got[3]["balance"])
		}
		if b := e.balanceOf(c.ID); b == nil || *b != 0 {
			t.Errorf("balance %v, want 0", b)
		}
		e.wantJobs(2)
	})
}

// Idempotency works per item, inside a batch, across batches and with single requests; a
// replay does not count against the daily quota again.
func TestBatchIdempotency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), DailyQuota: ptr[int64](3)})
	single := e.accepted(tok, map[string]any{"url": "https://sho.rt/s", "idempotency_key": "s"})
	body := map[string]any{"items": []map[string]any{
		{"url": "https://sho.rt/a", "idempotency_key": "a"},
		{"url": "https://sho.rt/a", "idempotency_key": "a"},
		{"url": "https://sho.rt/other", "idempotency_key": "a"},
		{"url": "https://sho.rt/s", "idempotency_key": "s"},
		{"url": "https://sho.rt/b"},
	}}
	got := entries(t, e.do("POST", "/v1/resolve/batch", tok, body))
	wantEntries(t, got, "queued", "queued", "idempotency_conflict", "queued", "queued")
	a := got[0]["job_id"]
	if got[1]["job_id"] != a || got[3]["job_id"] != single {
		t.Errorf("replays answer %v and %v, want %v and %s", got[1]["job_id"], got[3]["job_id"], a, single)
	}
	e.wantJobs(3)
	// The quota (3) is used up by s, a and b; replays are still answered, across batches and
	// by a single request, and a new item is not.
	again := entries(t, e.do("POST", "/v1/resolve/batch", tok, map[string]any{"items": []map[string]any{
		{"url": "https://sho.rt/a", "idempotency_key": "a"}, {"url": "https://sho.rt/c"},
	}}))
	wantEntries(t, again, "queued", "quota_exceeded")
	if again[0]["job_id"] != a {
		t.Errorf("replay across batches: %v, want %v", again[0]["job_id"], a)
	}
	wantReplay(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/a", "idempotency_key": "a"}), 202, a.(string))
	e.wantJobs(3)
}

// Whole-request refusals: a body that is not a batch is one 400 naming items[i].field, and
// nothing is created.
func TestBatchWholeRequestRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{tweakCfg: func(c *config.Config) { c.BatchMaxItems = 3 }})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0)})
	_, reader := e.key(keys.CreateParams{Scopes: []string{}})
	for _, c := range []struct {
		name, body, field string
		hdr               []string
	}{
		{"no items", `{}`, "items", nil},
		{"null items", `{"items":null}`, "items", nil},
		{"zero items", `{"items":[]}`, "items", nil},
		{"too many", `{"items":[{"url":"https://sho.rt/1"},{"url":"https://sho.rt/2"},{"url":"https://sho.rt/3"},{"url":"https://sho.rt/4"}]}`, "items", nil},
		{"items object", `{"items":{"url":"https://sho.rt/1"}}`, "items", nil},
		{"item without url", `{"items":[{"url":"https://sho.rt/1"},{"webhook_url":"https://hooks.example.com/"}]}`, "items[1].url", nil},
		{"item null url", `{"items":[{"url":null}]}`, "items[0].url", nil},
		{"item url number", `{"items":[{"url":"https://sho.rt/1"},{"url":"https://sho.rt/2"},{"url":3}]}`, "items[2].url", nil},
		{"item unknown field", `{"items":[{"url":"https://sho.rt/1","x":1}]}`, "items[0].x", nil},
		{"item duplicate key", `{"items":[{"url":"https://sho.rt/1","url":"https://sho.rt/2"}]}`, "items[0].url", nil},
		{"item not an object", `{"items":["https://sho.rt/1"]}`, "items[0]", nil},
		{"unknown top field", `{"items":[{"url":"https://sho.rt/1"}],"x":1}`, "x", nil},
		{"bad default webhook", `{"items":[{"url":"https://sho.rt/1"}],"webhook_url":"https://127.0.0.1/"}`, "webhook_url", nil},
		{"idempotency header", `{"items":[{"url":"https://sho.rt/1"}]}`, "Idempotency-Key", []string{"Idempotency-Key", "k"}},
	} {
		r := e.do("POST", "/v1/resolve/batch", tok, c.body, c.hdr...)
		wantProblem(t, r, 400, "invalid_request")
		errs, _ := r.body["errors"].([]any)
		if len(errs) == 0 || errs[0].(map[string]any)["field"] != c.field {
			t.Errorf("%s: errors %v, want field %s", c.name, r.body["errors"], c.field)
		}
	}
	big := `{"items":[{"url":"https://sho.rt/` + strings.Repeat("a", 1<<20) + `"}]}`
	wantProblem(t, e.do("POST", "/v1/resolve/batch", tok, big), 413, "payload_too_large")
	// Larger than a single request's 64 KiB is fine below 1 MiB (the url is then too long).
	mid := `{"items":[{"url":"https://sho.rt/` + strings.Repeat("a", 100<<10) + `"}]}`
	wantEntries(t, entries(t, e.do("POST", "/v1/resolve/batch", tok, mid)), "invalid_request")
	wantProblem(t, e.do("POST", "/v1/resolve/batch", tok, "items", "Content-Type", "text/plain"), 415, "unsupported_media_type")
	wantProblem(t, e.do("POST", "/v1/resolve/batch", "", items("https://sho.rt/1")), 401, "invalid_key")
	wantProblem(t, e.do("POST", "/v1/resolve/batch", reader, items("https://sho.rt/1")), 403, "forbidden_scope")
	e.wantJobs(0)
}

// A failed enqueue gives everything back: no job, no credits, no quota, and a 503.
func TestBatchEnqueueFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c, tok := e.key(keys.CreateParams{RateLimit: ptr(10), DailyQuota: ptr[int64](10), Credits: ptr[int64](10)})
	ctx := context.Background()
	if err := e.rdb.Set(ctx, "asynq:{resolve}:pending", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/v1/resolve/batch", tok, map[string]any{"items": []map[string]any{
		{"url": "https://sho.rt/1", "idempotency_key": "k"}, {"url": "https://sho.rt/2"},
	}})
	wantProblem(t, r, 503, "service_unavailable")
	if ks, _ := e.rdb.Keys(ctx, "*:job:*").Result(); len(ks) != 0 {
		t.Errorf("jobs left behind: %v", ks)
	}
	if ks, _ := e.rdb.Keys(ctx, "*:idem:*").Result(); len(ks) != 0 {
		t.Errorf("claims left behind: %v", ks)
	}
	if b := e.balanceOf(c.ID); b == nil || *b != 10 {
		t.Errorf("balance %v, want 10", fmt.Sprint(*b))
	}
	e.rdb.Del(ctx, "asynq:{resolve}:pending")
	acc := e.do("GET", "/v1/account", tok, nil)
	if acc.body["daily_used"] != 0.0 || acc.header.Get("X-RateLimit-Remaining") != "9" {
		t.Errorf("daily_used %v, remaining %s; want 0 and 9 (only the account read)", acc.body["daily_used"], acc.header.Get("X-RateLimit-Remaining"))
	}
}

// Exactness under concurrency: batches and single requests over two replicas never admit more
// than the limit, the quota or the balance allow.
func TestBatchExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		params keys.CreateParams
		budget int    // what at most may be accepted
		refuse string // the code of the refused items
	}{
		{"per-minute limit", keys.CreateParams{RateLimit: ptr(37)}, 37, "rate_limited"},
		{"daily quota", keys.CreateParams{RateLimit: ptr(0), DailyQuota: ptr[int64](41)}, 41, "quota_exceeded"},
		{"balance", keys.CreateParams{RateLimit: ptr(0), Credits: ptr[int64](29)}, 29, "out_of_credits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			other := newEnvOn(t, e)
			_, tok := e.key(tc.params)
			replicas := []*env{e, other}
			var mu sync.Mutex
			accepted, refused := 0, 0
			var wg sync.WaitGroup
			start := make(chan struct{})
			// 20 batches of 5 and 20 single requests, alternating replicas: 120 links.
			for i := range 40 {
				wg.Go(func() {
					<-start
					on := replicas[i%2]
					if i%2 == 1 {
						r := on.do("POST", "/v1/resolve", tok, map[string]any{"url": fmt.Sprintf("https://sho.rt/s%d", i)})
						mu.Lock()
						defer mu.Unlock()
						switch {
						case r.status == 202:
							accepted++
						case r.body["code"] == tc.refuse:
							refused++
						default:
							t.Errorf("single: %d %s", r.status, r.raw)
						}
						return
					}
					var urls []string
					for j := range 5 {
						urls = append(urls, fmt.Sprintf("https://sho.rt/b%d-%d", i, j))
					}
					r := on.do("POST", "/v1/resolve/batch", tok, items(urls...))
					mu.Lock()
					defer mu.Unlock()
					if r.status == 429 && tc.refuse == "rate_limited" {
						refused += 5
						return
					}
					if r.status != 200 {
						t.Errorf("batch: %d %s", r.status, r.raw)
						return
					}
					var body struct{ Items []map[string]any }
					_ = json.Unmarshal(r.raw, &body)
					for _, it := range body.Items {
						switch {
						case it["status"] == "queued":
							accepted++
						case it["code"] == tc.refuse:
							refused++
						default:
							t.Errorf("item %v", it)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			if accepted != tc.budget || refused != 120-tc.budget {
				t.Fatalf("accepted %d, refused %d; want exactly %d accepted", accepted, refused, tc.budget)
			}
			e.wantJobs(tc.budget)
		})
	}
}

// GET /v1/jobs?ids= answers the jobs asked, in order, null for the ones the caller may not see,
// counting once against the limit.
func TestJobsByIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(20)})
	_, other := e.key(keys.CreateParams{})
	a := e.accepted(tok, map[string]any{"url": "https://sho.rt/a"})
	b := e.accepted(tok, map[string]any{"url": "https://sho.rt/b"})
	theirs := e.accepted(other, map[string]any{"url": "https://sho.rt/c"})
	unknown := "00000000-0000-4000-8000-000000000000"
	r := e.do("GET", "/v1/jobs?ids="+strings.Join([]string{b, "nope", a, theirs, unknown, strings.ToUpper(a), a}, ","), tok, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	var body struct{ Jobs []map[string]any }
	if err := json.Unmarshal(r.raw, &body); err != nil {
		t.Fatal(err)
	}
	var ids []any
	for _, j := range body.Jobs {
		if j == nil {
			ids = append(ids, nil)
			continue
		}
		ids = append(ids, j["job_id"])
	}
	want := []any{b, nil, a, nil, nil, nil, a}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("jobs %v, want %v", ids, want)
	}
	if r.header.Get("X-RateLimit-Remaining") != "17" {
		t.Errorf("remaining %q, want 17 (two resolves and this one request)", r.header.Get("X-RateLimit-Remaining"))
	}
	many := make([]string, 101)
	for i := range many {
		many[i] = a
	}
	for name, q := range map[string]string{
		"no ids": "", "empty ids": "?ids=", "empty id": "?ids=" + a + ",," + b, "trailing comma": "?ids=" + a + ",",
		"101 ids": "?ids=" + strings.Join(many, ","), "ids twice": "?ids=" + a + "&ids=" + b, "bad query": "?ids=%zz",
	} {
		r := e.do("GET", "/v1/jobs"+q, tok, nil)
		wantProblem(t, r, 400, "invalid_request")
		if errs, _ := r.body["errors"].([]any); len(errs) == 0 || errs[0].(map[string]any)["field"] != "ids" {
			t.Errorf("%s: errors %v", name, r.body["errors"])
		}
	}
	r = e.do("GET", "/v1/jobs?ids="+strings.Join(many[:100], ","), tok, nil)
	if r.status != 200 || strings.Count(string(r.raw), `"job_id"`) != 100 {
		t.Errorf("100 ids: %d", r.status)
	}
	wantProblem(t, e.do("GET", "/v1/jobs?ids="+a, "", nil), 401, "invalid_key")
}
