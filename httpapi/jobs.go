package httpapi

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

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
	return canonicalID(mux.Vars(r)["job_id"])
}

// canonicalID returns id when it is a canonical UUID, the only spelling a job id has.
func canonicalID(id string) (string, bool) {
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

// MaxJobIDs is the most ids one GET /v1/jobs?ids= may ask for (docs/api.md#get-v1jobsids).
const MaxJobIDs = 100

// jobsList is the GET /v1/jobs?ids= body: one entry per id asked, null for a job the caller
// may not see.
type jobsList struct {
	Jobs []*jobView `json:"jobs"`
}

// parseIDs reads the ids parameter: 1 to MaxJobIDs ids, comma-separated, none of them empty.
// A malformed id is not an error (its entry is null, as GET /v1/jobs/{id} answers 404 for it).
func parseIDs(rawQuery string) ([]string, *problem.Problem) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, invalid("ids", "the query string is malformed")
	}
	vals, ok := q["ids"]
	switch {
	case !ok:
		return nil, invalid("ids", "is required: 1 to "+strconv.Itoa(MaxJobIDs)+" job ids, comma-separated")
	case len(vals) > 1:
		// Ambiguous, like a key given twice in a body: answer 400 rather than guess.
		return nil, invalid("ids", "given more than once; separate the ids with commas")
	}
	ids := strings.Split(vals[0], ",")
	if len(ids) > MaxJobIDs {
		return nil, invalid("ids", "at most "+strconv.Itoa(MaxJobIDs)+" ids, got "+strconv.Itoa(len(ids)))
	}
	for i, id := range ids {
		if id == "" {
			return nil, invalid("ids", "id "+strconv.Itoa(i+1)+" is empty")
		}
	}
	return ids, nil
}

// listJobs answers GET /v1/jobs?ids= in one round trip, counted once against the per-minute
// limit: the admission script reads every job record with the key's own hash tag, so another
// key's job is simply not found, as for a single poll.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	ids, bad := parseIDs(r.URL.RawQuery)
	g, ok := s.gate(w, r, gateOptions{fetchMany: func(keyID string) []string {
		var ks []string
		for _, id := range ids {
			if id, ok := canonicalID(id); ok {
				ks = append(ks, jobs.RecordKey(keyID, id))
			}
		}
		return ks
	}})
	if !ok {
		return
	}
	if bad != nil {
		problem.Write(w, RequestID(r), bad)
		return
	}
	out := jobsList{Jobs: make([]*jobView, len(ids))}
	next := 0
	for i, id := range ids {
		if _, ok := canonicalID(id); !ok {
			continue
		}
		raw := g.fetchedMany[next]
		next++
		if raw == nil {
			continue
		}
		rec, err := jobs.Decode(raw, nil)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v := viewOf(rec, g.key.Credits)
		out.Jobs[i] = &v
	}
	writeJSON(w, http.StatusOK, out)
}
