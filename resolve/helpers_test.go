package resolve

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/linkhop/linkhop/resolve/sandbox"
)

// testEnv is a set of emulated providers: every host in hosts is served by one httptest
// server through HostOverrides, as LINKHOP_HOST_OVERRIDES does in the black-box tests.
type testEnv struct {
	srv  *httptest.Server
	mux  *http.ServeMux
	reg  *Registry
	res  *Resolver
	opts Options
}

// testHosts are the provider hosts of the test registry.
var testHosts = []string{"short.test", "hop.test", "other.test", "alf.test", "afly.test", "afoc.test",
	// Not providers: destinations of any-host links.
	"dest.test", "final.test"}

func newEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	e := &testEnv{mux: http.NewServeMux()}
	e.srv = httptest.NewServer(e.mux)
	t.Cleanup(e.srv.Close)
	reg, err := NewRegistry([]Provider{
		{ID: "short", Label: "Short", Hosts: []string{"short.test"}, Tier: TierStandard},
		{ID: "hop", Label: "Hop", Hosts: []string{"hop.test", "other.test"}, Tier: TierPremium},
		{ID: "alf", Label: "ALF", Hosts: []string{"alf.test"}, Tier: TierPremium, Family: FamilyAdLinkFly},
		{ID: "afly", Label: "AFly", Hosts: []string{"afly.test"}, Tier: TierPremium, Family: FamilyAdFly},
		{ID: "afoc", Label: "AFoc", Hosts: []string{"afoc.test"}, Tier: TierPremium, Family: FamilyAdFocus},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	ov := map[string]string{}
	for _, h := range testHosts {
		ov[h] = e.srv.Listener.Addr().String()
	}
	opts.Registry = reg
	opts.Guard.HostOverrides = ov
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Script == nil && !opts.NoScript {
		// The production budget is 100 ms a page; under -race on a busy 2-core machine a
		// well-behaved page can need more, and these tests are about the walk, not the budget.
		opts.Script = func(ctx context.Context, body []byte, page *url.URL) (string, bool) {
			return sandbox.Run(ctx, body, page, sandbox.Options{Budget: time.Second})
		}
	}
	e.opts = opts
	e.res = e.newResolver(t)
	return e
}

// newResolver returns another resolver of the same emulated providers, as a second worker
// process would have.
func (e *testEnv) newResolver(t *testing.T) *Resolver {
	r := New(e.opts)
	t.Cleanup(r.Close)
	return r
}

// handle registers a handler for host+path ("short.test/a").
func (e *testEnv) handle(pattern string, h http.HandlerFunc) { e.mux.HandleFunc(pattern, h) }

func redirect(to string, code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", to)
		w.WriteHeader(code)
	}
}

func htmlPage(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(body))
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var re *Error
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return re
}

func hopKinds(h []Hop) string {
	var k []string
	for _, x := range h {
		k = append(k, x.Kind)
	}
	return strings.Join(k, ",")
}

func intp(i int) *int { return &i }

func testdataFS(name string) ([]byte, error) { return os.ReadFile("testdata/" + name) }
