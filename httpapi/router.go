package httpapi

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkhop/linkhop/problem"
)

// routes is the whole API: the router behind the admin gate.
func (s *Server) routes() http.Handler { return s.adminGate(s.router()) }

// router is every route of the API, in one place.
func (s *Server) router() *mux.Router {
	// SkipClean: without it gorilla/mux answers paths with "//", "." or ".." with a bare 301 to
	// the cleaned path, which is neither a route nor a problem+json (and loses a POST's body).
	r := mux.NewRouter().SkipClean(true)
	r.Use(routeName)

	r.HandleFunc("/healthz", s.healthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", s.readyz).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.HandleFunc("/openapi.json", s.getOpenAPI).Methods(http.MethodGet)

	// Full paths, not a /v1 subrouter: gorilla/mux answers a method mismatch inside a
	// subrouter with 404 instead of 405.
	r.HandleFunc("/v1/resolve", s.postResolve).Methods(http.MethodPost)
	// HEAD on every GET: net/http sends the headers (rate-limit fields included) and drops the
	// body. It counts against the per-minute limit like the GET.
	r.HandleFunc("/v1/jobs/{job_id}", s.getJob).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/v1/jobs/{job_id}/webhook/redeliver", s.authed(s.postRedeliver)).Methods(http.MethodPost)
	r.HandleFunc("/v1/providers", s.authed(s.getProviders)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/v1/account", s.authed(s.getAccount)).Methods(http.MethodGet, http.MethodHead)
	s.adminRoutes(r) // admin.go; reachable only through adminGate

	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		problem.Write(w, RequestID(req), problem.New(problem.NotFound, "No such route: "+req.Method+" "+req.URL.Path+"."))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		allow := allowedMethods(r, req)
		problem.Write(w, RequestID(req), problem.New(problem.MethodNotAllowed,
			req.Method+" is not allowed here; use "+strings.Join(allow, ", ")+".").
			WithHeader("Allow", strings.Join(allow, ", ")))
	})
	return r
}

// allowedMethods lists the methods the route of req would accept, for the Allow header.
func allowedMethods(r *mux.Router, req *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		c := req.Clone(req.Context())
		c.Method = m
		var match mux.RouteMatch
		if r.Match(c, &match) && match.MatchErr == nil {
			out = append(out, m)
		}
	}
	return out
}
