package resolve

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAnyHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{AnyHost: true})
	e.handle("dest.test/a", redirect("http://final.test/ok", http.StatusFound))
	e.handle("final.test/ok", htmlPage(`<html><body>Welcome</body></html>`))
	e.handle("dest.test/gone", redirect("http://final.test/missing", http.StatusMovedPermanently))
	e.handle("final.test/missing", http.NotFound)
	e.handle("dest.test/loop1", redirect("http://final.test/loop2", http.StatusFound))
	e.handle("final.test/loop2", redirect("http://dest.test/loop1", http.StatusFound))
	e.handle("dest.test/via", redirect("http://short.test/x", http.StatusFound))
	e.handle("short.test/x", redirect("http://final.test/meta", http.StatusFound))
	e.handle("final.test/meta", htmlPage(`<html><head><meta http-equiv="refresh" content="0;url=/ok"></head></html>`))
	e.handle("final.test/file", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write([]byte("%PDF-1.4"))
	})
	e.handle("final.test/down", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })

	res, err := e.res.Resolve(ctxT(t), "http://dest.test/a")
	if err != nil {
		t.Fatal(err)
	}
	want := []Hop{
		{URL: "http://dest.test/a", Status: intp(302), Kind: KindStart},
		{URL: "http://final.test/ok", Status: intp(200), Kind: KindHTTP},
	}
	if d := cmp.Diff(want, res.Hops); d != "" || res.TargetURL != "http://final.test/ok" || res.Provider.ID != "" {
		t.Errorf("chain to 200: target %s provider %q, hops (-want +got):\n%s", res.TargetURL, res.Provider.ID, d)
	}

	// A provider met on the way is walked, and the walk goes on past it.
	res, err = e.res.Resolve(ctxT(t), "http://dest.test/via")
	if err != nil {
		t.Fatal(err)
	}
	if res.TargetURL != "http://final.test/ok" || hopKinds(res.Hops) != "start,http,http,meta" || res.Hops[len(res.Hops)-1].Status == nil {
		t.Errorf("via a provider: %s %s", res.TargetURL, hopKinds(res.Hops))
	}
	// A provider's own link stops at the first non-provider URL, unfetched, as always.
	res, err = e.res.Resolve(ctxT(t), "http://short.test/x")
	if err != nil || res.TargetURL != "http://final.test/meta" || res.Hops[len(res.Hops)-1].Status != nil || res.Provider.ID != "short" {
		t.Errorf("provider link: %+v %v", res, err)
	}
	if res, err := e.res.Resolve(ctxT(t), "http://final.test/file"); err != nil || res.TargetURL != "http://final.test/file" {
		t.Errorf("non-HTML destination: %+v %v", res, err)
	}

	fails := []struct{ url, code, detail string }{
		{"http://dest.test/gone", CodeLinkRemoved, "404"},
		{"http://dest.test/loop1", CodeResolveFailed, "loop"},
		{"http://final.test/down", CodeProviderDown, "502"},
	}
	for _, tc := range fails {
		_, err := e.res.Resolve(ctxT(t), tc.url)
		if re := asError(t, err); re.Code != tc.code || !strings.Contains(re.Detail, tc.detail) {
			t.Errorf("%s: got %s %q, want %s naming %q", tc.url, re.Code, re.Detail, tc.code, tc.detail)
		}
	}

	// Without any-host mode the same link is refused.
	off := newEnv(t, Options{})
	if _, err := off.res.Resolve(ctxT(t), "http://dest.test/a"); asError(t, err).Code != CodeUnsupportedLink {
		t.Errorf("any-host off: %v", err)
	}
}

func TestComputedScriptTarget(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	e := newEnv(t, Options{AnyHost: true, Script: func(ctx context.Context, body []byte, page *url.URL) (string, bool) {
		calls.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the sandbox got no deadline")
		}
		if strings.Contains(string(body), "computed") {
			return "/next?from=" + page.Path, true
		}
		return "", false
	}})
	e.handle("short.test/computed", htmlPage(`<html><script>var a = ["x","t","e","n"].reverse().join(""); /* computed */</script></html>`))
	e.handle("short.test/next", redirect("https://dest.example/js-done", http.StatusFound))
	e.handle("short.test/literal", htmlPage(`<html><script>location.href = "https://dest.example/literal";</script></html>`))
	e.handle("short.test/nothing", htmlPage(`<html><script>var x = 1;</script></html>`))
	e.handle("final.test/computed", htmlPage(`<html><script>/* computed */</script></html>`))

	res, err := e.res.Resolve(ctxT(t), "http://short.test/computed")
	if err != nil || res.TargetURL != "https://dest.example/js-done" || hopKinds(res.Hops) != "start,js,http" {
		t.Fatalf("computed: %+v %v", res, err)
	}
	if got := res.Hops[1].URL; got != "http://short.test/next?from=/computed" {
		t.Errorf("js hop %s, want it resolved against the page", got)
	}
	n := calls.Load()
	if _, err := e.res.Resolve(ctxT(t), "http://short.test/literal"); err != nil || calls.Load() != n {
		t.Errorf("a literal target ran the sandbox (or failed: %v)", err)
	}
	if _, err := e.res.Resolve(ctxT(t), "http://short.test/nothing"); asError(t, err).Code != CodeResolveFailed {
		t.Errorf("no computed target: %v", err)
	}
	// Only provider pages run scripts: any-host destinations are taken as they are.
	n = calls.Load()
	if res, err := e.res.Resolve(ctxT(t), "http://final.test/computed"); err != nil || res.TargetURL != "http://final.test/computed" || calls.Load() != n {
		t.Errorf("non-provider page: %+v %v (sandbox calls %d→%d)", res, err, n, calls.Load())
	}
}
