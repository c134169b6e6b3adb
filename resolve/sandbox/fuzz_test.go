package sandbox

import (
	"context"
	"os"
	"testing"
	"time"
)

// FuzzRun feeds arbitrary script text (wrapped in a page with a few elements) and arbitrary
// HTML: Run must never panic and must return in time with a short budget.
func FuzzRun(f *testing.F) {
	for _, h := range hostileScripts {
		f.Add(h.js, "")
	}
	f.Add(`location.href = atob(document.getElementById("a").getAttribute("data-u"))`, `<a id="a" data-u="aHR0cHM6Ly9kZXN0LmV4YW1wbGUv">x</a>`)
	f.Add(`setInterval(function () { document.querySelector("#a").click(); }, 1000)`, `<a id="a" href="/x">x</a>`)
	f.Add("", `<body onload="location.href='/y'"><script>var x = 1<\/script></body>`)
	f.Add(`$(function () { $("form").submit(); })`, `<form action="/f"><input name="q" value="1"></form>`)
	if b, err := os.ReadFile("testdata/countdown.html"); err == nil {
		f.Add("", string(b))
	}
	const budget = 20 * time.Millisecond
	f.Fuzz(func(t *testing.T, js, markup string) {
		body := []byte(markup + doc(`<a id="a" href="https://dest.example/" data-u="eA==">a</a><input id="v" value="v">`, js))
		start := time.Now()
		res := Exec(context.Background(), body, testPage, Options{Budget: budget})
		// Generous: the fuzzer runs one worker per core on a shared machine, and a native
		// built-in finishes its (capped) step before the interrupt is seen.
		if d := time.Since(start); d > hostileBound {
			t.Fatalf("took %v: %+v", d, res)
		}
		// A panic inside goja is recovered and only costs the page its JS target; a panic
		// in this package is a bug (compile errors of a block are not panics at all).
		if ownPanic(res) {
			t.Fatalf("panicked: %+v", res)
		}
		if res.OK != (res.Target != "") && res.OK {
			t.Fatalf("OK with an empty target: %+v", res)
		}
		if res.Stop != "" && res.OK {
			t.Fatalf("stopped page with a target: %+v", res)
		}
	})
}
