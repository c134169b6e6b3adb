package quota

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

var cmpDecision = cmp.Options{cmp.AllowUnexported(Decision{}), cmpopts.IgnoreFields(Decision{}, "member")}

func TestCheckAdmitsExactlyNThenRejects(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 5, 60} {
		t.Run(fmt.Sprintf("limit %d", n), func(t *testing.T) {
			t.Parallel()
			rdb := newRedis(t)
			l := New(rdb, WithLocalBlock(false))
			r := Request{KeyID: "key_a", Limits: Limits{PerMinute: n, DailyQuota: -1}}
			var first time.Time
			for i := range n {
				d := mustCheck(t, l, r)
				if i == 0 {
					first = d.Now
				}
				if !d.Allowed || d.Code != "" {
					t.Fatalf("request %d: %+v, want admitted", i+1, d)
				}
				if d.Minute.Remaining != int64(n-1-i) || d.Minute.Limit != int64(n) {
					t.Fatalf("request %d: minute %+v, want limit %d remaining %d", i+1, d.Minute, n, n-1-i)
				}
				if want := first.Add(time.Minute); !d.Minute.Reset.Equal(want) {
					t.Fatalf("request %d: reset %v, want %v (oldest + 60 s)", i+1, d.Minute.Reset, want)
				}
				if d.Day != nil {
					t.Fatalf("request %d: day %+v without a quota", i+1, d.Day)
				}
			}
			for i := range 3 {
				d := mustCheck(t, l, r)
				if d.Allowed || d.Code != CodeRateLimited {
					t.Fatalf("request %d: %+v, want rate_limited", n+1+i, d)
				}
				if want := first.Add(time.Minute).Sub(d.Now); d.RetryAfter != want {
					t.Fatalf("retry after %v, want %v", d.RetryAfter, want)
				}
			}
			// Rejected requests recorded nothing.
			if got := rdb.ZCard(context.Background(), logKey("key_a")).Val(); got != int64(n) {
				t.Fatalf("log holds %d entries, want %d", got, n)
			}
		})
	}
}

// TestWindowBoundary walks a fixed Redis clock across the instant the oldest request leaves the
// window and checks every number a client sees.
func TestWindowBoundary(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	clk := &testClock{}
	l := New(rdb, withClock(clk))
	t0 := baseTime()
	r := Request{KeyID: "key_b", Limits: Limits{PerMinute: 3, DailyQuota: -1}}
	for i := range 3 {
		clk.Set(t0.Add(time.Duration(i) * 10 * time.Second))
		if d := mustCheck(t, l, r); !d.Allowed {
			t.Fatalf("request %d rejected: %+v", i+1, d)
		}
	}
	tests := []struct {
		name    string
		at      time.Duration // after t0
		want    Decision
		headers map[string]string
	}{
		{
			name: "half a second before the oldest leaves",
			at:   59500 * time.Millisecond,
			want: Decision{Code: CodeRateLimited, RetryAfter: 500 * time.Millisecond,
				Minute: Window{Limit: 3, Remaining: 0, Reset: t0.Add(time.Minute)}},
			headers: map[string]string{
				"Retry-After": "1", "X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "0",
				"X-RateLimit-Reset": strconv.FormatInt(t0.Unix()+61, 10),
				"RateLimit-Policy":  `"minute";q=3;w=60`, "RateLimit": `"minute";r=0;t=1`,
			},
		},
		{
			name: "one microsecond before the oldest leaves",
			at:   time.Minute - time.Microsecond,
			want: Decision{Code: CodeRateLimited, RetryAfter: time.Microsecond,
				Minute: Window{Limit: 3, Remaining: 0, Reset: t0.Add(time.Minute)}},
			headers: map[string]string{"Retry-After": "1", "RateLimit": `"minute";r=0;t=1`},
		},
		{
			name: "the instant the oldest leaves",
			at:   time.Minute,
			want: Decision{Allowed: true,
				Minute: Window{Limit: 3, Remaining: 0, Reset: t0.Add(70 * time.Second)}},
			headers: map[string]string{
				"Retry-After": "", "X-RateLimit-Remaining": "0",
				"X-RateLimit-Reset": strconv.FormatInt(t0.Unix()+71, 10),
				"RateLimit":         `"minute";r=0;t=10`,
			},
		},
		{
			name: "same instant again: full until the second entry leaves",
			at:   time.Minute,
			want: Decision{Code: CodeRateLimited, RetryAfter: 10 * time.Second,
				Minute: Window{Limit: 3, Remaining: 0, Reset: t0.Add(70 * time.Second)}},
			headers: map[string]string{"Retry-After": "10", "RateLimit": `"minute";r=0;t=10`},
		},
		{
			name: "after the second and third left",
			at:   80*time.Second + time.Microsecond,
			want: Decision{Allowed: true,
				// Left in the log: the one admitted at 60 s and this one.
				Minute: Window{Limit: 3, Remaining: 1, Reset: t0.Add(120 * time.Second)}},
			headers: map[string]string{"X-RateLimit-Remaining": "1", "RateLimit": `"minute";r=1;t=40`},
		},
	}
	for _, tt := range tests {
		now := t0.Add(tt.at)
		clk.Set(now)
		got := mustCheck(t, l, r)
		tt.want.Now = now
		tt.want.Window = time.Minute
		tt.want.logKey, tt.want.dayKey, tt.want.day = logKey("key_b"), dayKey("key_b"), -1
		if diff := cmp.Diff(tt.want, got, cmpDecision); diff != "" {
			t.Fatalf("%s: decision (-want +got):\n%s", tt.name, diff)
		}
		h := make(http.Header)
		SetHeaders(h, got)
		for k, v := range tt.headers {
			if g := h.Get(k); g != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, k, g, v)
			}
		}
	}
}

func TestLimitChangesApplyAtOnce(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	clk := &testClock{}
	l := New(rdb, withClock(clk))
	t0 := baseTime()
	for i := range 5 {
		clk.Set(t0.Add(time.Duration(i) * time.Second))
		mustCheck(t, l, Request{KeyID: "key_c", Limits: Limits{PerMinute: 5, DailyQuota: -1}})
	}
	clk.Set(t0.Add(10 * time.Second))
	// Lowered to 3: entries at 0..4 s; a slot frees only when the log holds 2, i.e. when the
	// entry of 2 s leaves, at 62 s.
	d := mustCheck(t, l, Request{KeyID: "key_c", Limits: Limits{PerMinute: 3, DailyQuota: -1}})
	if d.Allowed || d.RetryAfter != 52*time.Second || d.Minute.Remaining != 0 || !d.Minute.Reset.Equal(t0.Add(62*time.Second)) {
		t.Fatalf("lowered limit: %+v, want rate_limited, retry 52s, reset t0+62s", d)
	}
	// Raised to 6: one more at once.
	d = mustCheck(t, l, Request{KeyID: "key_c", Limits: Limits{PerMinute: 6, DailyQuota: -1}})
	if !d.Allowed || d.Minute.Remaining != 0 {
		t.Fatalf("raised limit: %+v, want admitted with 0 remaining", d)
	}
	// Unlimited: admitted and not recorded.
	d = mustCheck(t, l, Request{KeyID: "key_c", Limits: Limits{PerMinute: 0, DailyQuota: -1}})
	if !d.Allowed || d.Minute != (Window{}) {
		t.Fatalf("unlimited: %+v", d)
	}
	if n := rdb.ZCard(context.Background(), logKey("key_c")).Val(); n != 6 {
		t.Fatalf("log holds %d, want 6", n)
	}
}

func TestUnlimited(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	var cnt cmdCounter
	rdb.AddHook(&cnt)
	l := New(rdb)
	ctx := context.Background()
	for range 100 {
		d := mustCheck(t, l, Request{KeyID: "key_u", Limits: Limits{PerMinute: 0, DailyQuota: -1}})
		if !d.Allowed || d.Minute.Limit != 0 || d.Day != nil {
			t.Fatalf("%+v, want admitted without windows", d)
		}
		h := make(http.Header)
		SetHeaders(h, d)
		if len(h) != 0 {
			t.Fatalf("headers %v, want none", h)
		}
	}
	if n := cnt.n.Load(); n != 0 {
		t.Fatalf("%d Redis calls for a key with nothing to count, want 0", n)
	}
	// Resolves are counted for daily_used even without a quota; nothing else is written.
	for range 3 {
		d := mustCheck(t, l, Request{KeyID: "key_u", Limits: Limits{PerMinute: 0, DailyQuota: -1}, CountDay: true})
		if !d.Allowed || d.Day != nil {
			t.Fatalf("%+v, want admitted without windows", d)
		}
	}
	if used, err := l.DayUsed(ctx, "key_u"); err != nil || used != 3 {
		t.Fatalf("DayUsed = %d, %v; want 3", used, err)
	}
	if keys := rdb.Keys(ctx, "*").Val(); len(keys) != 1 || keys[0] != dayKey("key_u") {
		t.Fatalf("keys %v, want only the day counter", keys)
	}
	// A quota set during the day counts the resolves already made.
	d := mustCheck(t, l, Request{KeyID: "key_u", Limits: Limits{PerMinute: 0, DailyQuota: 3}, CountDay: true})
	if d.Allowed || d.Code != CodeQuotaExceeded {
		t.Fatalf("%+v, want quota_exceeded", d)
	}
}

// nextMidnight is the next 00:00 UTC of the real clock: tests that move the fixed clock to it
// keep the day counter's EXPIREAT in the future.
func nextMidnight() time.Time {
	return time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
}

func TestDailyQuota(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	clk := &testClock{}
	l := New(rdb, withClock(clk))
	ctx := context.Background()
	m := nextMidnight()
	clk.Set(m.Add(-90*time.Second - 300*time.Millisecond))
	post := Request{KeyID: "key_d", Limits: Limits{PerMinute: 10, DailyQuota: 3}, CountDay: true}
	get := Request{KeyID: "key_d", Limits: Limits{PerMinute: 10, DailyQuota: 3}}
	for i := range 3 {
		d := mustCheck(t, l, post)
		want := Window{Limit: 3, Remaining: int64(2 - i), Reset: m}
		if !d.Allowed || d.Day == nil || *d.Day != want {
			t.Fatalf("resolve %d: %+v day %+v, want admitted, day %+v", i+1, d, d.Day, want)
		}
	}
	d := mustCheck(t, l, post)
	if d.Allowed || d.Code != CodeQuotaExceeded || d.RetryAfter != 90*time.Second+300*time.Millisecond {
		t.Fatalf("4th resolve: %+v, want quota_exceeded with retry 90.3s", d)
	}
	if d.Minute.Remaining != 7 || d.Day.Remaining != 0 {
		t.Fatalf("4th resolve windows: minute %+v day %+v", d.Minute, d.Day)
	}
	h := make(http.Header)
	SetHeaders(h, d)
	if got, want := h.Get("Retry-After"), "91"; got != want {
		t.Fatalf("Retry-After %q, want %q", got, want)
	}
	if got, want := h.Get("RateLimit"), `"minute";r=7;t=60, "day";r=0;t=91`; got != want {
		t.Fatalf("RateLimit %q, want %q", got, want)
	}
	if got, want := h.Get("RateLimit-Policy"), `"minute";q=10;w=60, "day";q=3;w=86400`; got != want {
		t.Fatalf("RateLimit-Policy %q, want %q", got, want)
	}
	// The rejected resolve used no minute slot; a poll is still admitted and shows the day.
	d = mustCheck(t, l, get)
	if !d.Allowed || d.Minute.Remaining != 6 || d.Day.Remaining != 0 {
		t.Fatalf("poll: %+v day %+v, want admitted, minute remaining 6, day 0", d, d.Day)
	}
	if used, _ := rdb.HGet(ctx, dayKey("key_d"), "n").Int64(); used != 3 {
		t.Fatalf("day counter %d, want 3", used)
	}

	// One microsecond before midnight: still used up, retry 1 µs, header 1.
	clk.Set(m.Add(-time.Microsecond))
	d = mustCheck(t, l, post)
	if d.Allowed || d.RetryAfter != time.Microsecond || d.RetryAfterSeconds() != 1 {
		t.Fatalf("just before midnight: %+v", d)
	}
	// At midnight the stored day is not today: the quota starts again.
	clk.Set(m)
	d = mustCheck(t, l, post)
	if !d.Allowed || *d.Day != (Window{Limit: 3, Remaining: 2, Reset: m.Add(24 * time.Hour)}) {
		t.Fatalf("at midnight: %+v day %+v", d, d.Day)
	}
}

// TestDayCounterOfAnotherDayResets uses Redis TIME: a counter stored for an earlier day reads
// as unused.
func TestDayCounterOfAnotherDayResets(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	l := New(rdb)
	ctx := context.Background()
	yesterday := time.Now().UTC().Unix()/86400 - 1
	rdb.HSet(ctx, dayKey("key_y"), "d", yesterday, "n", 50)
	if used, err := l.DayUsed(ctx, "key_y"); err != nil || used != 0 {
		t.Fatalf("DayUsed = %d, %v; want 0", used, err)
	}
	d := mustCheck(t, l, Request{KeyID: "key_y", Limits: Limits{PerMinute: 60, DailyQuota: 50}, CountDay: true})
	if !d.Allowed || d.Day.Remaining != 49 {
		t.Fatalf("%+v day %+v, want admitted with 49 left", d, d.Day)
	}
	if used, err := l.DayUsed(ctx, "key_y"); err != nil || used != 1 {
		t.Fatalf("DayUsed = %d, %v; want 1", used, err)
	}
	ttl := rdb.TTL(ctx, dayKey("key_y")).Val()
	if ttl <= time.Hour || ttl > 25*time.Hour {
		t.Fatalf("day counter TTL %v, want until next midnight + 1h", ttl)
	}
}

func TestQuotaZeroAllowsNoResolve(t *testing.T) {
	t.Parallel()
	l := New(newRedis(t))
	d := mustCheck(t, l, Request{KeyID: "key_z", Limits: Limits{PerMinute: 5, DailyQuota: 0}, CountDay: true})
	if d.Allowed || d.Code != CodeQuotaExceeded || d.Day.Limit != 0 || d.Minute.Remaining != 5 {
		t.Fatalf("%+v day %+v, want quota_exceeded", d, d.Day)
	}
	// Nothing in the log: the next slot is free now.
	if !d.Minute.Reset.Equal(d.Now) {
		t.Fatalf("minute reset %v, want now %v", d.Minute.Reset, d.Now)
	}
}

func TestMinuteLimitIsJudgedFirst(t *testing.T) {
	t.Parallel()
	l := New(newRedis(t), WithLocalBlock(false))
	lim := Limits{PerMinute: 2, DailyQuota: 2}
	for range 2 {
		if d := mustCheck(t, l, Request{KeyID: "key_p", Limits: lim, CountDay: true}); !d.Allowed {
			t.Fatalf("%+v", d)
		}
	}
	d := mustCheck(t, l, Request{KeyID: "key_p", Limits: lim, CountDay: true})
	if d.Code != CodeRateLimited {
		t.Fatalf("both used up: code %q, want rate_limited", d.Code)
	}
}

func TestRefund(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lim := Limits{PerMinute: 3, DailyQuota: 5}
	tests := []struct {
		name        string
		minute, day bool
		wantLog     int64
		wantDay     int64
	}{
		{name: "failed after admission", minute: true, day: true, wantLog: 1, wantDay: 1},
		{name: "idempotent replay", minute: false, day: true, wantLog: 2, wantDay: 1},
		{name: "minute only", minute: true, day: false, wantLog: 1, wantDay: 2},
		{name: "nothing", wantLog: 2, wantDay: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rdb := newRedis(t)
			l := New(rdb)
			r := Request{KeyID: "key_r", Limits: lim, CountDay: true}
			mustCheck(t, l, r)
			d := mustCheck(t, l, r)
			if err := l.Refund(ctx, d, tt.minute, tt.day); err != nil {
				t.Fatal(err)
			}
			if got := rdb.ZCard(ctx, logKey("key_r")).Val(); got != tt.wantLog {
				t.Errorf("log %d, want %d", got, tt.wantLog)
			}
			if got, _ := l.DayUsed(ctx, "key_r"); got != tt.wantDay {
				t.Errorf("day used %d, want %d", got, tt.wantDay)
			}
		})
	}

	t.Run("rejected decision", func(t *testing.T) {
		t.Parallel()
		rdb := newRedis(t)
		l := New(rdb)
		r := Request{KeyID: "key_r", Limits: Limits{PerMinute: 1, DailyQuota: 5}, CountDay: true}
		mustCheck(t, l, r)
		d := mustCheck(t, l, r)
		if d.Allowed {
			t.Fatal("second request admitted")
		}
		if err := l.Refund(ctx, d, true, true); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.DayUsed(ctx, "key_r"); got != 1 {
			t.Fatalf("day used %d, want 1", got)
		}
	})

	t.Run("not counted against the day", func(t *testing.T) {
		t.Parallel()
		rdb := newRedis(t)
		l := New(rdb)
		mustCheck(t, l, Request{KeyID: "key_r", Limits: lim, CountDay: true})
		d := mustCheck(t, l, Request{KeyID: "key_r", Limits: lim}) // a poll
		if err := l.Refund(ctx, d, false, true); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.DayUsed(ctx, "key_r"); got != 1 {
			t.Fatalf("day used %d, want 1: a poll's refund gave back a resolve", got)
		}
	})

	t.Run("after midnight", func(t *testing.T) {
		t.Parallel()
		rdb := newRedis(t)
		l := New(rdb)
		d := mustCheck(t, l, Request{KeyID: "key_r", Limits: lim, CountDay: true})
		// The day rolled over and a resolve of the new day was counted.
		rdb.HSet(ctx, dayKey("key_r"), "d", d.day+1, "n", 1)
		if err := l.Refund(ctx, d, false, true); err != nil {
			t.Fatal(err)
		}
		if got, _ := rdb.HGet(ctx, dayKey("key_r"), "n").Int64(); got != 1 {
			t.Fatalf("new day's counter %d, want 1", got)
		}
	})

	t.Run("frees the slot", func(t *testing.T) {
		t.Parallel()
		l := New(newRedis(t))
		r := Request{KeyID: "key_r", Limits: Limits{PerMinute: 1, DailyQuota: -1}}
		d := mustCheck(t, l, r)
		if blocked := mustCheck(t, l, r); blocked.Allowed {
			t.Fatal("second request admitted")
		}
		if err := l.Refund(ctx, d, true, false); err != nil {
			t.Fatal(err)
		}
		if again := mustCheck(t, l, r); !again.Allowed {
			t.Fatalf("after refund: %+v, want admitted", again)
		}
	})
}

// TestTwoReplicasAdmitExactlyN runs 60 concurrent requests through two Limiters on separate
// connections, as two API replicas sharing one Redis would.
func TestTwoReplicasAdmitExactlyN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lim      Limits
		countDay bool
		want     int
	}{
		{name: "per-minute limit", lim: Limits{PerMinute: 25, DailyQuota: -1}, want: 25},
		{name: "daily quota", lim: Limits{PerMinute: 0, DailyQuota: 7}, countDay: true, want: 7},
		{name: "both, quota binds", lim: Limits{PerMinute: 40, DailyQuota: 11}, countDay: true, want: 11},
		{name: "both, minute binds", lim: Limits{PerMinute: 13, DailyQuota: 30}, countDay: true, want: 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			replicas := []*Limiter{New(srv.Client(t)), New(srv.Client(t))}
			var wg sync.WaitGroup
			var mu sync.Mutex
			allowed := 0
			start := make(chan struct{})
			for i := range 60 {
				wg.Go(func() {
					<-start
					d, err := replicas[i%2].Check(context.Background(), Request{KeyID: "key_x", Limits: tt.lim, CountDay: tt.countDay})
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						mu.Lock()
						allowed++
						mu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			if allowed != tt.want {
				t.Fatalf("admitted %d of 60, want exactly %d", allowed, tt.want)
			}
		})
	}
}

func TestLocalBlock(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	var cnt cmdCounter
	rdb.AddHook(&cnt)
	l := New(rdb)
	ctx := context.Background()
	r := Request{KeyID: "key_l", Limits: Limits{PerMinute: 2, DailyQuota: 10}, CountDay: true}
	var admitted []Decision
	for range 2 {
		admitted = append(admitted, mustCheck(t, l, r))
	}
	first := mustCheck(t, l, r)
	if first.Allowed {
		t.Fatal("third request admitted")
	}
	before := cnt.n.Load()
	d := mustCheck(t, l, r)
	if cnt.n.Load() != before {
		t.Fatal("a blocked key asked Redis")
	}
	if d.Allowed || d.Code != CodeRateLimited || d.RetryAfter > first.RetryAfter || d.RetryAfter <= 0 {
		t.Fatalf("local answer %+v, want rate_limited with retry <= %v", d, first.RetryAfter)
	}
	if !d.Minute.Reset.Equal(first.Minute.Reset) || d.Day == nil || *d.Day != *first.Day || d.Now.Before(first.Now) {
		t.Fatalf("local answer windows %+v / %+v, want those of %+v / %+v", d.Minute, d.Day, first.Minute, first.Day)
	}
	if srvD := mustCheck(t, New(rdb), r); srvD.Allowed {
		t.Fatal("another replica was admitted while this one answered 429 from memory")
	}

	// Different limits are judged by Redis.
	if d := mustCheck(t, l, Request{KeyID: "key_l", Limits: Limits{PerMinute: 3, DailyQuota: 10}}); !d.Allowed {
		t.Fatalf("raised limit: %+v, want admitted", d)
	}
	// A refund through this Limiter forgets the block: Redis is asked again.
	if err := l.Refund(ctx, admitted[0], true, true); err != nil {
		t.Fatal(err)
	}
	before = cnt.n.Load()
	// Log: admitted[1] and the raised-limit one; limit 2 → still full.
	if d := mustCheck(t, l, r); d.Allowed {
		t.Fatalf("%+v, want rejected", d)
	}
	if cnt.n.Load() == before {
		t.Fatal("after a refund the key was not checked with Redis")
	}
}

func TestLocalBlockEnds(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	var cnt cmdCounter
	rdb.AddHook(&cnt)
	l := New(rdb, WithWindow(300*time.Millisecond))
	r := Request{KeyID: "key_m", Limits: Limits{PerMinute: 1, DailyQuota: -1}}
	mustCheck(t, l, r)
	blocked := mustCheck(t, l, r)
	if blocked.Allowed {
		t.Fatal("second request admitted")
	}
	time.Sleep(blocked.RetryAfter)
	before := cnt.n.Load()
	if d := mustCheck(t, l, r); !d.Allowed {
		t.Fatalf("after the block: %+v, want admitted", d)
	}
	if cnt.n.Load() == before {
		t.Fatal("the ended block answered instead of Redis")
	}
}

func TestBlockListBounded(t *testing.T) {
	t.Parallel()
	b := newBlockList(2)
	now := time.Now()
	d := Decision{RetryAfter: time.Hour, Now: now}
	b.add("a", Limits{PerMinute: 1}, d, now)
	b.add("b", Limits{PerMinute: 1}, d, now)
	b.add("c", Limits{PerMinute: 1}, d, now)
	if _, ok := b.lookup("c", Limits{PerMinute: 1}, now); ok {
		t.Fatal("list grew past its bound")
	}
	if _, ok := b.lookup("a", Limits{PerMinute: 1}, now); !ok {
		t.Fatal("lost an entry")
	}
	short := Decision{RetryAfter: time.Millisecond, Now: now}
	b.remove("a")
	b.add("a", Limits{PerMinute: 1}, short, now)
	b.nextSweep = time.Time{}
	time.Sleep(2 * time.Millisecond)
	b.add("c", Limits{PerMinute: 1}, d, now)
	if _, ok := b.lookup("c", Limits{PerMinute: 1}, time.Now()); !ok {
		t.Fatal("an expired entry was not swept to make room")
	}
}

func TestCheckErrors(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	l := New(rdb)
	ctx := context.Background()
	tests := []struct {
		name string
		r    Request
		want error
	}{
		{name: "empty key id", r: Request{Limits: Limits{PerMinute: 1}}, want: ErrNoKeyID},
		{name: "negative limit", r: Request{KeyID: "key_e", Limits: Limits{PerMinute: -1}}, want: ErrInvalidLimits},
	}
	for _, tt := range tests {
		if _, err := l.Check(ctx, tt.r); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := l.DayUsed(ctx, ""); !errors.Is(err, ErrNoKeyID) {
		t.Errorf("DayUsed(\"\"): %v", err)
	}
	srv.Stop()
	down := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })
	if _, err := New(down).Check(ctx, Request{KeyID: "key_e", Limits: Limits{PerMinute: 1, DailyQuota: -1}}); err == nil {
		t.Error("Check with Redis down: no error")
	}
}

// TestRedisCluster runs the scripts on a one-node Redis Cluster: a script touching keys of
// different hash slots fails there with CROSSSLOT.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.StartClusterNode(t)
	node := srv.Client(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = cc.Close() })
	l := New(cc)
	d, err := l.Check(ctx, Request{KeyID: "key_k", Limits: Limits{PerMinute: 5, DailyQuota: 5}, CountDay: true})
	if err != nil || !d.Allowed {
		t.Fatalf("Check: %+v, %v", d, err)
	}
	if err := l.Refund(ctx, d, true, true); err != nil {
		t.Fatalf("Refund: %v", err)
	}
	if _, err := l.DayUsed(ctx, "key_k"); err != nil {
		t.Fatalf("DayUsed: %v", err)
	}
	if _, err := l.CheckAuthFailure(ctx, "192.0.2.1", 3); err != nil {
		t.Fatalf("CheckAuthFailure: %v", err)
	}
	slots := map[int64]bool{}
	for _, k := range []string{logKey("key_k"), dayKey("key_k"), "linkhop:{k:key_k}:record"} {
		slots[node.ClusterKeySlot(ctx, k).Val()] = true
	}
	if len(slots) != 1 {
		t.Fatalf("keys of one API key span slots %v", slots)
	}
}

// QUOTA_RETRY_AFTER_MAX caps the RetryAfter of quota_exceeded, never that of rate_limited,
// and never the day window the headers describe.
func TestQuotaRetryAfterCap(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	clk := &testClock{}
	m := nextMidnight()
	clk.Set(m.Add(-5 * time.Hour))
	l := New(rdb, withClock(clk), WithQuotaRetryAfterMax(time.Minute))
	post := Request{KeyID: "key_cap", Limits: Limits{PerMinute: 2, DailyQuota: 1}, CountDay: true}
	mustCheck(t, l, post)
	d := mustCheck(t, l, post)
	if d.Code != CodeQuotaExceeded || d.RetryAfter != time.Minute || d.RetryAfterSeconds() != 60 {
		t.Fatalf("capped quota_exceeded: %+v", d)
	}
	if d.Day == nil || !d.Day.Reset.Equal(m) {
		t.Fatalf("the day window still resets at midnight: %+v", d.Day)
	}
	// Closer to midnight than the cap: the honest time is shorter, and stays.
	clk.Set(m.Add(-10 * time.Second))
	if d := mustCheck(t, l, post); d.Code != CodeQuotaExceeded || d.RetryAfter != 10*time.Second {
		t.Fatalf("near midnight: %+v", d)
	}
	// The per-minute limit is not capped: its Retry-After is already short and exact.
	clk.Set(m.Add(-5 * time.Hour))
	get := Request{KeyID: "key_cap", Limits: Limits{PerMinute: 2, DailyQuota: 1}}
	mustCheck(t, l, get)
	mustCheck(t, l, get)
	if d := mustCheck(t, l, get); d.Code != CodeRateLimited || d.RetryAfter != time.Minute {
		t.Fatalf("rate_limited: %+v", d)
	}
	if got := New(rdb).QuotaRetryAfter(m.Add(-5 * time.Hour)); got != 5*time.Hour {
		t.Fatalf("uncapped: %v", got)
	}
}

// TestDayCounterExpirySetWithTheDaysFirstCount: the day counter's expiry (an hour after its
// day) is set by the day's first count only; later counts of that day leave it as it is, and
// the first count of the next day sets the next day's. Both writers, the check and DayLua's
// day_set, are held to it.
func TestDayCounterExpirySetWithTheDaysFirstCount(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	clk := &testClock{}
	clk.Set(baseTime())
	l := New(rdb, withClock(clk))
	dayScript := redis.NewScript(DayLua + `
local used, of_today = day_used(KEYS[1], tonumber(ARGV[1]))
day_set(KEYS[1], tonumber(ARGV[1]), used + 1, of_today)
return used + 1`)
	writers := map[string]func(key string){
		"check": func(key string) {
			mustCheck(t, l, Request{KeyID: key, Limits: Limits{PerMinute: 100, DailyQuota: 100}, CountDay: true})
		},
		"DayLua": func(key string) {
			today := clk.Now().Unix() / 86400
			if err := dayScript.Run(ctx, rdb, []string{dayKey(key)}, today).Err(); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, count := range writers {
		clk.Set(baseTime())
		key := "key_exp_" + name
		today := clk.Now().Unix() / 86400
		endOf := func(day int64) time.Time { return time.Unix((day+1)*86400+3600, 0) }
		expiry := func() time.Time {
			d := rdb.ExpireTime(ctx, dayKey(key)).Val()
			return time.Unix(int64(d/time.Second), 0)
		}
		count(key)
		if got := expiry(); !got.Equal(endOf(today)) {
			t.Fatalf("%s: after the day's first count the counter expires at %v, want %v", name, got, endOf(today))
		}
		// A later count of the same day leaves the expiry alone: moved by hand, it stays moved.
		moved := endOf(today).Add(time.Hour)
		rdb.ExpireAt(ctx, dayKey(key), moved)
		count(key)
		if got := expiry(); !got.Equal(moved) {
			t.Fatalf("%s: a second count of the day set the expiry to %v", name, got)
		}
		if n, _ := rdb.HGet(ctx, dayKey(key), "n").Int(); n != 2 {
			t.Fatalf("%s: counter %d after two counts, want 2", name, n)
		}
		// The next day's first count sets the next day's expiry, from 1.
		clk.Set(time.Unix((today+1)*86400, 500_000_000))
		count(key)
		if got := expiry(); !got.Equal(endOf(today + 1)) {
			t.Fatalf("%s: the next day's first count left the expiry at %v, want %v", name, got, endOf(today+1))
		}
		if n, _ := rdb.HGet(ctx, dayKey(key), "n").Int(); n != 1 {
			t.Fatalf("%s: counter %d after the next day's first count, want 1", name, n)
		}
	}
}
