package resolve

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNormalizeURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"http://bit.ly/AbC", "http://bit.ly/AbC"},
		{"HTTP://Bit.LY/AbC", "http://bit.ly/AbC"},
		{"https://bit.ly:443/x", "https://bit.ly/x"},
		{"http://bit.ly:80/x", "http://bit.ly/x"},
		{"https://bit.ly:80/x", "https://bit.ly:80/x"},
		{"http://bit.ly:8080/x", "http://bit.ly:8080/x"},
		{"http://bit.ly/x#frag", "http://bit.ly/x"},
		{"http://bit.ly", "http://bit.ly/"},
		{"http://bit.ly?b=2&a=1", "http://bit.ly/?b=2&a=1"},
		{"http://bit.ly/a%2Fb?q=%41", "http://bit.ly/a%2Fb?q=%41"},
		{"http://[2001:DB8::1]:80/x", "http://[2001:db8::1]/x"},
		{"http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080/x"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := NormalizeURL(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("NormalizeURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "bit.ly/x", "ftp://bit.ly/x", "http://", "http:opaque", "http://u:p@bit.ly/x", "http://bit.ly/" + strings.Repeat("x", 2048), "http://bit.ly/%zz", "http://bit%ff.ly/x"} {
		if got, err := NormalizeURL(bad); !errors.Is(err, ErrUnsupportedURL) {
			t.Errorf("NormalizeURL(%q) = %q, %v; want ErrUnsupportedURL", bad, got, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{0: 2 * time.Second, 1: 2 * time.Second, 2: 8 * time.Second, 3: 32 * time.Second} {
		for range 200 {
			got := Backoff(2*time.Second, n)
			if got < want*8/10 || got > want*12/10 {
				t.Fatalf("Backoff(2s, %d) = %s, want %s ±20%%", n, got, want)
			}
		}
	}
	if got := Backoff(time.Second, 1000); got != maxBackoff {
		t.Errorf("huge n: %s", got)
	}
	if Backoff(0, 3) != 0 {
		t.Error("zero base")
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"": 0, "0": 0, "-5": 0, "7": 7 * time.Second, "junk": 0, "99999999999": MaxRetryAfter,
		"Tue, 01 Jan 2030 00:00:30 GMT": 30 * time.Second, "Mon, 31 Dec 2029 00:00:00 GMT": 0,
	}
	for in, want := range tests {
		if got := retryAfter(in, now); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestFormatLatency(t *testing.T) {
	t.Parallel()
	tests := map[time.Duration]string{
		0: "~1ms", 347 * time.Millisecond: "~350ms", time.Second: "~1s", 1540 * time.Millisecond: "~1.5s",
		12400 * time.Millisecond: "~12s", 5 * time.Minute: "~5m",
	}
	for in, want := range tests {
		if got := FormatLatency(in); got != want {
			t.Errorf("FormatLatency(%s) = %q, want %q", in, got, want)
		}
	}
}
