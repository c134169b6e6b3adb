package resolve

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The sandbox wired into the walk: provider pages whose next URL only their scripts compute
// (docs/resolving.md#computed-javascript-targets).
func TestSandboxedTargets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	enc := base64.StdEncoding.EncodeToString([]byte("https://dest.example/from-atob"))
	pages := map[string]string{
		"atob":     `<script>var p = "` + enc + `"; window.location.href = atob(p);</script>`,
		"concat":   `<script>var host = "dest.example"; location = "https://" + host + "/" + ["d","e","t","u","p","m","o","c"].reverse().join("");</script>`,
		"timer":    `<script>setTimeout(function(){ location.replace(decodeURIComponent("https%3A%2F%2Fdest.example%2Ftimer")); }, 5000);</script>`,
		"element":  `<a id="go" href="https://dest.example/element">continue</a><script>document.getElementById("go").click();</script>`,
		"data":     `<div id="cfg" data-url="aHR0cHM6Ly9kZXN0LmV4YW1wbGUvZGF0YQ=="></div><script>top.location = atob(document.querySelector("#cfg").getAttribute("data-url"));</script>`,
		"open":     `<script>var u = unescape("https%3A//dest.example/open"); window.open(u);</script>`,
		"throws":   `<script>undefinedFunction();</script><script>location.assign("/after-error");</script>`,
		"relative": `<script>var n = 2; location.href = "/step" + n;</script>`,
	}
	for p, body := range pages {
		e.handle("short.test/js/"+p, htmlPage("<html><body>"+body+"</body></html>"))
	}
	e.handle("short.test/after-error", redirect("https://dest.example/after-error", http.StatusFound))
	e.handle("short.test/step2", redirect("https://dest.example/step2", http.StatusFound))
	// Hostile pages get the production sandbox and its 100 ms budget.
	hostile := newEnv(t, Options{Script: Sandbox})
	hostile.handle("short.test/js/endless", htmlPage(`<script>while (true) {}</script>`))
	hostile.handle("short.test/js/bomb", htmlPage(`<script>var s = "x"; for (;;) { s = s + s; }</script>`))

	ok := map[string]string{
		"atob": "https://dest.example/from-atob", "concat": "https://dest.example/computed",
		"timer": "https://dest.example/timer", "element": "https://dest.example/element",
		"data": "https://dest.example/data", "open": "https://dest.example/open",
		"throws": "https://dest.example/after-error", "relative": "https://dest.example/step2",
	}
	for p, want := range ok {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			res, err := e.res.Resolve(ctxT(t), "http://short.test/js/"+p)
			if err != nil {
				t.Fatal(err)
			}
			if res.TargetURL != want || res.Hops[1].Kind != KindJS {
				t.Errorf("got %s via %s, want %s via a js hop", res.TargetURL, hopKinds(res.Hops), want)
			}
		})
	}
	for _, p := range []string{"endless", "bomb"} {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			_, err := hostile.res.Resolve(ctxT(t), "http://short.test/js/"+p)
			re := asError(t, err)
			if re.Code != CodeResolveFailed || !strings.Contains(re.Detail, "no findable target") {
				t.Errorf("got %s %q", re.Code, re.Detail)
			}
			if d := time.Since(began); d > 10*time.Second {
				t.Errorf("a hostile script held the resolve for %s", d)
			}
		})
	}
	off := newEnv(t, Options{NoScript: true})
	off.handle("short.test/js/atob", htmlPage(pages["atob"]))
	if _, err := off.res.Resolve(ctxT(t), "http://short.test/js/atob"); asError(t, err).Code != CodeResolveFailed {
		t.Errorf("NoScript still ran the page's script: %v", err)
	}
}
