package sandbox

import (
	"context"
	"strings"
	"testing"
	"time"
)

// hostileScripts are scripts that try to hang, exhaust memory or escape the stubs. Each must
// end within hostileBound with a 100 ms budget, without a panic and without a target, except
// where want says otherwise. They also seed FuzzRun.
var hostileScripts = []struct {
	name, js, want string
}{
	{"endless loop", `while (true) {}`, ""},
	{"endless loop after navigation", `location.href = "https://dest.example/"; for (;;) {}`, ""},
	{"endless loop in a timer", `setTimeout(function () { for (;;) {} }, 1);`, ""},
	{"endless loop in a getter", `var o = {}; Object.defineProperty(o, "x", {get: function () { for (;;) {} }}); location.href = o.x;`, ""},
	{"deep recursion", `function f(n) { return f(n + 1) + 1; } f(0);`, ""},
	{"recursion caught in a loop", `function f() { f(); } for (;;) { try { f(); } catch (e) {} }`, ""},
	{"mutual recursion through toString", `var o = {toString: function () { return String(o); }}; location.href = o;`, ""},
	{"repeat 1e9", `var s = "a".repeat(1e9); location.href = "https://x/" + s.length;`, ""},
	{"repeat 1e15", `"ab".repeat(1e15);`, ""},
	{"padStart huge", `"a".padStart(2e9, "b");`, ""},
	{"doubling loop", `var s = "a"; for (;;) s += s;`, ""},
	{"doubling with concat", `var s = "ab"; while (true) s = s.concat(s, s);`, ""},
	{"join of a huge sparse array", `Array(1e9).join("a");`, ""},
	{"join nested amplification", `var s = "x".repeat(1 << 20); var a = [s, s, s, s]; var b = [a, a, a, a, a, a, a, a]; [b, b, b, b, b, b, b, b].join("");`, ""},
	{"fill a huge array", `new Array(1e9).fill(0);`, ""},
	{"length set then fill", `var a = []; a.length = 4294967295; a.fill(1);`, ""},
	{"spread a huge array", `var a = [...Array(1e9)];`, ""},
	{"apply with a huge array-like", `String.fromCharCode.apply(null, {length: 1e9});`, ""},
	{"Reflect.apply huge", `Reflect.apply(Math.max, null, {length: 2e9});`, ""},
	{"Array.from huge", `Array.from({length: 1e9});`, ""},
	{"map over huge sparse", `Array(4e9).map(function (x) { return x; });`, ""},
	{"JSON of a huge array", `JSON.stringify(Array(1e8));`, ""},
	{"JSON of a shared big string", `var s = "x".repeat(1 << 20); var a = []; for (var i = 0; i < 1000; i++) a.push(s); JSON.stringify(a);`, ""},
	{"deep nesting then JSON", `var x = []; for (var i = 0; i < 1e6; i++) x = [x]; JSON.stringify(x);`, ""},
	{"deep nesting then String", `var x = []; for (var i = 0; i < 1e6; i++) x = [x]; String(x);`, ""},
	{"replace amplification", `var s = "a".repeat(1e6); s.replace(/a/g, s);`, ""},
	{"replace with dollar-backtick", `var s = "a".repeat(1e5); s.replace(/a/g, "$` + "`" + `");`, ""},
	{"replace with a function", `var s = "a".repeat(1e6), big = "b".repeat(1e6); s.replace(/a/g, function () { return big; });`, ""},
	{"catastrophic regexp", `/^(a|a)*\1b$/.test("a".repeat(40));`, ""},
	{"typed array bomb", `new Uint8Array(1e12);`, ""},
	{"array buffer bomb", `new ArrayBuffer(1e12);`, ""},
	{"typed arrays reachable otherwise", `var T = Object.getPrototypeOf(Int8Array); new T(1e12);`, ""},
	{"timer flood", `for (;;) setTimeout(function () {}, 0);`, ""},
	{"timer flood bounded then navigation", `for (var i = 0; i < 1e5; i++) setTimeout(function () { for (var j = 0; j < 1e3; j++); }, 0); setTimeout(function () { location.href = "https://dest.example/"; }, 1);`, ""},
	{"interval that never ends", `setInterval(function () {}, 0);`, ""},
	{"self-requeueing timer", `function t() { setTimeout(t, 0); } t();`, ""},
	{"prototype pollution", `Object.prototype.href = "https://evil.example/"; Object.prototype.toString = function () { return "https://evil.example/"; };
		Array.prototype.join = function () { return "https://evil.example/"; }; document.getElementById("none");`, ""},
	{"redefine location getter", `Object.defineProperty(window, "location", {get: function () { return {href: "x"}; }, set: function () {}});`, ""},
	{"redefine location.href", `Object.defineProperty(location, "href", {set: function () {}}); location.href = "https://dest.example/";`, ""},
	{"location after failed redefinition", `try { Object.defineProperty(window, "location", {value: 1}); } catch (e) {} location.href = "https://dest.example/";`, "https://dest.example/"},
	{"throwing getter", `Object.defineProperty(window, "boom", {get: function () { throw new Error("x"); }}); boom;`, ""},
	{"throwing toString target", `location.href = {toString: function () { throw new Error("x"); }};`, ""},
	{"replace Function.prototype.apply", `Function.prototype.apply = function () { throw 1; }; location.replace("https://dest.example/");`, "https://dest.example/"},
	{"unicode junk", `location.href = "\u2028\ud800" + atob("////");`, "\u2028\ufffd\u00ff\u00ff\u00ff"},
	{"allocation loop", `var a = []; for (;;) a.push(new Array(1000).fill("x"));`, ""},
	{"object churn", `var o = {}; for (var i = 0; ; i++) o["k" + i] = i;`, ""},
	{"proxy chain", `var p = {}; for (var i = 0; i < 1e5; i++) p = new Proxy(p, {}); p.x;`, ""},
	{"bind chain", `var f = function () {}; for (var i = 0; i < 1e5; i++) f = f.bind(null); f();`, ""},
	{"prototype chain", `var o = {}; for (var i = 0; i < 1e6; i++) o = Object.create(o); o.x;`, ""},
	{"generator never ending", `function* g() { for (;;) yield 1; } Math.max(...g());`, ""},
	{"promise loop", `(function f() { Promise.resolve().then(f); })();`, ""},
	{"async busy loop", `(async function () { for (;;) await null; })();`, ""},
	{"atob of a huge string", `atob("QUFB".repeat(1 << 20));`, ""},
	{"btoa loop", `var s = "a"; for (;;) s = btoa(s);`, ""},
	{"unescape loop", `var s = "%41"; for (;;) s = escape(s) + unescape(s);`, ""},
	{"eval loop", `eval("for (;;) {}");`, ""},
	{"Function constructor", `new Function("while (1) {}")();`, ""},
	{"querySelectorAll in a loop", `for (;;) document.querySelectorAll("*");`, ""},
	{"split a doubled string", `var s = "ab"; for (var i = 0; i < 24; i++) s += s; s.split("");`, ""},
	{"spread a doubled string", `var s = "ab"; for (var i = 0; i < 24; i++) s += s; [...s];`, ""},
	{"keys of a doubled string", `var s = "ab"; for (var i = 0; i < 24; i++) s += s; Object.keys(s);`, ""},
	{"match a doubled string", `var s = "ab"; for (var i = 0; i < 24; i++) s += s; s.match(/a/g);`, ""},
	{"regexp symbol replace", `var s = "ab"; for (var i = 0; i < 24; i++) s += s; RegExp.prototype[Symbol.replace].call(/a/g, s, "bb");`, ""},
	{"concat of a shared string", `var s = "x".repeat(1 << 18); "".concat.apply("", Array(1 << 18).fill(s));`, ""},
	{"concat of a shared array", `var a = Array(1 << 18).fill(0); [].concat.apply([], Array(1 << 10).fill(a));`, ""},
	{"flat of a shared array", `var a = Array(1 << 18).fill(0); Array(1 << 10).fill(a).flat();`, ""},
	{"escape a doubled string", `var s = "ab"; for (var i = 0; i < 24; i++) s += s; escape(s);`, ""},
	{"parser panic in eval", `eval("var[...0(");`, ""},
	{"sort with a lying comparator", `var a = []; for (var i = 0; i < 1e5; i++) a.push(i); a.sort(function () { return Math.random() - 0.5; }); for (;;) a.sort();`, ""},
}

// ownPanic reports whether a recovered panic started outside goja, that is, in this package: a
// bug. goja itself panics on some malformed input (found by FuzzRun); Exec recovers those and
// the page just has no JS target.
func ownPanic(res Result) bool {
	if res.Stop != StopPanic {
		return false
	}
	for _, e := range res.Errors {
		if strings.HasPrefix(e, "panic in github.com/dop251/goja") {
			return false
		}
	}
	return true
}

// hostileBound is how long a hostile page may take with a 100 ms budget: generous, since the
// machine is shared; the point is "returns", not speed.
const hostileBound = 5 * time.Second

func TestHostile(t *testing.T) {
	for _, tt := range hostileScripts {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(doc(`<a id="a" href="https://dest.example/">a</a>`, tt.js))
			start := time.Now()
			budget := 100 * time.Millisecond
			if tt.want != "" {
				// These check that the stubs survive the trick: give them a budget that a
				// loaded machine cannot miss.
				budget = time.Second
			}
			res := Exec(context.Background(), body, testPage, Options{Budget: budget})
			if d := time.Since(start); d > hostileBound {
				t.Errorf("took %v (result %+v)", d, res)
			}
			if ownPanic(res) {
				t.Errorf("panicked: %+v", res)
			}
			if res.Target != tt.want || res.OK != (tt.want != "") {
				t.Errorf("got %q, %v; want %q (result %+v)", res.Target, res.OK, tt.want, res)
			}
		})
	}
}

// TestHostileHTML: pages whose markup, not scripts, is large or odd.
func TestHostileHTML(t *testing.T) {
	tests := []struct{ name, body string }{
		{"deep nesting", strings.Repeat("<div>", 100000) + `<a id="x" href="https://dest.example/">x</a><script>location.href = document.getElementById("x").innerHTML + document.body.textContent.length + document.querySelectorAll("div").length;</script>`},
		{"many ids", strings.Repeat(`<i id="a">x</i>`, 50000) + `<script>for (var i = 0; i < 1e4; i++) document.getElementById("a" + i); document.body.innerHTML.length;</script>`},
		{"script larger than the cap", "<script>var s = '" + strings.Repeat("x", 300<<10) + "'; location.href = 'https://wrong.example/';</script>"},
		{"unterminated script", "<script>location.href = 'https://dest.example/'"},
		{"binary junk", "\x00\xff<script>\x00location\x00</script>\xfe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res := Exec(context.Background(), []byte(tt.body), testPage, Options{})
			if d := time.Since(start); d > hostileBound {
				t.Errorf("took %v (result %+v)", d, res)
			}
			if ownPanic(res) {
				t.Errorf("panicked: %+v", res)
			}
			t.Logf("%+v", res)
		})
	}
}

// TestEnginePanicRecovered: a panic inside goja (its parser panics on some malformed input,
// found by FuzzRun) is recovered and named in Errors.
func TestEnginePanicRecovered(t *testing.T) {
	res := Exec(context.Background(), []byte(doc("", `eval("var[...0(")`)), testPage, Options{})
	if res.OK || res.Stop != StopPanic || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "panic in github.com/dop251/goja") {
		t.Fatalf("result %+v", res)
	}
}
