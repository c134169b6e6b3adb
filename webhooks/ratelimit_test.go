package webhooks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// Reserve is Take of an attempt without a place or cap: a slot now (wait == 0), or how long
// until one frees, recording nothing.
func (l *RateLimiter) Reserve(ctx context.Context, url string) (wait time.Duration, err error) {
	wait, _, err = l.reserve(ctx, url)
	return wait, err
}

// reserve also returns the Redis time of the check in microseconds, for tests that verify
// the log against Redis's own clock.
func (l *RateLimiter) reserve(ctx context.Context, url string) (wait time.Duration, nowMicros int64, err error) {
	turn, err := l.Take(ctx, url, strconv.FormatUint(rand.Uint64(), 36), "", 0, 0)
	return turn.Wait, turn.now, err
}

// Acquire is Take of an attempt without a place, under the cap of inFlight.
func (l *RateLimiter) Acquire(ctx context.Context, url string, inFlight int, leaseFor time.Duration) (Lease, time.Duration, error) {
	turn, err := l.Take(ctx, url, strconv.FormatUint(rand.Uint64(), 36), "", inFlight, leaseFor)
	return turn.Lease, turn.Wait, err
}

func TestReserveHoldsBackWithoutRecording(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	l := NewRateLimiter(rdb, 3)
	url := "https://hooks.example/a"
	for i := range 3 {
		if wait, err := l.Reserve(ctx, url); err != nil || wait != 0 {
			t.Fatalf("reservation %d: wait %s, err %v", i, wait, err)
		}
	}
	for range 5 {
		wait, err := l.Reserve(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if wait <= 0 || wait > time.Second+RateGuard {
			t.Fatalf("held back with wait %s", wait)
		}
	}
	if n := rdb.ZCard(ctx, rateKey(url)).Val(); n != 3 {
		t.Fatalf("log holds %d entries after 3 admissions and 5 refusals", n)
	}
	if ttl := rdb.PTTL(ctx, rateKey(url)).Val(); ttl <= 0 || ttl > 3*time.Second {
		t.Errorf("log TTL %s: idle URLs must not stay in Redis", ttl)
	}
	// Another URL has its own log.
	if wait, err := l.Reserve(ctx, "https://hooks.example/b"); err != nil || wait != 0 {
		t.Fatalf("other url: wait %s, err %v", wait, err)
	}
	// Same receiver spelled differently shares the log.
	if wait, _ := l.Reserve(ctx, "HTTPS://Hooks.Example:443/a#frag"); wait == 0 {
		t.Error("a respelling of the URL escaped its limit")
	}
	// After the wait, a slot is free again.
	wait, _ := l.Reserve(ctx, url)
	time.Sleep(wait)
	if wait, err := l.Reserve(ctx, url); err != nil || wait != 0 {
		t.Fatalf("after waiting: wait %s, err %v", wait, err)
	}
}

// hammer runs n deliveries to one URL through the limiters (round robin), each retrying after
// the wait it is given, as held-back tasks do. It returns, for every admission, the Go time
// right after Reserve returned and the Redis time the script admitted it at.
func hammer(t *testing.T, limiters []*RateLimiter, url string, n int) (goTimes []time.Time, redisMicros []int64) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx := context.Background()
	for i := range n {
		wg.Go(func() {
			l := limiters[i%len(limiters)]
			for {
				wait, at, err := l.reserve(ctx, url)
				if err != nil {
					t.Error(err)
					return
				}
				if wait == 0 {
					now := time.Now()
					mu.Lock()
					goTimes = append(goTimes, now)
					redisMicros = append(redisMicros, at)
					mu.Unlock()
					return
				}
				time.Sleep(wait)
			}
		})
	}
	wg.Wait()
	return goTimes, redisMicros
}

// maxInSpan is the most entries of sorted times in any half-open span [x, x+span).
func maxInSpan(sorted []int64, span int64) int {
	best := 0
	j := 0
	for i := range sorted {
		for sorted[i]-sorted[j] >= span {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// The check: two limiters on two connections, 40 reservations to one URL, and the
// admission log never has more than 10 in any 1 s span — on Redis's clock with no guard (the
// exactness of the script itself), and on the callers' clock with the guard (what receivers
// see). Each subtest takes about 3 s of mostly sleeping; they run in parallel.
func TestRateLimiterExactAcrossProcesses(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const perSecond, events = 10, 40
	t.Run("redis clock, no guard", func(t *testing.T) {
		t.Parallel()
		ls := []*RateLimiter{newRateLimiter(srv.Client(t), perSecond, time.Second), newRateLimiter(srv.Client(t), perSecond, time.Second)}
		_, micros := hammer(t, ls, "https://hooks.example/exact", events)
		if len(micros) != events {
			t.Fatalf("%d admissions", len(micros))
		}
		slices.Sort(micros)
		if got := maxInSpan(micros, time.Second.Microseconds()); got != perSecond {
			t.Errorf("max %d admissions in a 1 s span, want exactly %d", got, perSecond)
		}
		// Exact also means not needlessly slow: 40 at 10/s need just over 3 s of windows.
		if span := time.Duration(micros[len(micros)-1]-micros[0]) * time.Microsecond; span < 3*time.Second || span > 6*time.Second {
			t.Errorf("40 admissions spread over %s", span)
		}
	})
	t.Run("caller clock, with guard", func(t *testing.T) {
		t.Parallel()
		ls := []*RateLimiter{NewRateLimiter(srv.Client(t), perSecond), NewRateLimiter(srv.Client(t), perSecond)}
		goTimes, _ := hammer(t, ls, "https://hooks.example/guarded", events)
		nanos := make([]int64, len(goTimes))
		for i, gt := range goTimes {
			nanos[i] = gt.UnixNano()
		}
		slices.Sort(nanos)
		if got := maxInSpan(nanos, int64(time.Second)); got > perSecond {
			t.Errorf("max %d arrivals in a 1 s span, want at most %d", got, perSecond)
		}
	})
}

func TestRateLimiterSeparateURLs(t *testing.T) {
	t.Parallel()
	l := NewRateLimiter(redistest.New(t), 10)
	start := time.Now()
	var wg sync.WaitGroup
	for _, u := range []string{"https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/"} {
		wg.Go(func() { hammer(t, []*RateLimiter{l}, u, 10) })
	}
	wg.Wait()
	// 40 events over 4 URLs fit into each URL's first second; to one URL they need 3 more.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("4 URLs × 10 events took %s; each URL should have its own budget", d)
	}
}

func TestNormalizeURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://Hooks.Example/a?b=1", "https://hooks.example/a?b=1"},
		{"HTTPS://hooks.example:443/a", "https://hooks.example/a"},
		{"http://hooks.example:80/a", "http://hooks.example/a"},
		{"https://hooks.example:8443/a", "https://hooks.example:8443/a"},
		{"https://hooks.example/a#x", "https://hooks.example/a"},
		{"https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"},
		{"https://hooks.example/A", "https://hooks.example/A"},
		{"not a url", "not a url"},
	}
	for _, tt := range tests {
		if got := normalizeURL(tt.in); got != tt.want {
			t.Errorf("normalizeURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAcquireCapsAttemptsInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	l := NewRateLimiter(rdb, 100)
	const url = "https://hooks.example/slow"
	var leases []Lease
	for i := range 3 {
		lease, wait, err := l.Acquire(ctx, url, 3, time.Minute)
		if err != nil || wait != 0 {
			t.Fatalf("attempt %d: wait %v, err %v", i, wait, err)
		}
		leases = append(leases, lease)
	}
	_, wait, err := l.Acquire(ctx, url, 3, time.Minute)
	if err != nil || wait <= 0 || wait > time.Second {
		t.Fatalf("over the cap: wait %v, err %v; want a wait of at most 1s", wait, err)
	}
	// Another URL has its own cap.
	if _, wait, _ := l.Acquire(ctx, "https://hooks.example/other", 3, time.Minute); wait != 0 {
		t.Errorf("other URL held back: %v", wait)
	}
	if err := leases[0].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, wait, err := l.Acquire(ctx, url, 3, time.Minute); err != nil || wait != 0 {
		t.Fatalf("after a release: wait %v, err %v", wait, err)
	}
	// A lease that is never released (a crashed worker) expires.
	_, _, _ = l.Acquire(ctx, "https://hooks.example/crash", 1, 50*time.Millisecond)
	time.Sleep(80 * time.Millisecond)
	if _, wait, err := l.Acquire(ctx, "https://hooks.example/crash", 1, time.Minute); err != nil || wait != 0 {
		t.Fatalf("expired lease still held: wait %v, err %v", wait, err)
	}
	// A held-back attempt took nothing.
	if n := rdb.ZCard(ctx, leaseKey(url)).Val(); n != 3 {
		t.Errorf("leases in flight %d, want 3", n)
	}
}

// MovePlace hands a place in line to another name at the same time: the attempt asking under
// the new name finds it there; a place that is gone stays gone, and the log keeps its count.
func TestMovePlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	l := newRateLimiter(rdb, 1, time.Minute)
	const url = "https://hooks.example/moved"
	if turn, err := l.Take(ctx, url, "a-run", "a", 0, 0); err != nil || turn.Wait != 0 {
		t.Fatalf("first attempt: %+v, %v", turn, err)
	}
	held, err := l.Take(ctx, url, "b-run", "b", 0, 0)
	if err != nil || !held.Placed {
		t.Fatalf("second attempt: %+v, %v; want a place", held, err)
	}
	if err := l.MovePlace(ctx, url, "b", "c"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZScore(ctx, rateKey(url), "b").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the old name is still in the log (%v)", err)
	}
	again, err := l.Take(ctx, url, "c-run", "c", 0, 0)
	if err != nil || !again.Placed || !again.At.Equal(held.At) {
		t.Errorf("asking under the new name: %+v, %v; want the place at %s", again, err, held.At.Format(time.StampMicro))
	}
	if err := l.MovePlace(ctx, url, "gone", "d"); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, rateKey(url)).Val(); n != 2 {
		t.Errorf("the log holds %d entries, want the admission and the one place", n)
	}
}

// taker gives a function that asks l for a slot for an attempt to url named place, its run
// named place+"-run", under a cap of inFlight attempts in flight (leases of a minute).
func taker(t *testing.T, l *RateLimiter, url string, inFlight int) func(place string) Turn {
	return func(place string) Turn {
		t.Helper()
		turn, err := l.Take(context.Background(), url, place+"-run", place, inFlight, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return turn
	}
}

// capWindow is the window of the limiters atCap builds.
const capWindow = 300 * time.Millisecond

// atCap builds a limiter of 3 attempts per capWindow, and with its taker (a cap of 3 in
// flight) admits three attempts to url, named prefix0 to prefix2, which are never released:
// the rate is spent and the cap reached. It returns the taker and the first admission's time.
func atCap(t *testing.T, rdb *redis.Client, url, prefix string) (func(string) Turn, time.Time) {
	t.Helper()
	take := taker(t, newRateLimiter(rdb, 3, capWindow), url, 3)
	var first time.Time
	for i := range 3 {
		turn := take(fmt.Sprint(prefix, i))
		if turn.Wait != 0 {
			t.Fatalf("attempt %d under the limit and the cap: %+v", i, turn)
		}
		if i == 0 {
			first = turn.At
		}
	}
	return take, first
}

// A burst to one URL while its first attempts are still in flight: attempts the rate holds
// back get their places in line whatever the cap on attempts in flight says, and the cap
// holds back (unplaced) only attempts that the rate would admit, or places that come due
// while it is reached.
func TestPlacesWhileCapReached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	const window = capWindow
	const url = "https://hooks.example/burst"
	take, first := atCap(t, rdb, url, "b")
	// Each admission is logged under its time in µs, printed as an integer, and its run.
	for i, e := range rdb.ZRangeWithScores(ctx, rateKey(url), 0, -1).Val() {
		if want := fmt.Sprintf("%d:b%d-run", int64(e.Score), i); e.Member != want {
			t.Errorf("log entry %q, want %q", e.Member, want)
		}
	}
	// Three in flight (never released), the rate spent: the fourth gets a place.
	turn := take("b3")
	if !turn.Placed || !turn.At.Equal(first.Add(window)) {
		t.Fatalf("over the rate with the cap reached: %+v, want a place at %s", turn, first.Add(window).Format(time.StampMicro))
	}
	// At its place the cap is still reached, and nobody is in line behind it: held back
	// without a place, since the rate would let it through now, and its unused entry dropped.
	time.Sleep(time.Until(turn.At))
	again := take("b3")
	if again.Wait <= 0 || again.Placed {
		t.Fatalf("a place come due with the cap reached: %+v, want held back unplaced", again)
	}
	if err := rdb.ZScore(ctx, rateKey(url), "b3").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the unused place is still in the log: %v", err)
	}
	// A limiter with room in its rate but not its cap holds back unplaced, and takes nothing.
	wide := newRateLimiter(rdb, 100, window)
	if got := taker(t, wide, url, 3)("w"); got.Wait <= 0 || got.Placed {
		t.Fatalf("under the rate with the cap reached: %+v, want held back unplaced", got)
	}
	for _, m := range rdb.ZRange(ctx, rateKey(url), 0, -1).Val() {
		if m == "w" || strings.HasSuffix(m, ":w-run") {
			t.Errorf("the log holds %q for an attempt the cap held back", m)
		}
	}
}

// A place that comes due while the cap is reached, with a line behind it, is exchanged at once
// for a new place at the end of the line: the attempt waits for that, instead of asking again
// blindly within a second and then being placed there anyway.
func TestPlaceDueAtCapTakesNewPlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	const window = capWindow
	const url = "https://hooks.example/slow"
	take, _ := atCap(t, rdb, url, "s")
	// Three in flight for good; four more in line, the last a window after the first.
	places := make([]Turn, 4)
	for i := range places {
		if places[i] = take(fmt.Sprint("s", 3+i)); !places[i].Placed {
			t.Fatalf("attempt %d over the rate: %+v, want a place", 3+i, places[i])
		}
	}
	time.Sleep(time.Until(places[0].At))
	again := take("s3")
	// Its new place: a window after the third-latest entry of the log, which is now s4's.
	if want := places[1].At.Add(window); !again.Placed || !again.At.Equal(want) {
		t.Fatalf("a place come due with the cap reached and a line behind: %+v, want a new place at %s",
			again, want.Format(time.StampMicro))
	}
	score, err := rdb.ZScore(ctx, rateKey(url), "s3").Result()
	if err != nil || int64(score) != again.At.UnixMicro() {
		t.Errorf("the log holds s3 at %v (%v), want its new place %d", score, err, again.At.UnixMicro())
	}
	// The rule still holds over the log: no window holds more than 3.
	entries := rdb.ZRangeWithScores(ctx, rateKey(url), 0, -1).Val()
	for i := 3; i < len(entries); i++ {
		if d := time.Duration(entries[i].Score-entries[i-3].Score) * time.Microsecond; d < window {
			t.Errorf("entries %v and %v are %v apart: 4 in one window", entries[i-3], entries[i], d)
		}
	}
}

// Places in line (docs/webhooks.md#rate-per-webhook-url): attempts beyond the limit get the
// next moments the limit allows, in the order they asked, each kept in the log so that
// nobody else takes it; the holder is admitted there, and loses it when it comes back late.
func TestPlacesInLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	const window = 400 * time.Millisecond
	l := newRateLimiter(rdb, 3, window)
	const url = "https://hooks.example/line"
	take := taker(t, l, url, 0)
	var admitted []time.Time
	for i := range 3 {
		turn := take(fmt.Sprint("p", i))
		if turn.Wait != 0 || turn.Placed || turn.Delay != 0 {
			t.Fatalf("attempt %d under the limit: %+v", i, turn)
		}
		admitted = append(admitted, time.UnixMicro(turn.now))
	}
	places := map[string]time.Time{}
	for i := 3; i < 7; i++ {
		p := fmt.Sprint("p", i)
		turn := take(p)
		if turn.Wait <= 0 || !turn.Placed {
			t.Fatalf("%s over the limit: %+v, want a place", p, turn)
		}
		places[p] = turn.At
	}
	// The limit-th latest entry plus the window, places included.
	want := map[string]time.Time{"p3": admitted[0].Add(window), "p4": admitted[1].Add(window), "p5": admitted[2].Add(window)}
	want["p6"] = want["p3"].Add(window)
	for p, at := range want {
		if !places[p].Equal(at) {
			t.Errorf("%s placed at %s, want %s", p, places[p].Format(time.StampMicro), at.Format(time.StampMicro))
		}
	}
	if n := rdb.ZCard(ctx, rateKey(url)).Val(); n != 7 {
		t.Fatalf("log holds %d entries, want 3 admissions and 4 places", n)
	}
	// Without a name, an attempt takes nothing, and finds no slot before the places.
	turn, err := l.Take(ctx, url, "anon", "", 0, 0)
	if err != nil || turn.Wait <= 0 || turn.Placed {
		t.Fatalf("unnamed attempt: %+v, %v", turn, err)
	}
	if got := time.UnixMicro(turn.now).Add(turn.Wait); !got.Equal(places["p4"].Add(window)) {
		t.Errorf("unnamed attempt told to come back at %s, want %s (behind the places)", got.Format(time.StampMicro), places["p4"].Add(window).Format(time.StampMicro))
	}
	// Asking again early keeps the place.
	if again := take("p3"); !again.Placed || !again.At.Equal(places["p3"]) {
		t.Fatalf("p3 asking early: %+v, want its place %s", again, places["p3"])
	}
	if n := rdb.ZCard(ctx, rateKey(url)).Val(); n != 7 {
		t.Fatalf("log holds %d entries after the early and unnamed asks, want 7", n)
	}
	// Shortly before its place, p3 is admitted there, told to wait the rest (nothing, if a
	// busy machine woke this test late).
	time.Sleep(time.Until(places["p3"].Add(-placeEarly / 2)))
	turn = take("p3")
	if turn.Wait != 0 || !turn.At.Equal(places["p3"]) || turn.Delay < 0 || turn.Delay > placeEarly {
		t.Fatalf("p3 just before its place: %+v, want admission at its place with a delay of at most %s", turn, placeEarly)
	}
	if err := rdb.ZScore(ctx, rateKey(url), "p3").Err(); err == nil {
		t.Error("p3's place still in the log under its name after its admission")
	}
	// p4 comes back long after its place: it lost it, and is checked afresh, never admitted at
	// the old place.
	time.Sleep(time.Until(places["p6"].Add(window / 4)))
	turn = take("p4")
	switch {
	case turn.Wait == 0 && turn.Delay != 0:
		t.Errorf("late p4 admitted at a place: %+v", turn)
	case turn.Placed && !turn.At.After(places["p4"].Add(placeLate)):
		t.Errorf("late p4 kept its old place: %+v", turn)
	}
	// Whatever happened, the log keeps the rule: at most 3 entries in any span of the window.
	zs := rdb.ZRangeWithScores(ctx, rateKey(url), 0, -1).Val()
	scores := make([]int64, len(zs))
	for i, z := range zs {
		scores[i] = int64(z.Score)
	}
	if got := maxInSpan(scores, window.Microseconds()); got > 3 {
		t.Errorf("log has %d entries in one window: %v", got, scores)
	}
}

// The exactness of TestRateLimiterExactAcrossProcesses with places in line: attempts that
// come back at their places (as the forwarder of jobs brings them) are admitted there, the
// limit holds on both clocks, and a held-back attempt is held back about once, not again and
// again as when every waiting attempt asks afresh.
func TestPlacesInLineExact(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const perSecond, events = 10, 40
	ls := []*RateLimiter{NewRateLimiter(srv.Client(t), perSecond), NewRateLimiter(srv.Client(t), perSecond)}
	const url = "https://hooks.example/placed"
	var (
		mu                sync.Mutex
		redisAt, callerAt []int64
		holds             int
		wg                sync.WaitGroup
	)
	ctx := context.Background()
	for i := range events {
		wg.Go(func() {
			l := ls[i%len(ls)]
			place := fmt.Sprint("attempt-", i)
			for {
				turn, err := l.Take(ctx, url, fmt.Sprint(place, "-", rand.Uint64()), place, 0, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if turn.Wait > 0 {
					mu.Lock()
					holds++
					mu.Unlock()
					// Back a little early, as the Line brings a task: a place admits its attempt
					// from placeEarly before it.
					time.Sleep(turn.Wait - placeEarly/2)
					continue
				}
				time.Sleep(turn.Delay)
				now := time.Now()
				mu.Lock()
				redisAt = append(redisAt, turn.At.UnixMicro())
				callerAt = append(callerAt, now.UnixNano())
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	if len(redisAt) != events {
		t.Fatalf("%d admissions", len(redisAt))
	}
	slices.Sort(redisAt)
	slices.Sort(callerAt)
	if got := maxInSpan(redisAt, (time.Second + RateGuard).Microseconds()); got > perSecond {
		t.Errorf("max %d admissions in one window of Redis time, want at most %d: %v", got, perSecond, redisAt)
	}
	// The callers' clock: the guard absorbs the usual delay between admission and the moment
	// a caller goes on, but on a machine loaded by a parallel test run a goroutine can wake
	// a few hundred milliseconds late, so arrivals are held to the second with a tolerance
	// (as TestWebhookRateAcrossWorkers does); a limiter letting bursts through would put 11
	// within a few milliseconds.
	if got := maxInSpan(callerAt, int64(750*time.Millisecond)); got > perSecond {
		t.Errorf("max %d arrivals within 750 ms of the callers' clock, want at most %d", got, perSecond)
	} else if got := maxInSpan(callerAt, int64(time.Second)); got > perSecond {
		t.Logf("%d arrivals in a 1 s span of the callers' clock: a goroutine woke late (loaded machine)", got)
	}
	// 30 attempts must wait once each. Some may come back late on a loaded machine and wait
	// again; asking afresh after every wait costs many times that (all 30 wake together for
	// each freed slot).
	if holds < events-perSecond || holds > events-perSecond+15 {
		t.Errorf("%d holds for %d attempts over a limit of %d, want about %d", holds, events, perSecond, events-perSecond)
	}
}

// TestTakeInAndGiveBack: the check sent in a caller's pipeline decides as Take does (also when
// Redis had forgotten the script), and GiveBack takes back exactly what it gave: an
// admission's entry and lease, or a place, so that the next attempt gets that slot.
func TestTakeInAndGiveBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t) // its own server: SCRIPT FLUSH must not reach other tests
	const window = 2 * time.Second
	l := newRateLimiter(rdb, 2, window)
	const url = "https://hooks.example/give-back"
	takeIn := func(member, place string) Turn {
		t.Helper()
		var turn func() (Turn, error)
		var get *redis.StringCmd
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			get = p.Get(ctx, "beside")
			turn = l.TakeIn(ctx, p, url, member, place, 5, time.Minute)
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
			t.Fatal(err)
		}
		if !errors.Is(get.Err(), redis.Nil) {
			t.Fatalf("the caller's own command beside the check: %v", get.Err())
		}
		got, err := turn()
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	entries := func() int64 { return rdb.ZCard(ctx, rateKey(url)).Val() }
	leases := func() int64 { return rdb.ZCard(ctx, leaseKey(url)).Val() }

	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	a := takeIn("a", "a#0") // NOSCRIPT in the pipeline: checked again on its own
	if a.Wait != 0 || a.Placed || entries() != 1 || leases() != 1 {
		t.Fatalf("first attempt: %+v, %d entries, %d leases; want admitted, 1 and 1", a, entries(), leases())
	}
	if err := l.GiveBack(ctx, url, a, "a", "a#0"); err != nil {
		t.Fatal(err)
	}
	if entries() != 0 || leases() != 0 {
		t.Fatalf("after giving back an admission: %d entries, %d leases, want none", entries(), leases())
	}

	b, c := takeIn("b", "b#0"), takeIn("c", "c#0")
	if b.Wait != 0 || c.Wait != 0 {
		t.Fatalf("two attempts under a limit of 2: %+v %+v", b, c)
	}
	d := takeIn("d", "d#0")
	if !d.Placed || d.Wait <= 0 {
		t.Fatalf("third attempt: %+v, want a place", d)
	}
	e := takeIn("e", "e#0")
	if !e.Placed || !e.At.After(d.At) {
		t.Fatalf("fourth attempt: %+v, want a place behind d's at %s", e, d.At)
	}
	if err := l.GiveBack(ctx, url, d, "d", "d#0"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZScore(ctx, rateKey(url), "d#0").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("d's place after it was given back: %v", err)
	}
	if entries() != 3 || leases() != 2 {
		t.Fatalf("after giving back a place: %d entries, %d leases, want b, c, e's place and b, c's leases", entries(), leases())
	}
	// With d's place gone, the next attempt is placed beside e (the limit-th latest entry is
	// c now), not behind e as it would be behind d and e.
	f := takeIn("f", "f#0")
	if !f.Placed || f.At.After(e.At) {
		t.Fatalf("attempt after d gave back its place: %+v, want a place no later than e's at %s", f, e.At)
	}
	// An attempt held back without a place took nothing, and gives back nothing.
	anon, err := l.Take(ctx, url, "g", "", 5, time.Minute)
	if err != nil || anon.Wait <= 0 || anon.Placed {
		t.Fatalf("unnamed attempt: %+v, %v", anon, err)
	}
	if err := l.GiveBack(ctx, url, anon, "g", ""); err != nil || entries() != 4 {
		t.Fatalf("giving back nothing: %v, %d entries, want 4", err, entries())
	}
	// Giving back c's admission leaves b's.
	if err := l.GiveBack(ctx, url, c, "c", "c#0"); err != nil {
		t.Fatal(err)
	}
	ms := rdb.ZRange(ctx, rateKey(url), 0, -1).Val()
	if len(ms) != 3 || !strings.HasSuffix(ms[0], ":b") || leases() != 1 {
		t.Fatalf("after giving back c: log %v, %d leases; want b's admission, e's and f's places, b's lease", ms, leases())
	}
}

// givenBackHook collects what GivenBackAdmission recognizes among the calls of its client.
type givenBackHook struct {
	mu  sync.Mutex
	got []string // "key@at"
}

func (h *givenBackHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *givenBackHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *givenBackHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if key, at, ok := GivenBackAdmission(cmd, err); ok {
			h.mu.Lock()
			h.got = append(h.got, fmt.Sprintf("%s@%d", key, at))
			h.mu.Unlock()
		}
		return err
	}
}

// GivenBackAdmission tells an admission given back (by EVAL, after the NOSCRIPT of a Redis
// that does not know the script yet, and by EVALSHA), at the time Take reported, from a place
// given back and from Take's own calls.
func TestGivenBackAdmission(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	hook := &givenBackHook{}
	rdb.AddHook(hook)
	l := newRateLimiter(rdb, 2, time.Second)
	const url = "https://hooks.example/given-back"
	take := taker(t, l, url, 0)
	a, b, placed := take("a"), take("b"), take("c")
	if a.Wait != 0 || b.Wait != 0 || !placed.Placed {
		t.Fatalf("takes: %+v %+v %+v; want two admitted and a place", a, b, placed)
	}
	for _, g := range []struct {
		turn   Turn
		member string
	}{{a, "a-run"}, {placed, "c-run"}, {b, "b-run"}} {
		if err := l.GiveBack(ctx, url, g.turn, g.member, strings.TrimSuffix(g.member, "-run")); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{fmt.Sprintf("%s@%d", rateKey(url), a.At.UnixMicro()), fmt.Sprintf("%s@%d", rateKey(url), b.At.UnixMicro())}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if !slices.Equal(hook.got, want) {
		t.Errorf("recognized %v, want %v", hook.got, want)
	}
}
