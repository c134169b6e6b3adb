package resolve

import (
	"net/http"
	"net/url"
	"strings"
)

// Page is what a Rule sees of a fetched provider response.
type Page struct {
	URL    *url.URL
	Status int
	Header http.Header
	// Body is the HTML body, read up to the body cap (decompressed); nil when not HTML.
	Body []byte
}

// Rule is a site-specific step for one provider's URLs, for what the generic hop kinds cannot see.
// Both methods return ok=false to let the generic steps run. A returned *Error is reported as it
// is; any other error fails the resolve with resolve_failed and the error's text as detail.
type Rule interface {
	// Rewrite may map u to the next URL without a request (hop kind "provider").
	Rewrite(u *url.URL) (next *url.URL, ok bool, err error)
	// Extract may find the next URL in a fetched 2xx page before the generic extractors look
	// (hop kind "provider").
	Extract(p Page) (next *url.URL, ok bool, err error)
}

// RuleFuncs adapts a pair of functions to a Rule; a nil function never matches.
type RuleFuncs struct {
	RewriteFunc func(u *url.URL) (*url.URL, bool, error)
	ExtractFunc func(p Page) (*url.URL, bool, error)
}

// Rewrite calls RewriteFunc when set.
func (f RuleFuncs) Rewrite(u *url.URL) (*url.URL, bool, error) {
	if f.RewriteFunc == nil {
		return nil, false, nil
	}
	return f.RewriteFunc(u)
}

// Extract calls ExtractFunc when set.
func (f RuleFuncs) Extract(p Page) (*url.URL, bool, error) {
	if f.ExtractFunc == nil {
		return nil, false, nil
	}
	return f.ExtractFunc(p)
}

// BuiltinRules returns the provider rules linkhop ships, keyed by provider ID.
func BuiltinRules() map[string]Rule {
	return map[string]Rule{
		// preview.tinyurl.com/X shows an interstitial for tinyurl.com/X, which redirects.
		"tinyurl": RuleFuncs{RewriteFunc: func(u *url.URL) (*url.URL, bool, error) {
			if canonicalHost(u.Hostname()) != "preview.tinyurl.com" || len(u.Path) < 2 {
				return nil, false, nil
			}
			n := *u
			n.Host = "tinyurl.com"
			return &n, true, nil
		}},
		// youtu.be/ID is always youtube.com/watch?v=ID (query such as t= carried).
		"youtube": RuleFuncs{RewriteFunc: func(u *url.URL) (*url.URL, bool, error) {
			id := strings.Trim(u.Path, "/")
			if id == "" || strings.Contains(id, "/") {
				return nil, false, nil
			}
			q := u.Query()
			q.Set("v", id)
			return &url.URL{Scheme: "https", Host: "www.youtube.com", Path: "/watch", RawQuery: q.Encode(), Fragment: u.Fragment}, true, nil
		}},
		// ouo.io "quick links" (ouo.io/qs/KEY?s=URL) carry their destination.
		"ouo": RuleFuncs{RewriteFunc: func(u *url.URL) (*url.URL, bool, error) {
			if !strings.HasPrefix(u.Path, "/qs/") {
				return nil, false, nil
			}
			d, ok := destination(u.Query().Get("s"))
			return d, ok, nil
		}},
	}
}
