package resolve

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

// FuzzExtractHTML: hop extraction from untrusted HTML never panics and only ever yields absolute
// URLs with the kinds meta or js.
func FuzzExtractHTML(f *testing.F) {
	for _, name := range []string{"tco.html", "meta_upper.html", "meta_base.html", "meta_self_then_js.html", "js_variants.html", "onload.html", "captcha.html", "no_target.html"} {
		if b, err := testdataFS(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`<noscript><noscript><meta http-equiv=refresh content="0;url=/a"></noscript></noscript>`))
	f.Add([]byte(`<script>location.replace('\u{1F600}\x2f\u002f')</script><base href="javascript:x">`))
	f.Add([]byte(`<meta http-equiv="REFRESH" content="0; URL=">`))
	for _, js := range []string{`https:\/\/a`, `\x2F\u002F\u{2F}`, `\u{110000}`, `\x`, `\u12`, `\`, `\\\'`} {
		f.Add([]byte(`<script>top.location.href = "` + js + `";</script>`))
	}
	page, _ := url.Parse("https://short.test/p/q?x=1")
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, h := range extractHTML(body, page) {
			if !h.url.IsAbs() && h.url.Scheme == "" {
				t.Fatalf("relative URL %q escaped resolution", h.url)
			}
			if h.kind != KindMeta && h.kind != KindJS {
				t.Fatalf("kind %q", h.kind)
			}
		}
		_, _ = captchaGate(body)
	})
}

// FuzzParseRefresh: the Refresh parser never panics, and a URL it returns is a substring of the
// input (it only ever cuts, never invents).
func FuzzParseRefresh(f *testing.F) {
	for _, s := range []string{"0; url=https://a.example/", "5;URL='x'", `0, "y"`, "0 z", ".5;url = w", "url=x", "3", "", "  ;", "0;u", "0;ur", "0;urlx", `0;url="unterminated`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		target, ok := parseRefresh(s)
		if !ok && target != "" {
			t.Fatalf("not ok but target %q", target)
		}
		if !strings.Contains(s, target) {
			t.Fatalf("target %q is not part of %q", target, s)
		}
	})
}

// FuzzDecodeWrapper: wrapper decoding of untrusted URLs never panics and only yields absolute
// http(s) URLs with a host.
func FuzzDecodeWrapper(f *testing.F) {
	for _, s := range []string{
		"https://www.google.com/url?q=https://a.example/&sa=D",
		"https://l.facebook.com/l.php?u=https%3A%2F%2Fa.example%2F",
		"https://www.youtube.com/redirect?q=http://a.example",
		"https://vk.com/away.php?to=https%3A%2F%2Fa.example",
		"https://linkvertise.com/1/x/dynamic?r=aHR0cHM6Ly9hLmV4YW1wbGUv",
		"https://href.li/?https://a.example/",
		"https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2Fa.example",
		"https://google.de/url?q=javascript:alert(1)",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		d, ok := decodeWrapper(u)
		if !ok {
			return
		}
		if checkFetchable(d) != nil {
			t.Fatalf("decoded %q from %q", d, s)
		}
	})
}

// FuzzNormalizeURL: normalisation never panics and is idempotent. The normal form is a cache
// key, not a submission: non-ASCII bytes are written escaped, three characters each, so it may
// be longer than MaxURLLength, which limits what is submitted. Such a form, parsed again, still
// normalises to itself; one within the limit is also accepted as a submission.
func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{"HTTP://Bit.LY:80/x#f", "https://[::1]:443/", "http://a.example?x", "http://%41/", "http://bit.ly/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeURL(s)
		if err != nil {
			return
		}
		u, err := url.Parse(n)
		if err != nil || checkFetchable(u) != nil || normalized(u) != n {
			t.Fatalf("not idempotent: %q -> %q, parsed again: %v", s, n, err)
		}
		if len(n) > MaxURLLength {
			return
		}
		n2, err := NormalizeURL(n)
		if err != nil || n2 != n {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", s, n, n2, err)
		}
	})
}

// FuzzParseHostOverrides: the LINKHOP_HOST_OVERRIDES parser never panics and every accepted
// address is a literal IP and a port.
func FuzzParseHostOverrides(f *testing.F) {
	for _, s := range []string{"bit.ly=127.0.0.1:8080", "a=[::1]:1, b=c:2", "=", ",,", "a=b", "a=1.2.3.4:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseHostOverrides(s)
		if err != nil {
			return
		}
		for h, a := range m {
			ip, _, err := net.SplitHostPort(a)
			if h == "" || err != nil || net.ParseIP(ip) == nil {
				t.Fatalf("accepted %q=%q from %q", h, a, s)
			}
		}
	})
}

// FuzzCheckWebhookHost: the webhook host check never panics, and a host that parses as a blocked
// IP literal is always refused.
func FuzzCheckWebhookHost(f *testing.F) {
	for _, s := range []string{"127.1", "0x7f.1", "2130706433", "[::1]", "a.local", "example.com", "1.2.3.4.5", "08.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckWebhookHost(s)
		if a, ok := parseIPLiteral(canonicalHost(s)); ok && IsBlockedAddr(a) && err == nil {
			t.Fatalf("%q (%s) accepted", s, a)
		}
	})
}

// FuzzFamilyPages: the ad-gated families' readers (the AdLinkFly form and countdown, adf.ly's
// ysmm, adfoc.us's click_url) never panic on untrusted pages, only yield absolute http(s) URLs,
// and keep a form within the bounds a parked job carries.
func FuzzFamilyPages(f *testing.F) {
	for _, name := range []string{"adlinkfly_go.html", "adlinkfly_captcha.html", "adfly.html", "adfocus.html"} {
		if b, err := testdataFS(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`<form id=go-link action=//x.test/y><textarea name=t>a<input name=b value=c></form><script>var app_vars={"counter_value":"99999999999"}</script>`))
	f.Add([]byte(`<script>var ysmm = 'MDEyMzQ1Njc4OWFiY2RlZmh0dHBzOi8vYS5ifWRjYmE5ODc2NTQzMjEw';</script>`))
	f.Add([]byte(`<script>var click_url = '\x6a\x61vascript:alert(1)';</script>`))
	page, _ := url.Parse("https://alf.test/abc")
	f.Fuzz(func(t *testing.T, body []byte) {
		if form, err := parseGoLinkForm(body, page); err == nil {
			if checkFetchable(form.Action) != nil || form.Counter < 0 || len(form.Fields) > maxFormFields {
				t.Fatalf("form %+v", form)
			}
		}
		for _, read := range []func([]byte, *url.URL) (*url.URL, bool, error){adflyTarget, adfocusTarget} {
			if u, ok, err := read(body, page); ok && (err != nil || checkFetchable(u) != nil) {
				t.Fatalf("target %v %v", u, err)
			}
		}
	})
}
