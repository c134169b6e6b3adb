package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/httpapi"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// env is one API (and optionally a worker) on its own real Redis, with a local shortener
// registered as the provider "short" on host sho.rt.
type env struct {
	t       *testing.T
	rdb     *redis.Client
	redis   *redistest.Server
	api     *httptest.Server
	short   *httptest.Server
	keys    *keys.Store
	jobs    *jobs.Store
	cfg     config.Config
	svc     *resolve.Service
	handler *httpapi.Server
	reg     *resolve.Registry
}

type envOptions struct {
	logs     io.Writer // where API and worker logs go (nil: discarded)
	worker   bool
	shortFn  http.HandlerFunc
	extra    []resolve.Provider
	tweakCfg func(*config.Config)
	// clusterNode runs Redis as a Redis Cluster of one node holding every slot, reached with a
	// plain client (as REDIS_URL would): scripts across slots are refused with CROSSSLOT.
	clusterNode bool
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	var srv *redistest.Server
	if o.clusterNode {
		srv = redistest.StartClusterNode(t)
	} else {
		srv = redistest.Start(t)
	}
	e := &env{t: t, redis: srv, rdb: srv.Client(t)}
	fn := o.shortFn
	if fn == nil {
		fn = func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusMovedPermanently)
		}
	}
	e.short = httptest.NewServer(fn)
	t.Cleanup(e.short.Close)

	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.RedisURL = srv.URL()
	cfg.ResolveBackoffBase = 20 * time.Millisecond
	cfg.ResolveTimeout = 3 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.WorkerConcurrency = 10
	cfg.HostOverrides = map[string]string{"sho.rt": strings.TrimPrefix(e.short.URL, "http://")}
	if o.tweakCfg != nil {
		o.tweakCfg(&cfg)
	}
	e.cfg = cfg
	reg, err := resolve.NewRegistry(append([]resolve.Provider{{ID: "short", Label: "Short", Hosts: []string{"sho.rt"}, Tier: resolve.TierStandard}}, o.extra...))
	if err != nil {
		t.Fatal(err)
	}
	r := resolve.New(resolve.Options{
		Guard: resolve.GuardOptions{
			AllowPrivate:  cfg.AllowPrivateTargets,
			HostOverrides: cfg.HostOverrides,
			Allow:         []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		},
		Registry: reg, MaxHops: cfg.ResolveMaxHops, Timeout: cfg.ResolveTimeout,
		FormWaitMax: cfg.ResolveFormWaitMax, AnyHost: cfg.ResolveAnyHost,
	})
	e.svc = resolve.NewService(e.rdb, r, resolve.ServiceOptions{CacheTTL: cfg.ResolveCacheTTL, NegativeTTL: cfg.ResolveNegativeCacheTTL})
	e.reg = reg
	e.keys = keys.NewStore(e.rdb)
	e.jobs = jobs.NewStore(e.rdb, cfg.JobRetention)
	log := slog.New(slog.DiscardHandler)
	if o.logs != nil {
		log = slog.New(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if e.handler, err = app.NewAPI(cfg, e.rdb, log, reg, e.svc, app.NewMetricsRegistry()); err != nil {
		t.Fatal(err)
	}
	e.api = httptest.NewServer(e.handler)
	t.Cleanup(e.api.Close)
	if o.worker {
		w, err := app.NewWorker(cfg, e.rdb, log, e.svc, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Shutdown)
	}
	return e
}

// newEnvOn builds a second API replica on the same Redis as e, with its own limiter and
// handler, as another process would have.
func newEnvOn(t *testing.T, e *env) *env {
	t.Helper()
	o := *e
	var err error
	if o.handler, err = app.NewAPI(e.cfg, e.rdb, slog.New(slog.DiscardHandler), e.reg, e.svc, prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	o.api = httptest.NewServer(o.handler)
	t.Cleanup(o.api.Close)
	return &o
}

func ptr[T any](v T) *T { return &v }

// key creates an API key and returns its token.
func (e *env) key(p keys.CreateParams) (keys.Created, string) {
	e.t.Helper()
	if p.Name == "" {
		p.Name = "test"
	}
	c, err := e.keys.Create(context.Background(), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, c.Token
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		buf, _ := json.Marshal(b)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.api.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &out.body)
	}
	return out
}

// wantProblem checks a complete problem+json answer.
func wantProblem(t *testing.T, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("content type %q", ct)
	}
	for _, f := range []string{"type", "title", "status", "code", "detail", "instance"} {
		if _, ok := r.body[f]; !ok {
			t.Errorf("problem lacks %q: %s", f, r.raw)
		}
	}
	if r.body["code"] != code {
		t.Errorf("code %v, want %s", r.body["code"], code)
	}
	if !strings.HasSuffix(r.body["type"].(string), "#"+code) {
		t.Errorf("type %v", r.body["type"])
	}
	if r.body["instance"] != r.header.Get("X-Request-Id") {
		t.Errorf("instance %v != X-Request-Id %q", r.body["instance"], r.header.Get("X-Request-Id"))
	}
}

// waitJob polls the job until it is terminal.
func (e *env) waitJob(token, id string) map[string]any {
	e.t.Helper()
	// Watch the store (polling the API would spend the key's per-minute budget), then read
	// the job once through the API.
	deadline := time.Now().Add(20 * time.Second)
	keyID, _ := keys.ParseToken(token)
	for time.Now().Before(deadline) {
		rec, err := e.jobs.Get(context.Background(), keyID, id)
		if err != nil {
			e.t.Fatalf("poll: %v", err)
		}
		if rec.Status.Terminal() {
			r := e.do("GET", "/v1/jobs/"+id, token, nil)
			if r.status != 200 {
				e.t.Fatalf("poll: %d %s", r.status, r.raw)
			}
			return r.body
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("job %s did not finish", id)
	return nil
}
