// Package sandbox runs a provider page's inline scripts in a pure-Go JavaScript engine to find
// the navigation they compute.
//
// Ad-gated link pages often build their next URL in JavaScript (concatenation, base64,
// char codes, a countdown timer, a hidden anchor that is clicked) instead of writing it as a
// literal, so package resolve's literal scan finds nothing. Run executes the page's inline
// <script> blocks with github.com/dop251/goja (no cgo, no browser) against stub window, document
// and location objects that record navigations instead of performing them, and returns the
// first one.
//
// The sandbox is built for untrusted pages: there is no network, no storage and no Go value
// reachable from the scripts beyond the stubs; each page gets its own goja.Runtime, a wall-clock
// budget (100 ms by default) enforced with Runtime.Interrupt, a call-stack cap, a cap on the
// inline script bytes, and caps on the built-ins that could allocate without bound in one native
// step (see prelude.js), because goja has no memory limit and cannot interrupt native code. A
// script error or a panic is never the caller's failure: the page just has no JS target.
package sandbox

import (
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dlclark/regexp2/v2"
	"github.com/dop251/goja"
	"golang.org/x/net/html"
)

// Defaults of Options.
const (
	DefaultBudget         = 100 * time.Millisecond
	DefaultMaxScriptBytes = 256 << 10
)

// Limits that are not options: they keep one page's cost small whatever its scripts do.
const (
	// maxTimers bounds the callbacks run from the queue (setTimeout, each setInterval tick,
	// requestAnimationFrame, load listeners) over a whole page; later ones are dropped (the call
	// still returns an id), so a script flooding the queue only wastes its own budget, and a
	// countdown of up to ~100 ticks still reaches its end.
	maxTimers = 100
	// maxCallStack bounds JavaScript call depth (goja's default is unbounded).
	maxCallStack = 1000
	// maxStringLength bounds, in UTF-16 code units, the strings the guarded built-ins and the
	// helpers (atob, btoa) produce or walk in one step: twice the script cap, which is more
	// than any decoding of a page's own literals needs.
	maxStringLength = 512 << 10
	// maxArrayLength bounds the length of the arrays and array-likes the guarded built-ins
	// iterate natively (join, fill, spread, apply…): a sparse array of length 1e9 is cheap to
	// make, but a native loop over it is neither interruptible nor cheap.
	maxArrayLength = 1 << 18
	// regexpTimeout bounds one backtracking regular-expression match (see init).
	regexpTimeout = DefaultBudget
	// maxErrors bounds the script errors kept in a Result, each cut to maxErrorLen bytes.
	maxErrors   = 3
	maxErrorLen = 200
)

func init() {
	// goja runs regular expressions that need backtracking on regexp2, which is not
	// interruptible and has no timeout by default: a catastrophic pattern such as /(a|a)*b/
	// would hold a worker forever. regexp2's package-level default is the only knob goja leaves
	// reachable; nothing else in linkhop uses regexp2. A timed-out match counts as no match.
	regexp2.DefaultMatchTimeout = regexpTimeout
}

// Options configures Run. The zero value of each field means its default.
type Options struct {
	// Budget is the wall-clock time the page's scripts and callbacks get; past it the page has
	// no JS target. Default DefaultBudget (100 ms).
	Budget time.Duration
	// MaxScriptBytes caps the inline JavaScript run per page, counted over all blocks (and the
	// body's onload attribute). Blocks are taken in document order; a block that would exceed
	// the cap is skipped, later blocks that still fit are run. Default DefaultMaxScriptBytes.
	MaxScriptBytes int
}

// Stop reasons of a Result: why the sandbox stopped before running everything.
const (
	StopBudget   = "budget"   // the budget ran out: the page has no JS target
	StopCanceled = "canceled" // the context ended
	StopPanic    = "panic"    // the engine or a stub panicked (recovered)
)

// Result is what Exec found on a page, with enough detail to log why there was no target.
type Result struct {
	// Target is the first recorded navigation exactly as the script wrote it (not resolved
	// against the page URL), when OK.
	Target string
	OK     bool
	// Stop is "" when the scripts ran to the end (or to the first navigation), else one of the
	// Stop constants. A stopped page is never OK.
	Stop string
	// Scripts is the number of inline script blocks run, Skipped the number left out by
	// MaxScriptBytes.
	Scripts, Skipped int
	// Errors are the first script errors (syntax errors, uncaught exceptions), shortened; they
	// are not failures, only hints for a log line.
	Errors []string
	// Elapsed is the time spent in the engine.
	Elapsed time.Duration
}

// Run parses the HTML body, runs its inline JavaScript blocks in document order with stub
// window, document and location objects, then the queued timer and load callbacks, and returns
// the first navigation they recorded, exactly as the script wrote it (the caller resolves it
// against the page URL), and ok=true; or ok=false when there is none, when the budget ran out,
// the context ended, or the engine failed. It never panics and never touches the network.
func Run(ctx context.Context, body []byte, pageURL *url.URL, opts Options) (target string, ok bool) {
	r := Exec(ctx, body, pageURL, opts)
	return r.Target, r.OK
}

// Exec is Run with the details of the outcome, for logging and tests.
func Exec(ctx context.Context, body []byte, pageURL *url.URL, opts Options) (res Result) {
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	if opts.MaxScriptBytes <= 0 {
		opts.MaxScriptBytes = DefaultMaxScriptBytes
	}
	if ctx.Err() != nil {
		return Result{Stop: StopCanceled}
	}
	p := parsePage(body, opts.MaxScriptBytes)
	res.Skipped = p.skipped
	if len(p.scripts) == 0 && p.bodyOnload == "" {
		return res
	}
	start := time.Now()
	defer func() {
		res.Elapsed = time.Since(start)
		if x := recover(); x != nil {
			// A bug in a stub or in goja must not take the worker down; the page just has
			// no JS target. The value goes into Errors for the log line.
			res.OK, res.Target, res.Stop = false, "", StopPanic
			res.Errors = appendErr(res.Errors, fmt.Sprintf("panic in %s: %v", panicSite(), x))
		}
	}()

	s := &state{vm: goja.New(), page: p, res: &res}
	s.vm.SetMaxCallStackSize(maxCallStack)
	// The interrupt is the only way to stop JavaScript that loops; it takes effect at the next
	// JavaScript instruction (native built-ins run to their end, which the prelude's caps keep
	// short).
	timer := time.AfterFunc(opts.Budget, func() { s.vm.Interrupt(StopBudget) })
	defer timer.Stop()
	stopCtx := context.AfterFunc(ctx, func() { s.vm.Interrupt(StopCanceled) })
	defer stopCtx()

	if err := s.install(pageURL); err != nil {
		if !s.handle(err) {
			return res
		}
		res.Errors = appendErr(res.Errors, "prelude: "+err.Error())
		return res
	}
	for i, src := range p.scripts {
		if s.navSet {
			break
		}
		res.Scripts++
		prg, err := compile(fmt.Sprintf("inline-%d.js", i+1), src)
		if err == nil {
			_, err = s.vm.RunProgram(prg)
		}
		if !s.handle(err) {
			return res
		}
	}
	if !s.navSet {
		// The document has been parsed: queue DOMContentLoaded, jQuery ready and load
		// callbacks behind the timers already queued with no delay.
		_, err := s.fire(goja.Undefined())
		if !s.handle(err) {
			return res
		}
	}
	s.drainTimers()
	if res.Stop != "" {
		return res
	}
	res.Target, res.OK = s.nav, s.navSet
	return res
}

// state is one page's run: one goja.Runtime, never shared (goja is not goroutine-safe).
type state struct {
	vm   *goja.Runtime
	page *page
	res  *Result
	fire goja.Callable // the prelude's "document is parsed" hook

	nav    string
	navSet bool

	timers   []*pending
	running  *pending // the callback being run, so that clearInterval inside it stops it
	timerSeq int      // ids of setTimeout & co.
	queued   int      // callbacks ever queued, bounded by maxTimers
	now      float64  // virtual clock in ms: timers run at once, in the order of their due time
}

// pending is a queued timer or load callback.
type pending struct {
	id       int
	due      float64
	interval float64 // > 0 for setInterval: queued again after each run until cleared
	cleared  bool
	fn       goja.Value // a function, or code to evaluate
	this     goja.Value
	args     []goja.Value
}

// handle records err, an outcome of running JavaScript, and reports whether the page goes on.
// Script errors go on, as in a browser; an interrupt stops the page.
func (s *state) handle(err error) bool {
	if err == nil {
		return true
	}
	var ie *goja.InterruptedError
	if errors.As(err, &ie) {
		reason, _ := ie.Value().(string)
		if reason == "" {
			reason = StopBudget
		}
		s.res.Stop = reason
		return false
	}
	s.res.Errors = appendErr(s.res.Errors, err.Error())
	return true
}

// compile compiles one script block. goja's parser has panicked on some malformed input; that
// only loses the block, like a syntax error (the runtime has not been touched yet).
func compile(name, src string) (prg *goja.Program, err error) {
	defer func() {
		if x := recover(); x != nil {
			prg, err = nil, fmt.Errorf("SyntaxError: %s: parser panic in %s: %v", name, panicSite(), x)
		}
	}()
	return goja.Compile(name, src, false)
}

// panicSite names the function a recovered panic started in, for the log line (and for the
// fuzz test, which tells goja's panics from this package's). Call it from the deferred function.
func panicSite() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	panicking := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			panicking = true
		case panicking && !strings.HasPrefix(f.Function, "runtime."):
			return f.Function
		}
		if !more {
			return "unknown"
		}
	}
}

func appendErr(errs []string, msg string) []string {
	if len(errs) >= maxErrors {
		return errs
	}
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen] + "…"
	}
	return append(errs, msg)
}

// drainTimers runs the queued callbacks in the order of their due time on the virtual clock
// (then of queueing), until the queue is empty, a navigation is recorded or the page stops.
func (s *state) drainTimers() {
	for len(s.timers) > 0 && !s.navSet && s.res.Stop == "" {
		// queue keeps the queue sorted (it holds at most maxTimers entries).
		t := s.timers[0]
		s.timers = s.timers[1:]
		s.now = t.due
		s.running = t
		var err error
		if fn, ok := goja.AssertFunction(t.fn); ok {
			_, err = fn(t.this, t.args...)
		} else {
			// setTimeout("code", ms) evaluates the code, as browsers do.
			_, err = s.vm.RunString(t.fn.String())
		}
		s.running = nil
		s.handle(err)
		if t.interval > 0 && !t.cleared && s.queued < maxTimers {
			s.queued++
			t.due = s.now + t.interval
			s.insert(t)
		}
	}
}

// queue adds a callback due after delay ms of virtual time and returns its id; with repeat,
// the callback runs every delay ms (at least 1) until cleared.
func (s *state) queue(fn, this goja.Value, delay goja.Value, args []goja.Value, repeat bool) int {
	s.timerSeq++
	id := s.timerSeq
	if s.queued >= maxTimers || fn == nil || goja.IsUndefined(fn) || goja.IsNull(fn) {
		return id
	}
	s.queued++
	d := 0.0
	if delay != nil {
		d = delay.ToFloat()
	}
	if math.IsNaN(d) || d < 0 {
		d = 0
	}
	d = min(d, 24*3600*1000)
	t := &pending{id: id, due: s.now + d, fn: fn, this: this, args: append([]goja.Value(nil), args...)}
	if repeat {
		t.interval = max(d, 1)
	}
	s.insert(t)
	return id
}

// insert keeps the queue sorted by due time; equal due times run in queueing order.
func (s *state) insert(t *pending) {
	i := sort.Search(len(s.timers), func(i int) bool { return s.timers[i].due > t.due })
	s.timers = append(s.timers, nil)
	copy(s.timers[i+1:], s.timers[i:])
	s.timers[i] = t
}

func (s *state) clear(id goja.Value) {
	n := int(id.ToInteger())
	if s.running != nil && s.running.id == n {
		s.running.cleared = true
	}
	for i, t := range s.timers {
		if t.id == n {
			s.timers = append(s.timers[:i], s.timers[i+1:]...)
			return
		}
	}
}

// record keeps the first navigation. Targets that do not leave the document are not
// navigations to follow: empty ones, fragments, javascript: URLs, about:blank, and the strings
// "undefined" and "null" that a script produces when one of its lookups failed in the stub.
func (s *state) record(target string) {
	if s.navSet {
		return
	}
	t := strings.TrimSpace(target)
	lower := strings.ToLower(t)
	switch {
	case t == "", t == "undefined", t == "null", strings.HasPrefix(t, "#"),
		strings.HasPrefix(lower, "javascript:"), lower == "about:blank":
		return
	}
	s.nav, s.navSet = target, true
}

//go:embed prelude.js
var preludeSrc string

// prelude is compiled once; a goja.Program is immutable and may run in many runtimes.
var prelude = sync.OnceValues(func() (*goja.Program, error) {
	return goja.Compile("prelude.js", preludeSrc, true)
})

// install sets up the globals: the Go helpers, then prelude.js, which builds the browser stubs
// on them and hardens the built-ins.
func (s *state) install(pageURL *url.URL) error {
	vm := s.vm
	g := vm.GlobalObject()
	fn := func(name string, f func(goja.FunctionCall) goja.Value) {
		_ = g.Set(name, f)
	}
	fn("setTimeout", func(c goja.FunctionCall) goja.Value {
		return vm.ToValue(s.queue(c.Argument(0), g, c.Argument(1), tail(c.Arguments, 2), false))
	})
	// setInterval repeats on the virtual clock until cleared, each tick counted against
	// maxTimers: countdown pages decrement a counter once per tick and navigate at zero.
	fn("setInterval", func(c goja.FunctionCall) goja.Value {
		return vm.ToValue(s.queue(c.Argument(0), g, c.Argument(1), tail(c.Arguments, 2), true))
	})
	fn("setImmediate", func(c goja.FunctionCall) goja.Value {
		return vm.ToValue(s.queue(c.Argument(0), g, nil, tail(c.Arguments, 1), false))
	})
	fn("requestAnimationFrame", func(c goja.FunctionCall) goja.Value {
		return vm.ToValue(s.queue(c.Argument(0), g, vm.ToValue(16), []goja.Value{vm.ToValue(s.now + 16)}, false))
	})
	fn("queueMicrotask", func(c goja.FunctionCall) goja.Value {
		s.queue(c.Argument(0), g, nil, nil, false)
		return goja.Undefined()
	})
	clearFn := func(c goja.FunctionCall) goja.Value { s.clear(c.Argument(0)); return goja.Undefined() }
	for _, name := range []string{"clearTimeout", "clearInterval", "clearImmediate", "cancelAnimationFrame"} {
		fn(name, clearFn)
	}
	fn("atob", s.atob)
	fn("btoa", s.btoa)

	host := vm.NewObject()
	set := func(name string, v any) { _ = host.Set(name, v) }
	set("nav", func(c goja.FunctionCall) goja.Value {
		s.record(c.Argument(0).String())
		return goja.Undefined()
	})
	set("later", func(c goja.FunctionCall) goja.Value {
		// later(fn, this, arg): a load-time callback, queued like a zero-delay timer.
		return vm.ToValue(s.queue(c.Argument(0), c.Argument(1), nil, tail(c.Arguments, 2), false))
	})
	set("byId", func(c goja.FunctionCall) goja.Value { return vm.ToValue(s.page.byID(c.Argument(0).String())) })
	set("query", func(c goja.FunctionCall) goja.Value {
		idx := s.page.query(c.Argument(0).String(), int(c.Argument(1).ToInteger()), c.Argument(2).ToBoolean())
		items := make([]any, len(idx))
		for i, v := range idx {
			items[i] = v
		}
		return vm.NewArray(items...)
	})
	set("tag", func(c goja.FunctionCall) goja.Value { return vm.ToValue(strings.ToUpper(s.elem(c).Data)) })
	set("attrs", func(c goja.FunctionCall) goja.Value {
		n := s.elem(c)
		kv := make([]any, 0, 2*len(n.Attr))
		for _, a := range n.Attr {
			kv = append(kv, a.Key, a.Val)
		}
		return vm.NewArray(kv...)
	})
	set("text", func(c goja.FunctionCall) goja.Value { return vm.ToValue(textContent(s.elem(c))) })
	set("html", func(c goja.FunctionCall) goja.Value { return vm.ToValue(innerHTML(s.elem(c))) })
	set("root", s.page.root)
	set("head", s.page.head)
	set("body", s.page.body)
	set("title", s.page.title)
	set("bodyOnload", s.page.bodyOnload)
	set("loc", s.location(vm, pageURL))
	set("maxString", maxStringLength)
	set("maxArray", maxArrayLength)

	prg, err := prelude()
	if err != nil {
		return err
	}
	v, err := vm.RunProgram(prg)
	if err != nil {
		return err
	}
	setup, ok := goja.AssertFunction(v)
	if !ok {
		return errors.New("prelude is not a function")
	}
	hooks, err := setup(goja.Undefined(), host)
	if err != nil {
		return err
	}
	fire, ok := goja.AssertFunction(hooks.ToObject(vm).Get("fire"))
	if !ok {
		return errors.New("prelude returned no fire hook")
	}
	s.fire = fire
	return nil
}

// elem returns the element at index argument 0; the prelude only passes indexes Go gave it.
func (s *state) elem(c goja.FunctionCall) *html.Node {
	i := int(c.Argument(0).ToInteger())
	if i < 0 || i >= len(s.page.elems) {
		panic(s.vm.NewTypeError("sandbox: no such element"))
	}
	return s.page.elems[i]
}

// location returns the parts of the page URL that window.location reads.
func (s *state) location(vm *goja.Runtime, u *url.URL) *goja.Object {
	o := vm.NewObject()
	set := func(k, v string) { _ = o.Set(k, v) }
	if u == nil {
		u = &url.URL{}
	}
	href := u.String()
	if href == "" {
		href = "about:blank"
	}
	set("href", href)
	proto := ""
	if u.Scheme != "" {
		proto = u.Scheme + ":"
	}
	set("protocol", proto)
	set("host", u.Host)
	set("hostname", u.Hostname())
	set("port", u.Port())
	path := u.EscapedPath()
	if path == "" && u.Host != "" {
		path = "/"
	}
	set("pathname", path)
	search := ""
	if u.RawQuery != "" {
		search = "?" + u.RawQuery
	}
	set("search", search)
	hash := ""
	if u.Fragment != "" {
		hash = "#" + u.EscapedFragment()
	}
	set("hash", hash)
	origin := "null"
	if u.Scheme != "" && u.Host != "" {
		origin = u.Scheme + "://" + u.Host
	}
	set("origin", origin)
	return o
}

func tail(args []goja.Value, from int) []goja.Value {
	if len(args) <= from {
		return nil
	}
	return args[from:]
}

// atob decodes base64 into a "binary string" (one code unit per byte), as browsers do:
// ASCII whitespace is ignored, padding is optional, anything else invalid throws.
func (s *state) atob(c goja.FunctionCall) goja.Value {
	in := c.Argument(0).String()
	if len(in) > 2*maxStringLength {
		panic(s.vm.NewTypeError("atob: input too long"))
	}
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\f', '\r':
			return -1
		}
		return r
	}, in)
	if len(clean)%4 == 0 {
		clean = strings.TrimSuffix(strings.TrimSuffix(clean, "="), "=")
	}
	if len(clean)%4 == 1 {
		panic(s.vm.NewTypeError("atob: the string to be decoded is not correctly encoded"))
	}
	b, err := base64.RawStdEncoding.DecodeString(clean)
	if err != nil {
		panic(s.vm.NewTypeError("atob: the string to be decoded is not correctly encoded"))
	}
	return s.vm.ToValue(latin1(b))
}

// btoa encodes a string of code units up to 0xFF in base64, throwing on any other, as browsers do.
func (s *state) btoa(c goja.FunctionCall) goja.Value {
	in := c.Argument(0).String()
	if len(in) > maxStringLength {
		panic(s.vm.NewTypeError("btoa: input too long"))
	}
	b := make([]byte, 0, len(in))
	for _, r := range in {
		if r > 0xFF {
			panic(s.vm.NewTypeError("btoa: the string to be encoded contains characters outside of the Latin1 range"))
		}
		b = append(b, byte(r))
	}
	return s.vm.ToValue(base64.StdEncoding.EncodeToString(b))
}

// latin1 maps each byte to the code point of the same value.
func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}
