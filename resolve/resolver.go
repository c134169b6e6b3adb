package resolve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Limits and defaults of a resolve (docs/configuration.md#variables, docs/resolving.md#limits).
const (
	DefaultMaxHops            = 10
	HardMaxHops               = 20
	DefaultTimeout            = 20 * time.Second
	DefaultPerHostConcurrency = 8
	DefaultSlotWait           = 5 * time.Second
	// MaxBodyBytes is how much of an HTML body is read, counted after decompression (the
	// transport's transparent gunzip), so gzip bombs stop at the cap too.
	MaxBodyBytes = 512 << 10
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
	// Status is the HTTP status received when this URL was fetched, nil when it was not fetched
	// (a decoded wrapper, a provider rule's rewrite, the final target).
	Status *int   `json:"status"`
	Kind   string `json:"kind"` // start|http|refresh|meta|js|param|provider
}

// Result is a successful resolve.
type Result struct {
	URL       string   // the submitted URL
	TargetURL string   // the first URL whose host is not a provider host (never fetched)
	Provider  Provider // provider of the submitted URL
	Hops      []Hop    // from the submitted URL (kind start) to TargetURL (the last entry)
	// Cached is true when the Service answered from its cache rather than resolving.
	Cached bool
	// Duration is how long the upstream resolve took (the original one, for cached results).
	Duration time.Duration
}

// Options configures a Resolver. The zero value of each field means its default.
type Options struct {
	Guard              GuardOptions
	Registry           *Registry     // nil: the built-in providers
	MaxHops            int           // default 10, hard cap 20
	Timeout            time.Duration // per attempt, default 20s
	UserAgent          string        // default DefaultUserAgent
	PerHostConcurrency int           // politeness cap per provider, per process; default 8
	// SlotWait is how long a resolve waits for a politeness slot before giving up with a
	// throttled *Error (ErrProviderBusy), so a slow provider's backlog leaves worker slots to
	// others. Default 5s.
	SlotWait time.Duration
	// Rules are provider rules by provider ID; nil means BuiltinRules(). A non-nil map replaces
	// the built-ins, so extend a copy of BuiltinRules() to keep them.
	Rules map[string]Rule
}

// Resolver follows links hop by hop. It is safe for concurrent use; one Resolver per process
// shares the politeness slots and the connection pool.
type Resolver struct {
	registry  *Registry
	transport *http.Transport
	maxHops   int
	timeout   time.Duration
	userAgent string
	perHost   int
	slotWait  time.Duration
	rules     map[string]Rule

	mu    sync.Mutex
	slots map[string]chan struct{} // provider ID -> semaphore
}

// New returns a Resolver with opts, defaults filled in.
func New(opts Options) *Resolver {
	r := &Resolver{
		registry:  opts.Registry,
		transport: NewTransport(opts.Guard),
		maxHops:   opts.MaxHops,
		timeout:   opts.Timeout,
		userAgent: opts.UserAgent,
		perHost:   opts.PerHostConcurrency,
		slotWait:  opts.SlotWait,
		rules:     opts.Rules,
		slots:     map[string]chan struct{}{},
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
	return r
}

// Registry returns the provider registry the resolver uses.
func (r *Resolver) Registry() *Registry { return r.registry }

// Timeout returns the per-attempt time budget.
func (r *Resolver) Timeout() time.Duration { return r.timeout }

// Close releases idle connections.
func (r *Resolver) Close() { r.transport.CloseIdleConnections() }

// Resolve follows rawURL to its target. On failure it returns an *Error whose Code is one of
// the outcomes of docs/resolving.md#outcomes and whose Hops are those reached so far.
func (r *Resolver) Resolve(ctx context.Context, rawURL string) (Result, error) {
	began := time.Now()
	hops := []Hop{{URL: rawURL, Kind: KindStart}}
	u, err := parseSubmitted(rawURL)
	if err != nil {
		return Result{}, &Error{Code: CodeUnsupportedLink, Detail: err.Error(), Cause: err, Hops: hops}
	}
	prov, ok := r.registry.Lookup(u.Host)
	if !ok {
		return Result{}, &Error{Code: CodeUnsupportedLink, Detail: fmt.Sprintf("host %q is not a provider host", u.Hostname()), Cause: ErrNotProvider, Hops: hops}
	}

	release, aerr := r.acquire(ctx, prov.ID)
	if aerr != nil {
		aerr.Hops = hops
		return Result{}, aerr
	}
	defer release()

	actx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	w := &walk{r: r, parent: ctx, hops: hops, seen: map[string]struct{}{}}
	w.jar, _ = cookiejar.New(&cookiejar.Options{PublicSuffixList: publicsuffix.List})
	w.client = &http.Client{
		Transport:     r.transport,
		Jar:           w.jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	target, rerr := w.run(actx, u)
	if rerr != nil {
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
	client *http.Client
	jar    http.CookieJar
	hops   []Hop
	seen   map[string]struct{} // URL + cookies sent, per fetch: a repeat is a loop
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
	return nil
}

func (w *walk) run(ctx context.Context, cur *url.URL) (*url.URL, *Error) {
	for {
		// Known wrappers are decoded wherever they appear, without a request.
		if next, ok := decodeWrapper(cur); ok {
			if err := w.add(next, KindParam); err != nil {
				return nil, err
			}
			cur = next
			continue
		}
		prov, ok := w.r.registry.Lookup(cur.Host)
		if !ok {
			return cur, nil // the first non-provider URL is the target; it is not fetched
		}
		rule := w.r.rules[prov.ID]
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
		next, kind, err := w.fetch(ctx, cur, prov, rule)
		if err != nil {
			return nil, err
		}
		if kind == KindHTTP && next.Fragment == "" && cur.Fragment != "" {
			// RFC 9110 §10.2.2: a Location without a fragment inherits the request's.
			next.Fragment, next.RawFragment = cur.Fragment, cur.RawFragment
		}
		if err := w.add(next, kind); err != nil {
			return nil, err
		}
		cur = next
	}
}

func ruleError(p Provider, err error) *Error {
	var re *Error
	if errors.As(err, &re) {
		return re
	}
	return &Error{Code: CodeResolveFailed, Detail: fmt.Sprintf("%s: %v", p.Label, err), Cause: err}
}

// fetch requests cur and works out the next hop from the answer.
func (w *walk) fetch(ctx context.Context, cur *url.URL, prov Provider, rule Rule) (*url.URL, string, *Error) {
	key := normalized(cur)
	for _, c := range w.jar.Cookies(cur) {
		key += "\x00" + c.Name + "=" + c.Value
	}
	if _, dup := w.seen[key]; dup {
		return nil, "", w.fail("redirect loop: %s was reached twice", cur.Redacted())
	}
	w.seen[key] = struct{}{}

	reqURL := *cur
	reqURL.Fragment, reqURL.RawFragment = "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reqURL.String(), nil)
	if err != nil {
		return nil, "", w.fail("cannot request %s: %v", cur.Redacted(), err)
	}
	req.Header.Set("User-Agent", w.r.userAgent)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	req.Header.Set("Accept-Language", "en-US,en;q=0.9")
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, "", w.transportError(ctx, cur, err)
	}
	defer resp.Body.Close()
	status := resp.StatusCode
	w.hops[len(w.hops)-1].Status = &status

	switch {
	case status >= 300 && status < 400 && resp.Header.Get("Location") != "":
		next, err := parseLoose(cur, resp.Header.Get("Location"))
		if err != nil {
			return nil, "", w.fail("%s answered %d with an unparsable Location", cur.Host, status)
		}
		return next, KindHTTP, nil
	case status == http.StatusNotFound || status == http.StatusGone:
		return nil, "", &Error{Code: CodeLinkRemoved, Detail: fmt.Sprintf("%s answered %d %s", cur.Host, status, http.StatusText(status))}
	case resp.Header.Get("Cf-Mitigated") == "challenge":
		return nil, "", w.fail("%s answered with a bot challenge (captcha gate); linkhop does not solve captchas", cur.Host)
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, "", &Error{Code: CodeProviderDown, Transient: true, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
			Detail: fmt.Sprintf("%s answered %d %s", cur.Host, status, http.StatusText(status))}
	case status >= 400:
		return nil, "", w.fail("%s answered %d %s", cur.Host, status, http.StatusText(status))
	}

	// 2xx (or a 3xx without Location): a Refresh header, else the HTML page.
	if ref := resp.Header.Get("Refresh"); ref != "" {
		if t, ok := parseRefresh(ref); ok && t != "" {
			if next, err := parseLoose(cur, t); err == nil && !sameDocument(next, cur) {
				return next, KindRefresh, nil
			}
		}
	}
	body, isHTML, readErr := readHTML(resp)
	if readErr != nil && len(body) == 0 {
		return nil, "", w.transportError(ctx, cur, readErr)
	}
	if rule != nil && status < 300 {
		next, ok, err := rule.Extract(Page{URL: cur, Status: status, Header: resp.Header, Body: body})
		if err != nil {
			return nil, "", ruleError(prov, err)
		}
		if ok && next != nil {
			return next, KindProvider, nil
		}
	}
	if !isHTML {
		ct := resp.Header.Get("Content-Type")
		if ct == "" {
			ct = "an unknown type"
		}
		return nil, "", w.fail("%s answered %d with %s and no redirect: no findable target", cur.Host, status, ct)
	}
	if hasCaptcha(body) {
		return nil, "", w.fail("%s shows a captcha gate; linkhop does not solve captchas", cur.Host)
	}
	for _, h := range extractHTML(body, cur) {
		if !sameDocument(h.url, cur) {
			return h.url, h.kind, nil
		}
	}
	if readErr != nil {
		// The body was cut short (a timeout, a reset) before anything useful arrived.
		return nil, "", w.transportError(ctx, cur, readErr)
	}
	return nil, "", w.fail("%s answered %d with a page that has no findable target (no redirect, refresh or location assignment)", cur.Host, status)
}

// sameDocument reports whether a and b differ at most in their fragments, so a page "refreshing"
// to itself is not taken for a hop.
func sameDocument(a, b *url.URL) bool {
	x, y := *a, *b
	x.Fragment, x.RawFragment, y.Fragment, y.RawFragment = "", "", "", ""
	return normalized(&x) == normalized(&y)
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
