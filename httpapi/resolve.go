package httpapi

import (
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/resolve"
)

// queuedResponse is the 202 answer of POST /v1/resolve.
type queuedResponse struct {
	JobID         string `json:"job_id"`
	Status        string `json:"status"`
	QueuePosition int64  `json:"queue_position"`
	PollURL       string `json:"poll_url"`
}

// cachedResponse is the 200 answer of POST /v1/resolve: a cached result, or the done job of an
// idempotent replay.
type cachedResponse struct {
	JobID          *string `json:"job_id"`
	Status         string  `json:"status"`
	URL            string  `json:"url"`
	TargetURL      string  `json:"target_url"`
	Provider       string  `json:"provider"`
	Tier           *string `json:"tier"`
	CreditsCharged int64   `json:"credits_charged"`
	Cached         bool    `json:"cached"`
	Balance        *int64  `json:"balance"`
}

// resolveInput is a validated POST /v1/resolve request.
type resolveInput struct {
	url        string
	webhookURL string
	idemKey    string
	provider   resolve.Provider
}

// parseResolve reads and validates the body; it answers every client mistake with the right
// problem (400, 413, 415, 422) before anything touches Redis.
func (s *Server) parseResolve(w http.ResponseWriter, r *http.Request) (resolveInput, *problem.Problem) {
	var req resolveRequest
	if p := readJSON(w, r, &req); p != nil {
		return resolveInput{}, p
	}
	if err := s.validate.Struct(&req); err != nil {
		return resolveInput{}, validationProblem(err)
	}
	in := resolveInput{url: req.URL}
	var fes []problem.FieldError
	if req.WebhookURL != nil {
		if reason := checkWebhookURL(*req.WebhookURL, s.AllowPrivateTargets); reason != "" {
			fes = append(fes, problem.FieldError{Field: "webhook_url", Reason: reason})
		}
		in.webhookURL = *req.WebhookURL
	}
	// The body field wins over the header (CONTRACT §3).
	if h := r.Header.Get("Idempotency-Key"); h != "" && req.IdempotencyKey == nil {
		if !validIdempotencyKey(h) {
			fes = append(fes, problem.FieldError{Field: "Idempotency-Key", Reason: "must be 1-128 printable ASCII characters"})
		}
		in.idemKey = h
	}
	if req.IdempotencyKey != nil {
		in.idemKey = *req.IdempotencyKey
	}
	if len(fes) > 0 {
		return resolveInput{}, problem.New(problem.InvalidRequest, "The request has invalid fields; see errors.").WithErrors(fes...)
	}
	u, _ := checkURL(req.URL)
	if scheme := strings.ToLower(u.Scheme); scheme != "http" && scheme != "https" {
		return resolveInput{}, problem.New(problem.UnsupportedLink, "Only http and https links can be resolved.")
	}
	p, ok := s.Registry.Lookup(u.Hostname())
	if !ok {
		return resolveInput{}, problem.New(problem.UnsupportedLink,
			"The host "+u.Hostname()+" is not a supported provider; see GET /v1/providers.")
	}
	in.provider = p
	return in, nil
}

func (s *Server) postResolve(w http.ResponseWriter, r *http.Request) {
	k := keyOf(r)
	if !k.HasScope(keys.ScopeResolve) {
		problem.Write(w, RequestID(r), problem.New(problem.ForbiddenScope, "This key lacks the resolve scope."))
		return
	}
	in, p := s.parseResolve(w, r)
	if p != nil {
		problem.Write(w, RequestID(r), p)
		return
	}
	ctx := r.Context()

	if s.Resolver != nil {
		res, found, removed, err := s.Resolver.Lookup(ctx, in.url)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if removed {
			problem.Write(w, RequestID(r), problem.New(problem.LinkRemoved, "The provider reports that this link was removed."))
			return
		}
		if found {
			writeJSON(w, http.StatusOK, cachedResponse{
				Status: "done", URL: in.url, TargetURL: res.TargetURL,
				Provider: in.provider.ID, Tier: tierPtr(in.provider.Tier), Cached: true, Balance: k.Credits,
			})
			return
		}
	}

	rec := &jobs.Record{
		ID: uuid.NewString(), KeyID: k.ID, URL: in.url, WebhookURL: in.webhookURL,
		IdempotencyKey: in.idemKey, Provider: in.provider.ID, Tier: in.provider.Tier,
	}
	pos, err := s.Queue.Submit(ctx, rec)
	if err != nil {
		s.metrics.enqueueErrors.Inc()
		s.log.Error("submitting a job failed", "request_id", RequestID(r), "err", err)
		problem.Write(w, RequestID(r), problem.New(problem.ServiceUnavailable,
			"The job could not be queued; nothing was created or charged. Retry later.").WithRetryAfter(5e9))
		return
	}
	s.writeQueued(w, rec.ID, pos)
}

func (s *Server) writeQueued(w http.ResponseWriter, jobID string, pos int64) {
	poll := "/v1/jobs/" + jobID
	w.Header().Set("Location", poll)
	writeJSON(w, http.StatusAccepted, queuedResponse{JobID: jobID, Status: "queued", QueuePosition: pos, PollURL: poll})
}

// tierPtr maps a provider tier to the JSON value: "standard", "premium" or null.
func tierPtr(t string) *string {
	if t != "standard" && t != "premium" {
		return nil
	}
	return &t
}
