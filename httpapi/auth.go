package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/quota"
)

const keyCtx ctxKey = 1

// keyOf returns the authenticated key of r (inside authed handlers).
func keyOf(r *http.Request) keys.Key {
	k, _ := r.Context().Value(keyCtx).(keys.Key)
	return k
}

// bearer extracts the token of an "Authorization: Bearer …" header.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authed wraps a /v1 handler that needs nothing more than an admitted key: it authenticates
// and admits (one round trip), then puts the key in the context.
func (s *Server) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if g, ok := s.gate(w, r, gateOptions{fullKey: true}); ok {
			next(w, r.WithContext(context.WithValue(r.Context(), keyCtx, g.key)))
		}
	}
}

// gateOptions say what else the admission round trip carries.
type gateOptions struct {
	countDay  bool                                 // the request counts against the daily quota
	fetch     func(keyID string) string            // a key of the same API key to read with it
	fetchMany func(keyID string) []string          // keys of the same API key to read with it
	batch     func(p redis.Pipeliner) func() error // more commands in the same round trip
	// onQuota, when set, may answer a quota_exceeded rejection itself (an idempotent replay
	// is answered even when the quota is used up); it reports whether it did.
	onQuota func(k keys.Key) bool
	// many admits slots requests at once (a batch's valid items) instead of one; the request
	// is refused as a whole only when not even the first fits.
	many  bool
	slots int
	// fullKey reads the whole key record, for a handler that shows the key or signs with its
	// secrets; without it gate reads only keys.RequestFields (a single request's admission).
	fullKey bool
	// then, when set, gives the continuation to run in the admission's own script, once the
	// request is authenticated and admitted (quota.AdmitRequest.Then), for the key id the token
	// names; nil for none. Its reply is gated.then.
	then func(keyID string) *quota.ThenCall
	// thenFailed is told when an admission carrying then failed: retry when nothing ran and the
	// admission is to run again without then (a Redis Cluster node refused the continuation's
	// keys); otherwise it takes back what the continuation may have done and returns the error
	// to answer with.
	thenFailed func(err error) (retry bool, _ error)
}

// gated is an authenticated, admitted request.
type gated struct {
	key         keys.Key
	admission   admission
	fetched     []byte
	fetchedMany [][]byte
	granted     int // with gateOptions.many: how many of the slots were admitted (the first)
	// then and thenErr are the reply of gateOptions.then's continuation (quota.Admission's).
	then    any
	thenErr error
}

// gate authenticates the bearer key and admits the request against its limits in one Redis
// round trip (with whatever o adds to it), sets the rate-limit headers, and answers 401, 429
// or 503 itself when the request may not proceed.
func (s *Server) gate(w http.ResponseWriter, r *http.Request, o gateOptions) (gated, bool) {
	token, ok := bearer(r)
	var id string
	if ok {
		id, ok = keys.ParseToken(token)
	}
	if !ok {
		s.authFailed(w, r)
		return gated{}, false
	}
	digest := keys.Digest(token)
	req := quota.AdmitRequest{KeyID: id, RecordKey: keys.RecordKey(id), Digest: digest, CountDay: o.countDay}
	check := keys.Check
	if !o.fullKey && !o.many {
		req.Fields, check = keys.RequestFields, keys.CheckRequest
	}
	if o.fetch != nil {
		req.Fetch = o.fetch(id)
	}
	if o.fetchMany != nil {
		req.FetchMany = o.fetchMany(id)
	}
	if o.then != nil {
		req.Then = o.then(id)
	}
	var adm quota.Admission
	var err error
	loaded := false
	for attempt := 0; attempt < 3; attempt++ {
		var decode func() (quota.Admission, error)
		var more func() error
		_, _ = s.Redis.Pipelined(r.Context(), func(p redis.Pipeliner) error {
			if o.many {
				decode = s.Limiter.AdmitManyIn(r.Context(), p, req, o.slots)
			} else {
				decode = s.Limiter.AdmitIn(r.Context(), p, req)
			}
			if o.batch != nil {
				more = o.batch(p)
			}
			return nil
		})
		adm, err = decode()
		if errors.Is(err, quota.ErrNoScript) { // nothing ran
			if !loaded {
				loaded = true
				if err = s.Limiter.LoadScripts(r.Context()); err == nil {
					continue
				}
			}
		} else if err != nil && req.Then != nil {
			retry, terr := o.thenFailed(err)
			if retry {
				req.Then = nil
				continue
			}
			err = terr
		}
		if err == nil && more != nil {
			err = more()
		}
		break
	}
	if err != nil {
		s.fail(w, r, err)
		return gated{}, false
	}
	if !adm.Authenticated {
		s.authFailed(w, r)
		return gated{}, false
	}
	k, err := check(id, digest, adm.Record)
	if err != nil {
		// The script matched the digest; this only fails for a corrupt record. A continuation
		// that ran is taken back.
		if req.Then != nil && adm.Decision.Allowed {
			_, err = o.thenFailed(err)
		}
		s.fail(w, r, err)
		return gated{}, false
	}
	info(r).keyID = k.ID
	d := adm.Decision
	quota.SetHeaders(w.Header(), d)
	if !d.Allowed {
		s.metrics.limiter.WithLabelValues(d.Code).Inc()
		if d.Code == quota.CodeQuotaExceeded && o.onQuota != nil && o.onQuota(k) {
			return gated{}, false
		}
		var p *problem.Problem
		if d.Code == quota.CodeQuotaExceeded {
			p = problem.New(problem.QuotaExceeded, "The daily quota of this key is used up; it renews at 00:00 UTC.")
		} else {
			p = problem.New(problem.RateLimited, "The per-minute limit of this key is used up; retry after the Retry-After delay.")
		}
		problem.Write(w, RequestID(r), p.WithRetryAfter(d.RetryAfter))
		return gated{}, false
	}
	s.metrics.allowed.Inc()
	return gated{key: k, admission: admission{s: s, r: r, d: d}, fetched: adm.Fetched, fetchedMany: adm.FetchedMany, granted: adm.Granted,
		then: adm.Then, thenErr: adm.ThenErr}, true
}

// authFailed answers a failed /v1 authentication.
func (s *Server) authFailed(w http.ResponseWriter, r *http.Request) {
	// RFC 9110 §11.6.1: a 401 names the scheme it wants; RFC 6750 §3 adds why a token sent
	// was refused.
	challenge := `Bearer realm="linkhop"`
	if r.Header.Get("Authorization") != "" {
		challenge += `, error="invalid_token"`
	}
	s.authFailedWith(w, r, problem.New(problem.InvalidKey, "Send a valid API key as Authorization: Bearer sk_live_…").
		WithHeader("WWW-Authenticate", challenge))
}

// authFailedWith answers a failed authentication with unauthorized (a 401), or with 429 once
// the client's address has failed too often in the rolling minute (docs/limits.md#failed-authentications).
func (s *Server) authFailedWith(w http.ResponseWriter, r *http.Request, unauthorized *problem.Problem) {
	if s.Limiter != nil {
		d, err := s.Limiter.CheckAuthFailure(r.Context(), s.clientIP(r), s.AuthFailuresPerMinute)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !d.Allowed {
			s.metrics.limiter.WithLabelValues("auth_limited").Inc()
			problem.Write(w, RequestID(r), problem.New(problem.RateLimited,
				"Too many failed authentications from this address; wait before trying again.").
				WithRetryAfter(d.RetryAfter))
			return
		}
	}
	problem.Write(w, RequestID(r), unauthorized)
}

// admission is what gate took from a key's budgets for one request: a slot of the rolling
// minute and, when the request may be accepted, a unit of the daily quota. Its methods give
// back exactly what a request that ends without being accepted should not keep. Errors are
// logged: the client's answer does not depend on them.
type admission struct {
	s *Server
	r *http.Request
	d quota.Decision
}

// Uncount gives back the daily-quota unit of a request that was answered but not accepted (a
// refusal, or a replay of an earlier request): it still counted against the per-minute limit,
// as every authenticated request does (docs/limits.md).
func (a admission) Uncount() { a.giveBack(false) }

// Undo gives back everything the request took, when it failed on the service's side: as far
// as the client is concerned it never happened.
func (a admission) Undo() { a.giveBack(true) }

// keepOne gives back every slot of a batch's admission but the first: a batch refused as a
// whole (403) counts as the one request it is, as a refused single request does.
func (a admission) keepOne() { a.giveBackMany(1, 0, 0) }

// undoMany gives back everything a batch took, when it failed on the service's side: its
// slots, and dayUnits units of the daily quota counted on UTC day day.
func (a admission) undoMany(dayUnits, day int64) { a.giveBackMany(0, dayUnits, day) }

func (a admission) giveBackMany(keep int, dayUnits, day int64) {
	ctx := context.WithoutCancel(a.r.Context())
	if err := a.s.Limiter.RefundMany(ctx, a.d, keep, dayUnits, day); err != nil {
		a.s.log.Warn("refunding a quota failed", "request_id", RequestID(a.r), "err", err)
	}
}

func (a admission) giveBack(minute bool) {
	// The request's context may already be cancelled (the client went away); the refund must
	// still happen.
	ctx := context.WithoutCancel(a.r.Context())
	if err := a.s.Limiter.Refund(ctx, a.d, minute, true); err != nil {
		a.s.log.Warn("refunding a quota failed", "request_id", RequestID(a.r), "err", err)
	}
}
