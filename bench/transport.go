package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/resolve"
)

// transportLinks is how many distinct links a cold pass resolves while the shortener counts
// the connections it accepts.
const transportLinks = 2000

// tlsShortHost is the TLS shortener's provider host: httptest's certificate is valid for
// example.com and its subdomains, and LINKHOP_HOST_OVERRIDES points the name at the server.
const tlsShortHost = "sho.example.com"

// tlsShortener is a local one-redirect shortener served over TLS, as production shorteners
// are, counting the connections it accepts.
type tlsShortener struct {
	srv   *httptest.Server
	addr  string
	roots *x509.CertPool
	conns atomic.Int64
}

// startTLSShortener starts it on loopback; http2 offers HTTP/2 as well as HTTP/1.1.
func startTLSShortener(http2 bool) *tlsShortener {
	s := &tlsShortener{}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A 301 with http.Redirect's short HTML body, like real shorteners' answers.
		http.Redirect(w, r, "https://dest.example"+r.URL.Path, http.StatusMovedPermanently) //nolint:gosec // G710: the local shortener redirects to a fixed host
	}))
	s.srv.EnableHTTP2 = http2
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	// Handshakes cut short when a side's pool is closed are expected, not news.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	s.addr = s.srv.Listener.Addr().String()
	s.roots = x509.NewCertPool()
	s.roots.AddCert(s.srv.Certificate())
	return s
}

// bareClient is the reference: a plain keep-alive http.Client with idle connections for every
// goroutine, stopping at the first redirect, dialing the shortener as the override does.
func (s *tlsShortener) bareClient(conc int) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, s.addr)
			},
			TLSClientConfig:     &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        2 * conc,
			MaxIdleConnsPerHost: conc,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetchFirstHop is the reference's operation: GET link, read the body, want the 301.
func fetchFirstHop(ctx context.Context, c *http.Client, link, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != want {
		return fmt.Errorf("%w: GET %s: %d to %q", errStatus, link, res.StatusCode, res.Header.Get("Location"))
	}
	return err
}

// transportEnv is what both protocols' measurements share: the worker's configuration and its
// Redis client.
type transportEnv struct {
	cfg  config.Config
	rdb  redis.UniversalClient
	conc int
	seq  atomic.Int64
}

// next is a link nobody resolved before in this run (so the cache never answers) and the
// destination it redirects to.
func (t *transportEnv) next(side string) (link, dest string) {
	path := "/" + side + "/" + strconv.FormatInt(t.seq.Add(1), 36)
	return "https://" + tlsShortHost + path, "https://dest.example" + path
}

// scenarioTransport measures provider connections (scenario 9): distinct links of a local TLS
// shortener resolved by the worker's resolver — the resolve.Resolver app.NewResolver builds,
// with the worker's concurrency of goroutines calling it as its task processors do — against
// a bare keep-alive http.Client fetching the same kind of links, stopping at the first
// redirect, and the new connections the shortener accepts over 2,000 links from a cold pool.
// The resolver is what talks to providers; resolve.Service's Redis work around it (cache,
// single-flight lock) gets a row of its own for scale, and job records and asynq are scenario
// 4's. Once with an HTTP/1.1 shortener (what httptest.NewTLSServer serves), once with one that
// offers HTTP/2.
func scenarioTransport(ctx context.Context, e *runEnv) ([]row, error) {
	conc := e.conc[0]
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	var rows []row
	for _, proto := range []struct {
		name                      string
		http2                     bool
		rateID, connID, serviceID string
	}{{"HTTP/1.1", false, "9a", "9b", "9c"}, {"HTTP/2", true, "9d", "9e", ""}} {
		got, err := transportRows(ctx, e, conc, proto.name, proto.http2, proto.rateID, proto.connID, proto.serviceID)
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	e.note("9: linkhop's side is the resolver `app.NewResolver` builds with WORKER_CONCURRENCY %d, called by as many goroutines as the worker's task processors; at most RESOLVE_PER_HOST_CONCURRENCY (%d) of its resolves are in flight to the one provider, against %d requests of the reference. 9c wraps the same resolver in `resolve.Service.Resolve` (its cache and single-flight lock in Redis); job records and asynq are scenario 4's.", conc, config.DefaultResolvePerHostConcurrency, conc)
	return rows, nil
}

// transportRows measures one protocol: the rate row (warm pools), the cold-pass connection
// row and, when serviceID is set, resolve.Service around the same resolver.
func transportRows(ctx context.Context, e *runEnv, conc int, proto string, http2 bool, rateID, connID, serviceID string) ([]row, error) {
	sh := startTLSShortener(http2)
	defer sh.srv.Close()
	// workerConfig is the worker's configuration with the shortener sh behind the override.
	workerConfig := func(sh *tlsShortener) (config.Config, error) {
		env := map[string]string{
			"REDIS_URL":              e.redis.url(),
			"LINKHOP_HOST_OVERRIDES": tlsShortHost + "=" + sh.addr,
			"WORKER_CONCURRENCY":     strconv.Itoa(conc),
			"LOG_LEVEL":              "error",
		}
		cfg, err := config.Load(config.Worker, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		return cfg, nil
	}
	cfg, err := workerConfig(sh)
	if err != nil {
		return nil, err
	}
	t := &transportEnv{cfg: cfg, conc: conc}
	if t.rdb, err = app.NewRedis(cfg); err != nil {
		return nil, err
	}
	defer t.rdb.Close()
	reg, err := app.Registry(cfg, resolve.Provider{ID: "tlsshort", Label: "Local TLS shortener", Hosts: []string{tlsShortHost}, Tier: resolve.TierStandard})
	if err != nil {
		return nil, err
	}
	newService := func(sh *tlsShortener) (*resolve.Service, error) {
		cfg, err := workerConfig(sh)
		if err != nil {
			return nil, err
		}
		return app.NewResolver(cfg, t.rdb, reg, func(o *resolve.Options) { o.RootCAs = sh.roots }), nil
	}
	// resolveOne resolves the next link with resolver: the worker's resolve.Resolver, or the
	// resolve.Service around it (its cache and single-flight lock in Redis on top).
	resolveOne := func(resolver func(context.Context, string) (resolve.Result, error)) op {
		return func(ctx context.Context, _ int) error {
			link, dest := t.next("l")
			res, err := resolver(ctx, link)
			if err != nil {
				return err
			}
			if res.TargetURL != dest || res.Cached {
				return fmt.Errorf("%w: %s resolved to %s (cached %v)", errStatus, link, res.TargetURL, res.Cached)
			}
			return nil
		}
	}
	fetchOne := func(c *http.Client) op {
		return func(ctx context.Context, _ int) error {
			link, dest := t.next("r")
			return fetchFirstHop(ctx, c, link, dest)
		}
	}

	// Rates, with each side's pool warm (the worker's resolver lives as long as the process).
	svc, err := newService(sh)
	if err != nil {
		return nil, err
	}
	defer svc.Resolver().Close()
	bare := sh.bareClient(conc)
	defer bare.CloseIdleConnections()
	theirs := func(ctx context.Context, d time.Duration) sample { return closedLoop(ctx, conc, d, fetchOne(bare)) }
	measure := func(name string, fn op) (sample, sample, error) {
		ours := func(ctx context.Context, d time.Duration) sample { return closedLoop(ctx, conc, d, fn) }
		return e.timing.pair(ctx, name, ours, theirs)
	}
	tag := "h1"
	if http2 {
		tag = "h2"
	}
	e.progress("provider connections, %s TLS shortener, c=%d: resolves vs bare client GETs", proto, conc)
	a, b, err := measure("transport-"+tag, resolveOne(svc.Resolver().Resolve))
	if err != nil {
		return nil, err
	}
	rate := compare(rateID, fmt.Sprintf("provider connections: resolves/s of distinct links of a local TLS shortener (%s, one 301 each) by the worker's resolver (`app.NewResolver`, WORKER_CONCURRENCY %d) vs a bare keep-alive `http.Client` stopping at the first redirect, c=%d", proto, conc, conc), a, b, true)
	rate.target, rate.min = "≥ 0.5×", 0.5
	rows := []row{rate}

	// New connections over transportLinks distinct links, each side from a cold pool and with
	// a shortener of its own, so that no late dial of another phase is counted.
	e.progress("provider connections, %s TLS shortener: %d links from a cold pool, each side", proto, transportLinks)
	oursSh := startTLSShortener(http2)
	defer oursSh.srv.Close()
	cold, err := newService(oursSh)
	if err != nil {
		return rows, err
	}
	oursConns, oursPass := countConns(ctx, oursSh, conc, resolveOne(cold.Resolver().Resolve))
	cold.Resolver().Close()
	theirSh := startTLSShortener(http2)
	defer theirSh.srv.Close()
	coldBare := theirSh.bareClient(conc)
	theirConns, theirPass := countConns(ctx, theirSh, conc, fetchOne(coldBare))
	coldBare.CloseIdleConnections()
	rows = append(rows, row{
		id:     connID,
		what:   fmt.Sprintf("… new TLS connections the shortener (%s) accepted while %s distinct links were resolved from a cold pool, c=%d", proto, groupThousands(transportLinks), conc),
		ours:   fmt.Sprintf("%d connections<br>%s links in %s", oursConns, groupThousands(oursPass.ops), fmtDur(oursPass.elapsed)),
		ref:    fmt.Sprintf("%d connections<br>%s links in %s", theirConns, groupThousands(theirPass.ops), fmtDur(theirPass.elapsed)),
		target: fmt.Sprintf("≤ %d (WORKER_CONCURRENCY)", conc),
		max:    float64(conc), value: float64(oursConns),
		errs: joinErrs(errSummary("linkhop", oursPass), errSummary("reference", theirPass)),
	})
	if serviceID != "" {
		e.progress("provider connections, %s TLS shortener, c=%d: resolve.Service vs bare client GETs", proto, conc)
		a, b, err := measure("transport-service-"+tag, resolveOne(svc.Resolve))
		if err != nil {
			return rows, err
		}
		rows = append(rows, compare(serviceID, fmt.Sprintf("… for scale: the same links (%s) through `resolve.Service.Resolve` (its cache lookup, single-flight lock and outcome in Redis around each resolve; the worker folds these into its job-record pipelines), c=%d", proto, conc), a, b, true))
	}
	return rows, nil
}

// countConns runs transportLinks operations on conc goroutines and returns how many
// connections the shortener accepted meanwhile.
func countConns(ctx context.Context, sh *tlsShortener, conc int, fn op) (int64, sample) {
	before := sh.conns.Load()
	var next atomic.Int64
	var mu sync.Mutex
	var s sample
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var local sample
			for next.Add(1) <= transportLinks && ctx.Err() == nil {
				if err := fn(ctx, 0); err != nil {
					local.errs++
					if local.firstErr == nil {
						local.firstErr = err
					}
					continue
				}
				local.ops++
			}
			mu.Lock()
			s.add(local)
			mu.Unlock()
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	return sh.conns.Load() - before, s
}
