package resolve

import (
	"encoding/base64"
	"net/url"
	"strings"
	"unicode/utf8"
)

// wrapper is a known redirect wrapper: a URL on host whose path is path (any path when empty)
// and whose query parameter carries the destination, plainly or base64-encoded.
type wrapper struct {
	match  func(host string) bool
	path   string
	params []string
	// wholeQuery: the raw query string itself is the destination (href.li/?https://…).
	wholeQuery bool
}

func hostIs(names ...string) func(string) bool {
	return func(h string) bool {
		for _, n := range names {
			if h == n {
				return true
			}
		}
		return false
	}
}

// wrappers lists the redirect wrappers decoded without a request (docs/resolving.md#hops). Hosts are compared lower-case without "www.".
var wrappers = []wrapper{
	{match: func(h string) bool { // google.com, google.co.uk, google.de …
		rest, ok := strings.CutPrefix(h, "google.")
		return ok && rest != "" && strings.Count(rest, ".") <= 1
	}, path: "/url", params: []string{"q", "url"}},
	{match: hostIs("l.facebook.com", "lm.facebook.com", "m.facebook.com", "facebook.com", "l.messenger.com"), path: "/l.php", params: []string{"u"}},
	{match: hostIs("l.instagram.com", "l.threads.net", "l.threads.com"), path: "/", params: []string{"u"}},
	{match: hostIs("youtube.com", "m.youtube.com", "music.youtube.com"), path: "/redirect", params: []string{"q"}},
	{match: hostIs("vk.com", "m.vk.com", "vk.ru", "m.vk.ru"), path: "/away.php", params: []string{"to"}},
	{match: hostIs("linkvertise.com", "link-to.net", "up-to-down.net", "direct-link.net", "file-link.net"), params: []string{"r"}},
	{match: hostIs("steamcommunity.com"), path: "/linkfilter/", params: []string{"url", "u"}},
	{match: hostIs("t.umblr.com"), path: "/redirect", params: []string{"z"}},
	{match: hostIs("slack-redir.net"), path: "/link", params: []string{"url"}},
	{match: hostIs("exit.sc"), params: []string{"url"}},
	{match: func(h string) bool { return strings.HasSuffix(h, ".safelinks.protection.outlook.com") }, params: []string{"url"}},
	{match: hostIs("href.li"), wholeQuery: true},
}

// decodeWrapper returns the destination embedded in a known wrapper URL, or ok=false. The
// destination must itself be an absolute http(s) URL; base64 forms (standard or URL alphabet,
// padded or not) are decoded.
func decodeWrapper(u *url.URL) (*url.URL, bool) {
	host := stripWWW(canonicalHost(u.Hostname()))
	for _, w := range wrappers {
		if !w.match(host) {
			continue
		}
		if w.path != "" && u.Path != w.path && !(w.path == "/" && u.Path == "") {
			continue
		}
		if w.wholeQuery {
			if d, ok := destination(u.RawQuery); ok {
				return d, true
			}
			continue
		}
		q := u.Query()
		for _, p := range w.params {
			if v := q.Get(p); v != "" {
				if d, ok := destination(v); ok {
					return d, true
				}
			}
		}
	}
	return nil, false
}

// destination accepts v as an absolute http(s) URL with a host, directly or base64-encoded.
func destination(v string) (*url.URL, bool) {
	v = strings.TrimSpace(v)
	if d, ok := absoluteHTTP(v); ok {
		return d, true
	}
	// Query decoding turned '+' into ' '; base64 wants it back.
	b64 := strings.ReplaceAll(v, " ", "+")
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		raw, err := enc.DecodeString(b64)
		if err != nil || !utf8.Valid(raw) {
			continue
		}
		if d, ok := absoluteHTTP(strings.TrimSpace(string(raw))); ok {
			return d, true
		}
	}
	return nil, false
}

func absoluteHTTP(s string) (*url.URL, bool) {
	lower := strings.ToLower(s)
	if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") {
		return nil, false
	}
	d, err := parseLoose(nil, s)
	if err != nil || checkFetchable(d) != nil {
		return nil, false
	}
	return d, true
}
