package resolve

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsShortener is a provider served over TLS on loopback, as bit.ly is served in production:
// httptest's certificate is valid for example.com and its subdomains, so the provider hosts are
// *.example.com, pointed at the server by HostOverrides, and the resolver trusts the test CA
// through RootCAs. conns counts the connections the server accepted.
type tlsShortener struct {
	srv   *httptest.Server
	mux   *http.ServeMux
	conns atomic.Int64
	roots *x509.CertPool
	reg   *Registry
	h1    atomic.Int64 // requests served over HTTP/1.x
	h2    atomic.Int64 // requests served over HTTP/2
}

func newTLSShortener(t *testing.T, http2 bool) *tlsShortener {
	t.Helper()
	s := &tlsShortener{mux: http.NewServeMux()}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			s.h2.Add(1)
		} else {
			s.h1.Add(1)
		}
		s.mux.ServeHTTP(w, r)
	}))
	s.srv.EnableHTTP2 = http2
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.roots = x509.NewCertPool()
	s.roots.AddCert(s.srv.Certificate())
	reg, err := NewRegistry([]Provider{{ID: "tls", Label: "TLS shortener", Hosts: []string{"short.example.com"}, Tier: TierStandard}})
	if err != nil {
		t.Fatal(err)
	}
	s.reg = reg
	return s
}

// resolver returns a resolver of the shortener; opts may set limits.
func (s *tlsShortener) resolver(t *testing.T, opts Options) *Resolver {
	t.Helper()
	opts.Registry = s.reg
	opts.RootCAs = s.roots
	opts.Guard.HostOverrides = map[string]string{"short.example.com": s.srv.Listener.Addr().String()}
	opts.NoScript = true
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	r := New(opts)
	t.Cleanup(r.Close)
	// Short rests of bodies arrive at once, but a loaded machine running -race can stall a
	// goroutine for longer than the production bound: these tests are about reuse.
	r.drainTime = time.Minute
	return r
}

// link is the URL of path on the shortener.
func link(path string) string { return "https://short.example.com" + path }

// TestConnectionReuse: resolves of distinct links of one TLS provider share the resolver's
// connections instead of dialing and handshaking for each; with HTTP/2 on offer, one
// connection carries them all.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	const perHost, workers, links = 4, 12, 120
	for _, tc := range []struct {
		name     string
		http2    bool
		maxConns int64
	}{
		{"HTTP/1.1", false, perHost},
		{"HTTP/2", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTLSShortener(t, tc.http2)
			// http.Redirect writes a short HTML body that the walk has no use for: it must be
			// read away for the connection to be reused.
			s.mux.HandleFunc("/r/{n}", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://dest.test/"+r.PathValue("n"), http.StatusMovedPermanently) //nolint:gosec // G710: a fixed destination host
			})
			r := s.resolver(t, Options{PerHostConcurrency: perHost})
			// One resolve first, so that the burst finds an HTTP/2 connection to share rather
			// than racing to dial several (a client may do that before it knows the protocol).
			if res, err := r.Resolve(ctxT(t), link("/r/first")); err != nil || res.TargetURL != "https://dest.test/first" {
				t.Fatalf("first resolve: %+v %v", res, err)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, links)
			for range workers {
				wg.Go(func() {
					for n := next.Add(1); n <= links; n = next.Add(1) {
						res, err := r.Resolve(ctxT(t), link("/r/"+strconv.FormatInt(n, 10)))
						if err == nil && res.TargetURL != "https://dest.test/"+strconv.FormatInt(n, 10) {
							err = fmt.Errorf("link %d resolved to %s", n, res.TargetURL)
						}
						if err != nil {
							errs <- err
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := s.conns.Load(); n < 1 || n > tc.maxConns {
				t.Errorf("%d resolves opened %d connections, want 1 to %d", links+1, n, tc.maxConns)
			}
			if tc.http2 && (s.h2.Load() != links+1 || s.h1.Load() != 0) {
				t.Errorf("HTTP/2 on offer: %d requests over HTTP/2, %d over HTTP/1.x", s.h2.Load(), s.h1.Load())
			}
		})
	}
}

// TestBodiesDrained: whatever the walk did with an answer — followed its redirect, failed on its
// status, ignored a body that is not HTML, stopped reading at MaxBodyBytes — a short rest of the
// body is read away, so the next resolve reuses the connection; a long or slow rest is not
// waited for: that connection is closed instead.
func TestBodiesDrained(t *testing.T) {
	t.Parallel()
	s := newTLSShortener(t, false)
	refresh := `<meta http-equiv="refresh" content="0;url=https://dest.test/capped">`
	s.mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://dest.test/redirect")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusFound)
		_, _ = io.WriteString(w, strings.Repeat("<p>moved</p>", 2000)) // 24 KB
	})
	s.mux.HandleFunc("/removed", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, strings.Repeat("gone ", 1000), http.StatusNotFound)
	})
	s.mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, strings.Repeat("busy ", 1000), http.StatusServiceUnavailable)
	})
	s.mux.HandleFunc("/image", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(make([]byte, 30<<10))
	})
	// A page longer than the cap: its target is in the part read; the rest fits the drain.
	s.mux.HandleFunc("/capped", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, refresh)
		_, _ = w.Write([]byte(strings.Repeat(" ", MaxBodyBytes+drainBytes/2)))
	})
	// A page whose rest past the cap is far longer than the drain.
	s.mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, refresh)
		_, _ = w.Write([]byte(strings.Repeat(" ", MaxBodyBytes+8*drainBytes)))
	})
	// A redirect whose short body never ends: only the drain's time bound is spent on it.
	s.mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://dest.test/slow")
		w.WriteHeader(http.StatusFound)
		for {
			_, _ = io.WriteString(w, "x")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	r := s.resolver(t, Options{})
	for _, tc := range []struct {
		path, code string
		conns      int64 // connections the server accepted so far, after this resolve
	}{
		{"/redirect", "", 1},
		{"/removed", CodeLinkRemoved, 1},
		{"/down", CodeProviderDown, 1},
		{"/image", CodeResolveFailed, 1},
		{"/capped", "", 1},
		{"/redirect", "", 1},
		// Too long a rest: this connection is closed, the next resolve dials again.
		{"/huge", "", 1},
		{"/redirect", "", 2},
		// A slow rest (drained with the production time bound): closed as well.
		{"/slow", "", 2},
		{"/redirect", "", 3},
	} {
		r.drainTime = time.Minute
		if tc.path == "/slow" {
			r.drainTime = defaultDrainTime
		}
		began := time.Now()
		_, err := r.Resolve(ctxT(t), link(tc.path))
		took := time.Since(began)
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.code != "" && asError(t, err).Code != tc.code:
			t.Errorf("%s: %v, want %s", tc.path, err, tc.code)
		}
		// The server closes a connection asynchronously; wait for it to count the next one.
		if got := waitCount(&s.conns, tc.conns); got != tc.conns {
			t.Errorf("after %s: %d connections, want %d", tc.path, got, tc.conns)
		}
		if tc.path == "/slow" && took > 5*time.Second {
			t.Errorf("/slow took %s: the drain was not cut short", took)
		}
	}
}

// waitCount returns n once it reaches want, or its value after a moment.
func waitCount(n *atomic.Int64, want int64) int64 {
	for range 50 {
		if v := n.Load(); v >= want {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n.Load()
}

// TestCookiesNotShared: resolves share connections, never cookies. A cookie the shortener sets
// is sent on the same resolve's next hop (the jar works) and on no other resolve, whether it
// runs after on the same connection or at the same time.
func TestCookiesNotShared(t *testing.T) {
	t.Parallel()
	s := newTLSShortener(t, false)
	var mu sync.Mutex
	leaked := map[string]string{} // link id -> cookie header it arrived with
	s.mux.HandleFunc("/set/{id}", func(w http.ResponseWriter, r *http.Request) {
		if c := r.Header.Get("Cookie"); c != "" {
			mu.Lock()
			leaked["set/"+r.PathValue("id")] = c
			mu.Unlock()
		}
		http.SetCookie(w, &http.Cookie{Name: "sid", Value: r.PathValue("id"), Path: "/"})
		http.Redirect(w, r, "/check/"+r.PathValue("id"), http.StatusFound) //nolint:gosec // G710: same host
	})
	s.mux.HandleFunc("/check/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("sid")
		if err != nil || c.Value != r.PathValue("id") || len(r.Cookies()) != 1 {
			mu.Lock()
			leaked["check/"+r.PathValue("id")] = r.Header.Get("Cookie")
			mu.Unlock()
		}
		http.Redirect(w, r, "https://dest.test/"+r.PathValue("id"), http.StatusFound) //nolint:gosec // G710: a fixed destination host
	})
	s.mux.HandleFunc("/fresh", func(w http.ResponseWriter, r *http.Request) {
		if c := r.Header.Get("Cookie"); c != "" {
			mu.Lock()
			leaked["fresh"] = c
			mu.Unlock()
		}
		http.Redirect(w, r, "https://dest.test/fresh", http.StatusFound)
	})
	r := s.resolver(t, Options{})

	if _, err := r.Resolve(ctxT(t), link("/set/a")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctxT(t), link("/fresh")); err != nil {
		t.Fatal(err)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for two sequential resolves, want 1 (shared)", n)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := r.Resolve(ctxT(t), link("/set/"+strconv.Itoa(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for where, c := range leaked {
		t.Errorf("%s arrived with cookies %q, want only its own resolve's", where, c)
	}
}

// TestGuardOnEveryNewConnection: a pooled connection is reused without a new name lookup, but
// once it is gone the next connection is dialed afresh and checked again. Here the name first
// resolves to the allowed test address and then to another loopback address, which the guard
// refuses (private targets are not allowed).
func TestGuardOnEveryNewConnection(t *testing.T) {
	t.Parallel()
	s := newTLSShortener(t, false)
	s.mux.HandleFunc("/r/{n}", redirect("https://dest.test/", http.StatusFound))
	dns := newStubDNS(t, "127.0.0.1", "127.0.0.2")
	_, port, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
	reg, err := NewRegistry([]Provider{{ID: "rb", Hosts: []string{"rebind.example.com"}, Tier: TierStandard}})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{Registry: reg, RootCAs: s.roots, NoScript: true, Guard: GuardOptions{
		Resolver: dns.resolver(), Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}})
	t.Cleanup(r.Close)
	r.drainTime = time.Minute // as in tlsShortener.resolver
	u := func(n int) string { return "https://rebind.example.com:" + port + "/r/" + strconv.Itoa(n) }

	for n := range 3 {
		if _, err := r.Resolve(ctxT(t), u(n)); err != nil {
			t.Fatalf("resolve %d: %v", n, err)
		}
	}
	dns.mu.Lock()
	lookups := dns.queries
	dns.mu.Unlock()
	if lookups != 1 || s.conns.Load() != 1 {
		t.Fatalf("3 resolves: %d lookups, %d connections, want 1 and 1 (one pooled connection)", lookups, s.conns.Load())
	}

	r.Close() // the pooled connection is gone: the next resolve must dial
	_, err = r.Resolve(ctxT(t), u(3))
	if re := asError(t, err); re.Code != CodeResolveFailed || !errors.Is(err, ErrBlockedAddress) || !strings.Contains(re.Detail, "127.0.0.2") {
		t.Errorf("new connection to a rebound name: %+v", re)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections, want still 1", n)
	}
}

// TestProviderTransport: the pool keeps as many connections per host as requests may be in
// flight to it, TLS verification stays on, and no proxy is used.
func TestProviderTransport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		opts      Options
		idle, all int
	}{
		{"defaults", Options{}, DefaultPerHostConcurrency, 100},
		{"worker concurrency", Options{IdleConnsPerHost: 200}, 200, 400},
		{"politeness", Options{PerHostConcurrency: 16}, 16, 100},
		// A worker running 4 tasks never has more requests in flight, whatever the politeness.
		{"worker concurrency below politeness", Options{PerHostConcurrency: 16, IdleConnsPerHost: 4}, 4, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.opts)
			defer r.Close()
			tr := r.transport
			if tr.MaxIdleConnsPerHost != tc.idle || tr.MaxConnsPerHost != tc.idle || tr.MaxIdleConns != tc.all {
				t.Errorf("per host %d idle, %d in all; %d idle in all; want %d, %d, %d",
					tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost, tr.MaxIdleConns, tc.idle, tc.idle, tc.all)
			}
			if tr.IdleConnTimeout != 90*time.Second || !tr.ForceAttemptHTTP2 || tr.Proxy != nil {
				t.Errorf("idle timeout %s, HTTP/2 %v, proxy set %v", tr.IdleConnTimeout, tr.ForceAttemptHTTP2, tr.Proxy != nil)
			}
			if c := tr.TLSClientConfig; c == nil || c.InsecureSkipVerify {
				t.Errorf("TLS config %+v: verification must stay on", c)
			}
		})
	}
}

// TestUntrustedCertificate: the test CA is trusted only where RootCAs says so; without it the
// handshake fails, as it would for a provider with a bad certificate.
func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	s := newTLSShortener(t, false)
	s.mux.HandleFunc("/r", redirect("https://dest.test/", http.StatusFound))
	r := New(Options{Registry: s.reg, NoScript: true, Guard: GuardOptions{
		HostOverrides: map[string]string{"short.example.com": s.srv.Listener.Addr().String()},
	}})
	t.Cleanup(r.Close)
	_, err := r.Resolve(context.Background(), link("/r"))
	var ue x509.UnknownAuthorityError
	if re := asError(t, err); re.Code != CodeProviderDown || !errors.As(err, &ue) {
		t.Errorf("untrusted certificate: %+v", re)
	}
}
