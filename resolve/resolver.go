package resolve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/publicsuffix"

	"github.com/linkhop/linkhop/resolve/sandbox"
)

// Limits and defaults of a resolve (docs/configuration.md#variables).
const (
	DefaultMaxHops            = 10
	HardMaxHops               = 20
	DefaultTimeout            = 20 * time.Second
	DefaultPerHostConcurrency = 8
	DefaultSlotWait           = 5 * time.Second
	// DefaultFormWaitMax is RESOLVE_FORM_WAIT_MAX: the longest countdown an adlinkfly page may
	// ask for; a longer one fails the resolve.
	DefaultFormWaitMax = 15 * time.Second
	// DefaultParkMin is the shortest countdown a parking caller (Service) parks rather than
	// sleeps through: below it, rescheduling costs more than it frees.
	DefaultParkMin = time.Second
	// MaxBodyBytes is how much of an HTML body is read, counted after decompression (the
	// transport's transparent gunzip), so gzip bombs stop at the cap too.
	MaxBodyBytes = 512 << 10
	// drainBytes and defaultDrainTime bound what is read and thrown away of a body linkhop has no use
	// for (a redirect's, an error page's, the rest past MaxBodyBytes): a connection goes back to
	// the pool only once its body was read to the end, and a longer or slower rest costs more
	// than a new connection, so that connection is closed instead.
	drainBytes       = 64 << 10
	defaultDrainTime = 250 * time.Millisecond
	// maxHopURLLength keeps absurd Location values out of job records.
	maxHopURLLength = 8 << 10
)

// DefaultUserAgent names the service and reads as a browser: some shorteners (t.co) answer
// browsers differently from tools, and linkhop wants the browser's answer, honestly labelled.
const DefaultUserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " +
	"Chrome/126.0 Safari/537.36 linkhop/1.0 (+https://github.com/linkhop/linkhop)"

// Hop is one URL reached while resolving, in the JSON shape of the job's hops[] entries.
type Hop struct {
	URL string `json:"url"`
	// Status is the HTTP status received when this URL was fetched (or, for a form hop, posted
	// to), nil when it was not fetched (a decoded wrapper, a provider rule's rewrite, the final
	// target of a provider link).
	Status *int   `json:"status"`
	Kind   string `json:"kind"` // start|http|refresh|meta|js|param|provider|form
}

// Result is a successful resolve.
type Result struct {
	URL       string // the submitted URL
	TargetURL string // the destination: the first non-provider URL, or in any-host mode the final page
	// Provider is the provider of the submitted URL; the zero Provider for an any-host link.
	Provider Provider
	Hops     []Hop // from the submitted URL (kind start) to TargetURL (the last entry)
	// Cached is true when the Service answered from its cache rather than resolving.
	Cached bool
	// Duration is how long the upstream resolve took (the original one, for cached results).
	Duration time.Duration
}

// ScriptFunc runs a provider page's inline scripts and returns the first navigation they make,
// as written (the walk resolves it against the page URL). It must honour its own time budget
// and never panic; ok=false means the page has no computed target.
type ScriptFunc func(ctx context.Context, body []byte, page *url.URL) (target string, ok bool)

// Options configures a Resolver. The zero value of each field means its default.
type Options struct {
	Guard              GuardOptions
	Registry           *Registry     // nil: the built-in providers
	MaxHops            int           // default 10, hard cap 20
	Timeout            time.Duration // per attempt, default 20s; countdowns waited out add to it
	UserAgent          string        // default DefaultUserAgent
	PerHostConcurrency int           // politeness cap per provider, per process; default 8
	// SlotWait is how long a resolve waits for a politeness slot before giving up with a
	// throttled *Error (ErrProviderBusy), so a slow provider's backlog leaves worker slots to
	// others. Default 5s.
	SlotWait time.Duration
	// Rules are provider rules by provider ID; nil means BuiltinRules(). A non-nil map replaces
	// the built-ins, so extend a copy of BuiltinRules() to keep them.
	Rules map[string]Rule
	// FormWaitMax is RESOLVE_FORM_WAIT_MAX. Default DefaultFormWaitMax.
	FormWaitMax time.Duration
	// ParkMin is the shortest countdown that Park parks instead of sleeping through. Default
	// DefaultParkMin; negative: never park.
	ParkMin time.Duration
	// AnyHost is RESOLVE_ANY_HOST: links on any host are resolved, not only providers' links.
	AnyHost bool
	// Script runs provider pages' scripts when no literal target is found; nil: the sandbox
	// (package resolve/sandbox) with its default budget. NoScript turns scripts off.
	Script   ScriptFunc
	NoScript bool
	// IdleConnsPerHost is how many connections to one host the resolver's pool opens and keeps
	// for the next resolves (docs/resolving.md#connections); a request beyond them waits for
	// one to come free. Default PerHostConcurrency. The worker passes WORKER_CONCURRENCY,
	// which bounds the requests it has in flight, so none waits there.
	IdleConnsPerHost int
	// RootCAs are the roots provider certificates are verified against; nil: the system's.
	// Tests and the benchmark set their local test CA.
	RootCAs *x509.CertPool
}

// Sandbox is the default ScriptFunc: package sandbox with its 100 ms budget and 256 KiB cap.
func Sandbox(ctx context.Context, body []byte, page *url.URL) (string, bool) {
	return sandbox.Run(ctx, body, page, sandbox.Options{})
}

// Resolver follows links hop by hop. It is safe for concurrent use; one Resolver per process
// shares the politeness slots and the connection pool: every walk has its own http.Client and
// cookie jar over the one transport, so resolves reuse each other's connections (and their
// TLS sessions) but never each other's cookies.
type Resolver struct {
	registry    *Registry
	transport   *http.Transport
	maxHops     int
	timeout     time.Duration
	userAgent   string
	perHost     int
	slotWait    time.Duration
	rules       map[string]Rule
	formWaitMax time.Duration
	parkMin     time.Duration
	anyHost     bool
	script      ScriptFunc
	// scriptSlots bounds the sandboxes running at once in this process: they are CPU-bound,
	// and a hostile script may build a few hundred MB of strings within its budget, so running
	// more than the cores can serve only adds memory and misses budgets.
	scriptSlots chan struct{}
	// drainTime bounds the time spent reading away an unused body (defaultDrainTime; tests of
	// connection reuse on a loaded machine lengthen it).
	drainTime time.Duration

	mu    sync.Mutex
	slots map[string]chan struct{} // provider ID -> semaphore
}

// New returns a Resolver with opts, defaults filled in.
func New(opts Options) *Resolver {
	r := &Resolver{
		registry:    opts.Registry,
		maxHops:     opts.MaxHops,
		timeout:     opts.Timeout,
		userAgent:   opts.UserAgent,
		perHost:     opts.PerHostConcurrency,
		slotWait:    opts.SlotWait,
		rules:       opts.Rules,
		formWaitMax: opts.FormWaitMax,
		parkMin:     opts.ParkMin,
		anyHost:     opts.AnyHost,
		script:      opts.Script,
		slots:       map[string]chan struct{}{},
	}
	if r.registry == nil {
		r.registry, _ = NewRegistry(nil) // built-ins only: cannot fail
	}
	if r.maxHops <= 0 {
		r.maxHops = DefaultMaxHops
	}
	r.maxHops = min(r.maxHops, HardMaxHops)
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.userAgent == "" {
		r.userAgent = DefaultUserAgent
	}
	if r.perHost <= 0 {
		r.perHost = DefaultPerHostConcurrency
	}
	if r.slotWait <= 0 {
		r.slotWait = DefaultSlotWait
	}
	if r.rules == nil {
		r.rules = BuiltinRules()
	}
	if r.formWaitMax <= 0 {
		r.formWaitMax = DefaultFormWaitMax
	}
	if r.parkMin == 0 {
		r.parkMin = DefaultParkMin
	}
	switch {
	case opts.NoScript:
		r.script = nil
	case r.script == nil:
		r.script = Sandbox
	}
	r.scriptSlots = make(chan struct{}, max(runtime.GOMAXPROCS(0), 1))
	r.transport = providerTransport(opts, r.perHost)
	r.drainTime = defaultDrainTime
	return r
}

// providerTransport is NewTransport sized for provider traffic: with fewer idle connections
// per host than requests in flight to it, every resolve beyond them would pay DNS, TCP and a
// TLS handshake again. The same number caps the connections per host: without a cap, a
// request that finds no idle connection dials one even when another is about to come free,
// and a busy host collects a few more connections than requests. The TLS config keeps
// verification (only the roots can be changed); ForceAttemptHTTP2 keeps HTTP/2 on despite the
// custom dialer and TLS config, so a provider that offers it is served over one multiplexed
// connection.
func providerTransport(opts Options, perHost int) *http.Transport {
	t := NewTransport(opts.Guard)
	idle := opts.IdleConnsPerHost
	if idle <= 0 {
		idle = perHost
	}
	t.MaxIdleConnsPerHost = idle
	t.MaxConnsPerHost = idle
	t.MaxIdleConns = max(t.MaxIdleConns, 2*idle)
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: opts.RootCAs}
	return t
}

// Registry returns the provider registry the resolver uses.
func (r *Resolver) Registry() *Registry { return r.registry }

// Timeout returns the per-attempt time budget.
func (r *Resolver) Timeout() time.Duration { return r.timeout }

// AnyHost reports whether links on any host are resolved (RESOLVE_ANY_HOST).
func (r *Resolver) AnyHost() bool { return r.anyHost }

// Close releases idle connections.
func (r *Resolver) Close() { r.transport.CloseIdleConnections() }

// Resolve follows rawURL to its target. On failure it returns an *Error whose Code is one of
// the outcomes of docs/resolving.md#outcomes and whose Hops are those reached so far. A
// countdown is waited out in place (see Park for the alternative).
func (r *Resolver) Resolve(ctx context.Context, rawURL string) (Result, error) {
	return r.resolve(ctx, rawURL, false)
}

// Park is Resolve for callers that can reschedule work: an adlinkfly countdown of at least
// ParkMin is not slept through; Park returns a *Parked error instead, holding what Resume needs
// to post the form once the countdown is over. The job's worker slot and the provider's
// politeness slot are free in the meantime.
func (r *Resolver) Park(ctx context.Context, rawURL string) (Result, error) {
	return r.resolve(ctx, rawURL, r.parkMin > 0)
}

// checkSubmitted returns the parsed URL and its provider (ok=false for an any-host link), or
// the unsupported_link error of a URL the resolver will not take.
func (r *Resolver) checkSubmitted(rawURL string) (*url.URL, Provider, bool, *Error) {
	hops := []Hop{{URL: rawURL, Kind: KindStart}}
	u, err := parseSubmitted(rawURL)
	if err != nil {
		return nil, Provider{}, false, &Error{Code: CodeUnsupportedLink, Detail: err.Error(), Cause: err, Hops: hops}
	}
	prov, ok := r.registry.Lookup(u.Host)
	if !ok && !r.anyHost {
		return nil, Provider{}, false, &Error{Code: CodeUnsupportedLink, Detail: fmt.Sprintf("host %q is not a provider host", u.Hostname()), Cause: ErrNotProvider, Hops: hops}
	}
	return u, prov, ok, nil
}

func (r *Resolver) resolve(ctx context.Context, rawURL string, park bool) (Result, error) {
	began := time.Now()
	u, prov, isProv, cerr := r.checkSubmitted(rawURL)
	if cerr != nil {
		return Result{}, cerr
	}
	// The politeness slot is per provider; any-host links share one slot set per host.
	release, aerr := r.acquire(ctx, slotID(prov, isProv, u))
	if aerr != nil {
		aerr.Hops = []Hop{{URL: rawURL, Kind: KindStart}}
		return Result{}, aerr
	}
	defer release()

	w := r.newWalk(ctx, []Hop{{URL: rawURL, Kind: KindStart}}, !isProv, park)
	target, rerr := w.run(u)
	return w.result(rawURL, prov, target, rerr, began)
}

// slotID is the politeness-slot key of a submitted URL.
func slotID(p Provider, isProv bool, u *url.URL) string {
	if isProv {
		return p.ID
	}
	return "host:" + stripWWW(canonicalHost(u.Hostname()))
}

func (r *Resolver) newWalk(ctx context.Context, hops []Hop, anyHost, park bool) *walk {
	w := &walk{r: r, parent: ctx, hops: hops, seen: map[string]struct{}{}, anyHost: anyHost, park: park,
		deadline: time.Now().Add(r.timeout), traced: len(hops) - 1, times: []time.Time{time.Now()}}
	inner, _ := cookiejar.New(&cookiejar.Options{PublicSuffixList: publicsuffix.List})
	w.jar = &recordingJar{jar: inner}
	w.client = &http.Client{
		Transport:     r.transport,
		Jar:           w.jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return w
}

// result turns the end of a walk into Resolve's answer.
func (w *walk) result(rawURL string, prov Provider, target *url.URL, rerr *Error, began time.Time) (Result, error) {
	w.traceHops()
	if rerr != nil {
		if rerr.parked != nil {
			return Result{}, rerr.parked
		}
		rerr.Hops = w.hops
		return Result{}, rerr
	}
	return Result{URL: rawURL, TargetURL: target.String(), Provider: prov, Hops: w.hops, Duration: time.Since(began)}, nil
}

// acquire takes a politeness slot of provider id, waiting at most slotWait.
func (r *Resolver) acquire(ctx context.Context, id string) (func(), *Error) {
	r.mu.Lock()
	sem, ok := r.slots[id]
	if !ok {
		sem = make(chan struct{}, r.perHost)
		r.slots[id] = sem
	}
	r.mu.Unlock()
	release := func() { <-sem }
	select {
	case sem <- struct{}{}:
		return release, nil
	default:
	}
	t := time.NewTimer(r.slotWait)
	defer t.Stop()
	select {
	case sem <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, &Error{
			Code: CodeProviderDown, Transient: true, Throttled: true, Cause: ErrProviderBusy,
			Detail:     fmt.Sprintf("provider %s is busy (%d resolves in flight)", id, r.perHost),
			RetryAfter: Backoff(r.slotWait, 1),
		}
	case <-ctx.Done():
		return nil, cancelled(ctx.Err())
	}
}

func cancelled(err error) *Error {
	return &Error{Code: CodeProviderDown, Transient: true, Detail: "resolve cancelled", Cause: err}
}

// walk is the state of one resolve attempt.
type walk struct {
	r      *Resolver
	parent context.Context // the caller's context, to tell its cancellation from our timeout
	// deadline ends the attempt: RESOLVE_TIMEOUT from the start, pushed back by countdowns
	// waited out in place.
	deadline time.Time
	client   *http.Client
	jar      *recordingJar
	hops     []Hop
	seen     map[string]struct{} // URL + cookies sent, per fetch: a repeat is a loop
	anyHost  bool                // non-provider URLs are fetched too (an any-host link)
	park     bool                // a long countdown parks the walk (Park) instead of sleeping
	// traced is the first hop this run reached (earlier ones came with a parked walk);
	// times[i] is when hop traced+i was reached, for its span.
	traced int
	times  []time.Time
}

// traceHops records a span per hop this run reached, under the caller's span, when tracing
// is on (docs/operations.md#tracing): its kind, its status and its host — never its path or
// query, which can carry a user's data.
func (w *walk) traceHops() {
	parent := trace.SpanFromContext(w.parent)
	if !parent.IsRecording() {
		return
	}
	tracer := parent.TracerProvider().Tracer(traceScope)
	end := time.Now()
	for i := w.traced; i < len(w.hops); i++ {
		h := w.hops[i]
		k := i - w.traced
		stop := end
		if k+1 < len(w.times) {
			stop = w.times[k+1]
		}
		attrs := []attribute.KeyValue{attribute.Int("linkhop.hop.index", i), attribute.String("linkhop.hop.kind", h.Kind)}
		if u, err := url.Parse(h.URL); err == nil {
			attrs = append(attrs, attribute.String("server.address", u.Hostname()))
		}
		if h.Status != nil {
			attrs = append(attrs, attribute.Int("http.response.status_code", *h.Status))
		}
		_, span := tracer.Start(w.parent, "hop "+h.Kind, trace.WithTimestamp(w.times[k]), trace.WithAttributes(attrs...))
		span.End(trace.WithTimestamp(stop))
	}
}

// traceScope names the resolver's spans.
const traceScope = "github.com/linkhop/linkhop/resolve"

// ctx is the context of one request of the walk.
func (w *walk) ctx() (context.Context, context.CancelFunc) {
	return context.WithDeadline(w.parent, w.deadline)
}

func (w *walk) fail(format string, args ...any) *Error {
	return &Error{Code: CodeResolveFailed, Detail: fmt.Sprintf(format, args...)}
}

// add appends the hop to next, enforcing the hop budget and the URL rules for every hop kind.
func (w *walk) add(next *url.URL, kind string) *Error {
	if err := checkFetchable(next); err != nil {
		scheme := next.Scheme
		if scheme == "" {
			scheme = "(none)"
		}
		return &Error{Code: CodeResolveFailed, Cause: err,
			Detail: fmt.Sprintf("hop %d leads to a URL that is not http(s) (scheme %s)", len(w.hops), scheme)}
	}
	if n := len(w.hops) - 1; n >= w.r.maxHops {
		return w.fail("more than %d hops (RESOLVE_MAX_HOPS)", w.r.maxHops)
	}
	s := next.String()
	if len(s) > maxHopURLLength {
		return w.fail("hop %d leads to a URL longer than %d bytes", len(w.hops), maxHopURLLength)
	}
	w.hops = append(w.hops, Hop{URL: s, Kind: kind})
	w.times = append(w.times, time.Now())
	return nil
}

func (w *walk) run(cur *url.URL) (*url.URL, *Error) {
	for {
		// Known wrappers are decoded wherever they appear, without a request.
		if next, ok := decodeWrapper(cur); ok {
			if err := w.add(next, KindParam); err != nil {
				return nil, err
			}
			cur = next
			continue
		}
		prov, isProv := w.r.registry.Lookup(cur.Host)
		if !isProv && !w.anyHost {
			return cur, nil // the first non-provider URL is the target; it is not fetched
		}
		var rule Rule
		if isProv {
			rule = w.r.rules[prov.ID]
		}
		if rule != nil {
			next, ok, err := rule.Rewrite(cur)
			if err != nil {
				return nil, ruleError(prov, err)
			}
			if ok && next != nil {
				if err := w.add(next, KindProvider); err != nil {
					return nil, err
				}
				cur = next
				continue
			}
		}
		var (
			next *url.URL
			kind string
			err  *Error
		)
		if isProv {
			next, kind, err = w.fetchProvider(cur, prov, rule)
		} else {
			next, kind, err = w.fetchAny(cur)
		}
		if err != nil {
			return nil, err
		}
		if next == nil {
			return cur, nil // any-host: a page with no further hop is the destination
		}
		if err := w.step(cur, next, kind); err != nil {
			return nil, err
		}
		cur = next
	}
}

// step records the hop from cur to next.
func (w *walk) step(cur, next *url.URL, kind string) *Error {
	if kind == KindHTTP && next.Fragment == "" && cur.Fragment != "" {
		// RFC 9110 §10.2.2: a Location without a fragment inherits the request's.
		next.Fragment, next.RawFragment = cur.Fragment, cur.RawFragment
	}
	return w.add(next, kind)
}

func ruleError(p Provider, err error) *Error {
	var re *Error
	if errors.As(err, &re) {
		return re
	}
	return &Error{Code: CodeResolveFailed, Detail: fmt.Sprintf("%s: %v", p.Label, err), Cause: err}
}

// response is a fetched page: its status and headers, and its HTML body when it has one.
type response struct {
	status  int
	header  http.Header
	body    []byte
	isHTML  bool
	readErr error // the body was cut short; body holds what arrived
}

// get requests cur, records its status on the current hop and reads an HTML body. A 3xx with
// Location comes back as next (kind http); statuses that end the walk come back as an error.
func (w *walk) get(cur *url.URL) (*response, *url.URL, *Error) {
	key := normalized(cur)
	for _, c := range w.jar.Cookies(cur) {
		key += "\x00" + c.Name + "=" + c.Value
	}
	if _, dup := w.seen[key]; dup {
		return nil, nil, w.fail("redirect loop: %s was reached twice", cur.Redacted())
	}
	w.seen[key] = struct{}{}

	ctx, cancel := w.ctx()
	defer cancel()
	reqURL := *cur
	reqURL.Fragment, reqURL.RawFragment = "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reqURL.String(), nil)
	if err != nil {
		return nil, nil, w.fail("cannot request %s: %v", cur.Redacted(), err)
	}
	req.Header.Set("User-Agent", w.r.userAgent)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	req.Header.Set("Accept-Language", "en-US,en;q=0.9")
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, nil, w.transportError(ctx, cur, err)
	}
	defer drainClose(resp, cancel, w.r.drainTime)
	status := resp.StatusCode
	w.hops[len(w.hops)-1].Status = &status

	switch {
	case status >= 300 && status < 400 && resp.Header.Get("Location") != "":
		next, err := parseLoose(cur, resp.Header.Get("Location"))
		if err != nil {
			return nil, nil, w.fail("%s answered %d with an unparsable Location", cur.Host, status)
		}
		return nil, next, nil
	case status == http.StatusNotFound || status == http.StatusGone:
		return nil, nil, &Error{Code: CodeLinkRemoved, Detail: fmt.Sprintf("%s answered %d %s", cur.Host, status, http.StatusText(status))}
	case resp.Header.Get("Cf-Mitigated") == "challenge":
		return nil, nil, w.fail("%s answered with a Cloudflare bot challenge (a captcha gate); linkhop does not solve captchas", cur.Host)
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, nil, &Error{Code: CodeProviderDown, Transient: true, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
			Detail: fmt.Sprintf("%s answered %d %s", cur.Host, status, http.StatusText(status))}
	case status >= 400:
		return nil, nil, w.fail("%s answered %d %s", cur.Host, status, http.StatusText(status))
	}
	out := &response{status: status, header: resp.Header}
	out.body, out.isHTML, out.readErr = readHTML(resp)
	if out.readErr != nil && len(out.body) == 0 {
		return nil, nil, w.transportError(ctx, cur, out.readErr)
	}
	return out, nil, nil
}

// refreshTarget is the Refresh header's target, when it leads elsewhere.
func refreshTarget(cur *url.URL, h http.Header) (*url.URL, bool) {
	ref := h.Get("Refresh")
	if ref == "" {
		return nil, false
	}
	t, ok := parseRefresh(ref)
	if !ok || t == "" {
		return nil, false
	}
	next, err := parseLoose(cur, t)
	if err != nil || sameDocument(next, cur) {
		return nil, false
	}
	return next, true
}

// literalTarget is the first next hop written literally in an HTML page.
func literalTarget(body []byte, cur *url.URL) (*url.URL, string, bool) {
	for _, h := range extractHTML(body, cur) {
		if !sameDocument(h.url, cur) {
			return h.url, h.kind, true
		}
	}
	return nil, "", false
}

// fetchProvider requests a provider's URL and works out the next hop from the answer: the
// generic hop kinds, the provider's rule and family, and its computed JavaScript target.
func (w *walk) fetchProvider(cur *url.URL, prov Provider, rule Rule) (*url.URL, string, *Error) {
	resp, next, err := w.get(cur)
	if err != nil {
		return nil, "", err
	}
	if next != nil {
		return next, KindHTTP, nil
	}
	if next, ok := refreshTarget(cur, resp.header); ok {
		return next, KindRefresh, nil
	}
	if rule != nil && resp.status < 300 {
		next, ok, err := rule.Extract(Page{URL: cur, Status: resp.status, Header: resp.header, Body: resp.body})
		if err != nil {
			return nil, "", ruleError(prov, err)
		}
		if ok && next != nil {
			return next, KindProvider, nil
		}
	}
	if !resp.isHTML {
		ct := resp.header.Get("Content-Type")
		if ct == "" {
			ct = "an unknown type"
		}
		return nil, "", w.fail("%s answered %d with %s and no redirect: no findable target", cur.Host, resp.status, ct)
	}
	if name, ok := captchaGate(resp.body); ok {
		return nil, "", w.fail("%s shows a captcha gate (%s); linkhop does not solve captchas", cur.Host, name)
	}
	if next, kind, ok, err := w.family(cur, prov, resp.body); err != nil || ok {
		return next, kind, err
	}
	if next, kind, ok := literalTarget(resp.body, cur); ok {
		return next, kind, nil
	}
	if resp.readErr != nil {
		// The body was cut short (a timeout, a reset) before anything useful arrived.
		ctx, cancel := w.ctx()
		defer cancel()
		return nil, "", w.transportError(ctx, cur, resp.readErr)
	}
	if next, ok := w.computed(cur, resp.body); ok {
		return next, KindJS, nil
	}
	return nil, "", w.fail("%s answered %d with a page that has no findable target (no redirect, refresh, location assignment or computed navigation)", cur.Host, resp.status)
}

// computed runs the page's scripts in the sandbox, for a navigation no literal shows.
func (w *walk) computed(cur *url.URL, body []byte) (*url.URL, bool) {
	if w.r.script == nil {
		return nil, false
	}
	ctx, cancel := w.ctx()
	defer cancel()
	select {
	case w.r.scriptSlots <- struct{}{}:
		defer func() { <-w.r.scriptSlots }()
	case <-ctx.Done():
		return nil, false
	}
	raw, ok := w.r.script(ctx, body, cur)
	if !ok {
		return nil, false
	}
	next, err := parseLoose(cur, raw)
	if err != nil || sameDocument(next, cur) {
		return nil, false
	}
	return next, true
}

// fetchAny requests a non-provider URL of an any-host link. next is nil when the page has no
// further hop: it is the destination (docs/resolving.md#any-host-mode).
func (w *walk) fetchAny(cur *url.URL) (*url.URL, string, *Error) {
	resp, next, err := w.get(cur)
	if err != nil {
		return nil, "", err
	}
	if next != nil {
		return next, KindHTTP, nil
	}
	if next, ok := refreshTarget(cur, resp.header); ok {
		return next, KindRefresh, nil
	}
	if resp.isHTML && resp.status < 300 {
		if next, kind, ok := literalTarget(resp.body, cur); ok {
			return next, kind, nil
		}
	}
	return nil, "", nil
}

// sameDocument reports whether a and b differ at most in their fragments, so a page "refreshing"
// to itself is not taken for a hop.
func sameDocument(a, b *url.URL) bool {
	x, y := *a, *b
	x.Fragment, x.RawFragment, y.Fragment, y.RawFragment = "", "", "", ""
	return normalized(&x) == normalized(&y)
}

// drainClose drains what is left of resp's body, at most drainBytes within d, and closes it,
// so that its connection goes back to the pool. cancel is the request's: it cuts a slow rest
// short (the connection is then closed, not pooled).
func drainClose(resp *http.Response, cancel context.CancelFunc, d time.Duration) {
	t := time.AfterFunc(d, cancel)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
	t.Stop()
	_ = resp.Body.Close()
}

// readHTML reads up to MaxBodyBytes of an HTML body. Bodies of other types are not read.
func readHTML(resp *http.Response) ([]byte, bool, error) {
	ct := resp.Header.Get("Content-Type")
	if ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "text/html" && mt != "application/xhtml+xml") {
			return nil, false, nil
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if ct == "" && len(body) > 0 && !strings.HasPrefix(http.DetectContentType(body), "text/html") {
		return nil, false, nil
	}
	// With a read error (a cut connection, the deadline) the bytes read so far are still worth
	// looking at: most redirect pages put their target in the first few KiB.
	return body, true, err
}

// transportError classifies a failed request: the guard's refusals are final, the caller's
// cancellation is reported as such, everything else (timeouts, refused connections, resets, DNS,
// TLS) is transient.
func (w *walk) transportError(ctx context.Context, cur *url.URL, err error) *Error {
	switch {
	case errors.Is(err, ErrBlockedAddress), errors.Is(err, ErrBlockedPort):
		return &Error{Code: CodeResolveFailed, Cause: err, Detail: fmt.Sprintf("%s: blocked address: %s", cur.Host, guardReason(err))}
	case w.parent.Err() != nil:
		return cancelled(w.parent.Err())
	case ctx.Err() != nil:
		return &Error{Code: CodeProviderDown, Transient: true, Cause: ctx.Err(),
			Detail: fmt.Sprintf("timed out after %s (RESOLVE_TIMEOUT) waiting for %s", w.r.timeout, cur.Host)}
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() {
		return &Error{Code: CodeProviderDown, Transient: true, Cause: err, Detail: fmt.Sprintf("%s timed out", cur.Host)}
	}
	return &Error{Code: CodeProviderDown, Transient: true, Cause: err, Detail: fmt.Sprintf("connection to %s failed: %s", cur.Host, rootCause(err))}
}

// guardReason is the guard's own message ("address is blocked by the guard: 127.0.0.2"),
// without the url.Error and net.OpError wrapping around it.
func guardReason(err error) string {
	msg := err.Error()
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e == ErrBlockedAddress || e == ErrBlockedPort { //nolint:errorlint // walks the chain itself, to stop at the guard's own error
			break
		}
		msg = e.Error()
	}
	return msg
}

// rootCause drops the url.Error and net.OpError wrapping, which repeat the URL and address.
func rootCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// retryAfter parses a Retry-After value (seconds or an HTTP date), capped at MaxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, int64(MaxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}
