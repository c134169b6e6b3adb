package jobs

import "time"

// SplitSubmits makes q submit as on Redis Cluster (create, then enqueue), so that tests on a
// single Redis can hold the two ways of Submit to the same outcome.
func SplitSubmits(q *Queue) { q.split.Store(true) }

// SetRunningAfter makes h mark its jobs running after d of resolving instead of runningAfter.
func SetRunningAfter(h *ResolveHandler, d time.Duration) { h.markAfter = d }

// AwaitingDone is how many tasks c completed whose asynq Done it has not answered yet.
func AwaitingDone(c *TaskCompletions) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

// NotDueSlack is how early a delivery task may start its attempt.
const NotDueSlack = notDueSlack

// RoomLen is how many attempts wait or run in r.
func RoomLen(r *Room) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// SetClockSkew makes l read Redis's clock d ahead of this process's (behind, for d < 0) until
// its passes have read the clocks often enough to replace every reading.
func SetClockSkew(l *Line, d time.Duration) {
	for range len(l.seen.r) {
		l.skew.Store(int64(l.seen.add(d)))
	}
}

// LineKey is the sorted set of places in line; LineLead how long before its place a task is
// made pending.
const (
	LineKey  = lineKey
	LineLead = lineLead
)
