package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
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

// authed wraps a /v1 handler: it authenticates the bearer key and puts it in the context.
func (s *Server) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		var k keys.Key
		err := keys.ErrInvalidKey
		if ok {
			k, err = s.Keys.Authenticate(r.Context(), token)
		}
		if errors.Is(err, keys.ErrInvalidKey) {
			problem.Write(w, RequestID(r), problem.New(problem.InvalidKey,
				"Send a valid API key as Authorization: Bearer sk_live_…"))
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
