package jobs

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Places in line for held-back webhook attempts (docs/webhooks.md#rate-per-webhook-url). An
// attempt that the per-URL rate holds back gets a place, a moment in the URL's rate log that
// no other attempt may take. Its task then has to start at that moment, within a few
// milliseconds: much later, and the place is lost. asynq cannot do that alone: it keeps retry
// times in whole seconds and looks at them every DelayedTaskCheckInterval. So the handler also
// writes the place's time, in milliseconds, to a sorted set of its own beside asynq's queue,
// and a Line in every worker moves each task from asynq's retry set to the pending list when
// its time comes, as asynq's own forwarder would. asynq's retry time is set past the place, so
// asynq's forwarder moves the task only if no Line did (a worker gone), a second or two late.

// lineKey is the sorted set of places: task ids scored by the Redis time in milliseconds at
// which they should be pending. Its hash tag is the webhook queue's, so one script can move a
// task between the set and asynq's keys on Redis Cluster.
const lineKey = "linkhop:{" + QueueWebhooks + "}:line"

// lineLead is how long before its place a task is made pending, so that a worker has picked it
// up by then (asynq polls an empty queue every 5-15 ms); an attempt that starts early waits
// the rest out before sending (webhooks.RateLimiter.Take), holding its worker slot for those
// few milliseconds.
const lineLead = 20 * time.Millisecond

// lineIdlePass is how often a Line looks at the set when it knows of no place. Places written
// by another worker process wake only that process's Line, which moves them; the idle pass
// only clears what a Line that died left (by then too late for their places: asynq's own
// retry brings those tasks back anyway), so it can be rare and cost an idle worker little.
const lineIdlePass = 5 * time.Second

// lineMinGap keeps a Line from passing more often than every few milliseconds under a stream
// of places: each pass moves everything due within lineLead.
const lineMinGap = 3 * time.Millisecond

// lineStale is how long past its time a place whose task is still running is kept: normally a
// task's retry lands within milliseconds of its place being written, so a place that old
// belongs to a run that ended some other way.
const lineStale = time.Minute

// lineScript moves the tasks whose places are due (score ≤ Redis now + ARGV[2] ms) from the
// retry set to the pending list, as asynq's forwarder does (state "pending", pending_since),
// and drops their places. They go to the end of the list that asynq takes tasks from, not
// behind the tasks waiting there: a place is a turn already waited for. Among themselves they
// are taken in the order of their places. A task still running (its retry not yet written)
// keeps its place for the next pass, unless that is stale; a task in any other state (already
// moved by asynq's forwarder, deleted) just loses its place. KEYS[1] the line, KEYS[2] asynq's
// retry set, KEYS[3] asynq's pending list; ARGV[1] the task key prefix, ARGV[2] lead ms,
// ARGV[3] pending_since (Unix ns), ARGV[4] stale ms. Reply {moved, Redis now ms, next place ms
// or -1}.
var lineScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + tonumber(ARGV[2]), 'WITHSCORES', 'LIMIT', 0, 200)
local ids = {}
local waiting = nil
for i = 1, #due, 2 do
  local id = due[i]
  local key = ARGV[1] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'active' and tonumber(due[i + 1]) > now - tonumber(ARGV[4]) then
    if not waiting then waiting = now + 2 end
  else
    if state == 'retry' and redis.call('ZREM', KEYS[2], id) == 1 then
      redis.call('HSET', key, 'state', 'pending', 'pending_since', ARGV[3])
      ids[#ids + 1] = id
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
local moved = #ids
if moved > 0 then
  -- asynq takes the task at the list's right end first: pushed there last-due first, the
  -- tasks are taken in the order of their places.
  local back = {}
  for i = moved, 1, -1 do back[#back + 1] = ids[i] end
  redis.call('RPUSH', KEYS[3], unpack(back))
end
if waiting then return {moved, now, waiting} end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return {moved, now, -1} end
return {moved, now, math.floor(tonumber(first[2]))}
`)

// Line forwards held-back webhook tasks at their places in line. Worker starts and stops it.
type Line struct {
	rdb  redis.UniversalClient
	log  *slog.Logger
	idle *idleBackoff

	mu    sync.Mutex
	first time.Time // the earliest place this process wrote since the last pass
	kick  chan struct{}

	// skew is Redis's clock minus this process's, in ns, as the passes measure it: places are
	// on Redis's clock, and a time this process reckoned (a retry's next_attempt_at) is moved
	// onto it (onRedisClock) before it becomes a place. seen holds the last passes' readings.
	skew atomic.Int64
	seen skewReadings

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newLine(rdb redis.UniversalClient, log *slog.Logger, idle *idleBackoff) *Line {
	return &Line{rdb: rdb, log: log, idle: idle, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// placeIn writes the place of task at time at (Redis's clock) with c: a pipeline that sends
// it with other commands, or the client, alone. A time of this process's clock goes through
// onRedisClock first.
func (l *Line) placeIn(ctx context.Context, c redis.Cmdable, task string, at time.Time) *redis.IntCmd {
	return c.ZAdd(ctx, lineKey, redis.Z{Score: float64(at.UnixMilli()), Member: task})
}

// onRedisClock gives the time of Redis's clock at which this process's clock reads t, by the
// skew the Line's last pass measured (none before its first). A task placed at a time its
// worker reckoned (a retry's next_attempt_at, which the run then checks against its own
// clock) must come due when that clock reaches it: placed at t as read, it would start early on
// a worker whose clock is behind Redis's, be found not due, be placed again at a time already
// past and go round every few milliseconds until the worker's clock caught up.
func (l *Line) onRedisClock(t time.Time) time.Time {
	return t.Add(time.Duration(l.skew.Load()))
}

// placed tells the Line of a place written at time at (Redis's clock), so that it passes in
// time even when it was sleeping until later.
func (l *Line) placed(at time.Time) {
	l.mu.Lock()
	if l.first.IsZero() || at.Before(l.first) {
		l.first = at
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *Line) start() {
	if l.started.CompareAndSwap(false, true) {
		go l.run()
	}
}

// shutdown stops the Line and waits for its pass in progress.
func (l *Line) shutdown() {
	l.stopOnce.Do(func() { close(l.stop) })
	if l.started.Load() {
		<-l.done
	}
}

func (l *Line) run() {
	defer close(l.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-l.done:
		}
	}()
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-l.stop:
			return
		case <-l.kick:
			l.mu.Lock()
			first := l.first
			l.mu.Unlock()
			if at := first.Add(-time.Duration(l.skew.Load()) - lineLead); !first.IsZero() && at.Before(next) {
				next = at
			}
			continue
		case <-timer.C:
		}
		l.mu.Lock()
		l.first = time.Time{}
		l.mu.Unlock()
		moved, nextAt, err := l.pass(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			l.log.Warn("moving held-back webhooks at their places failed; retrying", "err", err)
			next = time.Now().Add(100 * time.Millisecond)
			continue
		}
		if moved > 0 {
			l.idle.nudge() // a held poll must not keep the task from its place
		}
		next = time.Now().Add(lineIdlePass)
		if at := nextAt.Add(-time.Duration(l.skew.Load()) - lineLead); !nextAt.IsZero() && at.Before(next) {
			next = at
		}
		if soonest := time.Now().Add(lineMinGap); next.Before(soonest) {
			next = soonest
		}
	}
}

// pass runs lineScript once: how many tasks it moved and the next place's time (zero: none).
// It also reads the skew of the clocks: Redis's time against this process's once the reply is
// in.
func (l *Line) pass(ctx context.Context) (moved int64, next time.Time, err error) {
	res, err := lineScript.Run(ctx, l.rdb, []string{lineKey, "asynq:{" + QueueWebhooks + "}:retry", pendingKey(QueueWebhooks)},
		taskKey(QueueWebhooks, ""), lineLead.Milliseconds(), strconv.FormatInt(time.Now().UnixNano(), 10),
		lineStale.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, time.Time{}, err
	}
	if len(res) != 3 {
		return 0, time.Time{}, errors.New("jobs: line pass: unexpected reply")
	}
	if res[2] >= 0 {
		next = time.UnixMilli(res[2])
	}
	l.skew.Store(int64(l.seen.add(time.Until(time.UnixMilli(res[1])))))
	return res[0], next, nil
}

// skewReadings keeps the last readings of the clocks' skew and gives the largest. A reading is
// Redis's time less this process's clock when the reply came back, so it falls short of the
// skew by the reply's time on the way and by Redis's time cut to the millisecond, and never
// exceeds it: the largest of the last few is the closest. That errs on the safe side, too: a
// place reckoned a little late starts its task a little late, while one reckoned early, by
// more than notDueSlack, would find its attempt not due. One slow reply (a busy worker) must
// not be taken for a skew.
type skewReadings struct {
	mu sync.Mutex // a pass writes; tests too (SetClockSkew)
	r  [16]time.Duration
	n  int
}

func (s *skewReadings) add(d time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.r[s.n%len(s.r)] = d
	s.n++
	m := d
	for _, v := range s.r[:min(s.n, len(s.r))] {
		m = max(m, v)
	}
	return m
}
