package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/quota"
)

const (
	keyCtx ctxKey = iota + 1
	decisionCtx
)

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

// authed wraps a /v1 handler that counts against the per-minute limit only: it
// authenticates, admits the request and puts the key in the context.
func (s *Server) authed(next http.HandlerFunc) http.HandlerFunc {
	return s.authenticated(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.admit(w, r, false); ok {
			next(w, r)
		}
	})
}

// authenticated wraps a handler that calls admit itself (POST /v1/resolve decides whether the
// request counts against the daily quota only after reading its body).
func (s *Server) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		var k keys.Key
		err := keys.ErrInvalidKey
		if ok {
			k, err = s.Keys.Authenticate(r.Context(), token)
		}
		if errors.Is(err, keys.ErrInvalidKey) {
			s.authFailed(w, r)
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		info(r).keyID = k.ID
		next(w, r.WithContext(context.WithValue(r.Context(), keyCtx, k)))
	}
}

// authFailed answers a failed authentication: 401, or 429 once the client's address has
// failed too often in the rolling minute (CONTRACT §2).
func (s *Server) authFailed(w http.ResponseWriter, r *http.Request) {
	if s.Limiter != nil {
		d, err := s.Limiter.CheckAuthFailure(r.Context(), clientIP(r), s.AuthFailuresPerMinute)
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
	problem.Write(w, RequestID(r), problem.New(problem.InvalidKey,
		"Send a valid API key as Authorization: Bearer sk_live_…"))
}

// limitsOf maps a key record to the limiter's budgets.
func limitsOf(k keys.Key) quota.Limits {
	l := quota.Limits{PerMinute: k.RateLimitPerMinute, DailyQuota: -1}
	if k.DailyQuota != nil {
		l.DailyQuota = *k.DailyQuota
	}
	return l
}

// admit checks the request of the authenticated key against its limits, sets the rate-limit
// headers, and answers 429 (or 503) itself when the request may not proceed.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, countDay bool) (quota.Decision, bool) {
	k := keyOf(r)
	d, err := s.Limiter.Check(r.Context(), quota.Request{KeyID: k.ID, Limits: limitsOf(k), CountDay: countDay})
	if err != nil {
		s.fail(w, r, err)
		return d, false
	}
	quota.SetHeaders(w.Header(), d)
	if d.Allowed {
		s.metrics.limiter.WithLabelValues("allowed").Inc()
		return d, true
	}
	s.metrics.limiter.WithLabelValues(d.Code).Inc()
	var p *problem.Problem
	if d.Code == quota.CodeQuotaExceeded {
		p = problem.New(problem.QuotaExceeded, "The daily quota of this key is used up; it renews at 00:00 UTC.")
	} else {
		p = problem.New(problem.RateLimited, "The per-minute limit of this key is used up; retry after the Retry-After delay.")
	}
	problem.Write(w, RequestID(r), p.WithRetryAfter(d.RetryAfter))
	return d, false
}

// refund gives back what an admitted request took when it fails after admission or turns
// out not to count (a replay). Errors are logged: the client's answer does not depend on it.
func (s *Server) refund(r *http.Request, d quota.Decision, minute, day bool) {
	if err := s.Limiter.Refund(context.WithoutCancel(r.Context()), d, minute, day); err != nil {
		s.log.Warn("refunding a quota failed", "request_id", RequestID(r), "err", err)
	}
}
