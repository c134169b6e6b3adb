package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkhop/linkhop/client"
)

// The tests in this file run against a real stack (newStack): the API and a worker on a real
// redis-server, resolving links of a loopback shortener.

func TestResolveAndWaitThenCached(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, s.key(t, ptr(0)))
	ctx := context.Background()

	job, err := c.ResolveAndWait(ctx, "http://sho.rt/abc")
	if err != nil {
		t.Fatal(err)
	}
	if job.Status != client.StatusDone || job.TargetURL != "https://example.com/dest/abc" || job.Provider != "short" ||
		job.Tier != "standard" || job.Cached || job.JobID == "" {
		t.Fatalf("job %+v", job)
	}
	if len(job.Hops) != 2 || job.Hops[0].Kind != "start" || job.Hops[1].URL != job.TargetURL {
		t.Errorf("hops %+v", job.Hops)
	}
	if job.CompletedAt == nil || job.CreatedAt.IsZero() {
		t.Errorf("timestamps %+v", job)
	}

	// The same link again is answered from the cache: at once, with no job and no poll.
	start := time.Now()
	job, err = c.ResolveAndWait(ctx, "http://sho.rt/abc")
	if err != nil {
		t.Fatal(err)
	}
	if !job.Cached || job.JobID != "" || job.TargetURL != "https://example.com/dest/abc" {
		t.Fatalf("cached job %+v", job)
	}
	if d := time.Since(start); d >= client.MinPollInterval {
		t.Errorf("a cached answer took %v: it polled", d)
	}
}

func TestResolveAndWaitFailedJob(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, s.key(t, ptr(0)))
	job, err := c.ResolveAndWait(context.Background(), "http://sho.rt/gone")
	var je *client.JobError
	if !errors.As(err, &je) {
		t.Fatalf("err %v, want a *JobError", err)
	}
	if je.Code != "link_removed" || je.Status != client.StatusFailed || je.JobID == "" || je.Detail == "" {
		t.Errorf("job error %+v", je)
	}
	if job == nil || job.Status != client.StatusFailed || job.Error != "link_removed" {
		t.Errorf("job %+v", job)
	}
}

func TestProblemsAreErrors(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	c := client.New(s.url, s.key(t, ptr(0)))

	t.Run("unsupported link, and ResolveAndWait gives up on it at once", func(t *testing.T) {
		start := time.Now()
		_, err := c.ResolveAndWait(ctx, "https://example.org/x")
		e := wantError(t, err, 422, "unsupported_link")
		if !strings.HasSuffix(e.Type, "#unsupported_link") || e.Title == "" || e.Detail == "" || e.Instance == "" {
			t.Errorf("problem %+v", e)
		}
		if time.Since(start) > 500*time.Millisecond {
			t.Errorf("gave up after %v", time.Since(start))
		}
	})
	t.Run("field errors", func(t *testing.T) {
		_, err := c.Resolve(ctx, client.ResolveRequest{URL: "http://sho.rt/x", WebhookURL: "http://example.com/hook"})
		e := wantError(t, err, 400, "invalid_request")
		if len(e.Errors) == 0 || e.Errors[0].Field != "webhook_url" || e.Errors[0].Reason == "" {
			t.Errorf("field errors %+v", e.Errors)
		}
	})
	t.Run("a 404 job", func(t *testing.T) {
		_, err := c.Job(ctx, "00000000-0000-4000-8000-000000000000")
		wantError(t, err, 404, "not_found")
	})
	t.Run("a wrong key", func(t *testing.T) {
		_, err := client.New(s.url, "sk_live_nope").Account(ctx)
		wantError(t, err, 401, "invalid_key")
	})
	t.Run("a key without the resolve scope", func(t *testing.T) {
		_, err := client.New(s.url, s.key(t, ptr(0), []string{}...)).Resolve(ctx, client.ResolveRequest{URL: "http://sho.rt/x"})
		wantError(t, err, 403, "forbidden_scope")
	})
	t.Run("redeliver without a webhook", func(t *testing.T) {
		job, err := c.ResolveAndWait(ctx, "http://sho.rt/redeliver")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.RedeliverWebhook(ctx, job.JobID)
		wantError(t, err, 404, "not_found")
	})
}

func TestAccountAndProviders(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, s.key(t, ptr(7)))
	ctx := context.Background()
	a, err := c.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID == "" || a.RateLimitPerMinute != 7 || a.Balance != nil || len(a.Providers) == 0 {
		t.Errorf("account %+v", a)
	}
	ps, err := c.Providers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range ps {
		if p.Provider == "short" && len(p.Hosts) == 1 && p.Hosts[0] == "sho.rt" && p.Tier == "standard" && p.Latency != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("providers lack the test shortener: %+v", ps)
	}
}

// A key of 1 request a minute: the second request is a 429 whose Retry-After the client
// reads, and ResolveAndWait waits it out until its context ends.
func TestRateLimitedRetryAfterAndContextEnd(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, s.key(t, ptr(1)))
	ctx := context.Background()
	if _, err := c.Account(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := c.Resolve(ctx, client.ResolveRequest{URL: "http://sho.rt/limited"})
	e := wantError(t, err, 429, "rate_limited")
	if e.RetryAfter < time.Second || e.RetryAfter > time.Minute || !e.Temporary() {
		t.Errorf("RetryAfter %v, Temporary %v", e.RetryAfter, e.Temporary())
	}

	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.ResolveAndWait(wctx, "http://sho.rt/limited")
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's end", err)
	}
	if !errors.As(err, &e) || e.Code != "rate_limited" {
		t.Errorf("err %v does not carry the last problem", err)
	}
	if took < 1400*time.Millisecond || took > 3*time.Second {
		t.Errorf("returned after %v; the context ended after 1.5 s", took)
	}
}

// Redis goes away: the API answers 503 with Retry-After; ResolveAndWait backs off and
// succeeds once Redis is back.
func TestServiceUnavailableThenRecovery(t *testing.T) {
	t.Parallel()
	s := newStack(t, "--appendonly", "yes", "--appendfsync", "always")
	c := client.New(s.url, s.key(t, ptr(0)))
	ctx := context.Background()
	s.redis.Stop()
	_, err := c.Resolve(ctx, client.ResolveRequest{URL: "http://sho.rt/down"})
	e := wantError(t, err, 503, "service_unavailable")
	if e.RetryAfter <= 0 || !e.Temporary() {
		t.Errorf("RetryAfter %v, Temporary %v", e.RetryAfter, e.Temporary())
	}

	type result struct {
		job *client.Job
		err error
	}
	done := make(chan result, 1)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		j, err := c.ResolveAndWait(wctx, "http://sho.rt/down")
		done <- result{j, err}
	}()
	time.Sleep(1500 * time.Millisecond)
	if err := s.redis.Restart(0); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.job.TargetURL != "https://example.com/dest/down" {
		t.Errorf("job %+v", r.job)
	}
}

// Cancelling the context while ResolveAndWait waits for its next poll returns at once.
func TestResolveAndWaitCancelled(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, s.key(t, ptr(0)), client.WithPollInterval(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.ResolveAndWait(ctx, "http://sho.rt/cancel")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned %v after the cancel", d)
	}
}

// Against today's server, which has no batch endpoints, ResolveMany falls back to single
// calls and still answers every link in input order.
func TestResolveManyFallsBackOnRealServer(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, s.key(t, ptr(0)))
	urls := []string{"http://sho.rt/1", "https://example.org/unsupported", "http://sho.rt/gone", "http://sho.rt/2"}
	var seen []int
	out, err := c.ResolveMany(context.Background(), urls, func(i int, _ client.Outcome) { seen = append(seen, i) })
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(urls) {
		t.Errorf("done called for %v", seen)
	}
	for i, o := range out {
		if o.URL != urls[i] {
			t.Errorf("outcome %d is for %s", i, o.URL)
		}
	}
	if out[0].Err != nil || out[0].Job.TargetURL != "https://example.com/dest/1" || out[3].Job.TargetURL != "https://example.com/dest/2" {
		t.Errorf("resolved outcomes %+v %+v", out[0], out[3])
	}
	wantError(t, out[1].Err, 422, "unsupported_link")
	var je *client.JobError
	if !errors.As(out[2].Err, &je) || je.Code != "link_removed" {
		t.Errorf("failing link: %v", out[2].Err)
	}
}

func TestResolveManyWrongKeyStops(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := client.New(s.url, "sk_live_wrong")
	out, err := c.ResolveMany(context.Background(), []string{"http://sho.rt/1", "http://sho.rt/2"}, nil)
	wantError(t, err, http.StatusUnauthorized, "invalid_key")
	for _, o := range out {
		if o.Err == nil {
			t.Errorf("outcome without the error: %+v", o)
		}
	}
}

func wantError(t *testing.T, err error, status int, code string) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("err %v (%T), want a *client.Error", err, err)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("error %d %s (%v), want %d %s", e.Status, e.Code, e, status, code)
	}
	return e
}
