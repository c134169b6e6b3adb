package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// tripCounter is a go-redis hook counting round trips: one per command sent on its own, one
// per pipeline (or transaction) however many commands it holds. It also notes their names, so
// the report can say which calls a request makes.
type tripCounter struct {
	mu    sync.Mutex
	n     int
	names []string
}

func (c *tripCounter) record(name string) {
	c.mu.Lock()
	c.n++
	c.names = append(c.names, name)
	c.mu.Unlock()
}

// take returns what was counted since the last take and starts again.
func (c *tripCounter) take() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, names := c.n, c.names
	c.n, c.names = 0, nil
	return n, names
}

// DialHook implements redis.Hook; dialing is not a round trip of a request.
func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.record(cmdName(cmd))
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		// Runs of one command (a batch's cache lookups) are written once with their count.
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
	s, err := newStack(ctx, e.redis, 1, stackOptions{keys: 1, hook: counter})
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
		{"6a", "Redis round trips per accepted `POST /v1/resolve` (new link → 202)", 3, "≤ 3", func() error {
			_, err := s.submit(ctx, tok, s.nextURL("t"))
			return err
		}},
		{"6b", "… with an `Idempotency-Key` (new key → 202)", 3, "≤ 3", func() error {
			seq++
			_, err := postResolve(ctx, s.client, s.api.url, tok, s.nextURL("i"), "bench-"+strconv.Itoa(seq), http.StatusAccepted)
			return err
		}},
		{"6c", "… of a cached link (→ 200 `cached:true`)", 3, "≤ 3", func() error {
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
