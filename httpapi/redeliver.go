package httpapi

import (
	"net/http"

	"github.com/linkhop/linkhop/problem"
)

// postRedeliver is POST /v1/jobs/{job_id}/webhook/redeliver: a fresh delivery of a finished
// job's webhook, for the job's owner. 202 with the job's webhook object (now pending,
// attempts 0) and Location of the job to poll; 404 for a job that is not the key's or has no
// webhook; 409 while a delivery is pending, which includes a job that has not finished yet.
func (s *Server) postRedeliver(w http.ResponseWriter, r *http.Request) {
	k := keyOf(r)
	id, ok := jobID(r)
	if !ok {
		problem.Write(w, RequestID(r), problem.New(problem.NotFound, "No such job."))
		return
	}
	st, err := s.Queue.RedeliverWebhook(r.Context(), k.ID, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+id)
	writeJSON(w, http.StatusAccepted, webhookViewOf(&st))
}
