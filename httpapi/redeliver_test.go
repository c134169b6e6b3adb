package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/webhooks"
)

// hookReceiver records deliveries; the delivery number hold (1-based) waits until release
// is closed, so a test can see a delivery while it is pending.
type hookReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
	hold    int
	release chan struct{}
}

func newHookReceiver(t *testing.T, hold int) *hookReceiver {
	t.Helper()
	h := &hookReceiver{hold: hold, release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.headers = append(h.headers, r.Header.Clone())
		h.bodies = append(h.bodies, body)
		n := len(h.headers)
		h.mu.Unlock()
		if n == h.hold {
			select {
			case <-h.release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	// Registered after the server's Close, so it runs first: Close waits for the handlers.
	t.Cleanup(h.Close)
	t.Cleanup(func() { h.unblock() })
	return h
}

func (h *hookReceiver) unblock() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

func (h *hookReceiver) got() ([]http.Header, [][]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]http.Header(nil), h.headers...), append([][]byte(nil), h.bodies...)
}

// waitWebhook polls the job until its webhook object has status want.
func (e *env) waitWebhook(token, id, want string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r := e.do("GET", "/v1/jobs/"+id, token, nil)
		if wh, ok := r.body["webhook"].(map[string]any); ok && wh["status"] == want {
			return wh
		}
		time.Sleep(30 * time.Millisecond)
	}
	e.t.Fatalf("webhook of job %s never became %s", id, want)
	return nil
}

// The whole path: a job with a webhook_url is resolved, its event delivered and signed with
// the key's secret; a redelivery is for the owner only, refused while pending, and sends the
// same event again under a new webhook-id.
func TestWebhookDeliveryAndRedelivery(t *testing.T) {
	t.Parallel()
	rcv := newHookReceiver(t, 2)
	e := newEnv(t, envOptions{worker: true, tweakCfg: func(c *config.Config) {
		c.AllowPrivateTargets = true // the receiver listens on 127.0.0.1 over plain http
		c.WebhookBackoffBase = 20 * time.Millisecond
	}})
	owner, tok := e.key(keys.CreateParams{})
	_, otherTok := e.key(keys.CreateParams{})

	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/hook-me", "webhook_url": rcv.URL + "/hook"})
	if r.status != http.StatusAccepted {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id := r.body["job_id"].(string)
	e.waitJob(tok, id)
	wh := e.waitWebhook(tok, id, "delivered")
	if wh["attempts"] != 1.0 || wh["last_status_code"] != 204.0 || wh["last_error"] != nil || wh["url"] != rcv.URL+"/hook" {
		t.Fatalf("webhook object %v", wh)
	}
	if _, has := wh["generation"]; has {
		t.Errorf("bookkeeping leaked into the API object: %v", wh)
	}
	headers, bodies := rcv.got()
	if err := webhooks.VerifyLinkhop(owner.WebhookSecret(), headers[0].Get("X-LinkSkipper-Signature"), bodies[0], time.Now()); err != nil {
		t.Error(err)
	}
	if err := webhooks.VerifyStandard(owner.WebhookSecret(), headers[0], bodies[0], time.Now()); err != nil {
		t.Error(err)
	}

	path := "/v1/jobs/" + id + "/webhook/redeliver"
	wantProblem(t, e.do("POST", path, otherTok, nil), http.StatusNotFound, "not_found")
	wantProblem(t, e.do("POST", "/v1/jobs/not-a-uuid/webhook/redeliver", tok, nil), http.StatusNotFound, "not_found")
	wantProblem(t, e.do("POST", "/v1/jobs/00000000-0000-4000-8000-000000000000/webhook/redeliver", tok, nil), http.StatusNotFound, "not_found")
	if r := e.do("POST", path, "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("no key: %d", r.status)
	}
	if r := e.do("GET", path, tok, nil); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow %q", r.status, r.header.Get("Allow"))
	}

	r = e.do("POST", path, tok, nil)
	if r.status != http.StatusAccepted || r.header.Get("Location") != "/v1/jobs/"+id {
		t.Fatalf("redeliver: %d %v %s", r.status, r.header, r.raw)
	}
	if r.body["status"] != "pending" || r.body["attempts"] != 0.0 || r.body["url"] != rcv.URL+"/hook" || r.body["next_attempt_at"] == nil {
		t.Errorf("redeliver body %s", r.raw)
	}
	// The second delivery is held by the receiver, so it is still pending.
	wantProblem(t, e.do("POST", path, tok, nil), http.StatusConflict, "idempotency_conflict")
	rcv.unblock()
	if wh := e.waitWebhook(tok, id, "delivered"); wh["attempts"] != 1.0 {
		t.Errorf("after redelivery: %v", wh)
	}
	headers, bodies = rcv.got()
	if len(headers) != 2 || headers[0].Get("webhook-id") == headers[1].Get("webhook-id") || string(bodies[0]) != string(bodies[1]) {
		t.Errorf("deliveries: %d, ids %q %q", len(headers), headers[0].Get("webhook-id"), headers[len(headers)-1].Get("webhook-id"))
	}

	// A job without a webhook has nothing to redeliver.
	r = e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/no-hook"})
	plain := r.body["job_id"].(string)
	e.waitJob(tok, plain)
	wantProblem(t, e.do("POST", "/v1/jobs/"+plain+"/webhook/redeliver", tok, nil), http.StatusNotFound, "not_found")
}
