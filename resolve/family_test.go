package resolve

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fixture reads testdata/name with its {{KEY}} placeholders replaced.
func fixture(t testing.TB, name string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(repl); i += 2 {
		s = strings.ReplaceAll(s, "{{"+repl[i]+"}}", repl[i+1])
	}
	return s
}

// fakeAdLinkFly emulates an AdLinkFly site under alf.test/<prefix>: GET /<prefix>/<code> shows
// the interstitial and starts a session (cookies); POST /<prefix>/links/go answers as the real
// script does, refusing what a real site refuses.
type fakeAdLinkFly struct {
	counter  int           // the countdown the page shows
	required time.Duration // how long the server insists on (defaults to counter seconds)
	noCookie bool          // the page sets no session cookie (a lost session)
	answer   string        // a fixed JSON answer instead of the success one
	target   string

	mu     sync.Mutex
	shown  map[string]time.Time // csrf token -> when its page was shown
	posted []url.Values
}

func (f *fakeAdLinkFly) register(tb testing.TB, e *testEnv, prefix string) {
	f.shown = map[string]time.Time{}
	tmpl := fixture(tb, "adlinkfly_go.html", "COUNTER", fmt.Sprint(f.counter), "ACTION", "/"+prefix+"/links/go")
	e.handle("alf.test/"+prefix+"/abc", func(w http.ResponseWriter, r *http.Request) {
		tok := fmt.Sprintf("csrf%d", time.Now().UnixNano())
		f.mu.Lock()
		f.shown[tok] = time.Now()
		f.mu.Unlock()
		if !f.noCookie {
			http.SetCookie(w, &http.Cookie{Name: "csrfToken", Value: tok, Path: "/"})
			http.SetCookie(w, &http.Cookie{Name: "AppSession", Value: "s-" + tok, Path: "/", HttpOnly: true})
		}
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		_, _ = w.Write([]byte(strings.ReplaceAll(tmpl, "{{CSRF}}", tok)))
	})
	e.handle("alf.test/"+prefix+"/links/go", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method", http.StatusMethodNotAllowed)
			return
		}
		_ = r.ParseForm()
		f.mu.Lock()
		f.posted = append(f.posted, r.PostForm)
		f.mu.Unlock()
		c, err := r.Cookie("csrfToken")
		if err != nil || c.Value != r.PostForm.Get("_csrfToken") {
			// CakePHP's CSRF middleware: no session cookie, no form.
			http.Error(w, "Missing or incorrect CSRF cookie", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		if r.Header.Get("X-Requested-With") != "XMLHttpRequest" || !strings.Contains(r.Header.Get("Accept"), "application/json") ||
			!strings.HasSuffix(r.Header.Get("Referer"), "/"+prefix+"/abc") || r.PostForm.Get("ad_form_data") == "" ||
			r.PostForm.Get("_Token[unlocked]") == "" {
			_, _ = w.Write([]byte(`{"status":"error","message":"Bad Request.","url":""}`))
			return
		}
		f.mu.Lock()
		shown := f.shown[c.Value]
		f.mu.Unlock()
		need := f.required
		if need == 0 {
			need = time.Duration(f.counter) * time.Second
		}
		if time.Since(shown) < need-50*time.Millisecond {
			_, _ = w.Write([]byte(`{"status":"error","message":"Please wait for the timer.","url":""}`))
			return
		}
		if f.answer != "" {
			_, _ = w.Write([]byte(f.answer))
			return
		}
		_, _ = fmt.Fprintf(w, `{"status":"success","message":"Go without Earn because Adblock","url":%q}`, f.target)
	})
}

func TestAdLinkFly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{FormWaitMax: 3 * time.Second})
	ok := &fakeAdLinkFly{counter: 1, target: "https://dest.example/final?x=1"}
	ok.register(t, e, "ok")
	zero := &fakeAdLinkFly{counter: 0, target: "https://dest.example/zero"}
	zero.register(t, e, "zero")
	long := &fakeAdLinkFly{counter: 20, target: "https://dest.example/never"}
	long.register(t, e, "long")
	errAns := &fakeAdLinkFly{counter: 0, answer: `{"status":"error","message":"Link not found or expired.","url":""}`}
	errAns.register(t, e, "error")
	garbage := &fakeAdLinkFly{counter: 0, answer: `<html>maintenance</html>`}
	garbage.register(t, e, "garbage")
	noCookie := &fakeAdLinkFly{counter: 0, noCookie: true, target: "https://dest.example/nc"}
	noCookie.register(t, e, "nocookie")
	early := &fakeAdLinkFly{counter: 1, required: 3 * time.Second, target: "https://dest.example/early"}
	early.register(t, e, "early")

	t.Run("success", func(t *testing.T) {
		t.Parallel()
		res, err := e.res.Resolve(ctxT(t), "http://alf.test/ok/abc")
		if err != nil {
			t.Fatal(err)
		}
		want := []Hop{
			{URL: "http://alf.test/ok/abc", Status: intp(200), Kind: KindStart},
			{URL: "http://alf.test/ok/links/go", Status: intp(200), Kind: KindForm},
			{URL: "https://dest.example/final?x=1", Kind: KindProvider},
		}
		if d := cmp.Diff(want, res.Hops); d != "" {
			t.Errorf("hops (-want +got):\n%s", d)
		}
		if res.TargetURL != "https://dest.example/final?x=1" {
			t.Errorf("target %s", res.TargetURL)
		}
		ok.mu.Lock()
		defer ok.mu.Unlock()
		if len(ok.posted) != 1 {
			t.Fatalf("%d posts", len(ok.posted))
		}
		for _, f := range []string{"_method", "_csrfToken", "ad_form_data", "_Token[fields]", "_Token[unlocked]"} {
			if ok.posted[0].Get(f) == "" {
				t.Errorf("field %s not posted", f)
			}
		}
	})
	fails := []struct{ path, detail string }{
		{"long", "longer than RESOLVE_FORM_WAIT_MAX"},
		{"error", "Link not found or expired."},
		{"garbage", "not the JSON"},
		{"nocookie", "refused the form with 403"},
		{"early", "Please wait for the timer."},
	}
	for _, tc := range fails {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			_, err := e.res.Resolve(ctxT(t), "http://alf.test/"+tc.path+"/abc")
			re := asError(t, err)
			if re.Code != CodeResolveFailed || re.Transient || !strings.Contains(re.Detail, tc.detail) {
				t.Errorf("got %s %q, want resolve_failed naming %q", re.Code, re.Detail, tc.detail)
			}
		})
	}
	t.Run("zero countdown", func(t *testing.T) {
		t.Parallel()
		res, err := e.res.Resolve(ctxT(t), "http://alf.test/zero/abc")
		if err != nil || res.TargetURL != "https://dest.example/zero" {
			t.Fatalf("%+v %v", res, err)
		}
	})
}

func TestAdLinkFlyPark(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{FormWaitMax: 5 * time.Second, ParkMin: time.Second})
	f := &fakeAdLinkFly{counter: 1, target: "https://dest.example/parked"}
	f.register(t, e, "p")

	began := time.Now()
	_, err := e.res.Park(ctxT(t), "http://alf.test/p/abc")
	pk, ok := IsParked(err)
	if !ok {
		t.Fatalf("Park = %v, want a *Parked", err)
	}
	if d := pk.Until.Sub(began); d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("parked for %s, want about the 1s countdown", d)
	}
	// The state survives a trip through the job record, and another worker resumes it.
	raw, err := json.Marshal(pk.State)
	if err != nil {
		t.Fatal(err)
	}
	var c Continuation
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	other := e.newResolver(t)
	res, err := other.Resume(ctxT(t), "http://alf.test/p/abc", &c)
	if err != nil {
		t.Fatal(err)
	}
	if res.TargetURL != "https://dest.example/parked" || hopKinds(res.Hops) != "start,form,provider" {
		t.Errorf("resumed: %s %s", res.TargetURL, hopKinds(res.Hops))
	}
	if time.Since(began) < 950*time.Millisecond {
		t.Error("the form was posted before the countdown ended")
	}

	// A state for another link is refused.
	if _, err := other.Resume(ctxT(t), "http://alf.test/p/other", &c); asError(t, err).Code != CodeResolveFailed {
		t.Errorf("mismatched resume: %v", err)
	}
	// Below ParkMin, Park waits in place.
	short := newEnv(t, Options{ParkMin: 2 * time.Second})
	g := &fakeAdLinkFly{counter: 1, target: "https://dest.example/inline"}
	g.register(t, short, "i")
	if res, err := short.res.Park(ctxT(t), "http://alf.test/i/abc"); err != nil || res.TargetURL != "https://dest.example/inline" {
		t.Errorf("short countdown: %+v %v", res, err)
	}
}

func TestCaptchaGates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	cases := []struct {
		name, typ, script, widget, want string
	}{
		{"recaptcha", "recaptcha", `<script src="https://www.google.com/recaptcha/api.js" async defer></script>`,
			`<div class="g-recaptcha" data-sitekey="6Lc_synthetic"></div>`, "reCAPTCHA"},
		{"recaptcha widget only", "recaptcha", "", `<div class="form-group g-recaptcha"></div>`, "reCAPTCHA"},
		{"recaptcha v3 script only", "invisible-recaptcha", `<script src="https://www.recaptcha.net/recaptcha/api.js?render=6Lc_synthetic"></script>`, "", "reCAPTCHA"},
		{"hcaptcha", "hcaptcha", `<script src="https://js.hcaptcha.com/1/api.js" async></script>`,
			`<div class="h-captcha" data-sitekey="10000000-synthetic"></div>`, "hCaptcha"},
		{"turnstile", "turnstile", `<script src="https://challenges.cloudflare.com/turnstile/v0/api.js" async defer></script>`,
			`<div class="cf-turnstile" data-sitekey="0x4AAA-synthetic"></div>`, "Cloudflare Turnstile"},
		{"sitekey", "other", "", `<div id="cap" data-sitekey="k"></div>`, "a captcha widget (data-sitekey)"},
	}
	for _, tc := range cases {
		page := fixture(t, "adlinkfly_captcha.html", "TYPE", tc.typ, "SCRIPT", tc.script, "WIDGET", tc.widget)
		e.handle("alf.test/captcha/"+strings.ReplaceAll(tc.name, " ", "-"), htmlPage(page))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.res.Resolve(ctxT(t), "http://alf.test/captcha/"+strings.ReplaceAll(tc.name, " ", "-"))
			re := asError(t, err)
			if re.Code != CodeResolveFailed || !strings.Contains(re.Detail, "captcha gate ("+tc.want) {
				t.Errorf("got %s %q, want a captcha gate naming %s", re.Code, re.Detail, tc.want)
			}
		})
	}
	// The words alone do not make a gate.
	for _, body := range []string{
		fixture(t, "adlinkfly_go.html", "COUNTER", "0", "CSRF", "x", "ACTION", "/links/go"),
		`<html><body><p>We never show a g-recaptcha or h-captcha here.</p><script>var f = "g-recaptcha-response";</script></body></html>`,
		`<html><body><a class="g-recaptcha-response-link" href="/x">x</a></body></html>`,
	} {
		if name, ok := captchaGate([]byte(body)); ok {
			t.Errorf("captchaGate found %q in a page without a captcha:\n%s", name, body)
		}
	}
}

// encodeYSMM is the inverse of decodeYSMM, for building fixtures.
func encodeYSMM(dest string) string {
	s := []byte(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef" + dest + "fedcba9876543210")))
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
	half := (len(s) + 1) / 2
	left, right := s[:half], s[half:]
	out := make([]byte, 0, len(s))
	for i := range left {
		out = append(out, left[i])
		if j := len(right) - 1 - i; j >= 0 {
			out = append(out, right[j])
		}
	}
	return string(out)
}

func TestDecodeYSMM(t *testing.T) {
	t.Parallel()
	for _, dest := range []string{"https://example.com/", "http://a.b/c?d=1&e=2", "https://x.test/" + strings.Repeat("9z8", 40)} {
		enc := encodeYSMM(dest)
		got, err := decodeYSMM(enc)
		if err != nil || got != dest {
			t.Errorf("decodeYSMM(encodeYSMM(%q)) = %q, %v", dest, got, err)
		}
	}
	for _, bad := range []string{"", "abc", "!!!!", encodeYSMM("")} {
		if got, err := decodeYSMM(bad); err == nil {
			t.Errorf("decodeYSMM(%q) = %q, want an error", bad, got)
		}
	}
}

func TestAdFlyAndAdFocus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	b64 := base64.StdEncoding.EncodeToString([]byte("https://dest.example/from-u"))
	pages := map[string]string{
		"afly.test/plain":         fixture(t, "adfly.html", "YSMM", encodeYSMM("https://dest.example/plain")),
		"afly.test/go":            fixture(t, "adfly.html", "YSMM", encodeYSMM("https://afly.test/go.php?u="+url.QueryEscape(b64))),
		"afly.test/dest":          fixture(t, "adfly.html", "YSMM", encodeYSMM("https://afly.test/redirecting/?dest="+url.QueryEscape("https://dest.example/from-dest"))),
		"afly.test/bad":           fixture(t, "adfly.html", "YSMM", "bm90IGEgdXJs"),
		"afly.test/notyet":        `<html><body><script>var other = 1;</script></body></html>`,
		"afoc.test/double":        fixture(t, "adfocus.html", "CLICK", `"https:\/\/dest.example\/focus?id=1"`),
		"afoc.test/single":        fixture(t, "adfocus.html", "CLICK", `'/redirect/next'`),
		"afoc.test/redirect/next": "",
		"afoc.test/missing":       `<html><body><script>var skip_url = null;</script></body></html>`,
	}
	for p, body := range pages {
		if body == "" {
			e.handle(p, redirect("https://dest.example/after-focus", http.StatusFound))
			continue
		}
		e.handle(p, htmlPage(body))
	}
	ok := []struct{ path, target, kinds string }{
		{"http://afly.test/plain", "https://dest.example/plain", "start,provider"},
		{"http://afly.test/go", "https://dest.example/from-u", "start,provider"},
		{"http://afly.test/dest", "https://dest.example/from-dest", "start,provider"},
		{"http://afoc.test/double", "https://dest.example/focus?id=1", "start,provider"},
		{"http://afoc.test/single", "https://dest.example/after-focus", "start,provider,http"},
	}
	for _, tc := range ok {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			res, err := e.res.Resolve(ctxT(t), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if res.TargetURL != tc.target || hopKinds(res.Hops) != tc.kinds {
				t.Errorf("got %s via %s, want %s via %s", res.TargetURL, hopKinds(res.Hops), tc.target, tc.kinds)
			}
		})
	}
	bad := []struct{ path, detail string }{
		{"http://afly.test/bad", "adfly page"},
		{"http://afly.test/notyet", "no findable target"},
		{"http://afoc.test/missing", "no findable target"},
	}
	for _, tc := range bad {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			_, err := e.res.Resolve(ctxT(t), tc.path)
			if re := asError(t, err); re.Code != CodeResolveFailed || !strings.Contains(re.Detail, tc.detail) {
				t.Errorf("got %s %q, want resolve_failed naming %q", re.Code, re.Detail, tc.detail)
			}
		})
	}
}

func TestParseGoLinkForm(t *testing.T) {
	t.Parallel()
	page, _ := url.Parse("https://alf.test/abc")
	body := `<html><head><base href="https://alf.test/sub/"><script>var app_vars = {"counter_value": 7};</script></head><body>
<form id="other"><input name="no" value="1"></form>
<form id="Go-Link" action="links/go?x=1&amp;y=2" method="post">
<input type="hidden" name="a" value="1&amp;2"><input type="submit" name="s" value="go">
<input type="checkbox" name="c1" value="on"><input type="checkbox" name="c2" value="on" checked>
<input name="d" value="x" disabled><textarea name="t">hello</textarea><input value="nameless">
</form><input name="after" value="z"></body></html>`
	f, err := parseGoLinkForm([]byte(body), page)
	if err != nil {
		t.Fatal(err)
	}
	if f.Action.String() != "https://alf.test/sub/links/go?x=1&y=2" || f.Counter != 7 {
		t.Errorf("action %s counter %d", f.Action, f.Counter)
	}
	want := []formField{{"a", "1&2"}, {"c2", "on"}, {"t", "hello"}}
	if d := cmp.Diff(want, f.Fields); d != "" {
		t.Errorf("fields (-want +got):\n%s", d)
	}
	if got := encodeForm([]formField{{"_Token[fields]", "a b"}, {"x", "1&2"}}); got != "_Token%5Bfields%5D=a+b&x=1%262" {
		t.Errorf("encodeForm = %s", got)
	}
	if _, err := parseGoLinkForm([]byte(`<form id="go-link" action="javascript:void(0)"></form>`), page); err == nil {
		t.Error("a javascript: action was accepted")
	}
	huge := `<form id="go-link">` + strings.Repeat(`<input name="f" value="v">`, maxFormFields+1) + `</form>`
	if _, err := parseGoLinkForm([]byte(huge), page); err == nil {
		t.Error("an oversized form was accepted")
	}
}
