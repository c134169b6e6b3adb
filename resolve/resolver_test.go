package resolve

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolveRedirects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/a", redirect("http://hop.test/b", http.StatusMovedPermanently))
	e.handle("hop.test/b", redirect("/c?x=1", http.StatusFound))
	e.handle("hop.test/c", redirect("//other.test/d", http.StatusSeeOther))
	e.handle("other.test/d", redirect("https://dest.example/final", http.StatusTemporaryRedirect))

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
	if res.TargetURL != "https://dest.example/final#frag" || res.Provider.ID != "short" {
		t.Errorf("target %q provider %q", res.TargetURL, res.Provider.ID)
	}
}
