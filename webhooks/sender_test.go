package webhooks

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// receiver is an httptest server that records what it got and answers with the next of
// codes (the last one repeats).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	codes    []int
	requests []*http.Request
	bodies   [][]byte
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	t.Helper()
	r := &receiver{codes: codes}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		code := r.codes[min(len(r.requests), len(r.codes)-1)]
		r.requests = append(r.requests, req)
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

func (r *receiver) snapshot() ([]*http.Request, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.requests...), append([][]byte(nil), r.bodies...)
}

func newTestSender(timeout time.Duration) *Sender {
	s := NewSender(nil, Policy{Timeout: timeout, BackoffBase: 20 * time.Millisecond})
	return s
}

func closeIdle(t *testing.T, s *Sender) {
	t.Cleanup(func() { s.Client.CloseIdleConnections() })
}

func TestSendStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		code          int
		wantDelivered bool
		wantPermanent bool
		wantClass     string
	}{
		{"200", 200, true, false, "2xx"},
		{"204", 204, true, false, "2xx"},
		{"299", 299, true, false, "2xx"},
		{"304 is not success", 304, false, false, "3xx"},
		{"400", 400, false, false, "4xx"},
		{"404", 404, false, false, "4xx"},
		{"410 is permanent", 410, false, true, "4xx"},
		{"500", 500, false, false, "5xx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newReceiver(t, tt.code)
			s := newTestSender(5 * time.Second)
			closeIdle(t, s)
			o := s.Send(context.Background(), r.URL+"/hook", nil, []byte(`{}`))
			if o.StatusCode != tt.code || o.Delivered != tt.wantDelivered || o.Permanent != tt.wantPermanent || o.Class() != tt.wantClass {
				t.Fatalf("outcome %+v class %s", o, o.Class())
			}
			var se *StatusError
			if tt.wantDelivered != (o.Err == nil) || (!tt.wantDelivered && !errors.As(o.Err, &se)) {
				t.Fatalf("err %v", o.Err)
			}
			if r.count() != 1 {
				t.Fatalf("receiver saw %d requests", r.count())
			}
		})
	}
}

// A signed request arrives as sent: POST, the exact body, both signatures verifiable.
func TestSendSignedRequest(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, 204)
	s := newTestSender(5 * time.Second)
	closeIdle(t, s)
	secret := mustSecret(t)
	body := []byte(`{"event":"resolve.done","job_id":"j"}`)
	h := http.Header{}
	now := time.Now()
	if err := Sign(h, []string{secret}, MessageID("j", 1), now, body); err != nil {
		t.Fatal(err)
	}
	if o := s.Send(context.Background(), r.URL, h, body); !o.Delivered {
		t.Fatalf("%+v", o)
	}
	reqs, bodies := r.snapshot()
	req, got := reqs[0], bodies[0]
	if req.Method != http.MethodPost || string(got) != string(body) || req.Header.Get("Content-Type") != "application/json" ||
		req.Header.Get("User-Agent") != UserAgent {
		t.Fatalf("request %s %q %v", req.Method, got, req.Header)
	}
	if err := VerifyLinkhop(secret, req.Header.Get("X-LinkSkipper-Signature"), got, time.Now()); err != nil {
		t.Error(err)
	}
	if err := VerifyStandard(secret, req.Header, got, time.Now()); err != nil {
		t.Error(err)
	}
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	target := newReceiver(t, 200)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	for _, name := range []string{"NewSender", "caller's client that follows redirects"} {
		s := newTestSender(5 * time.Second)
		if name != "NewSender" {
			s.Client = &http.Client{} // default CheckRedirect follows; Send must not
		}
		o := s.Send(context.Background(), redirector.URL, nil, []byte(`{}`))
		s.Client.CloseIdleConnections()
		if o.Delivered || o.StatusCode != http.StatusFound || !strings.Contains(o.Describe(), "redirects are not followed") {
			t.Errorf("%s: %+v (%s)", name, o, o.Describe())
		}
	}
	if target.count() != 0 {
		t.Errorf("redirect target got %d requests", target.count())
	}
}

func TestSendTimeouts(t *testing.T) {
	t.Parallel()
	// release ends the handlers; its cleanup is registered after the servers' so that it runs
	// before them (cleanups run last-in first-out) and Close does not wait forever.
	release := make(chan struct{})
	slowHeaders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(slowHeaders.Close)
	slowBody := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(slowBody.Close)
	t.Cleanup(func() { close(release) })
	for name, url := range map[string]string{"slow headers": slowHeaders.URL, "2xx with a slow body": slowBody.URL} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestSender(150 * time.Millisecond)
			closeIdle(t, s)
			o := s.Send(context.Background(), url, nil, []byte(`{}`))
			if o.Delivered || !errors.Is(o.Err, ErrTimeout) || o.Class() != "timeout" {
				t.Fatalf("%+v", o)
			}
			// Generous bound: the attempt ends near its timeout, not when the receiver ends.
			if o.Duration < 150*time.Millisecond || o.Duration > 5*time.Second {
				t.Errorf("attempt took %s", o.Duration)
			}
		})
	}
}

func TestSendReadsAtMost64KiB(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 32<<10)
		for range 1024 { // 32 MiB unless the client stops reading
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(big.Close)
	s := newTestSender(10 * time.Second)
	closeIdle(t, s)
	if o := s.Send(context.Background(), big.URL, nil, []byte(`{}`)); !o.Delivered {
		t.Fatalf("%+v", o)
	}
	big.Close() // wait for the handler to finish
	// Socket buffers absorb some megabytes at most; reading all 32 MiB would get them all.
	if n := written.Load(); n >= 32<<20 {
		t.Errorf("receiver wrote %d bytes: the whole body was read", n)
	}
}

func TestSendRetryAfter(t *testing.T) {
	t.Parallel()
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name     string
		code     int
		header   string
		min, max time.Duration
	}{
		{"429 seconds", 429, "3", 3 * time.Second, 3 * time.Second},
		{"503 http date", 503, date, 80 * time.Second, 91 * time.Second},
		{"429 capped at 10 min", 429, "86400", MaxRetryAfter, MaxRetryAfter},
		{"429 garbage ignored", 429, "soon", 0, 0},
		{"500 not honoured", 500, "3", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", tt.header)
				w.WriteHeader(tt.code)
			}))
			t.Cleanup(srv.Close)
			s := newTestSender(5 * time.Second)
			closeIdle(t, s)
			o := s.Send(context.Background(), srv.URL, nil, []byte(`{}`))
			if o.RetryAfter < tt.min || o.RetryAfter > tt.max || o.Delivered || o.Permanent {
				t.Fatalf("RetryAfter %s, want within [%s, %s]; %+v", o.RetryAfter, tt.min, tt.max, o)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 5, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"600", 10 * time.Minute, true},
		{"601", 10 * time.Minute, true},
		{"99999999999999999999999", 10 * time.Minute, true},
		{"Fri, 05 Jun 2026 12:01:00 GMT", time.Minute, true},
		{"Fri, 05 Jun 2026 11:00:00 GMT", 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"12abc", 0, false},
		{"tomorrow", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, ok := ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	live := newReceiver(t, 200)
	tests := []struct {
		name    string
		ctx     context.Context
		url     string
		wantErr error
	}{
		{"ftp scheme", context.Background(), "ftp://example.com/x", ErrUnsupportedScheme},
		{"unparsable", context.Background(), "http://[::1", nil},
		{"connection refused", context.Background(), closedURL + "/hook?token=SECRET123", nil},
		{"caller canceled", canceled, live.URL + "/?token=SECRET123", context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestSender(5 * time.Second)
			closeIdle(t, s)
			o := s.Send(tt.ctx, tt.url, nil, []byte(`{}`))
			if o.Delivered || o.Err == nil || o.StatusCode != 0 || o.Class() != "error" {
				t.Fatalf("%+v", o)
			}
			if tt.wantErr != nil && !errors.Is(o.Err, tt.wantErr) {
				t.Errorf("err %v, want %v", o.Err, tt.wantErr)
			}
			if d := o.Describe(); d == "" || strings.Contains(d, "SECRET123") || strings.Contains(d, "webhooks:") {
				t.Errorf("Describe() = %q", d)
			}
		})
	}
}

// The pieces together, as the delivery task will use them: Sign, Send, Apply, wait, repeat.
// The receiver counts the attempts that really arrive.
func TestDeliveryLoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		codes        []int
		wantAttempts int
		wantStatus   string
	}{
		{"500, 500, 204", []int{500, 500, 204}, 3, StatusDelivered},
		{"always 500", []int{500}, 4, StatusFailed},
		{"410", []int{410}, 1, StatusFailed},
		{"302", []int{302}, 4, StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newReceiver(t, tt.codes...)
			p := Policy{BackoffBase: 20 * time.Millisecond, Timeout: 5 * time.Second, MaxRetries: DefaultMaxRetries}
			s := NewSender(nil, p)
			closeIdle(t, s)
			secret := mustSecret(t)
			body := []byte(`{"event":"resolve.done"}`)
			st := NewState(r.URL, time.Now())
			for {
				h := http.Header{}
				if err := Sign(h, []string{secret}, MessageID("job", 1), time.Now(), body); err != nil {
					t.Fatal(err)
				}
				delay, retry := p.Apply(st, s.Send(context.Background(), r.URL, h, body), time.Now())
				if !retry {
					break
				}
				time.Sleep(delay)
			}
			if r.count() != tt.wantAttempts || st.Attempts != tt.wantAttempts || st.Status != tt.wantStatus {
				t.Fatalf("receiver saw %d, state %+v", r.count(), st)
			}
			ids := map[string]bool{}
			reqs, _ := r.snapshot()
			for _, req := range reqs {
				ids[req.Header.Get("webhook-id")] = true
			}
			if len(ids) != 1 {
				t.Errorf("webhook-id changed across retries: %v", ids)
			}
			if want := strconv.Itoa(tt.codes[len(tt.codes)-1]); st.LastStatusCode == nil || strconv.Itoa(*st.LastStatusCode) != want {
				t.Errorf("last_status_code %v, want %s", st.LastStatusCode, want)
			}
		})
	}
}
