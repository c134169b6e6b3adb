package httpapi

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkhop/linkhop/problem"
)

// routes is the whole API: the router behind the admin gate, with the hot routes in front.
func (s *Server) routes() http.Handler { return s.hot(s.adminGate(s.router())) }

// Route templates of the hot routes, as router names them for logs, metrics and spans.
const (
	routeResolve      = "/v1/resolve"
	routeResolveBatch = "/v1/resolve/batch"
	routeJob          = "/v1/jobs/{job_id}"
)

// hot serves the requests clients make most — submits, batches and polls — without the
// router's matching (a regular expression per route tried, two request copies for its route and
// variables), which cost a poll several µs. It takes exactly what router would route to the same
// handler (the same method and path: the path as decoded, a job id being one non-empty segment,
// as the router's {job_id}); everything else, including a wrong method, goes to router, so the
// answers (404, 405 with Allow) stay the router's.
func (s *Server) hot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch r.Method {
		case http.MethodPost:
			switch p {
			case routeResolve:
				nameRoute(r, routeResolve)
				s.postResolve(w, r)
				return
			case routeResolveBatch:
				nameRoute(r, routeResolveBatch)
				s.postResolveBatch(w, r)
				return
			}
		case http.MethodGet, http.MethodHead:
			if id, ok := strings.CutPrefix(p, "/v1/jobs/"); ok && id != "" && !strings.Contains(id, "/") {
				nameRoute(r, routeJob)
				s.pollJob(w, r, id)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

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
	r.HandleFunc(routeResolve, s.postResolve).Methods(http.MethodPost)
	r.HandleFunc(routeResolveBatch, s.postResolveBatch).Methods(http.MethodPost)
	// HEAD on every GET: net/http sends the headers (rate-limit fields included) and drops the
	// body. It counts against the per-minute limit like the GET.
	r.HandleFunc("/v1/jobs", s.listJobs).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc(routeJob, s.getJob).Methods(http.MethodGet, http.MethodHead)
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
