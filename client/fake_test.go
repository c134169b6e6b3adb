package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
)

// fake is an in-memory linkhop that follows docs/api.md for POST /v1/resolve and
// GET /v1/jobs/{id}, and the batch endpoints' shapes (POST /v1/resolve/batch,
// GET /v1/jobs?ids=) that the real server does not serve yet. Links of host sho.rt resolve
// to https://example.com/dest<path> ("/gone" fails with link_removed, "/cached" is a cached
// answer); other hosts are unsupported_link. A job is queued when created and done (or
// failed) from its first read on.
type fake struct {
	noBatch bool // answer 404 for the batch endpoints, as a server from before them
	// limitItems, when > 0, answers rate_limited for the items of a batch past that many,
	// once per link.
	limitItems int

	mu       sync.Mutex
	jobs     map[string]map[string]any
	n        int
	calls    map[string]int // "POST /v1/resolve/batch" → count
	limited  map[string]bool
	batchLen []int
}

func newFake() *fake {
	return &fake{jobs: map[string]map[string]any{}, calls: map[string]int{}, limited: map[string]bool{}}
}

func (f *fake) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problemOf(status int, code, detail string) map[string]any {
	return map[string]any{
		"type": "https://github.com/linkhop/linkhop/blob/main/docs/errors.md#" + code, "title": code,
		"status": status, "code": code, "detail": detail, "instance": "req-fake",
	}
}

func writeProblem(w http.ResponseWriter, p map[string]any) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p["status"].(int))
	_ = json.NewEncoder(w).Encode(p)
}

// submit is what POST /v1/resolve answers for one link: a status and a body.
func (f *fake) submit(link string) (int, map[string]any) {
	u, err := url.Parse(link)
	if err != nil || u.Host != "sho.rt" {
		return 422, problemOf(422, "unsupported_link", "The host of url is not a provider's.")
	}
	if u.Path == "/cached" {
		return 200, map[string]any{"job_id": nil, "status": "done", "url": link, "target_url": "https://example.com/dest/cached",
			"provider": "short", "tier": "standard", "credits_charged": 0, "cached": true, "balance": nil}
	}
	f.n++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.n)
	f.jobs[id] = map[string]any{"job_id": id, "status": "queued", "url": link, "target_url": nil, "provider": "short",
		"tier": "standard", "error": nil, "error_detail": nil, "credits_charged": 0, "balance": nil,
		"created_at": "2026-01-02T03:04:05.678Z", "updated_at": "2026-01-02T03:04:05.678Z", "completed_at": nil,
		"hops": []any{}, "webhook": nil}
	return 202, map[string]any{"job_id": id, "status": "queued", "queue_position": 0, "poll_url": "/v1/jobs/" + id}
}

// read returns the job as a poll sees it, finishing it on its first read.
func (f *fake) read(id string) map[string]any {
	j, ok := f.jobs[id]
	if !ok {
		return nil
	}
	if j["status"] == "queued" {
		link := j["url"].(string)
		u, _ := url.Parse(link)
		j["completed_at"] = "2026-01-02T03:04:06.012Z"
		if u.Path == "/gone" {
			j["status"], j["error"], j["error_detail"] = "failed", "link_removed", "The provider answered 404."
			j["hops"] = []any{map[string]any{"url": link, "status": 404, "kind": "start"}}
		} else {
			target := "https://example.com/dest" + u.Path
			j["status"], j["target_url"] = "done", target
			j["hops"] = []any{map[string]any{"url": link, "status": 301, "kind": "start"},
				map[string]any{"url": target, "status": nil, "kind": "http"}}
		}
	}
	return j
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	route := r.Method + " " + r.URL.Path
	if r.Method == http.MethodGet && r.URL.Path == "/v1/jobs" {
		route += "?ids="
	} else if strings.HasPrefix(r.URL.Path, "/v1/jobs/") {
		route = r.Method + " /v1/jobs/{id}"
	}
	f.calls[route]++
	if r.Header.Get("Authorization") != "Bearer sk_live_fake" {
		writeProblem(w, problemOf(401, "invalid_key", "Unknown key."))
		return
	}
	switch {
	case route == "POST /v1/resolve":
		var body struct {
			URL string `json:"url"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.URL == "" {
			p := problemOf(400, "invalid_request", "url is required.")
			p["errors"] = []map[string]string{{"field": "url", "reason": "required"}}
			writeProblem(w, p)
			return
		}
		status, out := f.submit(body.URL)
		if status >= 400 {
			writeProblem(w, out)
			return
		}
		writeJSON(w, status, out)
	case route == "POST /v1/resolve/batch" && !f.noBatch:
		var body struct {
			Items []struct {
				URL string `json:"url"`
			} `json:"items"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Items) == 0 || len(body.Items) > 100 {
			writeProblem(w, problemOf(400, "invalid_request", "Not a batch."))
			return
		}
		f.batchLen = append(f.batchLen, len(body.Items))
		items := make([]any, len(body.Items))
		for i, it := range body.Items {
			if f.limitItems > 0 && i >= f.limitItems && !f.limited[it.URL] {
				f.limited[it.URL] = true
				p := problemOf(429, "rate_limited", "The key's per-minute limit is spent.")
				p["retry_after"] = 1
				items[i] = p
				continue
			}
			_, items[i] = f.submit(it.URL)
		}
		writeJSON(w, 200, map[string]any{"items": items})
	case route == "GET /v1/jobs?ids=" && !f.noBatch:
		ids := strings.Split(r.URL.Query().Get("ids"), ",")
		out := make([]any, len(ids))
		for i, id := range ids {
			if j := f.read(id); j != nil {
				out[i] = j
			}
		}
		writeJSON(w, 200, map[string]any{"jobs": out})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/jobs/"):
		j := f.read(strings.TrimPrefix(r.URL.Path, "/v1/jobs/"))
		if j == nil {
			writeProblem(w, problemOf(404, "not_found", "No such job."))
			return
		}
		writeJSON(w, 200, j)
	default:
		writeProblem(w, problemOf(404, "not_found", "No such route."))
	}
}

// serve starts f on a loopback httptest server.
func (f *fake) serve() *httptest.Server { return httptest.NewServer(f) }
