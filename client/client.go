// Package client is the Go client of linkhop's HTTP API (docs/api.md). It uses the standard
// library only.
//
//	c := client.New("http://127.0.0.1:8080", os.Getenv("LINKHOP_API_KEY"))
//	job, err := c.ResolveAndWait(ctx, "https://bit.ly/3abcDEF")
//
// Every answer that is not 2xx comes back as an [*Error] carrying the whole problem details
// object (docs/errors.md). [Client.ResolveAndWait] and [Client.ResolveMany] pace their
// requests as docs/api.md asks of clients: polls at least a second apart, Retry-After
// honoured, backoff with jitter on 5xx. Webhook signatures are verified with the
// github.com/linkhop/linkhop/webhooks package.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// MinPollInterval is the shortest time between two polls of one job: docs/api.md asks
// clients to poll every second or two, and every poll counts against the key's per-minute
// limit.
const MinPollInterval = time.Second

// maxAnswer bounds how much of an answer is read: a 100-job GET /v1/jobs?ids= is a few
// hundred KiB.
const maxAnswer = 8 << 20

// Client calls one linkhop service with one API key. It is safe for concurrent use.
type Client struct {
	base      string
	key       string
	hc        *http.Client
	userAgent string
	poll      time.Duration

	// noBatch and noJobsList remember that the server answered 404/405 for the batch
	// endpoints (docs/api.md, a server from before they existed), so ResolveMany stops
	// asking.
	noBatch    atomic.Bool
	noJobsList atomic.Bool
}

// Option configures a [Client].
type Option func(*Client)

// WithHTTPClient sends requests through hc instead of a client with a 30 s timeout.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithUserAgent sets the User-Agent of every request.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithPollInterval sets the time between two polls of a job; values below
// [MinPollInterval] are raised to it.
func WithPollInterval(d time.Duration) Option {
	return func(c *Client) { c.poll = max(d, MinPollInterval) }
}

// New returns a client of the service at baseURL (for example "http://127.0.0.1:8080")
// that authenticates with apiKey ("sk_live_…"). A malformed baseURL makes every call fail.
func New(baseURL, apiKey string, opts ...Option) *Client {
	c := &Client{
		base:      strings.TrimRight(baseURL, "/"),
		key:       apiKey,
		hc:        &http.Client{Timeout: 30 * time.Second},
		userAgent: "linkhop-go-client",
		poll:      MinPollInterval,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Resolve submits one link (POST /v1/resolve). The answer is either a cached result
// (Status "done", JobID empty) or a queued job (Status "queued") to poll with [Client.Job].
func (c *Client) Resolve(ctx context.Context, r ResolveRequest) (*Resolution, error) {
	var out Resolution
	if err := c.Do(ctx, http.MethodPost, "/v1/resolve", r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Job reads a job of the key (GET /v1/jobs/{job_id}). An unknown, expired or malformed id,
// or another key's job, is an [*Error] with Code "not_found".
func (c *Client) Job(ctx context.Context, jobID string) (*Job, error) {
	var out Job
	if err := c.Do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(jobID), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Account reads the key's settings, usage and balance (GET /v1/account).
func (c *Client) Account(ctx context.Context) (*Account, error) {
	var out Account
	if err := c.Do(ctx, http.MethodGet, "/v1/account", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Providers lists the providers whose links the service resolves (GET /v1/providers).
func (c *Client) Providers(ctx context.Context) ([]Provider, error) {
	var out struct {
		Providers []Provider `json:"providers"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/providers", nil, &out); err != nil {
		return nil, err
	}
	return out.Providers, nil
}

// RedeliverWebhook queues a fresh delivery of a finished job's webhook event
// (POST /v1/jobs/{job_id}/webhook/redeliver) and returns the job's webhook state. It is an
// [*Error] with Code "not_found" for a job without webhook_url and "idempotency_conflict"
// while a delivery is pending.
func (c *Client) RedeliverWebhook(ctx context.Context, jobID string) (*Webhook, error) {
	var out Webhook
	if err := c.Do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(jobID)+"/webhook/redeliver", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Do sends one authenticated request: body (when not nil) is sent as JSON, a 2xx answer is
// decoded into out (when not nil; a *json.RawMessage keeps it as it came), and any other
// answer is an [*Error]. It does not retry. The typed methods are built on it; use it for
// what they do not cover.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("linkhop: encoding the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("linkhop: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("User-Agent", c.userAgent)
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("linkhop: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("linkhop: reading the answer to %s %s: %w", method, path, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return newError(res, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("linkhop: decoding the answer to %s %s: %w", method, path, err)
	}
	return nil
}
