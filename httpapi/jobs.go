package httpapi

import (
	"net/http"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/linkhop/linkhop/internal/stamp"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// jobView is the GET /v1/jobs/{id} body (docs/api.md#get-v1jobsjob_id).
type jobView struct {
	JobID          string        `json:"job_id"`
	Status         jobs.Status   `json:"status"`
	URL            string        `json:"url"`
	TargetURL      *string       `json:"target_url"`
	Provider       *string       `json:"provider"`
	Tier           *string       `json:"tier"`
	Error          *string       `json:"error"`
	ErrorDetail    *string       `json:"error_detail"`
	CreditsCharged int64         `json:"credits_charged"`
	Balance        *int64        `json:"balance"`
	CreatedAt      string        `json:"created_at"`
	UpdatedAt      string        `json:"updated_at"`
	CompletedAt    *string       `json:"completed_at"`
	Hops           []resolve.Hop `json:"hops"`
	Webhook        *webhookView  `json:"webhook"`
}

type webhookView struct {
	URL            string  `json:"url"`
	Status         string  `json:"status"`
	Attempts       int     `json:"attempts"`
	LastAttemptAt  *string `json:"last_attempt_at"`
	LastStatusCode *int    `json:"last_status_code"`
	LastError      *string `json:"last_error"`
	NextAttemptAt  *string `json:"next_attempt_at"`
}

func viewOf(r jobs.Record, balance *int64) jobView {
	v := jobView{
		JobID: r.ID, Status: r.Status, URL: r.URL, TargetURL: r.TargetURL, Tier: tierPtr(r.Tier),
		Error: r.Error, ErrorDetail: r.ErrorDetail, CreditsCharged: r.CreditsCharged, Balance: balance,
		CreatedAt: stamp.Format(r.CreatedAt), UpdatedAt: stamp.Format(r.UpdatedAt), CompletedAt: stamp.FormatPtr(r.CompletedAt),
		Hops: r.Hops, Webhook: webhookViewOf(r.Webhook),
	}
	if r.Provider != "" {
		v.Provider = &r.Provider
	}
	if v.Hops == nil {
		v.Hops = []resolve.Hop{}
	}
	return v
}

func webhookViewOf(st *webhooks.State) *webhookView {
	if st == nil {
		return nil
	}
	return &webhookView{
		URL: st.URL, Status: st.Status, Attempts: st.Attempts, LastAttemptAt: stamp.FormatPtr(st.LastAttemptAt),
		LastStatusCode: st.LastStatusCode, LastError: st.LastError, NextAttemptAt: stamp.FormatPtr(st.NextAttemptAt),
	}
}

// jobID returns the {job_id} of r when it is a canonical UUID.
func jobID(r *http.Request) (string, bool) {
	id := mux.Vars(r)["job_id"]
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return "", false
	}
	return id, true
}

// getJob answers a poll in one round trip: the job record is read by the admission script,
// under the key's own hash tag, so another key's job is simply not found.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	id, valid := jobID(r)
	g, ok := s.gate(w, r, gateOptions{fetch: func(keyID string) string {
		if !valid {
			return ""
		}
		return jobs.RecordKey(keyID, id)
	}})
	if !ok {
		return
	}
	if !valid || g.fetched == nil {
		problem.Write(w, RequestID(r), problem.New(problem.NotFound, "No such job."))
		return
	}
	rec, err := jobs.Decode(g.fetched, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(rec, g.key.Credits))
}
