package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/jobs"
)

// tripCounter is a go-redis hook counting round trips: one per command sent on its own, one
// per pipeline (or transaction) however many commands it holds. It also notes their names, so
// the report can say which calls a request makes.
type tripCounter struct {
	// worker: the counter is on a worker's client, whose idle polls and timed calls are
	// counted apart (idle, background) rather than as round trips. It counts without names:
	// naming every command of a busy worker cost a few percent of the worker's CPU, which the
	// scenario would charge to linkhop.
	worker bool

	mu    sync.Mutex
	n     int
	names []string
	// idle counts asynq's polls that found nothing (jobs.IsIdlePoll), and background the
	// calls a worker process makes on its own schedule whatever its load (backgroundCall);
	// neither is in n.
	idle, background int
}

// countTrip counts a round trip without its name (worker counters).
func (c *tripCounter) countTrip() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *tripCounter) record(name string) {
	c.mu.Lock()
	c.n++
	c.names = append(c.names, name)
	c.mu.Unlock()
}

// take returns what was counted since the last take, idle polls aside, and starts again.
func (c *tripCounter) take() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, names := c.n, c.names
	c.n, c.names, c.idle, c.background = 0, nil, 0, 0
	return n, names
}

// takeAll returns the round trips, the idle polls and the background calls counted since the
// last take, and starts again.
func (c *tripCounter) takeAll() (trips, idle, background int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	trips, idle, background = c.n, c.idle, c.background
	c.n, c.names, c.idle, c.background = 0, nil, 0, 0
	return trips, idle, background
}

// backgroundCall reports whether a command is one a worker process sends on its own schedule,
// not for a job: a new connection's set-up, asynq's heartbeat, lease extension, aggregation
// check and janitor (every few seconds: it deletes expired completed tasks), linkhop's lease
// beat (every second), the lease index's clean-up and the scripts a worker loads when it
// starts (jobs.LoadScripts).
func backgroundCall(cmd redis.Cmder) bool {
	switch name := strings.ToLower(cmd.Name()); name {
	case "hello", "client", "script":
		return true
	case "zadd", "zrem":
		// asynq's server registry; the lease index's clean-up at shutdown and after a reap.
		// asynq's heartbeat extends its own leases of running tasks every few seconds.
		k := fmt.Sprint(cmd.Args()[1])
		return strings.HasPrefix(k, "asynq:servers") || strings.HasPrefix(k, "asynq:workers") ||
			strings.HasPrefix(k, "linkhop:lease:") || (strings.HasPrefix(k, "asynq:{") && strings.HasSuffix(k, "}:lease"))
	case "evalsha", "eval":
		if args := cmd.Args(); len(args) > 3 {
			k := fmt.Sprint(args[3])
			return strings.HasPrefix(k, "asynq:servers") || strings.HasSuffix(k, "}:lease") ||
				strings.HasSuffix(k, ":aggregation_sets") || strings.HasPrefix(k, "linkhop:lease:") ||
				(strings.HasPrefix(k, "asynq:{") && strings.HasSuffix(k, "}:completed"))
		}
	}
	return false
}

// DialHook implements redis.Hook; dialing is not a round trip of a request.
func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		switch {
		case !c.worker:
			c.record(cmdName(cmd))
		case jobs.AnsweredWithoutRedis(cmd):
			// The worker answered it itself: no Redis call.
		case jobs.IsIdlePoll(cmd, err):
			c.mu.Lock()
			c.idle++
			c.mu.Unlock()
		case backgroundCall(cmd):
			c.mu.Lock()
			c.background++
			c.mu.Unlock()
		default:
			c.countTrip()
		}
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if c.worker && allBackground(cmds) {
			c.mu.Lock()
			c.background++
			c.mu.Unlock()
			return next(ctx, cmds)
		}
		if c.worker {
			c.countTrip()
			return next(ctx, cmds)
		}
		// Runs of one command (a batch's cache lookups on Cluster) are written once with their count.
		var names []string
		for i := 0; i < len(cmds); {
			name, j := cmdName(cmds[i]), i+1
			for j < len(cmds) && cmdName(cmds[j]) == name {
				j++
			}
			if j-i > 1 {
				name += " ×" + strconv.Itoa(j-i)
			}
			names = append(names, name)
			i = j
		}
		c.record("pipeline(" + strings.Join(names, ", ") + ")")
		return next(ctx, cmds)
	}
}

// allBackground reports whether every command of a pipeline is a backgroundCall.
func allBackground(cmds []redis.Cmder) bool {
	for _, cmd := range cmds {
		if !backgroundCall(cmd) {
			return false
		}
	}
	return len(cmds) > 0
}

// cmdName is a command's name; for scripts, EVALSHA/EVAL plus the first key, which tells whose
// script it is (the limiter's, asynq's, …).
func cmdName(cmd redis.Cmder) string {
	name := strings.ToLower(cmd.Name())
	if name == "evalsha" || name == "eval" || name == "evalsha_ro" || name == "eval_ro" {
		args := cmd.Args()
		if len(args) > 3 {
			if n, _ := args[2].(int); n > 0 {
				return name + " " + keyShape(fmt.Sprint(args[3]))
			}
		}
	}
	return name
}

// keyShape hides the ids in a Redis key: "linkhop:{k:key_x}:idem:ab12" → "linkhop:{k:…}:idem:…",
// "asynq:{resolve}:t:<uuid>" → "asynq:{resolve}:t:…", "linkhop:webhook:rate:<digest>" →
// "linkhop:webhook:rate:…".
func keyShape(k string) string {
	i := strings.Index(k, "{")
	j := strings.Index(k, "}")
	if i < 0 || j < i {
		// No hash tag: keep the namespace, hide the last part when it is an id or a digest.
		if p := strings.LastIndex(k, ":"); p > 0 && strings.Count(k, ":") >= 2 {
			return k[:p+1] + "…"
		}
		return k
	}
	tag := k[i+1 : j]
	if p, _, ok := strings.Cut(tag, ":"); ok {
		tag = p + ":…"
	}
	rest := strings.Split(strings.TrimPrefix(k[j+1:], ":"), ":")
	out := k[:i] + "{" + tag + "}"
	if len(rest) > 0 && rest[0] != "" {
		out += ":" + rest[0]
	}
	if len(rest) > 1 {
		out += ":…"
	}
	return out
}

// tripsRequests is how many requests of each kind are counted (after a warm-up that lets Redis
// learn the scripts: the first EVALSHA of a process costs one extra round trip).
const (
	tripsRequests = 50
	tripsWarmup   = 5
	batchItems    = 100 // items of the batches of 6e (the default BATCH_MAX_ITEMS)
)

// scenarioTrips counts the API's Redis round trips per request with the hook on the API's
// client, one request at a time so that nothing else is counted.
func scenarioTrips(ctx context.Context, e *runEnv) ([]row, error) {
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	counter := &tripCounter{}
	s, err := newStack(ctx, e, 1, stackOptions{keys: 1, hook: counter})
	if err != nil {
		return nil, err
	}
	defer s.close()
	tok := s.tokens[0]

	// A link resolved once, for the cached answer.
	if err := s.startWorker(); err != nil {
		return nil, err
	}
	cachedURL := s.nextURL("c")
	id, err := s.submit(ctx, tok, cachedURL)
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, e2eTimeout)
		_, err = s.done.wait(wctx, id)
		cancel()
	}
	s.stopWorker()
	if err != nil {
		return nil, fmt.Errorf("resolving the cached link: %w", err)
	}
	seq := 0
	var batchIDs []string // the jobs of the last batch, for 6f
	kinds := []struct {
		id, what string
		max      float64
		target   string
		do       func() error
	}{
		{"6a", "Redis round trips per accepted `POST /v1/resolve` (new link → 202)", 1, "1", func() error {
			_, err := s.submit(ctx, tok, s.nextURL("t"))
			return err
		}},
		{"6b", "… with an `Idempotency-Key` (new key → 202)", 1, "1", func() error {
			seq++
			_, err := postResolve(ctx, s.client, s.api.url, tok, s.nextURL("i"), "bench-"+strconv.Itoa(seq), http.StatusAccepted)
			return err
		}},
		{"6c", "… of a cached link (→ 200 `cached:true`)", 1, "1", func() error {
			_, err := postResolve(ctx, s.client, s.api.url, tok, cachedURL, "", http.StatusOK)
			return err
		}},
		{"6d", "Redis round trips per `GET /v1/jobs/{id}` poll", 1, "1", func() error {
			return get(ctx, s.client, s.api.url+"/v1/jobs/"+id, tok)
		}},
		{"6e", "Redis round trips per 100-item `POST /v1/resolve/batch` (new links → all queued)", 5, "≤ 5", func() error {
			links := make([]string, batchItems)
			for i := range links {
				links[i] = s.nextURL("b")
			}
			got, err := postBatch(ctx, s.client, s.api.url, tok, links)
			if err == nil {
				batchIDs = got
			}
			return err
		}},
		{"6f", "Redis round trips per `GET /v1/jobs?ids=` of 100 jobs", 1, "1", func() error {
			return get(ctx, s.client, s.api.url+"/v1/jobs?ids="+strings.Join(batchIDs, ","), tok)
		}},
	}
	e.progress("round trips per request, %d requests each", tripsRequests)
	var rows []row
	for _, k := range kinds {
		for range tripsWarmup {
			if err := k.do(); err != nil {
				return rows, err
			}
		}
		counter.take()
		total, lo, hi := 0, 1<<30, 0
		var names []string
		for range tripsRequests {
			if err := k.do(); err != nil {
				return rows, err
			}
			n, nn := counter.take()
			total += n
			lo, hi = min(lo, n), max(hi, n)
			names = nn
		}
		mean := float64(total) / tripsRequests
		fig := strconv.FormatFloat(mean, 'f', -1, 64)
		if lo != hi {
			fig = fmt.Sprintf("%.2f (%d–%d)", mean, lo, hi)
		}
		rows = append(rows, row{id: k.id, what: k.what, ours: fig + ": " + strings.Join(names, " → "),
			ref: "1", target: k.target, max: k.max, value: mean})
	}
	e.note("6: counted with a go-redis hook on the API's client (a pipeline counts as one); the references make 1 each (raw `asynq.Client.Enqueue`: one script; the bare handler: one `GET`).")
	return rows, nil
}
