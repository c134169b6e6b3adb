package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/linkhop/linkhop/problem"
)

// healthz answers 200 while the process runs: liveness must not depend on Redis, or an
// outage would restart every pod for nothing.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when Redis answers a PING within a second, else 503.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := s.Redis.Ping(ctx).Err(); err != nil {
		problem.Write(w, RequestID(r), problem.New(problem.ServiceUnavailable, "Redis is not reachable.").
			WithRetryAfter(5*time.Second))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
