package resolve

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
)

// This file reads the page shapes of the ad-gated families (docs/resolving.md#provider-families).
// It only reads: the walk (resolver.go) decides what to fetch, post and wait for.

// Limits on what a family page may hand the walk: a form is replayed to its site, and a parked
// walk carries it in the job record, so both stay small.
const (
	maxFormFields     = 64
	maxFormValueBytes = 8 << 10
	maxFormBytes      = 32 << 10
)

// formField is one name=value pair of a form, in document order.
type formField struct {
	Name  string `json:"n"`
	Value string `json:"v"`
}

// goLinkForm is an AdLinkFly interstitial's form#go-link and its countdown.
type goLinkForm struct {
	Action  *url.URL
	Fields  []formField
	Counter int // seconds the page asks a visitor to wait before the form is accepted
}

var errNoGoLinkForm = errors.New("no form#go-link on the page")

// counterValue finds AdLinkFly's countdown in the page's app_vars object: "counter_value":"5"
// (a string in the real script; a bare number is accepted too).
var counterValue = regexp.MustCompile(`["']?counter_value["']?\s*:\s*["']?\s*(-?\d{1,9})`)

// parseGoLinkForm reads the form with id "go-link" of an AdLinkFly page: its action resolved
// against the page (or its <base href>), every named field a browser would submit, and the
// countdown of app_vars.
func parseGoLinkForm(body []byte, page *url.URL) (goLinkForm, error) {
	z := html.NewTokenizer(bytes.NewReader(body))
	var (
		f       goLinkForm
		inForm  bool
		found   bool
		action  string
		base    string
		size    int
		textTag string // name of the open <textarea>, whose text is its value
	)
	add := func(name, value string) error {
		if name == "" {
			return nil
		}
		if len(f.Fields) >= maxFormFields || len(value) > maxFormValueBytes {
			return fmt.Errorf("form#go-link is larger than linkhop replays (%d fields, %d bytes a value)", maxFormFields, maxFormValueBytes)
		}
		size += len(name) + len(value)
		if size > maxFormBytes {
			return fmt.Errorf("form#go-link is larger than %d bytes", maxFormBytes)
		}
		f.Fields = append(f.Fields, formField{Name: name, Value: value})
		return nil
	}
scan:
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			break scan
		case html.EndTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "form":
				if inForm {
					break scan
				}
			case "textarea":
				textTag = ""
			}
			continue
		case html.TextToken:
			if inForm && textTag != "" {
				if err := add(textTag, html.UnescapeString(string(z.Text()))); err != nil {
					return f, err
				}
				textTag = ""
			}
			continue
		case html.StartTagToken, html.SelfClosingTagToken:
		default:
			continue
		}
		tok := z.Token()
		switch tok.Data {
		case "base":
			if href, ok := attr(tok, "href"); ok && base == "" {
				base = strings.TrimSpace(href)
			}
		case "form":
			if id, _ := attr(tok, "id"); !found && strings.EqualFold(strings.TrimSpace(id), "go-link") {
				inForm, found = true, true
				action, _ = attr(tok, "action")
			}
		case "input":
			if !inForm {
				continue
			}
			name, _ := attr(tok, "name")
			typ, _ := attr(tok, "type")
			switch strings.ToLower(strings.TrimSpace(typ)) {
			case "submit", "button", "image", "reset", "file":
				continue // a browser sends these only when they are the control clicked
			case "checkbox", "radio":
				if _, checked := attr(tok, "checked"); !checked {
					continue
				}
			}
			if _, disabled := attr(tok, "disabled"); disabled {
				continue
			}
			value, _ := attr(tok, "value")
			if err := add(name, value); err != nil {
				return f, err
			}
		case "textarea":
			if inForm && tt == html.StartTagToken {
				if name, _ := attr(tok, "name"); name != "" {
					textTag = name
				}
			}
		}
	}
	if !found {
		return f, errNoGoLinkForm
	}
	ref := page
	if base != "" {
		if b, err := page.Parse(base); err == nil && (b.Scheme == "http" || b.Scheme == "https") {
			ref = b
		}
	}
	if strings.TrimSpace(action) == "" {
		// A form without an action posts to its own page, as a browser's would.
		action = ref.String()
	}
	u, err := parseLoose(ref, html.UnescapeString(action))
	if err != nil || checkFetchable(u) != nil {
		return f, fmt.Errorf("form#go-link has an action that is not an http(s) URL: %q", action)
	}
	u.Fragment, u.RawFragment = "", ""
	f.Action = u
	if m := counterValue.FindSubmatch(body); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		f.Counter = max(n, 0)
	}
	return f, nil
}

// encodeForm renders fields as application/x-www-form-urlencoded, in their order (url.Values
// would sort them, and some sites check the token list against the field order).
func encodeForm(fields []formField) string {
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(f.Name))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(f.Value))
	}
	return b.String()
}

// goLinkAnswer is the JSON an AdLinkFly /links/go answers with.
type goLinkAnswer struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	URL     string `json:"url"`
}

// ysmmVar finds adf.ly's encoded destination: var ysmm = '…'.
var ysmmVar = regexp.MustCompile(`\bysmm\s*=\s*["']([A-Za-z0-9+/=]+)["']`)

// decodeYSMM decodes adf.ly's ysmm value with its public scheme: the even-index characters
// followed by the odd-index ones reversed; then, over the positions of the digits taken two by
// two, the first digit of a pair becomes the XOR of the pair when that is below 10; then
// base64, with 16 characters of padding dropped at each end.
func decodeYSMM(v string) (string, error) {
	left := make([]byte, 0, len(v)/2+1)
	right := make([]byte, 0, len(v)/2)
	for i := 0; i < len(v); i++ {
		if i%2 == 0 {
			left = append(left, v[i])
		} else {
			right = append(right, v[i])
		}
	}
	for i, j := 0, len(right)-1; i < j; i, j = i+1, j-1 {
		right[i], right[j] = right[j], right[i]
	}
	s := append(left, right...)
	var digits []int
	for i, c := range s {
		if c >= '0' && c <= '9' {
			digits = append(digits, i)
		}
	}
	for k := 0; k+1 < len(digits); k += 2 {
		a, b := digits[k], digits[k+1]
		if x := (s[a] - '0') ^ (s[b] - '0'); x < 10 {
			s[a] = '0' + x
		}
	}
	raw, err := base64.StdEncoding.DecodeString(string(s))
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(string(s), "="))
	}
	if err != nil {
		return "", fmt.Errorf("ysmm is not valid base64 after de-interleaving: %w", err)
	}
	if len(raw) <= 32 || !utf8.Valid(raw) {
		return "", errors.New("ysmm decodes to nothing usable")
	}
	return string(raw[16 : len(raw)-16]), nil
}

// adflyTarget finds and decodes an adf.ly page's destination. A decoded go.php?u=<base64> or
// ?dest=<url> wrapper (adf.ly's own exit pages) is decoded in turn.
func adflyTarget(body []byte, page *url.URL) (*url.URL, bool, error) {
	m := ysmmVar.FindSubmatch(body)
	if m == nil {
		return nil, false, nil
	}
	dec, err := decodeYSMM(string(m[1]))
	if err != nil {
		return nil, false, err
	}
	u, err := parseLoose(page, dec)
	if err != nil || checkFetchable(u) != nil {
		return nil, false, fmt.Errorf("ysmm decodes to %q, which is not an http(s) URL", truncate(dec, 200))
	}
	for range 2 { // a wrapper inside a wrapper at most
		q := u.Query()
		var inner string
		switch {
		case strings.HasSuffix(u.Path, "/go.php") && q.Get("u") != "":
			inner = q.Get("u")
		case q.Get("dest") != "":
			inner = q.Get("dest")
		default:
			return u, true, nil
		}
		d, ok := destination(inner)
		if !ok {
			return nil, false, fmt.Errorf("ysmm decodes to a wrapper whose destination is unreadable: %q", truncate(dec, 200))
		}
		u = d
	}
	return u, true, nil
}

// clickURLVar finds adfoc.us's destination: click_url = "…" (or '…') in a script.
var clickURLVar = regexp.MustCompile(`\bclick_url\s*=\s*` + jsLiteral)

// adfocusTarget finds an adfoc.us page's click_url.
func adfocusTarget(body []byte, page *url.URL) (*url.URL, bool, error) {
	m := clickURLVar.FindSubmatch(body)
	if m == nil {
		return nil, false, nil
	}
	lit := ""
	for g := 1; g <= 3; g++ {
		if m[g] != nil {
			lit = string(m[g])
			break
		}
	}
	raw := strings.TrimSpace(unescapeJS(lit))
	if raw == "" {
		return nil, false, errors.New("click_url is empty")
	}
	u, err := parseLoose(page, raw)
	if err != nil || checkFetchable(u) != nil {
		return nil, false, fmt.Errorf("click_url %q is not an http(s) URL", truncate(raw, 200))
	}
	return u, true, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// captchaScripts are script (and iframe) sources that load a captcha widget or a bot challenge,
// with the name the job's error_detail gives them.
var captchaScripts = []struct{ marker, name string }{
	{"google.com/recaptcha/", "reCAPTCHA"},
	{"recaptcha.net/recaptcha/", "reCAPTCHA"},
	{"gstatic.com/recaptcha/", "reCAPTCHA"},
	{"/recaptcha/api.js", "reCAPTCHA"},
	{"/recaptcha/enterprise.js", "reCAPTCHA"},
	{"hcaptcha.com/", "hCaptcha"},
	{"challenges.cloudflare.com/turnstile", "Cloudflare Turnstile"},
	{"challenges.cloudflare.com", "a Cloudflare challenge"},
	{"/cdn-cgi/challenge-platform", "a Cloudflare challenge"},
}

// captchaClasses are the classes of the widgets' placeholder elements.
var captchaClasses = map[string]string{
	"g-recaptcha":  "reCAPTCHA",
	"h-captcha":    "hCaptcha",
	"cf-turnstile": "Cloudflare Turnstile",
}

// captchaGate reports whether an HTML page renders a captcha: an element whose class is a
// widget's (g-recaptcha, h-captcha, cf-turnstile), an element with data-sitekey, or a script or
// iframe loaded from a captcha service. The words elsewhere do not count: every AdLinkFly form
// lists g-recaptcha-response among its unlocked fields, captcha or not. name says which captcha.
func captchaGate(body []byte) (name string, ok bool) {
	z := html.NewTokenizer(bytes.NewReader(body))
	sitekey := ""
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		tok := z.Token()
		for _, a := range tok.Attr {
			switch a.Key {
			case "class":
				for _, c := range strings.Fields(strings.ToLower(a.Val)) {
					if n, ok := captchaClasses[c]; ok {
						return n, true
					}
				}
			case "data-sitekey":
				if sitekey == "" {
					sitekey = "a captcha widget (data-sitekey)"
				}
			case "src":
				if tok.Data != "script" && tok.Data != "iframe" {
					continue
				}
				src := strings.ToLower(a.Val)
				for _, s := range captchaScripts {
					if strings.Contains(src, s.marker) {
						return s.name, true
					}
				}
			}
		}
	}
	return sitekey, sitekey != ""
}
