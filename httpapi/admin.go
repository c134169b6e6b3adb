package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/linkhop/linkhop/internal/stamp"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
)

// QueuesPath is where the asynq web UI is served (docs/operations.md#administration-admin).
const QueuesPath = "/admin/queues"

// defaultGrace is how long a rotated webhook secret keeps signing when the request does not
// say (the CLI's default).
const defaultGrace = 24 * time.Hour

// adminRealm names the protection space in WWW-Authenticate.
const adminRealm = `realm="linkhop admin"`

// isAdminPath reports whether path is under /admin.
func isAdminPath(path string) bool { return path == "/admin" || strings.HasPrefix(path, "/admin/") }

// adminGate guards everything under /admin before routing, so that no route, method or
// unknown path there tells anything to a caller without the token: with no
// LINKHOP_ADMIN_TOKEN every /admin path is 404 (as if it did not exist), and with one a
// request without the right token is 401 (or 429 once its address failed too often) whatever
// it asks for.
func (s *Server) adminGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isAdminPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if s.AdminToken == "" {
			problem.Write(w, RequestID(r), problem.New(problem.NotFound, "No such route: "+r.Method+" "+r.URL.Path+"."))
			return
		}
		if !adminAuthorized(r, s.AdminToken) {
			s.adminAuthFailed(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminAuthorized checks the request's token against the admin token in constant time.
// The token comes as "Authorization: Bearer <token>" (scripts) or as the password of HTTP
// Basic authentication (browsers, which cannot send a bearer token to the queue UI). Both
// sides are hashed first so that the comparison does not leak the token's length either.
func adminAuthorized(r *http.Request, adminToken string) bool {
	token, ok := bearer(r)
	if !ok {
		_, token, ok = r.BasicAuth()
	}
	if !ok || token == "" {
		return false
	}
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(adminToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// adminAuthFailed answers 401 with the challenges a script and a browser understand, after
// the same per-address failed-authentication limit as /v1 (docs/limits.md#failed-authentications).
func (s *Server) adminAuthFailed(w http.ResponseWriter, r *http.Request) {
	s.authFailedWith(w, r, problem.New(problem.InvalidKey,
		"Send the admin token as Authorization: Bearer <LINKHOP_ADMIN_TOKEN>.").
		WithHeader("WWW-Authenticate", "Bearer "+adminRealm).
		WithHeader("WWW-Authenticate", "Basic "+adminRealm+`, charset="UTF-8"`))
}

// adminRoutes registers the key administration API and the queue UI. They are reachable
// only through adminGate.
func (s *Server) adminRoutes(r *mux.Router) {
	r.HandleFunc("/admin/keys", s.adminCreateKey).Methods(http.MethodPost)
	r.HandleFunc("/admin/keys", s.adminListKeys).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/admin/keys/{id}", s.adminShowKey).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/admin/keys/{id}", s.adminUpdateKey).Methods(http.MethodPatch)
	r.HandleFunc("/admin/keys/{id}", s.adminRevokeKey).Methods(http.MethodDelete)
	r.HandleFunc("/admin/keys/{id}/revoke", s.adminRevokeKey).Methods(http.MethodPost)
	r.HandleFunc("/admin/keys/{id}/rotate-webhook-secret", s.adminRotateKey).Methods(http.MethodPost)
	if s.QueuesUI != nil {
		r.Handle(QueuesPath, http.RedirectHandler(QueuesPath+"/", http.StatusMovedPermanently)).Methods(http.MethodGet, http.MethodHead)
		r.PathPrefix(QueuesPath + "/").Handler(s.QueuesUI)
	}
}

// createKeyRequest is the body of POST /admin/keys; absent fields take the CLI's defaults.
type createKeyRequest struct {
	Name               string    `json:"name"`
	Scopes             *[]string `json:"scopes"`
	RateLimitPerMinute *int      `json:"rate_limit_per_minute"`
	DailyQuota         *int64    `json:"daily_quota"`
	Credits            *int64    `json:"credits"`
}

// nullableInt is a JSON field that distinguishes absent (leave), null (none) and a number.
type nullableInt struct{ keys.Optional }

// UnmarshalJSON implements json.Unmarshaler; it is called for null too, which is the point.
func (n *nullableInt) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		n.Optional = keys.Optional{Set: true, Null: true}
		return nil
	}
	var v int64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	n.Optional = keys.Optional{Set: true, Value: v}
	return nil
}

// updateKeyRequest is the body of PATCH /admin/keys/{id}: only the fields present change;
// null clears daily_quota or credits (unlimited), as `--daily-quota none` does.
type updateKeyRequest struct {
	RateLimitPerMinute nullableInt `json:"rate_limit_per_minute"` // not nullable: 0 is unlimited
	DailyQuota         nullableInt `json:"daily_quota"`
	Credits            nullableInt `json:"credits"`
}

// rotateKeyRequest is the optional body of POST /admin/keys/{id}/rotate-webhook-secret.
type rotateKeyRequest struct {
	Grace *string `json:"grace"` // a Go duration like "24h"; "0s" ends the old secret now
}

func (s *Server) adminCreateKey(w http.ResponseWriter, r *http.Request) {
	var req createKeyRequest
	if p := readJSON(w, r, &req); p != nil {
		problem.Write(w, RequestID(r), p)
		return
	}
	p := keys.CreateParams{Name: req.Name, RateLimit: req.RateLimitPerMinute, DailyQuota: req.DailyQuota, Credits: req.Credits}
	if req.Scopes != nil { // [] is a key without scopes; absent or null, the default
		p.Scopes = *req.Scopes
	}
	c, err := s.Keys.Create(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/admin/keys/"+c.ID)
	writeJSON(w, http.StatusCreated, keys.ViewOfCreated(c))
}

func (s *Server) adminListKeys(w http.ResponseWriter, r *http.Request) {
	all, err := s.Keys.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]keys.View, 0, len(all))
	for _, k := range all {
		out = append(out, keys.ViewOf(k, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func (s *Server) adminShowKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.Keys.Get(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, keys.ViewOf(k, true))
}

func (s *Server) adminUpdateKey(w http.ResponseWriter, r *http.Request) {
	var req updateKeyRequest
	if p := readJSON(w, r, &req); p != nil {
		problem.Write(w, RequestID(r), p)
		return
	}
	up := keys.UpdateParams{DailyQuota: req.DailyQuota.Optional, Credits: req.Credits.Optional}
	if rl := req.RateLimitPerMinute.Optional; rl.Set {
		if rl.Null || rl.Value > math.MaxInt32 {
			problem.Write(w, RequestID(r), invalid("rate_limit_per_minute", "must be a number from 0 (unlimited) up"))
			return
		}
		n := int(rl.Value)
		up.RateLimit = &n
	}
	k, err := s.Keys.Update(r.Context(), mux.Vars(r)["id"], up)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, keys.ViewOf(k, false))
}

func (s *Server) adminRevokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.Keys.Revoke(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, keys.ViewOf(k, false))
}

func (s *Server) adminRotateKey(w http.ResponseWriter, r *http.Request) {
	grace := defaultGrace
	if r.ContentLength != 0 { // the body is optional
		var req rotateKeyRequest
		if p := readJSON(w, r, &req); p != nil {
			problem.Write(w, RequestID(r), p)
			return
		}
		if req.Grace != nil {
			d, err := parseGrace(*req.Grace)
			if err != nil {
				problem.Write(w, RequestID(r), invalid("grace", err.Error()))
				return
			}
			grace = d
		}
	}
	k, err := s.Keys.RotateWebhookSecret(r.Context(), mux.Vars(r)["id"], grace)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		keys.View
		PreviousValidUntil string `json:"previous_secret_valid_until"`
	}{keys.ViewOf(k, true), stamp.Format(time.Now().Add(grace))})
}

// parseGrace reads a rotation grace period: a Go duration, not negative.
func parseGrace(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 24h or 0s", s)
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}
