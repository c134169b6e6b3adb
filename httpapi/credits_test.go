package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// premiumEnv is an env with a second provider, "prem" on host pre.mi (premium tier), served by
// the same local shortener as sho.rt.
func premiumEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	o.extra = append(o.extra, resolve.Provider{ID: "prem", Label: "Premium", Hosts: []string{"pre.mi"}, Tier: "premium"})
	tweak := o.tweakCfg
	o.tweakCfg = func(c *config.Config) {
		c.HostOverrides["pre.mi"] = c.HostOverrides["sho.rt"]
		if tweak != nil {
			tweak(c)
		}
	}
	return newEnv(t, o)
}

// balanceOf reads key id's stored credit balance (nil: unlimited).
func (e *env) balanceOf(id string) *int64 {
	e.t.Helper()
	k, err := e.keys.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return k.Credits
}

func TestCreditsChargedByTier(t *testing.T) {
	t.Parallel()
	e := premiumEnv(t, envOptions{worker: true})
	cases := []struct {
		name string
		url  string
		tier string
		cost float64
	}{
		{"standard costs 1", "http://sho.rt/std", "standard", 1},
		{"premium costs 2", "http://pre.mi/prem", "premium", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, tok := e.key(keys.CreateParams{Credits: ptr[int64](5), RateLimit: ptr(0)})
			id := e.accepted(tok, map[string]any{"url": tc.url})
			// The cost is held at submission, so concurrent requests cannot overdraw.
			if b := e.balanceOf(c.ID); b == nil || float64(*b) != 5-tc.cost {
				t.Errorf("balance after submission %v, want %v", b, 5-tc.cost)
			}
			// Until the job is done it has cost nothing yet (the worker may be faster than
			// this poll, then it is done already).
			if early := e.do("GET", "/v1/jobs/"+id, tok, nil); early.body["status"] != "done" &&
				(early.body["credits_charged"] != 0.0 || early.body["balance"] != 5-tc.cost) {
				t.Errorf("%v job: credits_charged %v balance %v", early.body["status"], early.body["credits_charged"], early.body["balance"])
			}
			job := e.waitJob(tok, id)
			if job["status"] != "done" || job["tier"] != tc.tier {
				t.Fatalf("job %v", job)
			}
			if job["credits_charged"] != tc.cost || job["balance"] != 5-tc.cost {
				t.Errorf("done job: credits_charged %v balance %v, want %v and %v", job["credits_charged"], job["balance"], tc.cost, 5-tc.cost)
			}
			if acc := e.do("GET", "/v1/account", tok, nil); acc.body["balance"] != 5-tc.cost {
				t.Errorf("account balance %v", acc.body["balance"])
			}
		})
	}
}

func TestCreditsFailureChargesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true, shortFn: func(w http.ResponseWriter, r *http.Request) {
		http.NotFound(w, r)
	}})
	c, tok := e.key(keys.CreateParams{Credits: ptr[int64](1), RateLimit: ptr(0)})
	id := e.accepted(tok, map[string]any{"url": "http://sho.rt/gone"})
	job := e.waitJob(tok, id)
	if job["status"] != "failed" || job["error"] != "link_removed" {
		t.Fatalf("job %v", job)
	}
	if job["credits_charged"] != 0.0 || job["balance"] != 1.0 {
		t.Errorf("failed job: credits_charged %v balance %v, want 0 and 1", job["credits_charged"], job["balance"])
	}
	if b := e.balanceOf(c.ID); b == nil || *b != 1 {
		t.Errorf("stored balance %v, want 1", b)
	}
	// The known-removed link is answered from the negative cache: 410, nothing charged.
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/gone"})
	wantProblem(t, r, http.StatusGone, "link_removed")
	if b := e.balanceOf(c.ID); *b != 1 {
		t.Errorf("balance after 410 %v, want 1", *b)
	}
}

func TestCreditsOutOfCredits(t *testing.T) {
	t.Parallel()
	e := premiumEnv(t, envOptions{})
	c, tok := e.key(keys.CreateParams{Credits: ptr[int64](1), DailyQuota: ptr[int64](10)})
	// Premium costs 2; the balance is 1.
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://pre.mi/x", "idempotency_key": "p"})
	wantProblem(t, r, http.StatusPaymentRequired, "out_of_credits")
	if r.body["balance"] != 1.0 {
		t.Errorf("402 balance %v, want 1", r.body["balance"])
	}
	e.wantJobs(0)
	// Nothing was taken: not the credit, not the quota, not the idempotency key.
	if acc := e.do("GET", "/v1/account", tok, nil); acc.body["balance"] != 1.0 || acc.body["daily_used"] != 0.0 {
		t.Errorf("after 402: balance %v daily_used %v", acc.body["balance"], acc.body["daily_used"])
	}
	e.accepted(tok, map[string]any{"url": "https://sho.rt/x", "idempotency_key": "p"})
	// Standard costs 1: accepted, and the balance is 0.
	r = e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/y"})
	wantProblem(t, r, http.StatusPaymentRequired, "out_of_credits")
	if r.body["balance"] != 0.0 {
		t.Errorf("402 balance %v, want 0", r.body["balance"])
	}
	if b := e.balanceOf(c.ID); b == nil || *b != 0 {
		t.Errorf("stored balance %v, want 0", b)
	}
	e.wantJobs(1)
}

func TestCreditsConcurrentNeverOverdraw(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	c, tok := e.key(keys.CreateParams{Credits: ptr[int64](5), RateLimit: ptr(0)})
	const n = 20
	res := make([]resp, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res[i] = e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/c" + strconv.Itoa(i)})
		})
	}
	close(start)
	wg.Wait()
	var ids []string
	refused := 0
	for _, r := range res {
		switch r.status {
		case http.StatusAccepted:
			ids = append(ids, r.body["job_id"].(string))
		case http.StatusPaymentRequired:
			wantProblem(t, r, http.StatusPaymentRequired, "out_of_credits")
			if b, ok := r.body["balance"].(float64); !ok || b != 0 {
				t.Errorf("402 balance %v, want 0", r.body["balance"])
			}
			refused++
		default:
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
	}
	if len(ids) != 5 || refused != n-5 {
		t.Fatalf("%d accepted, %d refused; want exactly 5 accepted", len(ids), refused)
	}
	var charged float64
	for _, id := range ids {
		job := e.waitJob(tok, id)
		if job["status"] != "done" {
			t.Fatalf("job %v", job)
		}
		charged += job["credits_charged"].(float64)
	}
	if b := e.balanceOf(c.ID); charged != 5 || b == nil || *b != 0 {
		t.Errorf("charged %v, balance %v; want 5 and 0", charged, b)
	}
}

func TestCreditsCachedAnswerIsFree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	c, tok := e.key(keys.CreateParams{Credits: ptr[int64](1), RateLimit: ptr(0)})
	e.waitJob(tok, e.accepted(tok, map[string]any{"url": "http://sho.rt/free"}))
	if b := e.balanceOf(c.ID); *b != 0 {
		t.Fatalf("balance %d after one resolve, want 0", *b)
	}
	// A balance of 0 still gets cached answers: they cost nothing.
	for range 2 {
		r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/free"})
		if r.status != http.StatusOK || r.body["cached"] != true || r.body["credits_charged"] != 0.0 || r.body["balance"] != 0.0 {
			t.Fatalf("cached answer: %d %s", r.status, r.raw)
		}
	}
	if b := e.balanceOf(c.ID); *b != 0 {
		t.Errorf("balance %d after cached answers, want 0", *b)
	}
}

func TestCreditsUnlimitedKeyHasNullBalance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0)})
	id := e.accepted(tok, map[string]any{"url": "http://sho.rt/unl"})
	job := e.waitJob(tok, id)
	cached := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/unl"})
	acc := e.do("GET", "/v1/account", tok, nil)
	for name, body := range map[string]map[string]any{"job": job, "cached": cached.body, "account": acc.body} {
		v, present := body["balance"]
		if !present || v != nil {
			t.Errorf("%s: balance %v (present %v), want null", name, v, present)
		}
	}
	// Nothing is charged to a key without a balance.
	if job["credits_charged"] != 0.0 {
		t.Errorf("credits_charged %v for an unlimited key, want 0", job["credits_charged"])
	}
}
