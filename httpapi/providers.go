package httpapi

import (
	"net/http"
)

func (s *Server) getProviders(w http.ResponseWriter, r *http.Request) {
	ps, err := s.Resolver.Providers(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range ps {
		// Clients render latency as text; say so rather than send an empty string.
		if ps[i].Latency == "" {
			ps[i].Latency = "unknown"
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"providers": ps})
}
