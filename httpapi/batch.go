package httpapi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/quota"
	"github.com/linkhop/linkhop/resolve"
)

// Batch limits (docs/api.md#post-v1resolvebatch). BATCH_MAX_ITEMS defaults to
// jobs.DefaultBatchMaxItems and may be raised to jobs.HardMaxBatchItems; MaxBatchBodyBytes
// bounds the body whatever the item count.
const (
	DefaultBatchMaxItems = jobs.DefaultBatchMaxItems
	HardMaxBatchItems    = jobs.HardMaxBatchItems
	MaxBatchBodyBytes    = 1 << 20
)

// batchRequest is the body of POST /v1/resolve/batch; items are checked one by one, so that
// a mistake is named items[i].field.
type batchRequest struct {
	Items      json.RawMessage `json:"items"`
	WebhookURL *string         `json:"webhook_url"`
}

// batchItem is one item: url is a pointer so that a missing url (a structural mistake, the
// whole request's 400) differs from a bad one (that item's own 400).
type batchItem struct {
	URL            *string `json:"url"`
	WebhookURL     *string `json:"webhook_url"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// batchMax is the configured BATCH_MAX_ITEMS.
func (s *Server) batchMax() int {
	if s.BatchMaxItems <= 0 {
		return DefaultBatchMaxItems
	}
	return min(s.BatchMaxItems, HardMaxBatchItems)
}

// parseBatch reads the body strictly. A body that is not the batch's shape is refused as a
// whole (nil items); a well-formed item is returned as a resolve request, with the top-level
// webhook_url for an item without its own, and its values are checked later, item by item.
func (s *Server) parseBatch(w http.ResponseWriter, r *http.Request) ([]resolveRequest, *problem.Problem) {
	if h := r.Header.Get("Idempotency-Key"); h != "" {
		// One key cannot name many jobs; ignoring it would silently drop the client's intent.
		return nil, invalid("Idempotency-Key", "does not apply to a batch; give each item its own idempotency_key")
	}
	body, p := readBody(w, r, MaxBatchBodyBytes)
	if p != nil {
		return nil, p
	}
	// A body of plain items (plainBatch) is read in one pass; any other the strict way below,
	// which reads the same plain bodies the same and names every mistake.
	req, plain, ok := plainBatch(body)
	var items []json.RawMessage
	if !ok {
		plain = nil
		if p := decodeStrict(body, &req); p != nil {
			return nil, p
		}
		raw := bytes.TrimSpace(req.Items)
		if len(raw) == 0 || string(raw) == "null" {
			return nil, invalid("items", "is required: a JSON array of 1 to "+strconv.Itoa(s.batchMax())+" items")
		}
		if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
			return nil, invalid("items", "must be a JSON array")
		}
	}
	if n := max(len(items), len(plain)); n == 0 || n > s.batchMax() {
		return nil, invalid("items", fmt.Sprintf("must hold 1 to %d items, not %d", s.batchMax(), n))
	}
	var def *string
	if req.WebhookURL != nil {
		reason := ""
		if len(*req.WebhookURL) > 2048 {
			reason = "must be at most 2048 characters"
		} else {
			reason = checkWebhookURL(*req.WebhookURL, s.AllowPrivateTargets)
		}
		if reason != "" {
			return nil, invalid("webhook_url", reason)
		}
		def = req.WebhookURL
	}
	out := make([]resolveRequest, max(len(items), len(plain)))
	for i := range out {
		name := "items[" + strconv.Itoa(i) + "]"
		var bi batchItem
		if plain != nil {
			bi = plain[i]
		} else if bi, p = readItem(items[i], name); p != nil {
			return nil, p
		}
		if bi.URL == nil {
			return nil, invalid(name+".url", "is required")
		}
		out[i] = resolveRequest{URL: *bi.URL, WebhookURL: bi.WebhookURL, IdempotencyKey: bi.IdempotencyKey}
		if out[i].WebhookURL == nil {
			out[i].WebhookURL = def
		}
	}
	return out, nil
}

// readItem reads item name of a batch that is not all plain items: quickly when it is plain,
// else strictly (exactKeys, then encoding/json refusing unknown fields).
func readItem(raw json.RawMessage, name string) (batchItem, *problem.Problem) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return batchItem{}, invalid(name, "must be a JSON object")
	}
	if bi, ok := plainItem(t); ok {
		return bi, nil
	}
	if p := exactKeys(t, &batchItem{}); p != nil {
		return batchItem{}, renamed(p, name)
	}
	var bi batchItem
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bi); err != nil {
		return batchItem{}, renamed(decodeProblem(err), name)
	}
	return bi, nil
}

// renamed names p's field inside item name: "url" becomes "items[3].url", the item itself
// "items[3]".
func renamed(p *problem.Problem, name string) *problem.Problem {
	field, reason := "", "the item is invalid"
	if len(p.Errors) > 0 {
		field, reason = p.Errors[0].Field, p.Errors[0].Reason
	}
	if field != "" {
		name += "." + field
	}
	return invalid(name, reason)
}

// batchSlot is one item on its way through postResolveBatch.
type batchSlot struct {
	in    resolveInput
	entry any // the answer, once known
	look  int // index of the item's cache read (a valid item)
	res   resolve.Result
	rec   *jobs.Record // the job to create (a new link)
	sent  int          // index among the items sent to SubmitBatch, -1 when none
}

// postResolveBatch accepts up to BATCH_MAX_ITEMS links (docs/api.md#post-v1resolvebatch). Each
// valid item is one request against the per-minute limit and, when accepted, against the daily
// quota and the credits, taken in item order so that a later item gets its own 429 or 402; an
// invalid item costs nothing. Whatever the size, two round trips on a single Redis or through
// Sentinel: (1) authentication with the admission of every valid item and their cache lookups
// (one MGET), (2) one script that takes the quota and credits, creates the jobs with their
// idempotency claims and enqueues their tasks; on Redis Cluster the lookups are a GET each and
// the tasks are enqueued by a third (jobs.Queue.SubmitBatch). A failure of the service after
// admission gives everything back and answers 503, so, as for a single request, a non-2xx
// answer means nothing was created, queued or charged.
func (s *Server) postResolveBatch(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	reqs, bad := s.parseBatch(w, r)
	slots := make([]batchSlot, len(reqs))
	valid := 0
	for i, req := range reqs {
		in, p := s.checkResolve(req, "")
		slots[i] = batchSlot{in: in, sent: -1}
		if p != nil {
			slots[i].entry = p.Entry()
			continue
		}
		valid++
	}
	if bad != nil {
		// A malformed batch is one request, as a malformed single request is.
		valid = 1
	}
	var lookup func(int) (resolve.Result, bool, bool, error)
	g, ok := s.gate(w, r, gateOptions{many: true, slots: valid,
		batch: func(p redis.Pipeliner) func() error {
			// The valid items are looked up; the limit admits the first of them.
			links := make([]resolve.Link, 0, valid)
			for i := range slots {
				if slots[i].entry == nil {
					slots[i].look = len(links)
					links = append(links, resolve.Link{Raw: slots[i].in.url, URL: slots[i].in.parsed})
				}
			}
			lookup = s.Resolver.LookupManyIn(ctx, p, links)
			return nil
		}})
	if !ok {
		return
	}
	k, adm := g.key, g.admission
	if !k.HasScope(keys.ScopeResolve) {
		adm.keepOne()
		problem.Write(w, RequestID(r), problem.New(problem.ForbiddenScope, "This key lacks the resolve scope."))
		return
	}
	if bad != nil {
		problem.Write(w, RequestID(r), bad)
		return
	}

	// Which items the limit admitted (the first g.granted valid ones), and what the cache knows.
	var items []jobs.BatchItem
	// The new jobs' ids (random UUIDs, as uuid.NewString makes them) from one read of the
	// system's random source for the whole batch instead of one per item.
	random := bufio.NewReaderSize(rand.Reader, 16*max(g.granted, 1))
	n := 0
	for i := range slots {
		sl := &slots[i]
		if sl.entry != nil {
			continue
		}
		n++
		if n > g.granted {
			sl.entry = problem.New(problem.RateLimited,
				"The per-minute limit of this key was used up by the items before this one; retry it after retry_after.").
				WithRetryAfter(adm.d.SlotRetryAfter).Entry()
			continue
		}
		res, found, removed, err := lookup(sl.look)
		if err != nil {
			adm.undoMany(0, 0)
			s.fail(w, r, err)
			return
		}
		item := jobs.BatchItem{Kind: jobs.BatchNew, Record: &jobs.Record{
			URL: sl.in.url, WebhookURL: sl.in.webhookURL, IdempotencyKey: sl.in.idemKey,
			Provider: sl.in.provider.ID, Tier: sl.in.provider.Tier,
		}}
		switch {
		case removed:
			item.Kind = jobs.BatchRemoved
		case found:
			item.Kind, sl.res = jobs.BatchCached, res
		default:
			// Must, as uuid.NewString: crypto/rand does not fail (Go 1.24+ ends the program instead).
			item.Record.ID = uuid.Must(uuid.NewRandomFromReader(random)).String()
			if k.Credits != nil {
				item.Cost = creditCost(sl.in.provider.Tier)
			}
			sl.rec = item.Record
		}
		sl.sent = len(items)
		items = append(items, item)
	}

	d := adm.d
	if len(items) > 0 {
		out, err := s.Queue.SubmitBatch(ctx, k.ID, items)
		if err != nil {
			s.metrics.enqueueErrors.Inc()
			s.log.Error("submitting a batch failed", "request_id", RequestID(r), "err", err)
			adm.undoMany(out.Counted, out.Day)
			problem.Write(w, RequestID(r), problem.New(problem.ServiceUnavailable,
				"The batch could not be queued; nothing was created or charged. Retry later.").WithRetryAfter(5*time.Second))
			return
		}
		d = d.WithDayUsed(out.DayUsed)
		for i := range slots {
			if sl := &slots[i]; sl.sent >= 0 {
				sl.entry = s.batchEntry(sl, items[sl.sent], out.Items[sl.sent], d.Now)
			}
		}
	}
	// The headers describe the key's budgets after the batch.
	quota.SetHeaders(w.Header(), d)
	b, err := appendBatchAnswer(make([]byte, 0, 160*len(slots)), slots)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSONBytes(w, http.StatusOK, append(b, '\n'))
}

// appendBatchAnswer appends the 200 body, one entry per item in order: what encoding/json
// writes for {"items": the slots' entries}: the queued entries, nearly all of a batch as a rule, by hand (appendQueued),
// the others through encoding/json.
func appendBatchAnswer(b []byte, slots []batchSlot) ([]byte, error) {
	b = append(b, `{"items":[`...)
	for i := range slots {
		if i > 0 {
			b = append(b, ',')
		}
		if q, ok := slots[i].entry.(queuedResponse); ok {
			b = appendQueued(b, q)
			continue
		}
		e, err := recjson.Marshal(slots[i].entry)
		if err != nil {
			return b, fmt.Errorf("encoding a batch answer: %w", err)
		}
		b = append(b, e...)
	}
	return append(b, "]}"...), nil
}

// appendQueued appends q as encoding/json writes it.
func appendQueued(b []byte, q queuedResponse) []byte {
	b = append(b, `{"job_id":`...)
	b = appendString(b, q.JobID)
	b = append(b, `,"status":`...)
	b = appendString(b, q.Status)
	b = append(b, `,"queue_position":`...)
	b = strconv.AppendInt(b, q.QueuePosition, 10)
	b = append(b, `,"poll_url":`...)
	b = appendString(b, q.PollURL)
	return append(b, '}')
}

// batchEntry is the answer of an item SubmitBatch took, exactly as POST /v1/resolve would
// answer it alone at that point of the batch.
func (s *Server) batchEntry(sl *batchSlot, it jobs.BatchItem, o jobs.BatchOutcome, now time.Time) any {
	switch o.Code {
	case jobs.BatchQuotaExceeded:
		return problem.New(problem.QuotaExceeded, "The daily quota of this key is used up; it renews at 00:00 UTC.").
			WithRetryAfter(s.Limiter.QuotaRetryAfter(now)).Entry()
	case jobs.BatchOutOfCredits:
		bal := int64(0)
		if o.Balance != nil {
			bal = *o.Balance
		}
		return problem.New(problem.OutOfCredits,
			"This link costs "+itoa(int(it.Cost))+" credits; the key's balance is lower.").WithBalance(bal).Entry()
	case jobs.BatchReplay:
		return replayEntry(sl.in, *o.Replay, o.Replayed, o.Balance)
	}
	switch it.Kind {
	case jobs.BatchRemoved:
		return problem.New(problem.LinkRemoved, "The provider reports that this link was removed.").Entry()
	case jobs.BatchCached:
		return cachedResponse{
			Status: string(jobs.StatusDone), URL: sl.in.url, TargetURL: sl.res.TargetURL,
			Provider: providerPtr(sl.in.provider.ID), Tier: tierPtr(sl.in.provider.Tier), Cached: true, Balance: o.Balance,
		}
	}
	return queuedEntry(sl.rec.ID, o.Position)
}

// replayEntry answers an item whose idempotency key was used before, as answerClaim does.
func replayEntry(in resolveInput, c jobs.Claim, rec *jobs.Record, balance *int64) any {
	if c.URL != in.url || c.WebhookURL != in.webhookURL {
		return problem.New(problem.IdempotencyConflict, "This idempotency key was used with a different url or webhook_url.").Entry()
	}
	if rec != nil && rec.Status == jobs.StatusDone && rec.TargetURL != nil {
		id := rec.ID
		return cachedResponse{
			JobID: &id, Status: string(jobs.StatusDone), URL: rec.URL, TargetURL: *rec.TargetURL, Provider: providerPtr(rec.Provider),
			Tier: tierPtr(rec.Tier), CreditsCharged: rec.CreditsCharged, Cached: false, Balance: balance,
		}
	}
	return queuedEntry(c.JobID, 0)
}

func queuedEntry(jobID string, pos int64) queuedResponse {
	return queuedResponse{JobID: jobID, Status: string(jobs.StatusQueued), QueuePosition: pos, PollURL: "/v1/jobs/" + jobID}
}

// plainItem reads the common item quickly: an object whose members are batchItem's, each at
// most once and spelled exactly, each value null or a string of plain printable ASCII without
// escapes (whose JSON decoding is the text itself), with nothing but white space around it.
// Anything else reports false, and the item is then read with exactKeys and encoding/json, which
// accept exactly the same plain items (with the same values) and name every mistake; this only
// skips their reflection and buffers, which were most of a batch's per-item cost.
func plainItem(obj []byte) (batchItem, bool) {
	bi, next, ok := plainObject(obj, skipSpace(obj, 0))
	return bi, ok && skipSpace(obj, next) == len(obj)
}

// plainBatch reads a body of plain members quickly: {"items":[plain items…]} with, optionally,
// a "webhook_url" that is null or a plain string, each member once, in any order, and nothing
// but white space around. plain holds the items (empty, not nil, for "items":[]). Anything else
// reports false, for parseBatch's strict reading.
func plainBatch(b []byte) (req batchRequest, plain []batchItem, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return req, nil, false
	}
	var seenItems, seenHook bool
	for first := true; ; first = false {
		i = skipSpace(b, i+1)
		if first && i < len(b) && b[i] == '}' {
			return req, nil, false // no items: the strict reading names the mistake
		}
		key, next, ok := plainString(b, i)
		if !ok {
			return req, nil, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return req, nil, false
		}
		i = skipSpace(b, i+1)
		switch {
		case key == "items" && !seenItems:
			seenItems = true
			if i >= len(b) || b[i] != '[' {
				return req, nil, false
			}
			plain = []batchItem{}
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			for {
				bi, next, ok := plainObject(b, i)
				if !ok {
					return req, nil, false
				}
				plain = append(plain, bi)
				i = skipSpace(b, next)
				if i < len(b) && b[i] == ',' {
					i = skipSpace(b, i+1)
					continue
				}
				if i < len(b) && b[i] == ']' {
					i++
					break
				}
				return req, nil, false
			}
		case key == "webhook_url" && !seenHook:
			seenHook = true
			if bytes.HasPrefix(b[i:], []byte("null")) {
				i += 4
			} else {
				v, next, ok := plainString(b, i)
				if !ok {
					return req, nil, false
				}
				req.WebhookURL, i = &v, next
			}
		default:
			return req, nil, false
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			continue
		}
		if i < len(b) && b[i] == '}' && skipSpace(b, i+1) == len(b) && seenItems {
			return req, plain, true
		}
		return req, nil, false
	}
}

// plainObject reads the plain item (see plainItem) at b[i:] and returns it with the index after
// its closing brace.
func plainObject(b []byte, i int) (batchItem, int, bool) {
	var bi batchItem
	if i >= len(b) || b[i] != '{' {
		return bi, 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return bi, i + 1, true
	}
	var seen [3]bool
	for {
		key, next, ok := plainString(b, i)
		if !ok {
			return bi, 0, false
		}
		var dst **string
		var n int
		switch key {
		case "url":
			dst, n = &bi.URL, 0
		case "webhook_url":
			dst, n = &bi.WebhookURL, 1
		case "idempotency_key":
			dst, n = &bi.IdempotencyKey, 2
		default:
			return bi, 0, false
		}
		if seen[n] {
			return bi, 0, false
		}
		seen[n] = true
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return bi, 0, false
		}
		i = skipSpace(b, i+1)
		if bytes.HasPrefix(b[i:], []byte("null")) {
			*dst, i = nil, i+4
		} else {
			v, next, ok := plainString(b, i)
			if !ok {
				return bi, 0, false
			}
			*dst, i = &v, next
		}
		i = skipSpace(b, i)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return bi, i + 1, true
		default:
			return bi, 0, false
		}
	}
}

// plainString reads the JSON string at b[i:] when it holds only printable ASCII and no escape,
// and returns it with the index after its closing quote.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return "", 0, false
		}
	}
	return "", 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
