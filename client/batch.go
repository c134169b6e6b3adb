package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// BatchSize is the most items ResolveMany sends in one POST /v1/resolve/batch and the most
// ids it asks for in one GET /v1/jobs?ids=: the service's default BATCH_MAX_ITEMS, and the
// id limit of GET /v1/jobs.
const BatchSize = 100

// BatchRequest is the body of POST /v1/resolve/batch.
type BatchRequest struct {
	Items []ResolveRequest `json:"items"`
	// WebhookURL applies to the items that have none of their own.
	WebhookURL string `json:"webhook_url,omitempty"`
}

// BatchResult is the answer for one item of a batch, what POST /v1/resolve would have
// answered for it alone: exactly one of Resolution and Err is set.
type BatchResult struct {
	Resolution *Resolution
	Err        *Error
}

// ResolveBatch submits several links in one request (POST /v1/resolve/batch). The results
// are in item order. A refused item (unsupported_link, rate_limited once the key's budget is
// spent, …) is that item's Err and does not fail the others; a request refused as a whole
// (a malformed body, or not even the first item within the per-minute limit) is an [*Error].
// A server without the batch endpoint answers 404 not_found.
func (c *Client) ResolveBatch(ctx context.Context, req BatchRequest) ([]BatchResult, error) {
	var out struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/resolve/batch", req, &out); err != nil {
		return nil, err
	}
	if len(out.Items) != len(req.Items) {
		return nil, fmt.Errorf("linkhop: the batch answer has %d items for %d sent", len(out.Items), len(req.Items))
	}
	res := make([]BatchResult, len(out.Items))
	for i, raw := range out.Items {
		var probe struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(raw, &probe); err != nil {
			return nil, fmt.Errorf("linkhop: batch item %d: %w", i, err)
		}
		if probe.Code != "" {
			var p problemBody
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, fmt.Errorf("linkhop: batch item %d: %w", i, err)
			}
			res[i].Err = p.toError()
			continue
		}
		var r Resolution
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("linkhop: batch item %d: %w", i, err)
		}
		res[i].Resolution = &r
	}
	return res, nil
}

// Jobs reads up to 100 jobs in one request (GET /v1/jobs?ids=…), in the order asked. An
// entry is nil for a malformed, unknown or expired id, or another key's job. A server
// without this endpoint answers 404 not_found.
func (c *Client) Jobs(ctx context.Context, ids []string) ([]*Job, error) {
	esc := make([]string, len(ids))
	for i, id := range ids {
		esc[i] = url.QueryEscape(id)
	}
	var out struct {
		Jobs []*Job `json:"jobs"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/jobs?ids="+strings.Join(esc, ","), nil, &out); err != nil {
		return nil, err
	}
	if len(out.Jobs) != len(ids) {
		return nil, fmt.Errorf("linkhop: the jobs answer has %d entries for %d ids", len(out.Jobs), len(ids))
	}
	return out.Jobs, nil
}

// Outcome is what became of one link given to [Client.ResolveMany].
type Outcome struct {
	URL string
	// Job is the finished job (Cached set for a cached answer); nil when the link was
	// refused.
	Job *Job
	// Err is nil when the link resolved; else an [*Error] when the API refused the link
	// (unsupported_link, quota_exceeded, out_of_credits, …) or a [*JobError] when its job
	// failed.
	Err error
}

// ResolveMany resolves urls and waits for all of them, keeping up to [BatchSize] jobs in
// flight. Links go through POST /v1/resolve/batch and jobs are polled with
// GET /v1/jobs?ids=, at the poll interval; a server that answers 404 or 405 for those (one
// from before they existed) gets single POST /v1/resolve calls and single job polls instead,
// for the rest of the Client's life. Items refused with rate_limited or a 5xx are sent again
// after their Retry-After; the whole requests are retried as [Client.ResolveAndWait] does.
//
// done, when not nil, is called with each link's index and outcome as soon as it is known,
// from the calling goroutine. The outcomes are in input order.
//
// The error is not nil when the run could not go on: an invalid key (invalid_key) or one
// without the resolve scope (forbidden_scope), a call that got no answer, an unexpected
// answer, or ctx's end. The outcomes not known by then carry that error.
func (c *Client) ResolveMany(ctx context.Context, urls []string, done func(i int, o Outcome)) ([]Outcome, error) {
	r := &manyRun{c: c, out: make([]Outcome, len(urls)), known: make([]bool, len(urls)), done: done,
		inflight: map[string]int{}}
	for i, u := range urls {
		r.out[i].URL = u
		r.queue = append(r.queue, queued{i: i})
	}
	err := r.run(ctx)
	if err != nil {
		for i := range r.out {
			if !r.known[i] {
				r.out[i].Err = err
			}
		}
	}
	return r.out, err
}

type queued struct {
	i         int
	notBefore time.Time
}

// manyRun is the state of one ResolveMany.
type manyRun struct {
	c        *Client
	out      []Outcome
	known    []bool
	done     func(int, Outcome)
	queue    []queued       // links to submit, with the earliest time to send each
	inflight map[string]int // job id → link index
	order    []string       // the job ids in flight, in submission order
	p        pacer
}

func (r *manyRun) run(ctx context.Context) error {
	lastPoll := time.Now()
	for len(r.queue) > 0 || len(r.inflight) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		var ready []int
		var rest []queued
		earliest := time.Time{}
		for _, q := range r.queue {
			if len(ready) < BatchSize-len(r.inflight) && !q.notBefore.After(now) {
				ready = append(ready, q.i)
				continue
			}
			rest = append(rest, q)
			if earliest.IsZero() || q.notBefore.Before(earliest) {
				earliest = q.notBefore
			}
		}
		r.queue = rest
		if len(ready) > 0 {
			if err := r.submit(ctx, ready); err != nil {
				return err
			}
		}
		switch {
		case len(r.inflight) > 0:
			if err := sleep(ctx, time.Until(lastPoll.Add(r.c.poll))); err != nil {
				return err
			}
			lastPoll = time.Now()
			if err := r.poll(ctx); err != nil {
				return err
			}
		case len(r.queue) > 0 && len(ready) == 0:
			if err := sleep(ctx, time.Until(earliest)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *manyRun) finish(i int, job *Job, err error) {
	r.out[i].Job, r.out[i].Err, r.known[i] = job, err, true
	if r.done != nil {
		r.done(i, r.out[i])
	}
}

// fatal reports whether a refusal will be the same for every link: the key is wrong.
func fatal(e *Error) bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// absent reports whether err says the endpoint does not exist on this server.
func absent(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed)
}

// accepted files a link's answer: cached (finished), queued (in flight), or refused
// (finished, or queued again after Retry-After when the refusal is temporary).
func (r *manyRun) accepted(i int, res *Resolution, e *Error) error {
	switch {
	case e != nil && fatal(e):
		return e
	case e != nil && e.Temporary():
		r.queue = append(r.queue, queued{i: i, notBefore: time.Now().Add(max(e.RetryAfter, MinPollInterval))})
	case e != nil:
		r.finish(i, nil, e)
	case res.Status == StatusDone:
		r.finish(i, cachedJob(r.out[i].URL, res), nil)
	case res.JobID == "":
		return fmt.Errorf("linkhop: an answer with status %q and no job_id", res.Status)
	default:
		r.inflight[res.JobID] = i
		r.order = append(r.order, res.JobID)
	}
	return nil
}

func (r *manyRun) submit(ctx context.Context, idx []int) error {
	if !r.c.noBatch.Load() {
		req := BatchRequest{Items: make([]ResolveRequest, len(idx))}
		for k, i := range idx {
			req.Items[k].URL = r.out[i].URL
		}
		var res []BatchResult
		err := retry(ctx, &r.p, func() (err error) {
			res, err = r.c.ResolveBatch(ctx, req)
			return err
		})
		switch {
		case err == nil:
			for k, i := range idx {
				if err := r.accepted(i, res[k].Resolution, res[k].Err); err != nil {
					return err
				}
			}
			return nil
		case absent(err):
			// A server from before the batch endpoint: single calls from now on.
			r.c.noBatch.Store(true)
		default:
			return err
		}
	}
	for _, i := range idx {
		var res *Resolution
		err := retry(ctx, &r.p, func() (err error) {
			res, err = r.c.Resolve(ctx, ResolveRequest{URL: r.out[i].URL})
			return err
		})
		var e *Error
		if err != nil && !errors.As(err, &e) {
			return err
		}
		if err := r.accepted(i, res, e); err != nil {
			return err
		}
	}
	return nil
}

// ended files a polled job: finished when terminal.
func (r *manyRun) ended(id string, j *Job, err error) {
	i := r.inflight[id]
	if err == nil && !j.Status.Terminal() {
		return
	}
	delete(r.inflight, id)
	if err == nil {
		err = jobError(j)
	}
	r.finish(i, j, err)
}

func (r *manyRun) poll(ctx context.Context) error {
	ids := r.order
	r.order = nil
	defer func() {
		for _, id := range ids {
			if _, ok := r.inflight[id]; ok {
				r.order = append(r.order, id)
			}
		}
	}()
	if !r.c.noJobsList.Load() {
		var jobs []*Job
		err := retry(ctx, &r.p, func() (err error) {
			jobs, err = r.c.Jobs(ctx, ids)
			return err
		})
		switch {
		case err == nil:
			for k, id := range ids {
				if jobs[k] == nil {
					r.ended(id, nil, &Error{Status: http.StatusNotFound, Code: "not_found",
						Detail: "The job " + id + " is gone (expired or unknown)."})
					continue
				}
				r.ended(id, jobs[k], nil)
			}
			return nil
		case absent(err):
			// A server from before GET /v1/jobs?ids=: single polls from now on.
			r.c.noJobsList.Store(true)
		default:
			return err
		}
	}
	for _, id := range ids {
		var j *Job
		err := retry(ctx, &r.p, func() (err error) {
			j, err = r.c.Job(ctx, id)
			return err
		})
		var e *Error
		switch {
		case err == nil:
			r.ended(id, j, nil)
		case errors.As(err, &e) && !fatal(e):
			r.ended(id, nil, e)
		default:
			return err
		}
	}
	return nil
}
