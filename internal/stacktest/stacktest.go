// Package stacktest runs a whole linkhop — API and in-process worker, built with the same
// constructors as the binaries — on its own real Redis, for the tests of the programs that
// talk to a running service (the Go client, the linkhop command line). Links go to a
// loopback shortener only.
package stacktest

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// ShortHost is the test shortener's host, the provider "short": LINKHOP_HOST_OVERRIDES sends
// it to a loopback httptest server. /gone… answers 404 (the job fails with link_removed);
// every other path redirects to https://example.com/dest<path>.
const ShortHost = "sho.rt"

// Stack is a running linkhop.
type Stack struct {
	Redis *redistest.Server
	Keys  *keys.Store
	URL   string // the API's base URL
}

// New starts a stack on a fresh redis-server (redisArgs go to it); t.Cleanup stops it all.
func New(t testing.TB, redisArgs ...string) *Stack {
	t.Helper()
	srv := redistest.Start(t, redisArgs...)
	rdb := srv.Client(t)
	short := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/gone") {
			http.NotFound(w, r)
			return
		}
		// A shortener redirects by design; this one only ever to example.com, in tests.
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusMovedPermanently) //nolint:gosec // the emulated shortener of tests
	}))
	t.Cleanup(short.Close)

	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.RedisURL = srv.URL()
	cfg.HostOverrides = map[string]string{ShortHost: strings.TrimPrefix(short.URL, "http://")}
	cfg.ResolveBackoffBase = 20 * time.Millisecond
	cfg.ResolveTimeout = 3 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.WorkerConcurrency = 4
	reg, err := app.Registry(cfg, resolve.Provider{ID: "short", Label: "Short", Hosts: []string{ShortHost}, Tier: resolve.TierStandard})
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
	return &Stack{Redis: srv, Keys: keys.NewStore(rdb), URL: api.URL}
}

// Key creates an API key named name and returns its token. rateLimit nil is the default of
// 60 per minute; scopes nil the default scopes.
func (s *Stack) Key(t testing.TB, name string, rateLimit *int, scopes ...string) string {
	t.Helper()
	p := keys.CreateParams{Name: name, RateLimit: rateLimit}
	if scopes != nil {
		p.Scopes = scopes
	}
	c, err := s.Keys.Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return c.Token
}
