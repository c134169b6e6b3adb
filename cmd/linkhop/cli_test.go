package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-cmp/cmp"

	"github.com/linkhop/linkhop/webhooks"
)

// run is one run of the built binary.
type run struct {
	code           int
	stdout, stderr string
}

// linkhop runs the binary with env (and no LINKHOP_* variables of the test's own
// environment) and stdin.
func linkhop(t *testing.T, env []string, stdin string, args ...string) run {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return run{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LINKHOP_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *stack) env(key string) []string {
	return []string{"LINKHOP_URL=" + s.url, "LINKHOP_API_KEY=" + key}
}

func wantRun(t *testing.T, got run, code int, stdout string) {
	t.Helper()
	if got.code != code {
		t.Errorf("exit %d, want %d; stderr %q", got.code, code, got.stderr)
	}
	if d := cmp.Diff(stdout, got.stdout); d != "" {
		t.Errorf("stdout (-want +got):\n%s", d)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	env := s.env(s.key(t, ptr(0)))

	t.Run("arguments, in input order, a failing link and an unsupported one: exit 1", func(t *testing.T) {
		got := linkhop(t, env, "", "resolve", "http://sho.rt/a1", "https://example.org/x", "http://sho.rt/gone", "http://sho.rt/a2")
		wantRun(t, got, 1, "http://sho.rt/a1\thttps://example.com/dest/a1\n"+
			"https://example.org/x\terror:unsupported_link\n"+
			"http://sho.rt/gone\terror:link_removed\n"+
			"http://sho.rt/a2\thttps://example.com/dest/a2\n")
		if got.stderr != "" {
			t.Errorf("stderr %q (not a terminal: no progress bar)", got.stderr)
		}
	})
	t.Run("standard input, blank lines and comments skipped, all resolve: exit 0", func(t *testing.T) {
		got := linkhop(t, env, "http://sho.rt/s1\n\n  # a comment\n  http://sho.rt/s2  \n\nhttp://sho.rt/s3", "resolve")
		wantRun(t, got, 0, "http://sho.rt/s1\thttps://example.com/dest/s1\n"+
			"http://sho.rt/s2\thttps://example.com/dest/s2\n"+
			"http://sho.rt/s3\thttps://example.com/dest/s3\n")
	})
	t.Run("-f FILE, flags after the operands", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "links.txt")
		if err := os.WriteFile(file, []byte("http://sho.rt/f1\r\nhttp://sho.rt/f2\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got := linkhop(t, nil, "", "resolve", "-f", file, "--url", s.url, "--key", strings.TrimPrefix(env[1], "LINKHOP_API_KEY="))
		wantRun(t, got, 0, "http://sho.rt/f1\thttps://example.com/dest/f1\nhttp://sho.rt/f2\thttps://example.com/dest/f2\n")
	})
	t.Run("--json", func(t *testing.T) {
		got := linkhop(t, env, "", "resolve", "http://sho.rt/j1", "--json", "http://sho.rt/gone-json")
		if got.code != 1 {
			t.Errorf("exit %d", got.code)
		}
		lines := strings.Split(strings.TrimSpace(got.stdout), "\n")
		if len(lines) != 2 {
			t.Fatalf("stdout %q", got.stdout)
		}
		var ok, failed map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &ok); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(lines[1]), &failed); err != nil {
			t.Fatal(err)
		}
		if ok["url"] != "http://sho.rt/j1" || ok["status"] != "done" || ok["target_url"] != "https://example.com/dest/j1" ||
			ok["provider"] != "short" || ok["error"] != nil || len(ok["hops"].([]any)) != 2 {
			t.Errorf("done line %v", ok)
		}
		if failed["status"] != "failed" || failed["error"] != "link_removed" || failed["target_url"] != nil || failed["job_id"] == nil {
			t.Errorf("failed line %v", failed)
		}
	})
	t.Run("a link known to be removed is refused at once", func(t *testing.T) {
		got := linkhop(t, env, "", "resolve", "--json", "http://sho.rt/gone")
		var line map[string]any
		if err := json.Unmarshal([]byte(got.stdout), &line); err != nil || got.code != 1 {
			t.Fatalf("%v %+v", err, got)
		}
		if line["status"] != "rejected" || line["error"] != "link_removed" || line["job_id"] != nil {
			t.Errorf("line %v", line)
		}
	})
	t.Run("a wrong key: exit 2, one line on stderr", func(t *testing.T) {
		got := linkhop(t, s.env("sk_live_wrong"), "", "resolve", "http://sho.rt/w")
		wantRun(t, got, 2, "")
		if strings.Count(got.stderr, "\n") != 1 || !strings.Contains(got.stderr, "invalid_key") {
			t.Errorf("stderr %q", got.stderr)
		}
	})
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"resolve", "job", "account", "providers", "verify-webhook", "mcp"} {
		got := linkhop(t, nil, "", cmd, "--help")
		if got.code != 0 || !strings.HasPrefix(got.stdout, "Usage: linkhop "+cmd) {
			t.Errorf("%s --help: exit %d, stdout %q", cmd, got.code, got.stdout)
		}
	}
	if got := linkhop(t, nil, "", "--help"); got.code != 0 || !strings.Contains(got.stdout, "verify-webhook") {
		t.Errorf("--help: %+v", got)
	}
	env := []string{"LINKHOP_URL=http://127.0.0.1:1", "LINKHOP_API_KEY=sk_live_x"}
	for name, tc := range map[string]struct {
		env  []string
		in   string
		args []string
	}{
		"no command":       {args: nil},
		"unknown command":  {args: []string{"nope"}},
		"unknown flag":     {env: env, args: []string{"resolve", "--nope", "http://sho.rt/a"}},
		"no address":       {env: env[1:], args: []string{"resolve", "http://sho.rt/a"}},
		"no key":           {env: env[:1], args: []string{"account"}},
		"no links":         {env: env, in: "\n\n", args: []string{"resolve"}},
		"links twice":      {env: env, args: []string{"resolve", "-f", "x", "http://sho.rt/a"}},
		"job without id":   {env: env, args: []string{"job"}},
		"unreachable":      {env: env, args: []string{"account"}},
		"verify no scheme": {in: "{}", args: []string{"verify-webhook", "--secret", "whsec_AAAA"}},
	} {
		got := linkhop(t, tc.env, tc.in, tc.args...)
		if got.code != 2 || got.stdout != "" || strings.Count(got.stderr, "\n") < 1 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, got.code, got.stdout, got.stderr)
		}
	}
}

func TestJobAccountProviders(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	env := s.env(s.key(t, ptr(0)))

	got := linkhop(t, env, "", "resolve", "--json", "http://sho.rt/show")
	var line struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(got.stdout), &line); err != nil || line.JobID == "" {
		t.Fatalf("resolve: %v %+v", err, got)
	}
	var job map[string]any
	got = linkhop(t, env, "", "job", line.JobID)
	if err := json.Unmarshal([]byte(got.stdout), &job); err != nil || got.code != 0 {
		t.Fatalf("job: %v %+v", err, got)
	}
	if job["job_id"] != line.JobID || job["status"] != "done" || job["target_url"] != "https://example.com/dest/show" {
		t.Errorf("job %v", job)
	}

	got = linkhop(t, env, "", "job", "00000000-0000-4000-8000-000000000000")
	if got.code != 1 || got.stdout != "" || !strings.Contains(got.stderr, "404 not_found") {
		t.Errorf("unknown job: %+v", got)
	}

	var account map[string]any
	got = linkhop(t, env, "", "account")
	if err := json.Unmarshal([]byte(got.stdout), &account); err != nil || got.code != 0 || account["key_id"] == nil {
		t.Errorf("account: %v %+v", err, got)
	}
	got = linkhop(t, env, "", "providers")
	if got.code != 0 || !strings.Contains(got.stdout, `"sho.rt"`) || !json.Valid([]byte(got.stdout)) {
		t.Errorf("providers: %+v", got)
	}
	if got := linkhop(t, s.env("sk_live_wrong"), "", "account"); got.code != 2 || !strings.Contains(got.stderr, "invalid_key") {
		t.Errorf("account with a wrong key: %+v", got)
	}
}

func TestVerifyWebhook(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := `{"event":"resolve.done","job_id":"j"}`
	h := http.Header{}
	if err := webhooks.Sign(h, []string{secret}, "msg_j_1", time.Now(), []byte(body)); err != nil {
		t.Fatal(err)
	}
	standard := h.Get("webhook-id") + "," + h.Get("webhook-timestamp") + "," + h.Get("webhook-signature")
	lh := h.Get(webhooks.HeaderLinkhopSignature)
	for name, tc := range map[string]struct {
		env  []string
		body string
		args []string
		code int
		out  string
	}{
		"linkhop scheme":              {body: body, args: []string{"--secret", secret, "--header", lh}, code: 0, out: "valid\n"},
		"header copied with its name": {body: body, args: []string{"--secret", secret, "--header", "Linkhop-Signature: " + lh}, code: 0, out: "valid\n"},
		"standard webhooks":           {body: body, args: []string{"--secret", secret, "--standard", standard}, code: 0, out: "valid\n"},
		"secret from the environment": {env: []string{"LINKHOP_WEBHOOK_SECRET=" + secret}, body: body, args: []string{"--standard", standard}, code: 0, out: "valid\n"},
		"tampered body, linkhop":      {body: body + " ", args: []string{"--secret", secret, "--header", lh}, code: 1, out: "invalid\n"},
		"tampered body, standard":     {body: `{}`, args: []string{"--secret", secret, "--standard", standard}, code: 1, out: "invalid\n"},
		"wrong secret":                {body: body, args: []string{"--secret", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "--header", lh}, code: 1, out: "invalid\n"},
		"malformed header":            {body: body, args: []string{"--secret", secret, "--header", "t=1"}, code: 1, out: "invalid\n"},
		"both schemes":                {body: body, args: []string{"--secret", secret, "--header", lh, "--standard", standard}, code: 2},
		"no secret":                   {body: body, args: []string{"--header", lh}, code: 2},
		"standard without commas":     {body: body, args: []string{"--secret", secret, "--standard", "abc"}, code: 2},
	} {
		got := linkhop(t, tc.env, tc.body, append([]string{"verify-webhook"}, tc.args...)...)
		if got.code != tc.code || got.stdout != tc.out {
			t.Errorf("%s: exit %d stdout %q stderr %q; want %d %q", name, got.code, got.stdout, got.stderr, tc.code, tc.out)
		}
	}
}

// The progress bar is drawn on standard error when it is a terminal (here a pseudo-terminal),
// and standard output stays clean.
func TestProgressBarOnATerminal(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	cmd := exec.Command(bin, "resolve", "http://sho.rt/p1", "http://sho.rt/gone", "http://sho.rt/p2")
	cmd.Env = append(cleanEnv(), s.env(s.key(t, ptr(0)))...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = tty.Close()
	screen := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(ptmx) // ends with EIO once the child has exited
		screen <- string(b)
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v", err)
	}
	bar := <-screen
	for _, want := range []string{"resolving, 1 failed", "(3/3", "links/s", "100%"} {
		if !strings.Contains(bar, want) {
			t.Errorf("the progress bar lacks %q: %q", want, bar)
		}
	}
	if strings.Contains(out.String(), "resolving") || strings.Count(out.String(), "\n") != 3 {
		t.Errorf("stdout %q", out.String())
	}
}

func TestNoProgressBarWhenNotATerminal(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	// Standard output a terminal and standard error a pipe: still no bar, anywhere.
	cmd := exec.Command(bin, "resolve", "http://sho.rt/n1")
	cmd.Env = append(cleanEnv(), s.env(s.key(t, ptr(0)))...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = tty, &errb
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if errb.Len() != 0 {
		t.Errorf("stderr %q", errb.String())
	}
}
