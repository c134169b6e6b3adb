package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Backoff on 5xx answers: the n-th consecutive one waits a random time between half and all
// of backoffBase × 2^(n−1), at most backoffMax, or the answer's Retry-After when that is
// longer. The random half spreads clients that failed together, so they do not come back
// together.
const (
	backoffBase = time.Second
	backoffMax  = 30 * time.Second
)

func backoff(n int) time.Duration {
	d := backoffBase << min(n-1, 10)
	d = min(d, backoffMax)
	return d/2 + rand.N(d/2+1)
}

// pacer decides how long to wait after a failed call, and counts consecutive 5xx answers.
type pacer struct{ fails int }

// delay is how long to wait before sending the request again, or false when err is not worth
// retrying: only rate_limited 429s (after Retry-After) and 5xx answers (backoff, or
// Retry-After when longer) are. A call that got no answer at all (connection refused, DNS)
// is not retried: for a POST it is unknown whether it arrived.
func (p *pacer) delay(err error) (time.Duration, bool) {
	var e *Error
	if !errors.As(err, &e) || !e.Temporary() {
		return 0, false
	}
	if e.Status >= 500 {
		p.fails++
		return max(backoff(p.fails), e.RetryAfter), true
	}
	p.fails = 0
	return max(e.RetryAfter, MinPollInterval), true
}

func (p *pacer) ok() { p.fails = 0 }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry calls f until it succeeds, fails with an error not worth retrying, or ctx ends.
func retry(ctx context.Context, p *pacer, f func() error) error {
	for {
		err := f()
		if err == nil {
			p.ok()
			return nil
		}
		d, again := p.delay(err)
		if !again {
			return err
		}
		if serr := sleep(ctx, d); serr != nil {
			return errors.Join(serr, err)
		}
	}
}

// ResolveAndWait submits url and waits for its job to end.
//
// A cached answer returns at once, as a Job with Cached set and no JobID. Otherwise the job
// is polled at the poll interval (at least a second apart; [WithPollInterval]). Along the
// way, rate_limited answers are retried after their Retry-After, and 5xx answers with
// backoff and jitter; every other 4xx (quota_exceeded, unsupported_link, not_found, …) is
// returned at once as an [*Error], as is a call that got no answer. When ctx ends it returns
// ctx's error joined with the last failure, if any.
//
// Once the link is queued, an error comes with the job as last seen (its JobID, to read it
// later with [Client.Job]); before that, the job is nil.
//
// A job that ends failed or invalid is returned together with a [*JobError] carrying its
// error code, so err != nil whenever there is no target.
func (c *Client) ResolveAndWait(ctx context.Context, url string) (*Job, error) {
	var p pacer
	var r *Resolution
	err := retry(ctx, &p, func() (err error) {
		r, err = c.Resolve(ctx, ResolveRequest{URL: url})
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Status == StatusDone {
		return cachedJob(url, r), nil
	}
	last := &Job{JobID: r.JobID, Status: StatusQueued, URL: url}
	for {
		if err := sleep(ctx, c.poll); err != nil {
			return last, err
		}
		var j *Job
		err := retry(ctx, &p, func() (err error) {
			j, err = c.Job(ctx, r.JobID)
			return err
		})
		if err != nil {
			return last, err
		}
		if j.Status.Terminal() {
			return j, jobError(j)
		}
		last = j
	}
}

// cachedJob is the Job of a cached answer, which has none.
func cachedJob(url string, r *Resolution) *Job {
	u := r.URL
	if u == "" {
		u = url
	}
	return &Job{
		JobID: r.JobID, Status: StatusDone, URL: u, TargetURL: r.TargetURL, Provider: r.Provider,
		Tier: r.Tier, CreditsCharged: r.CreditsCharged, Balance: r.Balance, Cached: r.Cached,
	}
}
