package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// TestMain checks that the tests leave no goroutine behind: the API, the in-process worker
// and the test servers must all stop. Idle keep-alive connections and the go-redis pool's
// reaper outlive a test by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// shortHost is the test shortener's host: LINKHOP_HOST_OVERRIDES sends it to a loopback
// httptest server, so no test leaves the machine.
const shortHost = "sho.rt"

// stack is a linkhop API and worker on their own real Redis, built from the exported
// constructors the mains use (redisArgs go to redis-server), with a provider "short" on host sho.rt: /gone… answers 404 (the
// job fails with link_removed), every other path redirects to https://example.com/dest<path>.
type stack struct {
	redis *redistest.Server
	keys  *keys.Store
	url   string
}

func newStack(t *testing.T, redisArgs ...string) *stack {
	t.Helper()
	srv := redistest.Start(t, redisArgs...)
	rdb := srv.Client(t)
	short := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/gone") {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(short.Close)

	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.RedisURL = srv.URL()
	cfg.HostOverrides = map[string]string{shortHost: strings.TrimPrefix(short.URL, "http://")}
	cfg.ResolveBackoffBase = 20 * time.Millisecond
	cfg.ResolveTimeout = 3 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.WorkerConcurrency = 4
	reg, err := app.Registry(cfg, resolve.Provider{ID: "short", Label: "Short", Hosts: []string{shortHost}, Tier: resolve.TierStandard})
	if err != nil {
		t.Fatal(err)
	}
	svc := app.NewResolver(cfg, rdb, reg)
	log := slog.New(slog.DiscardHandler)
	h, err := app.NewAPI(cfg, rdb, log, reg, svc, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(h)
	t.Cleanup(api.Close)
	w, err := app.NewWorker(cfg, rdb, log, svc, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return &stack{redis: srv, keys: keys.NewStore(rdb), url: api.URL}
}

// key creates an API key and returns its token. rateLimit nil is the default of 60 per
// minute.
func (s *stack) key(t *testing.T, rateLimit *int, scopes ...string) string {
	t.Helper()
	p := keys.CreateParams{Name: "client-test", RateLimit: rateLimit}
	if scopes != nil {
		p.Scopes = scopes
	}
	c, err := s.keys.Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return c.Token
}

func ptr[T any](v T) *T { return &v }
