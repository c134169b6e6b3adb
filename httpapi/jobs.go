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
	"github.com/linkhop/linkhop/webhooks"
)

// webhookView is a job's webhook object (docs/api.md#get-v1jobsjob_id), as
// POST /v1/jobs/{job_id}/webhook/redeliver answers it; a poll writes the same members
// (appendJobView).
type webhookView struct {
	URL            string  `json:"url"`
	Status         string  `json:"status"`
	Attempts       int     `json:"attempts"`
	LastAttemptAt  *string `json:"last_attempt_at"`
	LastStatusCode *int    `json:"last_status_code"`
	LastError      *string `json:"last_error"`
	NextAttemptAt  *string `json:"next_attempt_at"`
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

// getJob answers GET /v1/jobs/{job_id} as routed by router (hot takes it first; see pollJob).
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	s.pollJob(w, r, mux.Vars(r)["job_id"])
}

// pollJob answers a poll of job rawID in one round trip: the job record is read beside the
// admission script, under the key's own hash tag, so another key's job is simply not found.
func (s *Server) pollJob(w http.ResponseWriter, r *http.Request, rawID string) {
	id, valid := canonicalID(rawID)
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
	b, err := appendJobView(make([]byte, 0, 1024), g.fetched, g.key.Credits)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSONBytes(w, http.StatusOK, append(b, '\n'))
}

// MaxJobIDs is the most ids one GET /v1/jobs?ids= may ask for (docs/api.md#get-v1jobsids).
const MaxJobIDs = 100

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
// limit: one MGET beside the admission script reads every job record with the key's own hash
// tag, so another key's job is simply not found, as for a single poll.
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
	// {"jobs":[…]}, one view or null per id, as encoding/json writes jobsList.
	b := append(make([]byte, 0, 128+512*len(ids)), `{"jobs":[`...)
	next := 0
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		var raw []byte
		if _, ok := canonicalID(id); ok {
			raw = g.fetchedMany[next]
			next++
		}
		if raw == nil {
			b = append(b, "null"...)
			continue
		}
		var err error
		if b, err = appendJobView(b, raw, g.key.Credits); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeJSONBytes(w, http.StatusOK, append(b, "]}\n"...))
}
