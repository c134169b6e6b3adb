package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// The resolve engine's families and any-host mode, end to end: API, worker and real Redis
// (docs/resolving.md).

// sites serves several emulated hosts from the env's one local server.
func sites(handlers map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.Host, ":")
		if h, ok := handlers[host+r.URL.Path]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}
}

func alsoServe(hosts ...string) func(*config.Config) {
	return func(c *config.Config) {
		for _, h := range hosts {
			c.HostOverrides[h] = c.HostOverrides["sho.rt"]
		}
	}
}

func TestAnyHostEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true, tweakCfg: func(c *config.Config) {
		c.ResolveAnyHost = true
		alsoServe("any.test", "land.test")(c)
	}, shortFn: sites(map[string]http.HandlerFunc{
		"any.test/start": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://land.test/page", http.StatusFound)
		},
		"land.test/page": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>the destination</body></html>"))
		},
	})})
	_, tok := e.key(keys.CreateParams{Credits: ptr(int64(5))})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://any.test/start"})
	if r.status != http.StatusAccepted {
		t.Fatalf("any-host link: %d %s", r.status, r.raw)
	}
	job := e.waitJob(tok, r.body["job_id"].(string))
	if job["status"] != "done" || job["target_url"] != "http://land.test/page" || job["provider"] != nil || job["tier"] != nil {
		t.Fatalf("job %v", job)
	}
	hops := job["hops"].([]any)
	last := hops[len(hops)-1].(map[string]any)
	if fmt.Sprint(last["status"]) != "200" || last["kind"] != "http" {
		t.Errorf("the destination's hop %v, want it fetched (200)", last)
	}
	if fmt.Sprint(job["credits_charged"]) != "1" {
		t.Errorf("charged %v, want a standard link's 1", job["credits_charged"])
	}
	// The cached answer has no provider either.
	again := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://any.test/start"})
	if again.status != http.StatusOK || again.body["provider"] != nil || again.body["tier"] != nil || again.body["target_url"] != "http://land.test/page" {
		t.Errorf("cached any-host answer %d %s", again.status, again.raw)
	}
}

func TestAdLinkFlyParksOffTheWorkerSlot(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	shown := map[string]time.Time{}
	const countdown = 2 * time.Second
	e := newEnv(t, envOptions{worker: true,
		extra: []resolve.Provider{{ID: "alf", Label: "ALF", Hosts: []string{"alf.test"}, Tier: "premium", Family: "adlinkfly"}},
		tweakCfg: func(c *config.Config) {
			c.WorkerConcurrency = 1 // one slot: the plain link can only run while the other is parked
			alsoServe("alf.test")(c)
		},
		shortFn: sites(map[string]http.HandlerFunc{
			"sho.rt/plain": func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://example.com/plain", http.StatusFound)
			},
			"alf.test/abc": func(w http.ResponseWriter, r *http.Request) {
				tok := fmt.Sprint(time.Now().UnixNano())
				mu.Lock()
				shown[tok] = time.Now()
				mu.Unlock()
				http.SetCookie(w, &http.Cookie{Name: "csrfToken", Value: tok, Path: "/"})
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprintf(w, `<html><head><script>var app_vars = {"counter_value":"%d"};</script></head><body>
<form id="go-link" action="/links/go" method="post"><input type="hidden" name="_csrfToken" value="%s">
<input type="hidden" name="ad_form_data" value="abc"><input type="hidden" name="_Token[unlocked]" value="g-recaptcha-response"></form></body></html>`,
					int(countdown/time.Second), tok)
			},
			"alf.test/links/go": func(w http.ResponseWriter, r *http.Request) {
				c, err := r.Cookie("csrfToken")
				if err != nil || r.PostFormValue("_csrfToken") != c.Value {
					http.Error(w, "csrf", http.StatusForbidden)
					return
				}
				mu.Lock()
				at := shown[c.Value]
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				if time.Since(at) < countdown-100*time.Millisecond {
					_, _ = w.Write([]byte(`{"status":"error","message":"too early"}`))
					return
				}
				_, _ = w.Write([]byte(`{"status":"success","url":"https://example.com/after-countdown"}`))
			},
		})})
	_, tok := e.key(keys.CreateParams{})
	gated := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://alf.test/abc"})
	if gated.status != http.StatusAccepted {
		t.Fatalf("%d %s", gated.status, gated.raw)
	}
	gatedID := gated.body["job_id"].(string)
	// Let the gated job take the only slot and park.
	keyID, _ := keys.ParseToken(tok)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := e.jobs.Get(context.Background(), keyID, gatedID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Resume != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gated job never parked: %+v", rec)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := e.do("GET", "/v1/jobs/"+gatedID, tok, nil); strings.Contains(string(r.raw), "resume") || r.body["status"] != "running" {
		t.Errorf("a parked job reads %s", r.raw)
	}
	plain := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/plain"})
	pj := e.waitJob(tok, plain.body["job_id"].(string))
	if pj["status"] != "done" {
		t.Fatalf("plain job %v", pj)
	}
	rec, _ := e.jobs.Get(context.Background(), keyID, gatedID)
	if rec.Status.Terminal() {
		t.Errorf("the gated job finished (%s) before the plain one: its countdown held the worker slot", rec.Status)
	}
	gj := e.waitJob(tok, gatedID)
	if gj["status"] != "done" || gj["target_url"] != "https://example.com/after-countdown" {
		t.Fatalf("gated job %v", gj)
	}
	var kinds []string
	for _, h := range gj["hops"].([]any) {
		kinds = append(kinds, h.(map[string]any)["kind"].(string))
	}
	if strings.Join(kinds, ",") != "start,form,provider" {
		t.Errorf("hop kinds %v", kinds)
	}
}
