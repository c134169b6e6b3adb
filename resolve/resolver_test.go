package resolve

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestResolveRedirects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/a", redirect("http://hop.test/b", http.StatusMovedPermanently))
	e.handle("hop.test/b", redirect("/c?x=1", http.StatusFound))
	e.handle("hop.test/c", redirect("//other.test/d", http.StatusSeeOther))
	e.handle("other.test/d", redirect("https://dest.example/final", http.StatusTemporaryRedirect))
	e.handle("short.test/own-fragment", redirect("https://dest.example/x#own", http.StatusPermanentRedirect))

	res, err := e.res.Resolve(ctxT(t), "http://short.test/a#frag")
	if err != nil {
		t.Fatal(err)
	}
	want := []Hop{
		{URL: "http://short.test/a#frag", Status: intp(301), Kind: KindStart},
		{URL: "http://hop.test/b#frag", Status: intp(302), Kind: KindHTTP},
		{URL: "http://hop.test/c?x=1#frag", Status: intp(303), Kind: KindHTTP},
		{URL: "http://other.test/d#frag", Status: intp(307), Kind: KindHTTP},
		{URL: "https://dest.example/final#frag", Kind: KindHTTP},
	}
	if d := cmp.Diff(want, res.Hops); d != "" {
		t.Errorf("hops (-want +got):\n%s", d)
	}
	if res.TargetURL != "https://dest.example/final#frag" || res.Provider.ID != "short" || res.URL != "http://short.test/a#frag" {
		t.Errorf("result %+v", res)
	}

	// A Location with its own fragment keeps it.
	res, err = e.res.Resolve(ctxT(t), "http://short.test/own-fragment#req")
	if err != nil || res.TargetURL != "https://dest.example/x#own" {
		t.Errorf("own fragment: %q %v", res.TargetURL, err)
	}
}

func page(t *testing.T, name string) http.HandlerFunc {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return htmlPage(string(b))
}

// TestHopKinds resolves one link per hop kind and variant; each starts at short.test/<name>.
func TestHopKinds(t *testing.T) {
	t.Parallel()
	rule := RuleFuncs{
		RewriteFunc: func(u *urlT) (*urlT, bool, error) {
			if u.Path != "/rule" {
				return nil, false, nil
			}
			n, err := u.Parse("https://dest.example/rewritten")
			return n, err == nil, err
		},
		ExtractFunc: func(p Page) (*urlT, bool, error) {
			if !bytes.Contains(p.Body, []byte(`data-go="`)) {
				return nil, false, nil
			}
			i := bytes.Index(p.Body, []byte(`data-go="`)) + len(`data-go="`)
			j := bytes.IndexByte(p.Body[i:], '"')
			u, err := p.URL.Parse(string(p.Body[i : i+j]))
			return u, err == nil, err
		},
	}
	e := newEnv(t, Options{Rules: map[string]Rule{"short": rule, "hop": rule}})
	refresh := func(v string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Refresh", v) }
	}
	e.handle("short.test/refresh", refresh("0; url=https://dest.example/refreshed"))
	e.handle("short.test/refresh-rel", refresh("1,URL=\"/landing?from=refresh\""))
	e.handle("short.test/meta-upper", page(t, "meta_upper.html"))
	e.handle("short.test/meta-base", page(t, "meta_base.html"))
	e.handle("short.test/tco", page(t, "tco.html"))
	e.handle("short.test/js-hex", page(t, "meta_self_then_js.html"))
	e.handle("short.test/js-template", page(t, "js_variants.html"))
	e.handle("short.test/onload", page(t, "onload.html"))
	e.handle("short.test/landing", redirect("https://dest.example/landed", http.StatusFound))
	e.handle("short.test/google", redirect("https://www.google.com/url?sa=t&q=https%3A%2F%2Fdest.example%2Fg%3Fx%3D1&usg=x", http.StatusFound))
	e.handle("short.test/fb", redirect("https://l.facebook.com/l.php?u=https%3A%2F%2Fdest.example%2Ffb&h=AT0", http.StatusFound))
	e.handle("short.test/yt", redirect("https://www.youtube.com/redirect?event=x&q=https%3A%2F%2Fdest.example%2Fyt", http.StatusFound))
	e.handle("short.test/vk", redirect("https://vk.com/away.php?to=https%3A%2F%2Fdest.example%2Fvk&cc_key=", http.StatusFound))
	e.handle("short.test/b64", redirect("https://linkvertise.com/123/x/dynamic?r=aHR0cHM6Ly9kZXN0LmV4YW1wbGUvYjY0P3E9MQ==", http.StatusFound))
	e.handle("short.test/nested", redirect("https://www.google.com/url?q="+
		"https%3A%2F%2Fl.facebook.com%2Fl.php%3Fu%3Dhttp%253A%252F%252Fhop.test%252Frule", http.StatusFound))
	e.handle("short.test/extract", htmlPage(`<div data-go="https://dest.example/extracted"></div>`))

	tests := []struct {
		name   string
		target string
		kinds  string
	}{
		{"refresh", "https://dest.example/refreshed", "start,refresh"},
		{"refresh-rel", "https://dest.example/landed", "start,refresh,http"},
		{"meta-upper", "https://dest.example/meta-upper", "start,meta"},
		{"meta-base", "https://dest.example/base/dir/next/page.html", "start,meta"},
		{"tco", "https://dest.example/tco?a=1&b=2", "start,meta"},
		{"js-hex", "https://dest.example/js-hex", "start,js"},
		{"js-template", "https://dest.example/js-template", "start,js"},
		{"onload", "https://dest.example/landed", "start,js,http"},
		{"google", "https://dest.example/g?x=1", "start,http,param"},
		{"fb", "https://dest.example/fb", "start,http,param"},
		{"yt", "https://dest.example/yt", "start,http,param"},
		{"vk", "https://dest.example/vk", "start,http,param"},
		{"b64", "https://dest.example/b64?q=1", "start,http,param"},
		{"nested", "https://dest.example/rewritten", "start,http,param,param,provider"},
		{"extract", "https://dest.example/extracted", "start,provider"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := e.res.Resolve(ctxT(t), "http://short.test/"+tc.name)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if res.TargetURL != tc.target {
				t.Errorf("target = %q, want %q", res.TargetURL, tc.target)
			}
			if got := hopKinds(res.Hops); got != tc.kinds {
				t.Errorf("kinds = %s, want %s (hops %+v)", got, tc.kinds, res.Hops)
			}
			last := res.Hops[len(res.Hops)-1]
			if last.Status != nil || last.URL != tc.target {
				t.Errorf("last hop %+v: want the target with status null", last)
			}
			if s := res.Hops[0].Status; s == nil || *s != 200 && (*s < 300 || *s > 399) {
				t.Errorf("first hop status %v", s)
			}
		})
	}
}

// TestUserAgentDependentAnswer emulates t.co: tools get a 301, browsers a page with a meta refresh
// and location.replace. linkhop's agent reads as a browser and still finds the target.
func TestUserAgentDependentAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var gotUA atomic.Value
	tco := page(t, "tco.html")
	e.handle("short.test/x", func(w http.ResponseWriter, r *http.Request) {
		gotUA.Store(r.UserAgent())
		if strings.HasPrefix(r.UserAgent(), "Mozilla/") {
			tco(w, r)
			return
		}
		redirect("https://dest.example/for-tools", http.StatusMovedPermanently)(w, r)
	})
	res, err := e.res.Resolve(ctxT(t), "http://short.test/x")
	if err != nil {
		t.Fatal(err)
	}
	if res.TargetURL != "https://dest.example/tco?a=1&b=2" || hopKinds(res.Hops) != "start,meta" {
		t.Errorf("got %q via %s", res.TargetURL, hopKinds(res.Hops))
	}
	ua, _ := gotUA.Load().(string)
	if !strings.Contains(ua, "linkhop") || !strings.HasPrefix(ua, "Mozilla/5.0") {
		t.Errorf("User-Agent %q should read as a browser and name linkhop", ua)
	}

	// A tool-like agent gets the 301.
	e2 := newEnv(t, Options{UserAgent: "curl/8"})
	e2.handle("short.test/x", e.mux.ServeHTTP)
	res, err = e2.res.Resolve(ctxT(t), "http://short.test/x")
	if err != nil || res.TargetURL != "https://dest.example/for-tools" {
		t.Errorf("curl agent: %q %v", res.TargetURL, err)
	}
}

func TestCookieSelfRedirect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/c", func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie("seen"); err != nil {
			http.SetCookie(w, &http.Cookie{Name: "seen", Value: "1", Path: "/"})
			redirect("/c", http.StatusFound)(w, r)
			return
		}
		redirect("https://dest.example/cookie", http.StatusFound)(w, r)
	})
	res, err := e.res.Resolve(ctxT(t), "http://short.test/c")
	if err != nil {
		t.Fatal(err)
	}
	if res.TargetURL != "https://dest.example/cookie" || hopKinds(res.Hops) != "start,http,http" {
		t.Errorf("got %q via %s", res.TargetURL, hopKinds(res.Hops))
	}
	// The jar is per resolve: a second resolve starts without the cookie.
	res, err = e.res.Resolve(ctxT(t), "http://short.test/c")
	if err != nil || len(res.Hops) != 3 {
		t.Errorf("second resolve: %+v %v", res.Hops, err)
	}
}

func TestHopBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MaxHops: 10})
	// short.test/chain/N redirects to N-1; 1 redirects to the target. A chain starting at N
	// takes N hops, the target entry included.
	e.handle("short.test/chain/", func(w http.ResponseWriter, r *http.Request) {
		var n int
		_, _ = fmt.Sscanf(r.URL.Path, "/chain/%d", &n)
		if n <= 1 {
			redirect("https://dest.example/end", http.StatusFound)(w, r)
			return
		}
		redirect(fmt.Sprintf("/chain/%d", n-1), http.StatusFound)(w, r)
	})
	res, err := e.res.Resolve(ctxT(t), "http://short.test/chain/10")
	if err != nil {
		t.Fatalf("10 hops: %v", err)
	}
	if len(res.Hops) != 11 {
		t.Errorf("10 hops: %d hop entries, want 11", len(res.Hops))
	}
	_, err = e.res.Resolve(ctxT(t), "http://short.test/chain/11")
	re := asError(t, err)
	if re.Code != CodeResolveFailed || re.Transient || !strings.Contains(re.Detail, "more than 10 hops") {
		t.Errorf("11 hops: %+v", re)
	}
	if len(re.Hops) != 11 {
		t.Errorf("11 hops: error carries %d hops, want 11", len(re.Hops))
	}
	if New(Options{MaxHops: 99}).maxHops != HardMaxHops {
		t.Error("MaxHops is not capped at 20")
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{Timeout: 300 * time.Millisecond})
	status := func(code int, hdr ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			w.WriteHeader(code)
		}
	}
	e.handle("short.test/404", status(404))
	e.handle("short.test/410", status(410))
	e.handle("short.test/500", status(500))
	e.handle("short.test/503", status(503, "Retry-After", "3"))
	e.handle("short.test/429", status(429, "Retry-After", "7"))
	e.handle("short.test/429-long", status(429, "Retry-After", "86400"))
	e.handle("short.test/403", status(403))
	e.handle("short.test/challenge", status(403, "Cf-Mitigated", "challenge"))
	e.handle("short.test/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	e.handle("short.test/drip", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html><head><title>wait")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	e.handle("short.test/loop-a", redirect("http://hop.test/loop-b", http.StatusFound))
	e.handle("hop.test/loop-b", redirect("http://short.test/loop-a", http.StatusFound))
	e.handle("short.test/js-scheme", redirect("javascript:alert(1)", http.StatusFound))
	e.handle("short.test/data-scheme", redirect("data:text/html,<script>alert(1)</script>", http.StatusFound))
	e.handle("short.test/captcha", page(t, "captcha.html"))
	e.handle("short.test/no-target", page(t, "no_target.html"))
	e.handle("short.test/image", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write([]byte("\x89PNG"))
	})
	e.handle("short.test/no-location", status(302))

	tests := []struct {
		path       string
		code       string
		transient  bool
		retryAfter time.Duration
		detail     string
	}{
		{"404", CodeLinkRemoved, false, 0, "404"},
		{"410", CodeLinkRemoved, false, 0, "410"},
		{"500", CodeProviderDown, true, 0, "500"},
		{"503", CodeProviderDown, true, 3 * time.Second, "503"},
		{"429", CodeProviderDown, true, 7 * time.Second, "429"},
		{"429-long", CodeProviderDown, true, MaxRetryAfter, "429"},
		{"403", CodeResolveFailed, false, 0, "403"},
		{"challenge", CodeResolveFailed, false, 0, "captcha"},
		{"slow", CodeProviderDown, true, 0, "timed out"},
		{"drip", CodeProviderDown, true, 0, "timed out"},
		{"loop-a", CodeResolveFailed, false, 0, "loop"},
		{"js-scheme", CodeResolveFailed, false, 0, "scheme javascript"},
		{"data-scheme", CodeResolveFailed, false, 0, "scheme data"},
		{"captcha", CodeResolveFailed, false, 0, "captcha"},
		{"no-target", CodeResolveFailed, false, 0, "no findable target"},
		{"image", CodeResolveFailed, false, 0, "image/png"},
		{"no-location", CodeResolveFailed, false, 0, "no findable target"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			_, err := e.res.Resolve(ctxT(t), "http://short.test/"+tc.path)
			re := asError(t, err)
			if re.Code != tc.code || re.Transient != tc.transient || re.RetryAfter != tc.retryAfter {
				t.Errorf("got code=%s transient=%v retryAfter=%s, want %s %v %s", re.Code, re.Transient, re.RetryAfter, tc.code, tc.transient, tc.retryAfter)
			}
			if !strings.Contains(re.Detail, tc.detail) {
				t.Errorf("detail %q does not mention %q", re.Detail, tc.detail)
			}
			if len(re.Hops) == 0 || re.Hops[0].Kind != KindStart {
				t.Errorf("hops %+v", re.Hops)
			}
		})
	}
}

func TestRefusedConnectionIsTransient(t *testing.T) {
	t.Parallel()
	l := httptest.NewServer(http.NotFoundHandler())
	addr := l.Listener.Addr().String()
	l.Close() // nothing listens there now
	reg, _ := NewRegistry([]Provider{{ID: "short", Hosts: []string{"short.test"}, Tier: TierStandard}})
	r := New(Options{Registry: reg, Guard: GuardOptions{HostOverrides: map[string]string{"short.test": addr}}})
	_, err := r.Resolve(ctxT(t), "http://short.test/x")
	re := asError(t, err)
	if re.Code != CodeProviderDown || !re.Transient || !strings.Contains(re.Detail, "connection") {
		t.Errorf("%+v", re)
	}
}

func TestUnsupportedLinks(t *testing.T) {
	t.Parallel()
	r := New(Options{})
	for _, raw := range []string{"ftp://bit.ly/x", "https://example.com/x", "bit.ly/x", "http://user@bit.ly/x", "http:///x", "http://bit.ly/" + strings.Repeat("a", 2048)} {
		_, err := r.Resolve(ctxT(t), raw)
		if re := asError(t, err); re.Code != CodeUnsupportedLink || re.Transient {
			t.Errorf("%s: %+v", raw, re)
		}
	}
}

// bigBody writes n bytes of HTML filler, then a meta refresh, and reports how much it managed
// to write before the client went away.
func bigBody(n int, written *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		chunk := bytes.Repeat([]byte("<p>filler filler filler filler</p>\n"), 1024)
		for sent := 0; sent < n; sent += len(chunk) {
			m, err := w.Write(chunk)
			written.Add(int64(m))
			if err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `<meta http-equiv="refresh" content="0;url=https://dest.example/too-late">`)
	}
}

var (
	bombOnce sync.Once
	bomb     []byte
)

// gzipBomb is 64 MiB of HTML whitespace with a target at the end, gzipped to about 64 KiB. It
// is 64 concatenated gzip members of 1 MiB each (readers decode multi-member streams as one),
// which is quick to build even under the race detector.
func gzipBomb() []byte {
	bombOnce.Do(func() {
		member := func(data []byte) []byte {
			var b bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
			_, _ = zw.Write(data)
			_ = zw.Close()
			return b.Bytes()
		}
		spaces := member(bytes.Repeat([]byte{' '}, 1<<20))
		var out bytes.Buffer
		for range 64 {
			out.Write(spaces)
		}
		out.Write(member([]byte(`<meta http-equiv="refresh" content="0;url=https://dest.example/too-late">`)))
		bomb = out.Bytes()
	})
	return bomb
}

func TestBodyCap(t *testing.T) {
	t.Parallel()
	start := time.Now()
	gz := gzipBomb() // built before the clock of any resolve starts
	t.Logf("gzip bomb: %d bytes, built in %s", len(gz), time.Since(start))
	e := newEnv(t, Options{})
	var written atomic.Int64
	e.handle("short.test/huge", bigBody(100<<20, &written))
	e.handle("short.test/bomb", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(gz)
	})
	e.handle("short.test/early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `<meta http-equiv="refresh" content="0;url=https://dest.example/early">`)
		var sink atomic.Int64
		bigBody(100<<20, &sink)(w, r)
	})

	_, err := e.res.Resolve(ctxT(t), "http://short.test/huge")
	if re := asError(t, err); re.Code != CodeResolveFailed || !strings.Contains(re.Detail, "no findable target") {
		t.Errorf("100 MB body: %+v", re)
	}
	// The server may have filled socket buffers beyond the cap, but nowhere near 100 MB.
	if n := written.Load(); n > 32<<20 {
		t.Errorf("server wrote %d bytes: the body was not cut at the cap", n)
	}
	_, err = e.res.Resolve(ctxT(t), "http://short.test/bomb")
	if re := asError(t, err); re.Code != CodeResolveFailed || !strings.Contains(re.Detail, "no findable target") {
		t.Errorf("gzip bomb: %+v", re)
	}
	res, err := e.res.Resolve(ctxT(t), "http://short.test/early")
	if err != nil || res.TargetURL != "https://dest.example/early" {
		t.Errorf("target before the filler: %q %v", res.TargetURL, err)
	}
}

func TestPoliteness(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{PerHostConcurrency: 1, SlotWait: 50 * time.Millisecond})
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	e.handle("short.test/slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		redirect("https://dest.example/slow", http.StatusFound)(w, r)
	})
	e.handle("hop.test/fast", redirect("https://dest.example/fast", http.StatusFound))
	done := make(chan error, 1)
	go func() {
		_, err := e.res.Resolve(ctxT(t), "http://short.test/slow")
		done <- err
	}()
	<-entered
	// The provider's only slot is taken: another link of it is throttled without a request ...
	_, err := e.res.Resolve(ctxT(t), "http://short.test/other")
	re := asError(t, err)
	if !re.Throttled || !re.Transient || !errors.Is(err, ErrProviderBusy) || re.RetryAfter <= 0 {
		t.Errorf("busy provider: %+v", re)
	}
	// ... while another provider is not held up.
	if res, err := e.res.Resolve(ctxT(t), "http://hop.test/fast"); err != nil || res.TargetURL != "https://dest.example/fast" {
		t.Errorf("other provider: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("slow resolve: %v", err)
	}
}

// TestGuardRedirectToOtherLoopback allows exactly 127.0.0.1/32, as the black-box tests do, and
// proves that a redirect to 127.0.0.2 (loopback too on Linux) is refused at dial time.
func TestGuardRedirectToOtherLoopback(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(redirect("/", http.StatusFound))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":")+1:]
	reg, _ := NewRegistry([]Provider{{ID: "lo", Hosts: []string{"127.0.0.1", "127.0.0.2"}, Tier: TierStandard}})
	mux := http.NewServeMux()
	mux.HandleFunc("/start", redirect("http://127.0.0.2:"+port+"/next", http.StatusFound))
	srv.Config.Handler = mux
	r := New(Options{Registry: reg, Guard: GuardOptions{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	t.Cleanup(r.Close)

	_, err := r.Resolve(ctxT(t), "http://127.0.0.1:"+port+"/start")
	re := asError(t, err)
	if re.Code != CodeResolveFailed || re.Transient || !errors.Is(err, ErrBlockedAddress) || !strings.Contains(re.Detail, "127.0.0.2") {
		t.Errorf("redirect to 127.0.0.2: %+v", re)
	}
	if got := hopKinds(re.Hops); got != "start,http" || *re.Hops[0].Status != 302 || re.Hops[1].Status != nil {
		t.Errorf("hops %+v", re.Hops)
	}

	// The production guard (no Allow) refuses 127.0.0.1 itself.
	prod := New(Options{Registry: reg})
	t.Cleanup(prod.Close)
	_, err = prod.Resolve(ctxT(t), "http://127.0.0.1:"+port+"/start")
	if re := asError(t, err); re.Code != CodeResolveFailed || !errors.Is(err, ErrBlockedAddress) {
		t.Errorf("production guard, 127.0.0.1: %+v", re)
	}
	// ... even on port 80, where the port rule alone would not stop it.
	_, err = prod.Resolve(ctxT(t), "http://127.0.0.1/start")
	if !errors.Is(err, ErrBlockedAddress) {
		t.Errorf("production guard, 127.0.0.1:80: %v", err)
	}
}

// urlT shortens the rule signatures in tests.
type urlT = url.URL
