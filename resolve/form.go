package resolve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"time"
)

// This file walks the ad-gated families' pages: AdLinkFly's countdown and form (waited out in
// place, or parked so the worker slot is free meanwhile), adf.ly's ysmm and adfoc.us's click_url.

// maxFormAnswerBytes caps the read of a /links/go answer: a small JSON object.
const maxFormAnswerBytes = 64 << 10

// family applies prov's family to a fetched provider page. ok=false lets the generic
// extractors look.
func (w *walk) family(cur *url.URL, prov Provider, body []byte) (*url.URL, string, bool, *Error) {
	switch prov.Family {
	case FamilyAdFly:
		next, ok, err := adflyTarget(body, cur)
		if err != nil {
			return nil, "", false, w.fail("%s (adfly page): %v", cur.Host, err)
		}
		return next, KindProvider, ok, nil
	case FamilyAdFocus:
		next, ok, err := adfocusTarget(body, cur)
		if err != nil {
			return nil, "", false, w.fail("%s (adfocus page): %v", cur.Host, err)
		}
		return next, KindProvider, ok, nil
	case FamilyAdLinkFly:
		f, err := parseGoLinkForm(body, cur)
		if errors.Is(err, errNoGoLinkForm) {
			return nil, "", false, nil
		}
		if err != nil {
			return nil, "", false, w.fail("%s (adlinkfly page): %v", cur.Host, err)
		}
		wait := time.Duration(f.Counter) * time.Second
		if wait > w.r.formWaitMax {
			return nil, "", false, w.fail("%s asks for a %s countdown, longer than RESOLVE_FORM_WAIT_MAX (%s)", cur.Host, wait, w.r.formWaitMax)
		}
		// A browser's Referer never carries the fragment.
		ref := *cur
		ref.Fragment, ref.RawFragment = "", ""
		form := parkedForm{Action: f.Action.String(), Fields: f.Fields, Referer: ref.String()}
		if w.park && wait >= w.r.parkMin {
			return nil, "", false, &Error{parked: w.parkUntil(form, time.Now().Add(wait))}
		}
		next, err2 := w.postAfter(form, wait)
		if err2 != nil {
			return nil, "", false, err2
		}
		return next, KindProvider, true, nil
	}
	return nil, "", false, nil
}

// postAfter waits out the countdown in place, then posts the form. The wait does not count
// against RESOLVE_TIMEOUT: the deadline moves back by it.
func (w *walk) postAfter(f parkedForm, wait time.Duration) (*url.URL, *Error) {
	if wait > 0 {
		w.deadline = w.deadline.Add(wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.parent.Done():
			t.Stop()
			return nil, cancelled(w.parent.Err())
		}
	}
	return w.postForm(f)
}

// postForm posts an AdLinkFly form as the page's own script does — every field, form-encoded,
// with the page's cookies (the jar), X-Requested-With, Accept: application/json and the page as
// Referer — and reads the next URL from the JSON answer. The action is recorded as a hop of
// kind form carrying the POST's status.
func (w *walk) postForm(f parkedForm) (*url.URL, *Error) {
	action, err := url.Parse(f.Action)
	if err != nil || checkFetchable(action) != nil {
		return nil, w.fail("form#go-link has an unusable action %q", f.Action)
	}
	if err := w.add(action, KindForm); err != nil {
		return nil, err
	}
	ctx, cancel := w.ctx()
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(encodeForm(f.Fields)))
	if err != nil {
		return nil, w.fail("cannot post to %s: %v", action.Redacted(), err)
	}
	req.Header.Set("User-Agent", w.r.userAgent)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")
	req.Header.Set("Accept", "application/json, text/javascript, */*; q=0.01")
	req.Header.Set("Accept-Language", "en-US,en;q=0.9")
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	req.Header.Set("Referer", f.Referer)
	if ref, err := url.Parse(f.Referer); err == nil {
		req.Header.Set("Origin", ref.Scheme+"://"+ref.Host)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, w.transportError(ctx, action, err)
	}
	defer drainClose(resp, cancel, w.r.drainTime)
	status := resp.StatusCode
	w.hops[len(w.hops)-1].Status = &status
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, &Error{Code: CodeProviderDown, Transient: true, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
			Detail: fmt.Sprintf("%s answered the form with %d %s", action.Host, status, http.StatusText(status))}
	case status >= 300 && status < 400:
		// The real script never gets a redirect here; one means the session was refused.
		return nil, w.fail("%s answered the form with %d %s instead of a JSON answer", action.Host, status, http.StatusText(status))
	case status >= 400:
		return nil, w.fail("%s refused the form with %d %s", action.Host, status, http.StatusText(status))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxFormAnswerBytes))
	if err != nil {
		return nil, w.transportError(ctx, action, err)
	}
	var ans goLinkAnswer
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); json.Unmarshal(raw, &ans) != nil || ans.Status == "" {
		if mt == "" {
			mt = "an untyped body"
		}
		return nil, w.fail("%s answered the form with %s, not the JSON {\"status\",\"url\"} answer: %q", action.Host, mt, truncate(strings.TrimSpace(string(raw)), 120))
	}
	if ans.Status != "success" {
		msg := strings.TrimSpace(ans.Message)
		if msg == "" {
			msg = "(no message)"
		}
		return nil, w.fail("%s answered the form with status %q: %s", action.Host, truncate(ans.Status, 40), truncate(msg, 200))
	}
	next, err := parseLoose(action, ans.URL)
	if err != nil || strings.TrimSpace(ans.URL) == "" || checkFetchable(next) != nil {
		return nil, w.fail("%s answered the form with success but no usable url: %q", action.Host, truncate(ans.URL, 200))
	}
	return next, nil
}

// Parked is what Park returns instead of waiting out a countdown: until Until, nothing is to
// be done; then Resume(State) posts the form and finishes the walk.
type Parked struct {
	Until time.Time
	State *Continuation
}

func (p *Parked) Error() string {
	return "resolve parked until " + p.Until.UTC().Format(time.RFC3339Nano) + " (a provider's countdown)"
}

// Continuation is a parked walk, in a form a job record can carry (JSON). It holds the page's
// session cookies and form fields, which are the provider's, not the user's; it lives only as
// long as the job stays unfinished.
type Continuation struct {
	Hops    []Hop          `json:"hops"`
	Seen    []string       `json:"seen,omitempty"`
	Cookies []savedCookies `json:"cookies,omitempty"`
	Form    parkedForm     `json:"form"`
	ReadyAt time.Time      `json:"ready_at"`
}

// parkedForm is a form to post when the countdown is over.
type parkedForm struct {
	Action  string      `json:"action"`
	Fields  []formField `json:"fields"`
	Referer string      `json:"referer"`
}

func (w *walk) parkUntil(f parkedForm, until time.Time) *Parked {
	c := &Continuation{Hops: cloneHops(w.hops), Cookies: w.jar.saved(), Form: f, ReadyAt: until}
	for k := range w.seen {
		c.Seen = append(c.Seen, k)
	}
	return &Parked{Until: until, State: c}
}

// Resume finishes a walk that Park parked: it waits for what is left of the countdown (at most
// RESOLVE_FORM_WAIT_MAX), posts the form with the saved cookies and goes on from its answer
// with a fresh RESOLVE_TIMEOUT. Another long countdown on the way parks again.
func (r *Resolver) Resume(ctx context.Context, rawURL string, c *Continuation) (Result, error) {
	began := time.Now()
	u, prov, isProv, cerr := r.checkSubmitted(rawURL)
	if cerr != nil {
		return Result{}, cerr
	}
	if c == nil || len(c.Hops) == 0 || c.Hops[0].URL != rawURL {
		return Result{}, &Error{Code: CodeResolveFailed, Detail: "a parked resolve could not be resumed (its state does not match the link)",
			Hops: []Hop{{URL: rawURL, Kind: KindStart}}}
	}
	release, aerr := r.acquire(ctx, slotID(prov, isProv, u))
	if aerr != nil {
		aerr.Hops = cloneHops(c.Hops)
		return Result{}, aerr
	}
	defer release()
	// A link on no provider's host is an any-host link (checkSubmitted took it only in that mode).
	w := r.newWalk(ctx, cloneHops(c.Hops), !isProv, r.parkMin > 0)
	for _, k := range c.Seen {
		w.seen[k] = struct{}{}
	}
	w.jar.restore(c.Cookies)
	wait := min(max(time.Until(c.ReadyAt), 0), r.formWaitMax)
	next, rerr := w.postAfter(c.Form, wait)
	var target *url.URL
	if rerr == nil {
		if rerr = w.add(next, KindProvider); rerr == nil {
			target, rerr = w.run(next)
		}
	}
	return w.result(rawURL, prov, target, rerr, began)
}

// recordingJar is a cookie jar that remembers what it was given, so a parked walk can carry
// its session to the worker that resumes it.
type recordingJar struct {
	jar  *cookiejar.Jar
	mu   sync.Mutex
	log  []savedCookies
	size int
}

// savedCookies are the cookies one response set.
type savedCookies struct {
	URL     string         `json:"url"`
	Cookies []*http.Cookie `json:"cookies"`
}

// Bounds of what a parked walk carries: a session needs a few cookies, not a cookie bomb's.
const (
	maxSavedCookieSets  = 32
	maxSavedCookieBytes = 16 << 10
)

func (j *recordingJar) SetCookies(u *url.URL, cookies []*http.Cookie) {
	j.jar.SetCookies(u, cookies)
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, c := range cookies {
		n += len(c.Name) + len(c.Value) + len(c.Path) + len(c.Domain)
	}
	if len(j.log) >= maxSavedCookieSets || j.size+n > maxSavedCookieBytes {
		return // the walk goes on in place; only a parked walk would miss these
	}
	j.size += n
	// The jar needs the parsed attributes only; the raw header would double what a parked
	// job record carries.
	kept := make([]*http.Cookie, len(cookies))
	for i, c := range cookies {
		cc := *c //nolint:gosec // a copy of a cookie a provider set on us, kept for the jar; linkhop sets no cookie with it
		cc.Raw, cc.Unparsed = "", nil
		kept[i] = &cc
	}
	j.log = append(j.log, savedCookies{URL: u.String(), Cookies: kept})
}

func (j *recordingJar) Cookies(u *url.URL) []*http.Cookie { return j.jar.Cookies(u) }

func (j *recordingJar) saved() []savedCookies {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]savedCookies(nil), j.log...)
}

func (j *recordingJar) restore(sets []savedCookies) {
	for _, s := range sets {
		if u, err := url.Parse(s.URL); err == nil {
			j.SetCookies(u, s.Cookies)
		}
	}
}

// IsParked reports whether err is a *Parked, returning it.
func IsParked(err error) (*Parked, bool) {
	var p *Parked
	ok := errors.As(err, &p)
	return p, ok
}
