package sandbox

import (
	"context"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testPage = mustURL("https://short.test/p/abc?x=1#frag")

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// doc wraps script blocks in a minimal document; extra is markup placed before them.
func doc(extra string, scripts ...string) string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html><html><head><title>t</title></head><body>")
	b.WriteString(extra)
	for _, s := range scripts {
		b.WriteString("<script>")
		b.WriteString(s)
		b.WriteString("</script>")
	}
	b.WriteString("</body></html>")
	return b.String()
}

type outcome struct {
	Target string
	OK     bool
}

func TestRun(t *testing.T) {
	const dest = "https://dest.example/a?b=c"
	tests := []struct {
		name string
		body string
		want outcome
	}{
		{"location assignment", doc("", `location = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"location.href", doc("", `location.href = 'https://dest.example/a?b=c';`), outcome{dest, true}},
		{"window.location.href", doc("", `window.location.href = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"window.location", doc("", `window.location = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"top.location", doc("", `top.location = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"top.location.href", doc("", `top.location.href = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"self and parent", doc("", `parent.location.href = self.location.href.replace("short.test/p/abc?x=1#frag", "dest.example/a?b=c")`), outcome{dest, true}},
		{"document.location", doc("", `document.location = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"document.location.href", doc("", `document.location.href = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"globalThis.location", doc("", `globalThis.location.href = "https://dest.example/a?b=c"`), outcome{dest, true}},
		{"var location at top level", doc("", `var location = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"location.replace", doc("", `location.replace("https://dest.example/a?b=c")`), outcome{dest, true}},
		{"location.assign", doc("", `window.location.assign("https://dest.example/a?b=c")`), outcome{dest, true}},
		{"window.open", doc("", `window.open("https://dest.example/a?b=c", "_blank")`), outcome{dest, true}},
		{"open then set location", doc("", `var w = open(""); w.location = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"relative target kept as written", doc("", `location.href = "/go/" + 42`), outcome{"/go/42", true}},
		{"location.search setter", doc("", `location.search = "?step=2"`), outcome{"https://short.test/p/abc?step=2", true}},
		{"location.pathname setter", doc("", `location.pathname = "/next"`), outcome{"https://short.test/next?x=1", true}},

		// Computed targets.
		{"concatenation", doc("", `var h = "https://" + "dest" + ".example"; location = h + "/a" + "?b=" + "c";`), outcome{dest, true}},
		{"atob", doc("", `location.href = atob("aHR0cHM6Ly9kZXN0LmV4YW1wbGUvYT9iPWM=")`), outcome{dest, true}},
		{"atob unpadded with whitespace", doc("", `location.href = atob("aHR0cHM6Ly9kZXN0\n LmV4YW1wbGUvYT9iPWM")`), outcome{dest, true}},
		{"btoa round trip", doc("", `location.href = atob(btoa("https://dest.example/a?b=c"))`), outcome{dest, true}},
		{"decodeURIComponent", doc("", `location.href = decodeURIComponent("https%3A%2F%2Fdest.example%2Fa%3Fb%3Dc")`), outcome{dest, true}},
		{"unescape", doc("", `location.href = unescape("https%3A%2F%2Fdest.example%2Fa%3Fb%3Dc")`), outcome{dest, true}},
		{"escape round trip", doc("", `location.href = unescape(escape("https://dest.example/a?b=c"))`), outcome{dest, true}},
		{"array join", doc("", `location.href = ["https:", "", "dest.example", "a?b=c"].join("/")`), outcome{dest, true}},
		{"split reverse join", doc("", `location.href = "c=b?a/elpmaxe.tsed//:sptth".split("").reverse().join("")`), outcome{dest, true}},
		{"String.fromCharCode", doc("", `var c = [104,116,116,112,115,58,47,47,100,101,115,116,46,101,120,97,109,112,108,101,47,97,63,98,61,99];
			location.href = String.fromCharCode.apply(null, c);`), outcome{dest, true}},
		{"fromCharCode spread", doc("", `location.href = String.fromCharCode(...[104,116,116,112,115,58,47,47,100,101,115,116,46,101,120,97,109,112,108,101,47,97,63,98,61,99])`), outcome{dest, true}},
		{"function computing it", doc("", `function shift(s, k) { return s.split("").map(function (ch) { return String.fromCharCode(ch.charCodeAt(0) - k); }).join(""); }
			location.replace(shift("iuuqt;00eftu/fybnqmf0b@c>d", 1));`), outcome{dest, true}},
		{"template literal", doc("", "var host = 'dest.example'; location.href = `https://${host}/a?b=c`;"), outcome{dest, true}},
		{"eval", doc("", `eval("location.href = 'https://dest.example/a?b=c'")`), outcome{dest, true}},
		{"JSON", doc("", `location.href = JSON.parse(JSON.stringify({u: "https://dest.example/a?b=c"})).u`), outcome{dest, true}},
		{"regexp replace", doc("", `location.href = "https://dest.example/a?b=c".replace(/X/g, "$&")`), outcome{dest, true}},

		// Timers and load events.
		{"setTimeout", doc("", `setTimeout(function () { location.href = "https://dest.example/a?b=c"; }, 5000);`), outcome{dest, true}},
		{"setTimeout code string", doc("", `setTimeout("location.href = 'https://dest.example/a?b=c'", 10);`), outcome{dest, true}},
		{"setTimeout arguments", doc("", `setTimeout(function (u) { location.href = u; }, 10, "https://dest.example/a?b=c");`), outcome{dest, true}},
		{"setInterval countdown", doc(`<span id="n">3</span>`, `var n = 3; var t = setInterval(function () {
			n--; document.getElementById("n").textContent = n;
			if (n === 0) { clearInterval(t); location.href = "https://dest.example/a?b=c"; } }, 1000);`), outcome{dest, true}},
		{"cleared timeout", doc("", `var t = setTimeout(function () { location.href = "https://wrong.example/"; }, 10); clearTimeout(t);`), outcome{"", false}},
		{"timers run by due time", doc("", `setTimeout(function () { location.href = "https://dest.example/a?b=c"; }, 10);
			setTimeout(function () { location.href = "https://late.example/"; }, 5000);
			setTimeout(function () { location.href = "https://later.example/"; }, 20);`), outcome{dest, true}},
		{"nested timers", doc("", `setTimeout(function () { setTimeout(function () { location = "https://dest.example/a?b=c"; }, 1); }, 1);`), outcome{dest, true}},
		{"window.onload", doc("", `window.onload = function () { location.href = "https://dest.example/a?b=c"; };`), outcome{dest, true}},
		{"load listener", doc("", `window.addEventListener("load", function () { location.href = "https://dest.example/a?b=c"; });`), outcome{dest, true}},
		{"DOMContentLoaded listener", doc("", `document.addEventListener("DOMContentLoaded", function () { location.href = "https://dest.example/a?b=c"; });`), outcome{dest, true}},
		{"readyState check", doc("", `function go() { location.href = "https://dest.example/a?b=c"; }
			if (document.readyState === "complete") go(); else window.addEventListener("load", go);`), outcome{dest, true}},
		{"body onload attribute", `<html><body onload="location.href = atob('aHR0cHM6Ly9kZXN0LmV4YW1wbGUvYT9iPWM=')"></body></html>`, outcome{dest, true}},
		{"jQuery ready", doc("", `$(document).ready(function () { window.location = "https://dest.example/a?b=c"; });`), outcome{dest, true}},
		{"jQuery function", doc(`<a id="l" href="https://dest.example/a?b=c">x</a>`, `$(function () { location.href = $("#l").attr("href"); });`), outcome{dest, true}},

		// Elements.
		{"getElementById href", doc(`<a id="go" href="https://dest.example/a?b=c">go</a>`, `location.href = document.getElementById("go").href;`), outcome{dest, true}},
		{"getElementById value", doc(`<input type="hidden" id="u" value="https://dest.example/a?b=c">`, `location.href = document.getElementById("u").value;`), outcome{dest, true}},
		{"textarea value", doc(`<textarea id="u">https://dest.example/a?b=c</textarea>`, `location.href = document.getElementById("u").value;`), outcome{dest, true}},
		{"getAttribute data-url", doc(`<div id="d" data-url="aHR0cHM6Ly9kZXN0LmV4YW1wbGUvYT9iPWM="></div>`, `location.href = atob(document.getElementById("d").getAttribute("data-url"));`), outcome{dest, true}},
		{"dataset", doc(`<div id="d" data-target-url="https://dest.example/a?b=c"></div>`, `location.href = document.getElementById("d").dataset.targetUrl;`), outcome{dest, true}},
		{"textContent", doc(`<div id="d"><span>https://dest.example/</span>a?b=c</div>`, `location.href = document.getElementById("d").textContent;`), outcome{dest, true}},
		{"innerHTML", doc(`<div id="d"><b>https://dest.example/a?b=c</b></div>`, `location.href = document.getElementById("d").innerHTML.replace(/<[^>]*>/g, "");`), outcome{dest, true}},
		{"querySelector id", doc(`<a id="go" href="https://dest.example/a?b=c">go</a>`, `location.href = document.querySelector("#go").href;`), outcome{dest, true}},
		{"querySelector class and attribute", doc(`<a class="btn x" data-k="1" href="https://wrong.example/">1</a><a class="btn" data-k="2" href="https://dest.example/a?b=c">2</a>`,
			`location.href = document.querySelector("a.btn[data-k='2']").href;`), outcome{dest, true}},
		{"click on anchor", doc(`<a id="go" href="https://dest.example/a?b=c">go</a>`, `document.getElementById("go").click();`), outcome{dest, true}},
		{"click after setting href", doc(`<a id="go" href="#">go</a>`, `var a = document.getElementById("go"); a.href = "https://dest.example/a?b=c"; a.click();`), outcome{dest, true}},
		{"click prevented", doc(`<a id="go" href="https://wrong.example/">go</a>`, `var a = document.getElementById("go"); a.onclick = function (e) { e.preventDefault(); }; a.click();`), outcome{"", false}},
		{"created anchor clicked", doc("", `var a = document.createElement("a"); a.href = "https://dest.example/a?b=c"; document.body.appendChild(a); a.click();`), outcome{dest, true}},
		{"missing element", doc("", `location.href = document.getElementById("nope").href;`), outcome{"", false}},
		{"form submit GET", doc(`<form id="f" action="https://dest.example/a" method="get"><input name="b" value="x"><input type="submit" value="go"></form>`,
			`document.getElementById("f").querySelector("input[name=b]").value = "c"; document.getElementById("f").submit();`), outcome{dest, true}},
		{"form submit POST", doc(`<form id="f" action="https://dest.example/a?b=c" method="post"><input name="b" value="x"></form>`, `document.forms[0].submit();`), outcome{dest, true}},

		// Errors and ordering.
		{"navigation after an exception in an earlier block", doc("", `undefinedFunction();`, `location.href = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"navigation before an exception counts", doc("", `location.href = "https://dest.example/a?b=c"; null.x;`), outcome{dest, true}},
		{"syntax error in an earlier block", doc("", `var = ;`, `location.href = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"parser panic in an earlier block", doc("", `var[...0(`, `location.href = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"first navigation wins", doc("", `location.href = "https://dest.example/a?b=c"; location.href = "https://second.example/";`, `location.href = "https://third.example/";`), outcome{dest, true}},
		{"fragment is not a navigation", doc("", `location.href = "#top"; location.href = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"javascript: is not a navigation", doc("", `location.href = "javascript:void(0)";`), outcome{"", false}},
		{"undefined is not a navigation", doc("", `var cfg = {}; location.href = cfg.url;`), outcome{"", false}},
		{"external scripts are not run", `<html><body><script src="/x.js">location.href = "https://wrong.example/";</script></body></html>`, outcome{"", false}},
		{"non-JS script types are not run", `<html><body><script type="application/ld+json">{"a": 1}</script><script type="text/template">location.href = "https://wrong.example/"</script></body></html>`, outcome{"", false}},
		{"module script is run", `<html><body><script type="module">location.href = "https://dest.example/a?b=c"</script></body></html>`, outcome{dest, true}},
		{"noscript content is not run", `<html><body><noscript><script>location.href = "https://wrong.example/"</script></noscript></body></html>`, outcome{"", false}},
		{"no navigation", doc(`<p id="x">hello</p>`, `var x = document.getElementById("x").textContent; console.log(x); document.cookie = "a=b"; localStorage.setItem("k", "v");`), outcome{"", false}},
		{"no scripts", `<html><body><a href="https://dest.example/">x</a></body></html>`, outcome{"", false}},
		{"empty body", ``, outcome{"", false}},
		{"stub values", doc("", `if (document.cookie === "" && document.referrer === "" && navigator.userAgent.indexOf("Mozilla") === 0 &&
			location.hostname === "short.test" && location.host === "short.test" && location.pathname === "/p/abc" &&
			location.search === "?x=1" && location.protocol === "https:" && location.origin === "https://short.test" &&
			location.hash === "#frag" && window === self && window === top && window === parent && window === globalThis &&
			String(location) === "https://short.test/p/abc?x=1#frag" && typeof require === "undefined")
			location.href = "https://dest.example/a?b=c";`), outcome{dest, true}},
		{"document.write ignored", doc("", `document.write("<script>location.href='https://wrong.example/'<\/script>");`), outcome{"", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Exec(context.Background(), []byte(tt.body), testPage, Options{Budget: time.Second})
			got := outcome{res.Target, res.OK}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s\nresult: %+v", diff, res)
			}
		})
	}
}

func TestRunFixture(t *testing.T) {
	body, err := os.ReadFile("testdata/countdown.html")
	if err != nil {
		t.Fatal(err)
	}
	target, ok := Run(context.Background(), body, testPage, Options{Budget: time.Second})
	if want := "https://dest.example/post/42/elcitrabc1?t=t0k3n"; !ok || target != want {
		t.Fatalf("Run = %q, %v; want %q", target, ok, want)
	}
}

// TestScriptCap: blocks past MaxScriptBytes are skipped, smaller later blocks still run.
func TestScriptCap(t *testing.T) {
	big := "var pad = '" + strings.Repeat("x", 300) + "';"
	body := doc("", big, `location.href = "https://dest.example/";`)
	res := Exec(context.Background(), []byte(body), testPage, Options{Budget: time.Second, MaxScriptBytes: 100})
	want := Result{Target: "https://dest.example/", OK: true, Scripts: 1, Skipped: 1}
	if diff := cmp.Diff(want, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

var cmpIgnoreElapsed = cmp.Comparer(func(a, b time.Duration) bool { return true })

// TestErrorsReported: script errors are kept for the log, not failures.
func TestErrorsReported(t *testing.T) {
	res := Exec(context.Background(), []byte(doc("", `throw new Error("boom")`, `var = ;`)), testPage, Options{Budget: time.Second})
	if res.OK || res.Stop != "" || len(res.Errors) != 2 || !strings.Contains(res.Errors[0], "boom") {
		t.Fatalf("result %+v", res)
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := Exec(ctx, []byte(doc("", `location.href = "https://dest.example/"`)), testPage, Options{})
	if res.OK || res.Stop != StopCanceled {
		t.Fatalf("result %+v", res)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	res = Exec(ctx, []byte(doc("", `while (true) {}`)), testPage, Options{Budget: 10 * time.Second})
	if res.OK || res.Stop != StopCanceled {
		t.Fatalf("result %+v", res)
	}
}

func TestNilPageURL(t *testing.T) {
	target, ok := Run(context.Background(), []byte(doc("", `location.href = location.href === "about:blank" ? "/x" : "/y"`)), nil, Options{Budget: time.Second})
	if !ok || target != "/x" {
		t.Fatalf("Run = %q, %v", target, ok)
	}
}

// TestConcurrent runs pages in parallel: each has its own runtime, and the compiled prelude is
// shared (run with -race).
func TestConcurrent(t *testing.T) {
	body := []byte(doc("", `setTimeout(function () { location.href = atob("aHR0cHM6Ly9kZXN0LmV4YW1wbGUv"); }, 10);`))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				// A generous budget: -race slows goja down several times over.
				if target, ok := Run(context.Background(), body, testPage, Options{Budget: 5 * time.Second}); !ok || target != "https://dest.example/" {
					t.Errorf("Run = %q, %v", target, ok)
				}
			}
		})
	}
	wg.Wait()
}
