package httpapi

import (
	"net/http"
	"time"

	"github.com/linkhop/linkhop/resolve"
)

// providerLatency formats a measured median for the "latency" field.
func providerLatency(p resolve.Provider, measured map[string]time.Duration) string {
	if d, ok := measured[p.ID]; ok && d > 0 {
		return "~" + d.Round(10*time.Millisecond).String()
	}
	if p.Latency != "" {
		return p.Latency
	}
	return "unknown"
}

func (s *Server) getProviders(w http.ResponseWriter, r *http.Request) {
	var measured map[string]time.Duration
	if s.Resolver != nil {
		m, err := s.Resolver.Latencies(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		measured = m
	}
	all := s.Registry.All()
	out := make([]resolve.Provider, 0, len(all))
	for _, p := range all {
		p.Latency = providerLatency(p, measured)
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"providers": out})
}
