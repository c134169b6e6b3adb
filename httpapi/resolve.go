package httpapi

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/quota"
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
	Provider       *string `json:"provider"` // null for an any-host link
	Tier           *string `json:"tier"`
	CreditsCharged int64   `json:"credits_charged"`
	Cached         bool    `json:"cached"`
	Balance        *int64  `json:"balance"`
}

// resolveInput is a validated POST /v1/resolve request.
type resolveInput struct {
	url        string
	parsed     *url.URL // url.Parse's URL of url
	webhookURL string
	idemKey    string
	provider   resolve.Provider
}

// parseResolve reads and validates the body; it answers every client mistake with the right
// problem (400, 413, 415, 422) before anything touches Redis.
func (s *Server) parseResolve(w http.ResponseWriter, r *http.Request) (resolveInput, *problem.Problem) {
	body, p := readBody(w, r, MaxBodyBytes)
	if p != nil {
		return resolveInput{}, p
	}
	var req resolveRequest
	// A body of plain members (a batch item's shape) is read without encoding/json; any other
	// gets the strict reading, which names every mistake (see plainItem).
	if bi, ok := plainItem(body); ok && bi.URL != nil {
		req = resolveRequest{URL: *bi.URL, WebhookURL: bi.WebhookURL, IdempotencyKey: bi.IdempotencyKey}
	} else if p := decodeStrict(body, &req); p != nil {
		return resolveInput{}, p
	}
	return s.checkResolve(req, r.Header.Get("Idempotency-Key"))
}

// checkResolve validates one decoded resolve request, a body of POST /v1/resolve or an item of
// a batch (whose fields are then named as a single request's: the item's answer is what the
// single request would get). header is the Idempotency-Key header, "" for a batch item.
func (s *Server) checkResolve(req resolveRequest, header string) (resolveInput, *problem.Problem) {
	u, plain := plainRequest(req)
	if !plain {
		if err := s.validate.Struct(&req); err != nil {
			return resolveInput{}, validationProblem(err)
		}
		u, _ = checkURL(req.URL)
	}
	in := resolveInput{url: req.URL, parsed: u}
	var fes []problem.FieldError
	if req.WebhookURL != nil {
		if reason := checkWebhookURL(*req.WebhookURL, s.AllowPrivateTargets); reason != "" {
			fes = append(fes, problem.FieldError{Field: "webhook_url", Reason: reason})
		}
		in.webhookURL = *req.WebhookURL
	}
	// The body field wins over the header (docs/api.md#idempotency).
	if header != "" && req.IdempotencyKey == nil {
		if !validIdempotencyKey(header) {
			fes = append(fes, problem.FieldError{Field: "Idempotency-Key", Reason: "must be 1-128 printable ASCII characters"})
		}
		in.idemKey = header
	}
	if req.IdempotencyKey != nil {
		in.idemKey = *req.IdempotencyKey
	}
	if len(fes) > 0 {
		return resolveInput{}, problem.New(problem.InvalidRequest, "The request has invalid fields; see errors.").WithErrors(fes...)
	}
	if scheme := strings.ToLower(u.Scheme); scheme != "http" && scheme != "https" {
		return resolveInput{}, problem.New(problem.UnsupportedLink, "Only http and https links can be resolved.")
	}
	p, ok := s.Registry.Lookup(u.Hostname())
	if !ok && !s.Resolver.Resolver().AnyHost() {
		// In any-host mode (docs/resolving.md#any-host-mode) every host is taken, with no
		// provider and a standard link's cost.
		return resolveInput{}, problem.New(problem.UnsupportedLink,
			"The host "+u.Hostname()+" is not a supported provider; see GET /v1/providers.")
	}
	in.provider = p
	return in, nil
}

// plainRequest checks the common request, a url alone, without the validator's reflection:
// it reports true, with the parsed url, only when resolveRequest's rules (url: required, at
// most 2048 characters, absurl) all pass; for anything else checkResolve asks the validator,
// which names every mistake.
func plainRequest(req resolveRequest) (*url.URL, bool) {
	if req.WebhookURL != nil || req.IdempotencyKey != nil || req.URL == "" || utf8.RuneCountInString(req.URL) > 2048 {
		return nil, false
	}
	u, reason := checkURL(req.URL)
	return u, reason == ""
}

// creditCost is what a resolved link costs a key with a credit balance.
func creditCost(tier string) int64 {
	if tier == resolve.TierPremium {
		return 2
	}
	return 1
}

// postResolve accepts a link. The body is read and validated first (no Redis). On a single
// Redis or through Sentinel an accepted resolve is then one round trip: the admission's own
// script authenticates and admits the key and, for a key with the resolve scope and a link not
// in the cache, submits the job with its idempotency claim, credits and task (jobs.Queue.Plan).
// A cached link is answered from the value the script read (a link whose cache entry cannot be
// used is submitted after, a second round trip). On Redis Cluster, where no script spans the
// key's slot and asynq's, it is three: (1) authentication, limits and the cache lookup, (2) the
// job with its idempotency claim and credits, (3) its enqueue (jobs.Queue.Submit). Every way out
// after admission other than an accepted link settles the admission: Uncount for an answer that
// accepts nothing (a refusal, a replay), Undo for the service's own failures. So a non-2xx
// answer means nothing was created, queued or charged.
func (s *Server) postResolve(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	in, bad := s.parseResolve(w, r)
	var (
		lookup func() (resolve.Result, bool, bool, error)
		plan   *jobs.Plan // the submit in the admission's script; nil on the Cluster's path
		entry  resolve.CacheEntry
		rec    *jobs.Record
	)
	o := gateOptions{
		// Only a request that can be accepted counts against the daily quota.
		countDay: bad == nil,
		batch: func(p redis.Pipeliner) func() error {
			switch {
			case plan != nil:
				plan.Pipe(ctx, p)
			case bad == nil:
				lookup = s.Resolver.LookupIn(ctx, p, in.url)
			}
			return nil
		},
		// A replay does not count again, so it is answered even when the quota is used up.
		onQuota: func(k keys.Key) bool {
			if in.idemKey == "" {
				return false
			}
			prev, err := s.Jobs.GetClaim(ctx, k.ID, in.idemKey)
			if err != nil || prev == nil {
				return false
			}
			s.answerClaim(w, r, k, in, *prev)
			return true
		},
	}
	if bad == nil {
		o.then = func(keyID string) *quota.ThenCall {
			e, err := s.Resolver.Entry(resolve.Link{Raw: in.url, URL: in.parsed})
			if err != nil {
				return nil // the lookup of the Cluster's path answers it
			}
			rec = newJob(keyID, in)
			if plan = s.Queue.Plan(ctx, rec, creditCost(in.provider.Tier), keys.ScopeResolve, e.Key); plan == nil {
				return nil
			}
			entry = e
			return plan.Call()
		}
		o.thenFailed = func(err error) (bool, error) {
			retry, err := plan.Failed(ctx, err)
			if retry {
				plan = nil // admitted again on the Cluster's path
			} else {
				s.metrics.enqueueErrors.Inc()
			}
			return retry, err
		}
	}
	g, ok := s.gate(w, r, o)
	if !ok {
		return
	}
	k, adm := g.key, g.admission
	if plan != nil {
		out, err := plan.Outcome(ctx, g.then, g.thenErr)
		switch {
		case err != nil:
			s.answerSubmit(w, r, k, adm, in, rec, creditCost(in.provider.Tier), jobs.Submitted{}, err)
		case out.NoScope:
			s.refuseScope(w, r, adm)
		case out.Cached != nil:
			res, found, removed := entry.Decode(out.Cached)
			if !s.answerCached(w, r, k, adm, in, res, found, removed) {
				s.submit(w, r, k, adm, in, rec) // an entry it cannot use: a miss
			}
		default:
			s.answerSubmit(w, r, k, adm, in, rec, creditCost(in.provider.Tier), out.Submitted, nil)
		}
		return
	}
	if !k.HasScope(keys.ScopeResolve) {
		s.refuseScope(w, r, adm)
		return
	}
	if bad != nil {
		problem.Write(w, RequestID(r), bad)
		return
	}
	res, found, removed, err := lookup()
	if err != nil {
		adm.Undo()
		s.fail(w, r, err)
		return
	}
	if s.answerCached(w, r, k, adm, in, res, found, removed) {
		return
	}
	if rec == nil {
		rec = newJob(k.ID, in)
	}
	s.submit(w, r, k, adm, in, rec)
}

// newJob is the job of an accepted link of key keyID.
func newJob(keyID string, in resolveInput) *jobs.Record {
	return &jobs.Record{
		ID: uuid.NewString(), KeyID: keyID, URL: in.url, WebhookURL: in.webhookURL, IdempotencyKey: in.idemKey,
		Provider: in.provider.ID, Tier: in.provider.Tier,
	}
}

// refuseScope answers a key without the resolve scope.
func (s *Server) refuseScope(w http.ResponseWriter, r *http.Request, adm admission) {
	adm.Uncount()
	problem.Write(w, RequestID(r), problem.New(problem.ForbiddenScope, "This key lacks the resolve scope."))
}

// answerCached answers from the link's cache entry (found, or removed by the negative cache),
// and reports false, answering nothing, for a link the cache does not know.
func (s *Server) answerCached(w http.ResponseWriter, r *http.Request, k keys.Key, adm admission, in resolveInput,
	res resolve.Result, found, removed bool,
) bool {
	if removed {
		adm.Uncount()
		problem.Write(w, RequestID(r), problem.New(problem.LinkRemoved, "The provider reports that this link was removed."))
		return true
	}
	if !found {
		return false
	}
	// An idempotency key already used answers for its first job, not from the cache.
	if in.idemKey != "" {
		prev, err := s.Jobs.GetClaim(r.Context(), k.ID, in.idemKey)
		if err != nil {
			adm.Undo()
			s.fail(w, r, err)
			return true
		}
		if prev != nil {
			adm.Uncount()
			s.answerClaim(w, r, k, in, *prev)
			return true
		}
	}
	writeJSON(w, http.StatusOK, cachedResponse{
		Status: string(jobs.StatusDone), URL: in.url, TargetURL: res.TargetURL,
		Provider: providerPtr(in.provider.ID), Tier: tierPtr(in.provider.Tier), Cached: true, Balance: k.Credits,
	})
	return true
}

// submit submits job rec after the admission (jobs.Queue.Submit) and answers.
func (s *Server) submit(w http.ResponseWriter, r *http.Request, k keys.Key, adm admission, in resolveInput, rec *jobs.Record) {
	var cost int64
	if k.Credits != nil {
		cost = creditCost(in.provider.Tier)
	}
	sub, err := s.Queue.Submit(r.Context(), rec, cost)
	s.answerSubmit(w, r, k, adm, in, rec, cost, sub, err)
}

// answerSubmit answers the submit of job rec, which costs cost credits to a key with a balance.
func (s *Server) answerSubmit(w http.ResponseWriter, r *http.Request, k keys.Key, adm admission, in resolveInput,
	rec *jobs.Record, cost int64, sub jobs.Submitted, err error,
) {
	switch {
	case err != nil:
		s.metrics.enqueueErrors.Inc()
		s.log.Error("submitting a job failed", "request_id", RequestID(r), "err", err)
		adm.Undo()
		problem.Write(w, RequestID(r), problem.New(problem.ServiceUnavailable,
			"The job could not be queued; nothing was created or charged. Retry later.").WithRetryAfter(5*time.Second))
	case sub.Replay != nil:
		adm.Uncount()
		s.answerClaim(w, r, k, in, *sub.Replay)
	case sub.OutOfCredits:
		adm.Uncount()
		problem.Write(w, RequestID(r), problem.New(problem.OutOfCredits,
			"This link costs "+itoa(int(cost))+" credits; the key's balance is lower.").WithBalance(*sub.Balance))
	default:
		s.writeQueued(w, rec.ID, sub.Position)
	}
}

// answerClaim answers a request whose idempotency key was used before: 409 when it differs
// from the first request, else the first request's job (200 in the cached shape when it is
// done, else 202), with Idempotent-Replayed.
func (s *Server) answerClaim(w http.ResponseWriter, r *http.Request, k keys.Key, in resolveInput, c jobs.Claim) {
	if c.URL != in.url || c.WebhookURL != in.webhookURL {
		problem.Write(w, RequestID(r), problem.New(problem.IdempotencyConflict,
			"This idempotency key was used with a different url or webhook_url."))
		return
	}
	rec, err := s.Jobs.Get(r.Context(), k.ID, c.JobID)
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	if err == nil && rec.Status == jobs.StatusQueued {
		// The first request may have failed after creating the job but before queueing it
		// (Redis went away, and its undo with it): make sure the replayed job runs.
		if err := s.Queue.Ensure(r.Context(), rec); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	// Only an answer for the first job is a replay; a 503 above is not.
	w.Header().Set("Idempotent-Replayed", "true")
	if err == nil && rec.Status == jobs.StatusDone && rec.TargetURL != nil {
		id := rec.ID
		writeJSON(w, http.StatusOK, cachedResponse{
			JobID: &id, Status: string(jobs.StatusDone), URL: rec.URL, TargetURL: *rec.TargetURL, Provider: providerPtr(rec.Provider),
			Tier: tierPtr(rec.Tier), CreditsCharged: rec.CreditsCharged, Cached: false, Balance: k.Credits,
		})
		return
	}
	s.writeQueued(w, c.JobID, 0)
}

func (s *Server) writeQueued(w http.ResponseWriter, jobID string, pos int64) {
	poll := "/v1/jobs/" + jobID
	w.Header().Set("Location", poll)
	// By hand, as a batch's entries are (appendQueued): encoding it by reflection showed in the
	// handler's profile; TestQueuedMatchesEncoding holds the two to the same bytes.
	b := appendQueued(make([]byte, 0, 160), queuedResponse{JobID: jobID, Status: string(jobs.StatusQueued), QueuePosition: pos, PollURL: poll})
	writeJSONBytes(w, http.StatusAccepted, append(b, '\n'))
}

// providerPtr maps a provider id to the JSON value: null when there is none (any-host links).
func providerPtr(id string) *string {
	if id == "" {
		return nil
	}
	return &id
}

// tierPtr maps a provider tier to the JSON value: "standard", "premium" or null.
func tierPtr(t string) *string {
	if t != resolve.TierStandard && t != resolve.TierPremium {
		return nil
	}
	return &t
}
