package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/webhooks"
)

// hookURL is the webhook URL of the admissions tests.
const hookURL = "http://127.0.0.1:9/hook"

// watchedLimiter is a per-URL rate limiter of perSecond on a Redis of its own, with the
// admissions hook of scenario 5 on its client.
func watchedLimiter(t *testing.T, perSecond int) (*admissions, *webhooks.RateLimiter) {
	t.Helper()
	rdb := redistest.New(t)
	adm := &admissions{at: map[string][]int64{}}
	rdb.AddHook(adm)
	return adm, webhooks.NewRateLimiter(rdb, perSecond)
}

// TestAdmissionsTellLostPlaces drives the real per-URL limiter through the admissions hook of
// scenario 5: a place in line whose attempt comes back early is still waited for, one that
// comes back late in a running round was lost late, and one that came due before the round's
// worker started lapsed between rounds; a place never asked for again is told apart too.
func TestAdmissionsTellLostPlaces(t *testing.T) {
	adm, lim := watchedLimiter(t, 1)
	ctx := context.Background()
	take := func(member, place string) webhooks.Turn {
		t.Helper()
		turn, err := lim.Take(ctx, hookURL, member, place, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return turn
	}
	until := func(at time.Time) {
		// Redis runs on this machine's clock; a margin well past placeLate (25 ms).
		time.Sleep(time.Until(at) + 100*time.Millisecond)
	}

	adm.record(true)
	if turn := take("m1", ""); turn.Wait != 0 {
		t.Fatalf("first attempt held back: %+v", turn)
	}
	p2 := take("m2", "p2")
	p3 := take("m3", "p3")
	if !p2.Placed || !p3.Placed || !p3.At.After(p2.At) {
		t.Fatalf("places not given in line: %+v, %+v", p2, p3)
	}
	if again := take("m2", "p2"); !again.Placed || !again.At.Equal(p2.At) {
		t.Fatalf("an early return did not keep its place: %+v", again)
	}
	if lapsed, late := adm.lost(); lapsed != 0 || late != 0 {
		t.Fatalf("early return counted as lost: lapsed %d, late %d", lapsed, late)
	}

	until(p2.At)
	take("m2b", "p2")
	if lapsed, late := adm.lost(); lapsed != 0 || late != 1 {
		t.Fatalf("after a late return in the round: lapsed %d, late %d; want 0, 1", lapsed, late)
	}

	// The round ends and the next one starts after p3 came due: p3 lapsed.
	until(p3.At)
	adm.record(false)
	adm.record(true)
	take("m3b", "p3")
	if lapsed, late := adm.lost(); lapsed != 1 || late != 1 {
		t.Fatalf("after a return past a round's start: lapsed %d, late %d; want 1, 1", lapsed, late)
	}
	if per, n := adm.holdsPerAttempt(); n != 2 || per < 1 {
		t.Fatalf("holds per attempt %.2f over %d attempts; want 2 attempts held", per, n)
	}

	// A place whose attempt never asks for it again. (The late returns above were placed
	// again under their names and never came back: they count too, before p4 does.)
	p4 := take("m4", "p4")
	before := adm.unasked(p4.At.UnixMicro())
	if n := adm.unasked(p4.At.UnixMicro() + 1); n != before+1 {
		t.Fatalf("%d places unasked once p4 came due, want %d", n, before+1)
	}
	// A place moved to another name (an attempt handed back to a new task) is followed under
	// it: asked for there in time, it was neither lost nor left unasked.
	p5 := take("m5", "p5")
	if err := lim.MovePlace(ctx, hookURL, "p5", "p5b"); err != nil {
		t.Fatal(err)
	}
	if again := take("m5b", "p5b"); !again.Placed || !again.At.Equal(p5.At) {
		t.Fatalf("the moved place not found under its new name: %+v", again)
	}
	unasked := adm.unasked(p5.At.UnixMicro() + 1)
	time.Sleep(time.Until(p5.At) - 10*time.Millisecond) // within the place's early margin
	if turn := take("m5c", "p5b"); turn.Wait != 0 {
		t.Fatalf("the moved place's attempt back at its place: %+v, want admitted", turn)
	}
	if lapsed, late := adm.lost(); lapsed != 1 || late != 1 {
		t.Fatalf("after the moved place's return: lapsed %d, late %d; want 1, 1", lapsed, late)
	}
	if n := adm.unasked(p5.At.UnixMicro() + 1); n != unasked-1 {
		t.Fatalf("%d places unasked after the moved place was used, want %d", n, unasked-1)
	}
}

// TestAdmissionsTakeOutGivenBack: an admission whose attempt gave it back unused (GiveBack)
// leaves the limiter's log, and so leaves the hook's count of admissions too, while a place
// given back was never counted as admitted.
func TestAdmissionsTakeOutGivenBack(t *testing.T) {
	adm, lim := watchedLimiter(t, 2)
	ctx := context.Background()
	adm.record(true)
	var turns []webhooks.Turn
	for i, m := range []string{"m1", "m2", "m3"} {
		turn, err := lim.Take(ctx, hookURL, m, "p"+m, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if (turn.Wait == 0) != (i < 2) || (i == 2 && !turn.Placed) {
			t.Fatalf("take %d: %+v; want two admitted, then a place", i+1, turn)
		}
		turns = append(turns, turn)
	}
	if most, seen := adm.maxPerSecond(); most != 2 || seen != 2 {
		t.Fatalf("before the give-backs: most %d, seen %d; want 2, 2", most, seen)
	}
	// The first give-back reaches Redis twice (EVALSHA refused with NOSCRIPT, then EVAL); the
	// hook skips the refused call.
	for _, i := range []int{1, 2} {
		if err := lim.GiveBack(ctx, hookURL, turns[i], []string{"m1", "m2", "m3"}[i], "pm"+strconv.Itoa(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if most, seen := adm.maxPerSecond(); most != 1 || seen != 1 {
		t.Fatalf("after giving back m2's admission and m3's place: most %d, seen %d; want 1, 1", most, seen)
	}
	if turn, err := lim.Take(ctx, hookURL, "m4", "pm4", 0, time.Minute); err != nil || turn.Wait != 0 {
		t.Fatalf("the slot given back not admitted again: %+v, %v", turn, err)
	}
	if most, seen := adm.maxPerSecond(); most != 2 || seen != 2 {
		t.Fatalf("after a new admission: most %d, seen %d; want 2, 2", most, seen)
	}
}
