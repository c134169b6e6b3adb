package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/linkhop/linkhop/client"
	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/redistest"
)

func cli(t *testing.T, args ...string) (int, map[string]any, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := keysCommand(args, &out, &errb)
	var m map[string]any
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("stdout is not one JSON object: %q", out.String())
		}
	}
	return code, m, errb.String()
}

func TestKeysCLI(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("REDIS_URL", srv.URL())
	code, c, stderr := cli(t, "create", "--name", "agency", "--daily-quota", "100")
	if code != 0 {
		t.Fatalf("create: %d %s", code, stderr)
	}
	key, _ := c["key"].(string)
	secret, _ := c["webhook_secret"].(string)
	id, _ := c["id"].(string)
	if !strings.HasPrefix(key, "sk_live_") || !strings.HasPrefix(secret, "whsec_") || !strings.HasPrefix(id, "key_") {
		t.Fatalf("create printed %v", c)
	}
	if c["name"] != "agency" || c["rate_limit_per_minute"] != 60.0 || c["daily_quota"] != 100.0 || c["credits"] != nil {
		t.Errorf("create printed %v", c)
	}
	if sc, _ := c["scopes"].([]any); len(sc) != 1 || sc[0] != "resolve" {
		t.Errorf("scopes %v", c["scopes"])
	}

	code, u, stderr := cli(t, "update", id, "--rate-limit", "0", "--daily-quota", "none", "--credits", "7")
	if code != 0 || u["rate_limit_per_minute"] != 0.0 || u["daily_quota"] != nil || u["credits"] != 7.0 {
		t.Fatalf("update: %d %v %s", code, u, stderr)
	}
	if _, ok := u["key"]; ok {
		t.Error("update printed the key")
	}
	code, s, _ := cli(t, "show", id)
	if code != 0 || s["id"] != id || s["webhook_secret"] != secret {
		t.Errorf("show: %d %v", code, s)
	}
	code, l, _ := cli(t, "list")
	if ks, _ := l["keys"].([]any); code != 0 || len(ks) != 1 {
		t.Errorf("list: %d %v", code, l)
	}
	code, r, _ := cli(t, "rotate-webhook-secret", id, "--grace", "1h")
	if code != 0 || r["webhook_secret"] == secret || r["previous_secret_valid_until"] == nil {
		t.Errorf("rotate: %d %v", code, r)
	}
	code, v, _ := cli(t, "revoke", id)
	if code != 0 || v["revoked_at"] == nil {
		t.Errorf("revoke: %d %v", code, v)
	}

	for name, args := range map[string][]string{
		"no name":       {"create"},
		"bad quota":     {"create", "--name", "x", "--daily-quota", "-1"},
		"unknown cmd":   {"explode"},
		"show no id":    {"show"},
		"bad flag":      {"update", id, "--rate-limit", "many"},
		"no arguments":  {},
		"list with arg": {"list", "x"},
	} {
		if code, out, _ := cli(t, args...); code != 2 || out != nil {
			t.Errorf("%s: exit %d, stdout %v; want 2 and nothing", name, code, out)
		}
	}
	if code, _, stderr := cli(t, "show", "key_aaaaaaaaaaaaaaaa"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("show unknown: %d %q", code, stderr)
	}
}

func TestDevModeEndToEnd(t *testing.T) {
	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	readyc := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runDevWith(ctx, cfg, &out, func(deps, string) { close(readyc) })
	}()
	select {
	case <-readyc:
	case err := <-done:
		t.Fatalf("dev mode exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("dev mode did not start")
	}
	banner := out.String()
	for _, want := range []string{"sk_live_", "whsec_", "Embedded Redis:  redis://127.0.0.1:", "lost when you stop"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	// Run the printed curl line's request as printed.
	m := regexp.MustCompile(`curl -sS -X POST (\S+) -H 'Authorization: Bearer (\S+)' -H 'Content-Type: application/json' -d '(.+)'`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("no curl line in:\n%s", banner)
	}
	req, _ := http.NewRequest("POST", m[1], strings.NewReader(m[3]))
	req.Header.Set("Authorization", "Bearer "+m[2])
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Fatalf("printed curl gave %d %v", res.StatusCode, body)
	}
	job := pollDone(t, strings.TrimSuffix(m[1], "/v1/resolve")+body["poll_url"].(string), m[2])
	if job["target_url"] != "https://example.com/hello" {
		t.Errorf("target %v", job["target_url"])
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("dev mode shutdown: %v", err)
	}
}

// TestMain lets a test run the real main in a child process (the test binary re-executed),
// and otherwise checks that the tests leave no goroutine behind: the servers run starts (API,
// in-process worker, dev mode's embedded Redis and demo shortener) must all stop. Idle
// keep-alive connections of the tests' HTTP clients and the go-redis pool's reaper outlive a
// test by design.
func TestMain(m *testing.M) {
	if os.Getenv("LINKHOP_RUN_MAIN") == "1" {
		os.Args = append([]string{"api"}, strings.Fields(os.Getenv("LINKHOP_ARGS"))...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// pollDone polls a job until it is done, failing the test if it fails or takes too long.
func pollDone(t *testing.T, poll, token string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest("GET", poll, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var job map[string]any
		_ = json.NewDecoder(res.Body).Decode(&job)
		res.Body.Close()
		if job["status"] == "done" {
			return job
		}
		if time.Now().After(deadline) || job["status"] == "failed" || job["status"] == "invalid" {
			t.Fatalf("job did not finish: %v", job)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// devRun is dev mode started by startDev.
type devRun struct {
	base, token, banner string
	cancel              context.CancelFunc
	done                chan error
}

// startDev runs dev mode with cfg until stop, and waits until it serves.
func startDev(t *testing.T, cfg config.Config) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	d := &devRun{cancel: cancel, done: make(chan error, 1)}
	readyc := make(chan struct{})
	go func() {
		d.done <- runDevWith(ctx, cfg, &out, func(dp deps, token string) {
			d.base, d.token = "http://"+printable(dp.ln.Addr()), token
			close(readyc)
		})
	}()
	select {
	case <-readyc:
	case err := <-d.done:
		cancel()
		t.Fatalf("dev mode exited: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("dev mode did not start")
	}
	d.banner = out.String()
	return d
}

// submit posts link to the dev-mode API with its key: the status and the JSON body.
func (d *devRun) submit(t *testing.T, link string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"url": link})
	req, _ := http.NewRequest("POST", d.base+"/v1/resolve", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body
}

func (d *devRun) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	if err := <-d.done; err != nil {
		t.Errorf("dev mode shutdown: %v", err)
	}
}

// TestDevModeReplicaAck: dev mode's embedded Redis has no replicas, so a REDIS_MIN_REPLICAS_ACK
// left in the environment must not make every submit wait for replicas and fail.
func TestDevModeReplicaAck(t *testing.T) {
	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.ShutdownTimeout = "127.0.0.1:0", 2*time.Second
	cfg.RedisMinReplicasAck, cfg.RedisMinReplicasTimeout = 1, 50*time.Millisecond
	s := startDev(t, cfg)
	if st, body := s.submit(t, "http://"+demoHost+"/ack"); st != 202 {
		t.Fatalf("submit with REDIS_MIN_REPLICAS_ACK=1 in dev mode gave %d %v", st, body)
	} else {
		job := pollDone(t, s.base+body["poll_url"].(string), s.token)
		if job["target_url"] != "https://example.com/ack" {
			t.Errorf("job %v", job)
		}
	}
	s.stop(t)
}

// TestDevModeCLIResolve: the README's first use of dev mode, the linkhop command line's resolve,
// which submits its links as a batch (one link, then two) and waits for their jobs.
func TestDevModeCLIResolve(t *testing.T) {
	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.ShutdownTimeout = "127.0.0.1:0", 2*time.Second
	s := startDev(t, cfg)
	defer s.stop(t)
	c := client.New(s.base, s.token)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, paths := range [][]string{{"/hello"}, {"/one", "/two"}} {
		var urls []string
		for _, p := range paths {
			urls = append(urls, "http://"+demoHost+p)
		}
		out, err := c.ResolveMany(ctx, urls, nil)
		if err != nil {
			t.Fatalf("resolving %v: %v", urls, err)
		}
		for i, o := range out {
			if o.Err != nil || o.Job == nil || o.Job.TargetURL != "https://example.com"+paths[i] {
				t.Errorf("%s: %+v", urls[i], o)
			}
		}
	}
}

func TestDevModeAnyHost(t *testing.T) {
	// A "real link" on loopback: dev mode allows private targets, and -any-host takes any host.
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/short" {
			http.Redirect(w, r, "/landing", http.StatusFound)
			return
		}
		_, _ = w.Write([]byte("<html>landing</html>"))
	}))
	defer site.Close()
	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.ShutdownTimeout, cfg.ResolveAnyHost = "127.0.0.1:0", 2*time.Second, true
	s := startDev(t, cfg)
	if !strings.Contains(s.banner, "Any-host mode:   on") {
		t.Errorf("banner does not say any-host mode is on:\n%s", s.banner)
	}
	st, body := s.submit(t, site.URL+"/short")
	if st != 202 {
		t.Fatalf("any-host link gave %d %v", st, body)
	}
	job := pollDone(t, s.base+body["poll_url"].(string), s.token)
	if job["target_url"] != site.URL+"/landing" || job["provider"] != nil {
		t.Errorf("job %v", job)
	}
	s.stop(t)
}

func TestBadConfigExits2(t *testing.T) {
	badFamily := filepath.Join(t.TempDir(), "providers.json")
	if err := os.WriteFile(badFamily, []byte(`{"providers":[{"provider":"x","hosts":["x.test"],"tier":"premium","family":"captcha-solver"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ env, name string }{
		{"WEBHOOK_TIMEOUT=soon", "WEBHOOK_TIMEOUT"},
		{"RESOLVE_MAX_HOPS=50", "RESOLVE_MAX_HOPS"},
		{"REDIS_URL=http://x", "REDIS_URL"},
		{"RESOLVE_FORM_WAIT_MAX=-1s", "RESOLVE_FORM_WAIT_MAX"},
		{"LINKHOP_PROVIDERS_FILE=" + badFamily, "LINKHOP_PROVIDERS_FILE"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "LINKHOP_RUN_MAIN=1", tc.env)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s: err %v, want exit 2", tc.env, err)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], tc.name) {
			t.Errorf("%s: stderr %q, want one line naming %s", tc.env, stderr.String(), tc.name)
		}
	}
}
