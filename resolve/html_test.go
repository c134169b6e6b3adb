package resolve

import (
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestScanJS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src string
		want      []string
	}{
		{"plain assignment", `location = "https://a.example/"`, []string{"https://a.example/"}},
		{"href single quotes", `location.href='/rel'`, []string{"/rel"}},
		{"window href", `window.location.href = "https://a.example/w";`, []string{"https://a.example/w"}},
		{"top", `top.location="https://a.example/t"`, []string{"https://a.example/t"}},
		{"document", `document.location.href = 'https://a.example/d'`, []string{"https://a.example/d"}},
		{"replace", `window.opener=null;location.replace("https:\/\/a.example\/r")`, []string{"https://a.example/r"}},
		{"assign", `self.location.assign( 'https://a.example/s' )`, []string{"https://a.example/s"}},
		{"hex escapes", `location.href = "https:\x2F\x2Fa.example\x2Fh"`, []string{"https://a.example/h"}},
		{"unicode escapes", `location.href = "https:\u002F\u002Fa.example\u{2F}u"`, []string{"https://a.example/u"}},
		{"template", "location = `https://a.example/tpl`", []string{"https://a.example/tpl"}},
		{"template with substitution", "location = `https://a.example/${x}`", nil},
		{"concatenation", `location.href = "https://a.example/" + id`, nil},
		{"comparison", `if (location.href == "https://a.example/") {}`, nil},
		{"strict comparison", `if (location.href === "https://a.example/") {}`, nil},
		{"string replace on href", `var s = location.href.replace("a", "b")`, nil},
		{"other object", `img.location = "https://a.example/"`, nil},
		{"two in order", `location.replace("https://a.example/1"); location.href = "https://a.example/2"`, []string{"https://a.example/1", "https://a.example/2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, h := range scanJS(tc.src) {
				got = append(got, h.raw)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestExtractHTMLHandlers(t *testing.T) {
	t.Parallel()
	page, _ := url.Parse("https://short.test/p")
	got := extractHTML([]byte(`<button onclick="location.href='/ad'">Go</button><body onload="location.href='/next'">`), page)
	if len(got) != 1 || got[0].url.String() != "https://short.test/next" || got[0].kind != KindJS {
		t.Errorf("got %+v: onclick must be ignored, onload followed", got)
	}
}

func TestParseRefresh(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		target string
		ok     bool
	}{
		{"0; url=https://a.example/", "https://a.example/", true},
		{"5;URL='https://a.example/q'", "https://a.example/q", true},
		{`0; Url = "https://a.example/dq" ignored`, "https://a.example/dq", true},
		{"0, https://a.example/comma", "https://a.example/comma", true},
		{"0 https://a.example/space", "https://a.example/space", true},
		{"1.5; url=/rel", "/rel", true},
		{".5;url=/dot", "/dot", true},
		{"0; urlish", "urlish", true},
		{"30", "", true},
		{"", "", false},
		{"x; url=/nope", "", false},
		{"0x; url=/nope", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			target, ok := parseRefresh(tc.in)
			if target != tc.target || ok != tc.ok {
				t.Errorf("parseRefresh(%q) = %q, %v; want %q, %v", tc.in, target, ok, tc.target, tc.ok)
			}
		})
	}
}

func TestDecodeWrapper(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string // want "" = not a wrapper
	}{
		{"https://www.google.com/url?q=https://a.example/x&sa=D", "https://a.example/x"},
		{"https://google.co.uk/url?url=https%3A%2F%2Fa.example%2Fuk", "https://a.example/uk"},
		{"https://www.google.com/search?q=https://a.example/", ""},
		{"https://l.facebook.com/l.php?u=https%3A%2F%2Fa.example%2Ffb", "https://a.example/fb"},
		{"https://www.youtube.com/redirect?q=https%3A%2F%2Fa.example%2Fyt", "https://a.example/yt"},
		{"https://vk.com/away.php?to=https%3A%2F%2Fa.example%2Fvk", "https://a.example/vk"},
		{"https://linkvertise.com/1/x/dynamic?r=aHR0cHM6Ly9hLmV4YW1wbGUvbHY=", "https://a.example/lv"},
		{"https://link-to.net/1/x/dynamic?r=aHR0cHM6Ly9hLmV4YW1wbGUvbHY", "https://a.example/lv"},
		{"https://href.li/?https://a.example/href", "https://a.example/href"},
		{"https://www.google.com/url?q=javascript:alert(1)", ""},
		{"https://www.google.com/url?q=/relative", ""},
		{"https://vk.com/away.php?to=bm90IGEgdXJs", ""},
		{"https://example.com/url?q=https://a.example/", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			u, _ := url.Parse(tc.in)
			got, ok := decodeWrapper(u)
			if tc.want == "" {
				if ok {
					t.Errorf("decoded %q, want no wrapper", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Errorf("decodeWrapper = %v %v, want %q", got, ok, tc.want)
			}
		})
	}
}
