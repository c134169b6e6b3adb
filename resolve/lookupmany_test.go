package resolve

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// commandNames notes the names of the commands each pipeline sends.
type commandNames struct {
	mu    sync.Mutex
	names []string
}

func (h *commandNames) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *commandNames) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *commandNames) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var names []string
		for _, c := range cmds {
			names = append(names, c.Name())
		}
		h.mu.Lock()
		h.names = append(h.names, strings.Join(names, ","))
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *commandNames) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.names
	h.names = nil
	return n
}

// TestLookupManyIn: a batch's cache reads answer as Lookup does for each link (a hit, another
// spelling of it, a removed link, a miss, a URL that does not parse), in one MGET on a single
// Redis and a GET per link on Redis Cluster, whose links' keys are in different slots.
func TestLookupManyIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/x", redirect("https://dest.example/x", http.StatusFound))
	e.handle("short.test/gone", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	urls := []string{"http://short.test/x", "http://short.test/unknown", "HTTP://SHORT.test:80/x#top", "ftp://short.test/x",
		"http://short.test/gone", "http://user@short.test/x", "http://short.test/" + strings.Repeat("a", MaxURLLength)}
	type answer struct {
		Target           string
		Found, Removed   bool
		Unsupported, Err bool
	}
	prim, _ := redistest.Cluster(t, 3, 0, redis.Options{})
	for _, tc := range []struct {
		name string
		rdb  redis.UniversalClient
		want string // the command names of the lookups' pipeline
	}{
		{"single", redistest.New(t), "mget"},
		{"cluster", redistest.ClusterClient(t, prim), "get,get,get,get"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewService(tc.rdb, e.res, ServiceOptions{})
			if _, err := s.Resolve(ctxT(t), "http://short.test/x"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Resolve(ctxT(t), "http://short.test/gone"); err == nil {
				t.Fatal("the removed link resolved")
			}
			var want, got []answer
			for _, u := range urls {
				res, found, removed, err := s.Lookup(ctxT(t), u)
				want = append(want, answer{res.TargetURL, found, removed, errors.Is(err, ErrUnsupportedURL), err != nil})
			}
			names := &commandNames{}
			tc.rdb.AddHook(names)
			// The links as text only, and with the URLs a caller parsed already.
			for _, withURL := range []bool{false, true} {
				links := make([]Link, len(urls))
				for i, u := range urls {
					links[i].Raw = u
					if withURL {
						links[i].URL, _ = url.Parse(u)
					}
				}
				var decode func(int) (Result, bool, bool, error)
				if _, err := tc.rdb.Pipelined(ctxT(t), func(p redis.Pipeliner) error {
					decode = s.LookupManyIn(ctxT(t), p, links)
					return nil
				}); err != nil && !errors.Is(err, redis.Nil) {
					t.Fatal(err)
				}
				got = got[:0]
				for i := range urls {
					res, found, removed, err := decode(i)
					got = append(got, answer{res.TargetURL, found, removed, errors.Is(err, ErrUnsupportedURL), err != nil})
				}
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("parsed %v: LookupManyIn differs from Lookup (-Lookup +LookupManyIn):\n%s", withURL, d)
				}
				if n := names.take(); len(n) != 1 || n[0] != tc.want {
					t.Errorf("parsed %v: pipelines %v, want one of %s", withURL, n, tc.want)
				}
			}
		})
	}
}

// TestLookupManyInOnClusterNode: a plain client on a node of a Redis Cluster (one node holding
// every slot) has its MGET refused (CROSSSLOT); the reads are made again with GETs, and with
// GETs from then on.
func TestLookupManyInOnClusterNode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/x", redirect("https://dest.example/x", http.StatusFound))
	node := redistest.StartClusterNode(t).Client(t)
	s := NewService(node, e.res, ServiceOptions{})
	if _, err := s.Resolve(ctxT(t), "http://short.test/x"); err != nil {
		t.Fatal(err)
	}
	links := []Link{{Raw: "http://short.test/x"}, {Raw: "http://short.test/y"}}
	for round := range 2 {
		names := &commandNames{}
		node.AddHook(names)
		var decode func(int) (Result, bool, bool, error)
		_, _ = node.Pipelined(ctxT(t), func(p redis.Pipeliner) error {
			decode = s.LookupManyIn(ctxT(t), p, links)
			return nil
		})
		if res, found, _, err := decode(0); err != nil || !found || res.TargetURL != "https://dest.example/x" {
			t.Errorf("round %d: hit %+v %v %v", round, res, found, err)
		}
		if _, found, _, err := decode(1); err != nil || found {
			t.Errorf("round %d: miss %v %v", round, found, err)
		}
		want := []string{"mget", "get,get"}
		if round == 1 {
			want = []string{"get,get"}
		}
		if d := cmp.Diff(want, names.take()); d != "" {
			t.Errorf("round %d: pipelines (-want +got):\n%s", round, d)
		}
	}
}

// TestRecKey: the cache reads' key is the cache record's.
func TestRecKey(t *testing.T) {
	t.Parallel()
	for _, norm := range []string{"", "http://short.test/x", "https://a.example/" + strings.Repeat("é", 100)} {
		if got, want := recKey(norm), keysFor(norm).rec; got != want {
			t.Errorf("recKey(%q) = %q, want %q", norm, got, want)
		}
	}
}
