package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

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

// creditCost is what a resolved link costs a key with a credit balance.
func creditCost(tier string) int64 {
	if tier == "premium" {
		return 2
	}
	return 1
}

// postResolve accepts a link. In order: read and validate the body (no Redis), admit against
// the limits (the daily quota counts only a request that could be accepted), idempotency,
// the cache, credits, then the job. Whatever fails after admission gives back what it took:
// a non-2xx answer means nothing was created, queued or charged.
func (s *Server) postResolve(w http.ResponseWriter, r *http.Request) {
	k := keyOf(r)
	in, p := s.parseResolve(w, r)
	scoped := k.HasScope(keys.ScopeResolve)
	d, ok := s.admit(w, r, p == nil && scoped)
	if !ok {
		return
	}
	if !scoped {
		problem.Write(w, RequestID(r), problem.New(problem.ForbiddenScope, "This key lacks the resolve scope."))
		return
	}
	if p != nil {
		problem.Write(w, RequestID(r), p)
		return
	}
	ctx := r.Context()
	jobID := uuid.NewString()
	// undo gives back the admission and the idempotency claim of a request that ends without
	// a job; minute says whether the per-minute slot goes back too (it does for our failures,
	// not for a client's answered request).
	release := func() {
		if in.idemKey == "" {
			return
		}
		if err := s.Jobs.ReleaseIdempotency(context.WithoutCancel(ctx), k.ID, in.idemKey, jobID); err != nil {
			s.log.Warn("releasing an idempotency key failed", "request_id", RequestID(r), "err", err)
		}
	}
	undo := func(minute bool) {
		s.refund(r, d, minute, true)
		release()
	}

	if in.idemKey != "" {
		prev, err := s.Jobs.ClaimIdempotency(ctx, k.ID, in.idemKey, jobs.Claim{JobID: jobID, URL: in.url, WebhookURL: in.webhookURL})
		if err != nil {
			s.refund(r, d, true, true)
			s.fail(w, r, err)
			return
		}
		if prev != nil {
			// Not a new request: it costs no quota, whatever the answer.
			s.refund(r, d, false, true)
			if prev.URL != in.url || prev.WebhookURL != in.webhookURL {
				problem.Write(w, RequestID(r), problem.New(problem.IdempotencyConflict,
					"This idempotency key was used with a different url or webhook_url."))
				return
			}
			s.replay(w, r, *prev)
			return
		}
	}

	res, found, removed, err := s.Resolver.Lookup(ctx, in.url)
	if err != nil {
		undo(true)
		s.fail(w, r, err)
		return
	}
	if removed {
		undo(false)
		problem.Write(w, RequestID(r), problem.New(problem.LinkRemoved, "The provider reports that this link was removed."))
		return
	}
	if found {
		// Accepted (it counts against the quota), but no job: the claim goes.
		release()
		writeJSON(w, http.StatusOK, cachedResponse{
			Status: "done", URL: in.url, TargetURL: res.TargetURL,
			Provider: in.provider.ID, Tier: tierPtr(in.provider.Tier), Cached: true, Balance: k.Credits,
		})
		return
	}

	var held int64
	if k.Credits != nil {
		cost := creditCost(in.provider.Tier)
		balance, ok, err := s.Keys.ReserveCredits(ctx, k.ID, cost)
		if err != nil {
			undo(true)
			s.fail(w, r, err)
			return
		}
		if !ok {
			undo(false)
			var b int64
			if balance != nil {
				b = *balance
			}
			problem.Write(w, RequestID(r), problem.New(problem.OutOfCredits,
				"This link costs "+itoa(int(cost))+" credits; the key's balance is lower.").WithBalance(b))
			return
		}
		held = cost
	}

	rec := &jobs.Record{
		ID: jobID, KeyID: k.ID, URL: in.url, WebhookURL: in.webhookURL, IdempotencyKey: in.idemKey,
		Provider: in.provider.ID, Tier: in.provider.Tier, CreditsHeld: held,
	}
	pos, err := s.Queue.Submit(ctx, rec)
	if err != nil {
		s.metrics.enqueueErrors.Inc()
		s.log.Error("submitting a job failed", "request_id", RequestID(r), "err", err)
		undo(true)
		if held > 0 {
			if err := s.Keys.AdjustCredits(context.WithoutCancel(ctx), k.ID, held); err != nil {
				s.log.Error("refunding credits failed", "request_id", RequestID(r), "key_id", k.ID, "err", err)
			}
		}
		problem.Write(w, RequestID(r), problem.New(problem.ServiceUnavailable,
			"The job could not be queued; nothing was created or charged. Retry later.").WithRetryAfter(5*time.Second))
		return
	}
	s.writeQueued(w, rec.ID, pos)
}

// replay answers an idempotent replay for the first request's job: 200 in the cached shape
// when it is done, else 202.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, c jobs.Claim) {
	w.Header().Set("Idempotent-Replayed", "true")
	rec, err := s.Jobs.Get(r.Context(), keyOf(r).ID, c.JobID)
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	// A record not there yet belongs to a concurrent first request still being accepted.
	if err == nil && rec.Status == jobs.StatusDone && rec.TargetURL != nil {
		id := rec.ID
		writeJSON(w, http.StatusOK, cachedResponse{
			JobID: &id, Status: "done", URL: rec.URL, TargetURL: *rec.TargetURL, Provider: rec.Provider,
			Tier: tierPtr(rec.Tier), CreditsCharged: rec.CreditsCharged, Cached: false, Balance: keyOf(r).Credits,
		})
		return
	}
	s.writeQueued(w, c.JobID, 0)
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
