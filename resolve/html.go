package resolve

import (
	"bytes"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/linkhop/linkhop/resolve/sandbox"
)

// Hop kinds, as the job's hops[].kind carries them (docs/api.md#get-v1jobsjob_id).
const (
	KindStart    = "start"
	KindHTTP     = "http"
	KindRefresh  = "refresh"
	KindMeta     = "meta"
	KindJS       = "js"
	KindParam    = "param"
	KindProvider = "provider"
	// KindForm is an adlinkfly form's action, posted to after the countdown; its status is
	// the POST's.
	KindForm = "form"
)

// maxNoscriptDepth bounds re-tokenising <noscript> contents (the tokenizer treats them as raw
// text, so a <meta> inside is only seen by tokenising that text again).
const maxNoscriptDepth = 2

// pageHop is a next URL found in an HTML page, still unresolved.
type pageHop struct {
	raw  string // as written (after JS unescaping)
	kind string // KindMeta or KindJS
}

// extractHTML finds the next hops an HTML page asks a browser to take — <meta http-equiv=refresh>
// (any case, inside <noscript> too) and literal JavaScript location assignments (in <script> and
// onload/onpageshow attributes) — in document order, resolved against the page URL or its
// <base href>. It never runs JavaScript.
func extractHTML(body []byte, page *url.URL) []resolvedHop {
	var found []pageHop
	base := ""
	scanHTML(body, 0, &found, &base)
	ref := page
	if base != "" {
		if b, err := page.Parse(base); err == nil && (b.Scheme == "http" || b.Scheme == "https") {
			ref = b
		}
	}
	out := make([]resolvedHop, 0, len(found))
	for _, f := range found {
		u, err := parseLoose(ref, f.raw)
		if err != nil {
			continue
		}
		out = append(out, resolvedHop{url: u, kind: f.kind})
	}
	return out
}

// resolvedHop is a next URL, absolute, with the kind of hop that leads to it.
type resolvedHop struct {
	url  *url.URL
	kind string
}

func scanHTML(body []byte, depth int, found *[]pageHop, base *string) {
	z := html.NewTokenizer(bytes.NewReader(body))
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return
		case html.StartTagToken, html.SelfClosingTagToken:
		default:
			continue
		}
		tok := z.Token()
		for _, a := range tok.Attr {
			// Only handlers that run by themselves: an onclick target is a button, not a redirect.
			if a.Key == "onload" || a.Key == "onpageshow" {
				*found = append(*found, scanJS(a.Val)...)
			}
		}
		switch tok.Data {
		case "base":
			if *base == "" {
				if href, ok := attr(tok, "href"); ok {
					*base = strings.TrimSpace(href)
				}
			}
		case "meta":
			equiv, _ := attr(tok, "http-equiv")
			if !strings.EqualFold(strings.TrimSpace(equiv), "refresh") {
				continue
			}
			content, _ := attr(tok, "content")
			if target, ok := parseRefresh(content); ok && target != "" {
				*found = append(*found, pageHop{raw: target, kind: KindMeta})
			}
		case "script":
			if tt == html.SelfClosingTagToken {
				continue
			}
			if typ, ok := attr(tok, "type"); ok && !sandbox.IsJSType(typ) {
				continue
			}
			if z.Next() == html.TextToken {
				*found = append(*found, scanJS(string(z.Text()))...)
			}
		case "noscript":
			if tt == html.SelfClosingTagToken {
				continue
			}
			if z.Next() == html.TextToken && depth < maxNoscriptDepth {
				scanHTML(z.Text(), depth+1, found, base)
			}
		}
	}
}

func attr(t html.Token, key string) (string, bool) {
	for _, a := range t.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// jsLiteral matches one JavaScript string literal: double, single or back quotes (the latter
// without ${} substitutions, which would make the target non-literal).
const jsLiteral = `(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|` + "`((?:[^`\\\\$]|\\\\.)*)`" + `)`

// jsLocation matches location assignments and location.replace/assign calls with a literal
// argument: location = "x", location.href = 'x', window.location.href = "x",
// top.location = "x", document.location.href = "x", location.replace("x"), window.location.assign("x").
var jsLocation = regexp.MustCompile(
	`(?:^|[^\w$.])(?:(?:window|self|top|parent|document|globalThis)\s*\.\s*)?location\s*` +
		`(?:(?:\.\s*href\s*)?=|\.\s*(?:replace|assign)\s*\()\s*` +
		jsLiteral)

// scanJS finds literal location targets in JavaScript source, in source order. A literal followed
// by an operator (concatenation, a method call) is not a literal target and is skipped.
func scanJS(src string) []pageHop {
	var out []pageHop
	for _, m := range jsLocation.FindAllStringSubmatchIndex(src, -1) {
		// The literal's content is in whichever of groups 1-3 matched.
		lit := ""
		for g := 1; g <= 3; g++ {
			if m[2*g] >= 0 {
				lit = src[m[2*g]:m[2*g+1]]
				break
			}
		}
		rest := strings.TrimLeft(src[m[1]:], " \t\r")
		if rest != "" && strings.ContainsRune("+.[?&|*-/", rune(rest[0])) {
			continue
		}
		target := strings.TrimSpace(unescapeJS(lit))
		if target == "" {
			continue
		}
		out = append(out, pageHop{raw: target, kind: KindJS})
	}
	return out
}

// unescapeJS decodes the escapes of a JavaScript string literal: \/ \" \' \\ \n \t …,
// \xHH, \uHHHH and \u{H…}. Unknown escapes stand for the character itself, as in JavaScript.
func unescapeJS(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := s[i]; e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		case '0':
			b.WriteByte(0)
		case '\n':
			// line continuation
		case 'x':
			if i+2 < len(s) {
				if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
					b.WriteRune(rune(v))
					i += 2
					continue
				}
			}
			b.WriteByte(e)
		case 'u':
			if i+1 < len(s) && s[i+1] == '{' {
				if j := strings.IndexByte(s[i:], '}'); j > 2 && j <= 9 {
					if v, err := strconv.ParseUint(s[i+2:i+j], 16, 32); err == nil && v <= utf8.MaxRune {
						b.WriteRune(rune(v))
						i += j
						continue
					}
				}
			} else if i+4 < len(s) {
				if v, err := strconv.ParseUint(s[i+1:i+5], 16, 16); err == nil {
					b.WriteRune(rune(v))
					i += 4
					continue
				}
			}
			b.WriteByte(e)
		default:
			b.WriteByte(e)
		}
	}
	return b.String()
}

// parseLoose parses ref-relative target the way browsers tolerate it: surrounding whitespace is
// dropped and spaces and non-ASCII bytes are percent-encoded before parsing.
func parseLoose(ref *url.URL, target string) (*url.URL, error) {
	target = strings.TrimSpace(target)
	var b strings.Builder
	for i := 0; i < len(target); i++ {
		switch c := target[i]; {
		case c == '\t' || c == '\n' || c == '\r':
			// browsers strip tabs and newlines inside URLs
		case c <= ' ' || c >= 0x7f:
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	u, err := url.Parse(b.String())
	if err != nil {
		return nil, err
	}
	if ref != nil {
		u = ref.ResolveReference(u)
	}
	return u, nil
}
