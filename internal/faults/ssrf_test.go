//go:build faults

package faults

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestNoConnectionToInternalAddresses: with the production guard (private targets not
// allowed), no user request makes the worker connect to an internal address, even when the
// address is spelled as a provider host or reached through a provider's redirect. A listener
// on 127.0.0.2:80 — loopback, on an allowed port, and declared a provider host so that the
// worker would fetch it — counts every connection; there must be none, and every such job
// must end failed with resolve_failed.
func TestNoConnectionToInternalAddresses(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.2:80")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2:80 (needs root): %v", err)
	}
	var conns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	defer l.Close()

	providers := filepath.Join(t.TempDir(), "providers.json")
	if err := os.WriteFile(providers, []byte(`{"providers":[{"provider":"inside","label":"Inside",`+
		`"hosts":["127.0.0.2"],"tier":"standard","latency":"~1s"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, nil, "LINKHOP_PROVIDERS_FILE="+providers, "RESOLVE_MAX_ATTEMPTS=1")
	s.short.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/to/") {
			// A provider redirecting to the internal host, in several spellings.
			http.Redirect(w, r, "http://"+strings.TrimPrefix(r.URL.Path, "/to/")+"/next", http.StatusFound)
			return true
		}
		return false
	})
	api := s.startAPI()
	s.startWorker("worker")
	token, keyID := s.newKey("--rate-limit", "0")

	var ids []string
	for _, u := range []string{
		"http://127.0.0.2/direct",
		"http://bit.ly/to/127.0.0.2",
		"http://bit.ly/to/127.0.0.2:80",
	} {
		a := call(context.Background(), api.addr, "POST", "/v1/resolve", token, map[string]string{"url": u})
		if a.status != http.StatusAccepted {
			t.Fatalf("%s: %d %s", u, a.status, a.raw)
		}
		ids = append(ids, a.body["job_id"].(string))
	}
	recs := s.waitTerminal(keyID, ids, 60*time.Second)
	for _, id := range ids {
		r := recs[id]
		if r.Status != "failed" || r.Error == nil || *r.Error != "resolve_failed" {
			detail := ""
			if r.ErrorDetail != nil {
				detail = *r.ErrorDetail
			}
			t.Errorf("job %s (%s): %s %v %q, want failed resolve_failed", id, r.URL, r.Status, r.Error, detail)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the worker connected %d times to 127.0.0.2:80", n)
	}
}
