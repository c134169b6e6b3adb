package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// shortHost is the provider host of the local one-hop shortener; LINKHOP_HOST_OVERRIDES points
// it at the shortener's loopback address, exactly as staging and tests do.
const shortHost = "sho.rt"

// benchRateLimit is the per-minute limit of the benchmark's keys (-rate-limit): high enough
// never to reject, but not 0 (unlimited), so that every request pays for the real
// sliding-window log.
const benchRateLimit = 100_000_000

// server is one net/http server on a loopback port, configured like cmd/api's.
type server struct {
	srv  *http.Server
	url  string // http://127.0.0.1:port
	addr string
	done chan struct{}
}

func serve(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return serveOn(ln, h)
}

func serveOn(ln net.Listener, h http.Handler) (*server, error) {
	s := &server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
		},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	s.url = "http://" + s.addr
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *server) close() {
	_ = s.srv.Close()
	<-s.done
}

// newHTTPClient is a client for closed loops: keep-alive connections enough for every
// goroutine, no proxy, no compression (the API's bodies are small). Its CPU counts as the
// measured side's; newLoadClient is the one whose CPU is left out.
func newHTTPClient(conc int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        conc * 2,
			MaxIdleConnsPerHost: conc * 2,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// completions hands the moment a job became terminal from the worker (its OnTerminal hook) to
// the load goroutine waiting for it, whichever comes first, without polling Redis.
type completions struct {
	mu sync.Mutex
	m  map[string]chan completion
}

type completion struct {
	at     time.Time
	status jobs.Status
}

func newCompletions() *completions { return &completions{m: map[string]chan completion{}} }

func (c *completions) ch(id string) chan completion {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.m[id]
	if !ok {
		ch = make(chan completion, 1)
		c.m[id] = ch
	}
	return ch
}

// signal records that job id finished; a second signal (a redelivered task) is dropped.
func (c *completions) signal(id string, st jobs.Status) {
	select {
	case c.ch(id) <- completion{at: time.Now(), status: st}:
	default:
	}
}

// wait blocks until job id finished and forgets it.
func (c *completions) wait(ctx context.Context, id string) (completion, error) {
	ch := c.ch(id)
	select {
	case v := <-ch:
		c.mu.Lock()
		delete(c.m, id)
		c.mu.Unlock()
		return v, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.m, id)
		c.mu.Unlock()
		return completion{}, ctx.Err()
	}
}

// stackOptions shape a stack.
type stackOptions struct {
	keys      int            // API keys to create
	hook      redis.Hook     // added to the API's Redis client (round-trip counting)
	workHooks []redis.Hook   // added to the worker's Redis client
	workers   int            // WORKER_CONCURRENCY; 0: the default
	env       map[string]any // extra environment for config.Load
}

// stack is linkhop as it runs in production, in process: an API (httpapi on a loopback
// net/http server, wired by internal/app.NewAPI, as cmd/api is) and, on demand, a worker (asynq, wired like
// internal/app.NewWorker) with its own Redis client as a separate process would have, plus the
// local one-hop shortener its jobs resolve.
type stack struct {
	cfg     config.Config
	apiRdb  redis.UniversalClient
	workRdb redis.UniversalClient
	// workHooks are added to the worker's clients (stackOptions.workHooks).
	workHooks []redis.Hook
	// workerRdb is the running worker's own client (startWorker), closed with it.
	workerRdb redis.UniversalClient
	api       *server
	short     *server
	client    *http.Client
	tokens    []string
	reg       *resolve.Registry
	done      *completions
	worker    *jobs.Worker
	seq       atomic.Int64
}

func newStack(ctx context.Context, e *runEnv, conc int, o stackOptions) (*stack, error) {
	rs := e.redis
	s := &stack{done: newCompletions(), client: newLoadClient(conc)}
	var err error
	s.short, err = serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusMovedPermanently) //nolint:gosec // G710: the local shortener redirects to a fixed host
	}))
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"REDIS_URL":              rs.url(),
		"LINKHOP_HOST_OVERRIDES": shortHost + "=" + s.short.addr,
		"LOG_LEVEL":              "error",
	}
	if o.workers > 0 {
		env["WORKER_CONCURRENCY"] = strconv.Itoa(o.workers)
	}
	for k, v := range o.env {
		env[k] = fmt.Sprint(v)
	}
	s.cfg, err = config.Load(config.API, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		s.close()
		return nil, fmt.Errorf("config: %w", err)
	}
	if s.apiRdb, err = app.NewRedis(s.cfg); err != nil {
		s.close()
		return nil, err
	}
	if o.hook != nil {
		s.apiRdb.AddHook(o.hook)
	}
	s.workHooks = o.workHooks
	if s.workRdb, err = s.newWorkerClient(); err != nil {
		s.close()
		return nil, err
	}
	s.reg, err = app.Registry(s.cfg, resolve.Provider{
		ID: "short", Label: "Local shortener", Hosts: []string{shortHost}, Tier: resolve.TierStandard,
	})
	if err != nil {
		s.close()
		return nil, err
	}
	// The API is built as cmd/api builds it.
	h, err := app.NewAPI(s.cfg, s.apiRdb, slog.New(slog.DiscardHandler), s.reg,
		app.NewResolver(s.cfg, s.apiRdb, s.reg), app.NewMetricsRegistry())
	if err != nil {
		s.close()
		return nil, err
	}
	if s.api, err = serve(h); err != nil {
		s.close()
		return nil, err
	}
	// Keys are created on the worker's client so that creating them is not counted.
	ks := keys.NewStore(s.workRdb)
	rl := e.rateLimit
	for i := range max(o.keys, 1) {
		c, err := ks.Create(ctx, keys.CreateParams{Name: "bench-" + strconv.Itoa(i), RateLimit: &rl})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("creating keys: %w", err)
		}
		s.tokens = append(s.tokens, c.Token)
	}
	return s, nil
}

// startWorker starts a worker process's equivalent, wired like internal/app.NewWorker (both
// queues, the webhook handler, its OnTerminal), except that OnTerminal also reports each
// finished job to s.done; app.NewWorker offers no hook for that.
func (s *stack) startWorker() error {
	rdb, err := s.newWorkerClient()
	if err != nil {
		return err
	}
	if err := s.runWorker(rdb); err != nil {
		_ = rdb.Close()
		return err
	}
	s.workerRdb = rdb
	return nil
}

// newWorkerClient is a Redis client for a worker, with the stack's worker hooks, as a worker
// process has its own. Each worker gets a new one: a worker adds hooks of its own to its
// client (its idle back-off and task completions, jobs.NewWorker), which go-redis cannot take
// off again, so a client shared by the worker of each round would carry the hooks of every
// earlier round's worker, still acting on the dequeues and completions of the new one.
func (s *stack) newWorkerClient() (redis.UniversalClient, error) {
	rdb, err := app.NewRedis(s.cfg)
	if err != nil {
		return nil, err
	}
	for _, h := range s.workHooks {
		rdb.AddHook(h)
	}
	return rdb, nil
}

// runWorker builds and starts the worker of startWorker on rdb.
func (s *stack) runWorker(rdb redis.UniversalClient) error {
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	w := jobs.NewWorker(rdb, jobs.WorkerOptions{
		Concurrency: s.cfg.WorkerConcurrency, ShutdownTimeout: s.cfg.ShutdownTimeout,
		ResolveBackoffBase: s.cfg.ResolveBackoffBase, Logger: log,
		Queues: map[string]int{jobs.QueueResolve: 1, jobs.QueueWebhooks: 1},
	})
	wh, err := app.NewWebhookHandler(s.cfg, rdb, log, reg)
	if err != nil {
		return fmt.Errorf("webhook handler: %w", err)
	}
	w.Handle(jobs.TypeWebhook, wh, jobs.WebhookRetryDelay)
	w.NotFailure(jobs.IsWebhookDeferred)
	rh := &jobs.ResolveHandler{
		Store:       jobs.NewStore(rdb, s.cfg.JobRetention),
		Resolver:    app.NewResolver(s.cfg, rdb, s.reg),
		Logger:      log,
		MaxAttempts: s.cfg.ResolveMaxAttempts,
		OnTerminal: func(ctx context.Context, r jobs.Record) error {
			if err := wh.OnTerminal(ctx, r); err != nil {
				return err
			}
			s.done.signal(r.ID, r.Status)
			return nil
		},
		Leases:   w.Leases(),
		Complete: app.TaskCompletions(s.cfg, w),
	}
	w.Handle(jobs.TypeResolve, rh, nil)
	w.Leases().OnLapse(jobs.LeaseResolve, rh.Reap)
	if err := w.Start(); err != nil {
		return fmt.Errorf("starting the worker: %w", err)
	}
	s.worker = w
	return nil
}

func (s *stack) stopWorker() {
	if s.worker != nil {
		s.worker.Shutdown()
		s.worker = nil
	}
	if s.workerRdb != nil {
		_ = s.workerRdb.Close()
		s.workerRdb = nil
	}
}

func (s *stack) close() {
	s.stopWorker()
	if s.api != nil {
		s.api.close()
	}
	if s.short != nil {
		s.short.close()
	}
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	for _, c := range []redis.UniversalClient{s.apiRdb, s.workRdb} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// keyIDs are the ids of the stack's keys, in the order of tokens.
func (s *stack) keyIDs() []string {
	ids := make([]string, len(s.tokens))
	for i, t := range s.tokens {
		ids[i], _ = keys.ParseToken(t)
	}
	return ids
}

// token is the key a load goroutine uses: goroutines spread over the keys.
func (s *stack) token(worker int) string { return s.tokens[worker%len(s.tokens)] }

// nextURL is a link nobody submitted before in this run, so the API never answers from cache.
func (s *stack) nextURL(prefix string) string {
	return "http://" + shortHost + "/" + prefix + "/" + strconv.FormatInt(s.seq.Add(1), 36)
}

// submit posts one link and returns the job id of its 202 answer.
func (s *stack) submit(ctx context.Context, token, link string) (string, error) {
	return postResolve(ctx, s.client, s.api.url, token, link, "", http.StatusAccepted)
}

// postResolve sends POST base/v1/resolve for link (with an idempotency key unless idem is
// empty), wants status, and returns the job_id of the answer ("" when it has none).
func postResolve(ctx context.Context, c *http.Client, base, token, link, idem string, status int) (string, error) {
	fields := map[string]string{"url": link}
	if idem != "" {
		fields["idempotency_key"] = idem
	}
	body, _ := json.Marshal(fields)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/resolve", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != status {
		return "", fmt.Errorf("%w: POST /v1/resolve: %d, want %d: %s", errStatus, res.StatusCode, status, bytes.TrimSpace(raw))
	}
	var q struct {
		JobID *string `json:"job_id"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return "", fmt.Errorf("decoding the answer: %w", err)
	}
	if q.JobID == nil {
		return "", nil
	}
	return *q.JobID, nil
}

// postBatch sends POST base/v1/resolve/batch for links, wants 200 with every item queued, and
// returns the job ids in order.
func postBatch(ctx context.Context, c *http.Client, base, token string, links []string) ([]string, error) {
	// Structs, as a client library would encode them: maps cost the load generator (whose CPU
	// counts against linkhop's side) several times as much per item.
	type item struct {
		URL string `json:"url"`
	}
	body := struct {
		Items []item `json:"items"`
	}{Items: make([]item, len(links))}
	for i, l := range links {
		body.Items[i].URL = l
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/resolve/batch", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: POST /v1/resolve/batch: %d: %s", errStatus, res.StatusCode, bytes.TrimSpace(raw))
	}
	var a struct {
		Items []struct {
			JobID  string `json:"job_id"`
			Status string `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("decoding the answer: %w", err)
	}
	ids := make([]string, len(a.Items))
	for i, it := range a.Items {
		if it.Status != "queued" {
			return nil, fmt.Errorf("%w: batch item %d not queued: %s", errStatus, i, bytes.TrimSpace(raw))
		}
		ids[i] = it.JobID
	}
	return ids, nil
}

// get reads base+path with token and wants 200.
func get(ctx context.Context, c *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, err = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s: %d", errStatus, url, res.StatusCode)
	}
	return err
}

// newRawClient is the reference's asynq client: same Redis, same client construction as linkhop's.
func newRawClient(cfg config.Config) (*asynq.Client, redis.UniversalClient, error) {
	rdb, err := app.NewRedis(cfg)
	if err != nil {
		return nil, nil, err
	}
	return asynq.NewClientFromRedisClient(rdb), rdb, nil
}
