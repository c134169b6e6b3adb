package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
)

// apiKeys is how many API keys the API scenarios spread their load over: enough that no one
// key's sliding-window log grows large, as with many clients in production.
const apiKeys = 256

// refTaskType and refQueue are the reference's asynq task type and queue.
const (
	refTaskType = "bench:noop"
	refQueue    = "bench"
)

// refTask is a task like linkhop's resolve task (a payload of two ids), without linkhop's
// options: the raw asynq.Client.Enqueue docs/benchmarks.md#targets compares against.
// It returns the task and the id in its payload.
func refTask() (*asynq.Task, string) {
	id := uuid.NewString()
	b, _ := json.Marshal(jobs.ResolvePayload{JobID: id, KeyID: "key_bench"})
	return asynq.NewTask(refTaskType, b, asynq.Queue(refQueue)), id
}

// scenarioResolve measures accepted POST /v1/resolve (202, a new job queued; no worker runs,
// so nothing else competes for the CPU) against raw asynq.Client.Enqueue at the same
// concurrency on the same Redis.
func scenarioResolve(ctx context.Context, e *runEnv) ([]row, error) {
	var rows []row
	for i, conc := range e.conc {
		if err := e.redis.flush(ctx); err != nil {
			return rows, err
		}
		s, err := newStack(ctx, e, conc, stackOptions{keys: apiKeys})
		if err != nil {
			return rows, err
		}
		raw, rawRdb, err := newRawClient(s.cfg)
		if err != nil {
			s.close()
			return rows, err
		}
		ours := func(ctx context.Context, d time.Duration) sample {
			return loadLoop(ctx, conc, d, func(ctx context.Context, w int) error {
				_, err := s.submit(ctx, s.token(w), s.nextURL("r"))
				return err
			})
		}
		theirs := func(ctx context.Context, d time.Duration) sample {
			return closedLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
				t, _ := refTask()
				_, err := raw.EnqueueContext(ctx, t)
				return err
			})
		}
		e.progress("POST /v1/resolve vs raw enqueue, concurrency %d", conc)
		a, b, err := e.timing.pair(ctx, fmt.Sprintf("resolve-c%d", conc), ours, theirs)
		s.close()
		_ = rawRdb.Close()
		if err != nil {
			return rows, err
		}
		r := compare(fmt.Sprintf("2%c", 'a'+i),
			fmt.Sprintf("accepted `POST /v1/resolve`/s vs raw `asynq.Client.Enqueue`/s, c=%d", conc), a, b, true)
		r.target, r.min = "≥ 0.5×", 0.5
		rows = append(rows, r)
	}
	floor, err := resolveFloor(ctx, e, [2]string{fmt.Sprintf("2%c", 'a'+len(e.conc)), fmt.Sprintf("2%c", 'a'+len(e.conc)+1)})
	return append(rows, floor...), err
}

// resolveFloor measures accepted POST /v1/resolve against the floor: a bare net/http handler
// that decodes the body, makes one raw Enqueue and answers 202 (no authentication, limits,
// validation or job record), the cheapest HTTP endpoint that queues a task
// (docs/benchmarks.md#targets: at least 0.7× its CPU per request). A second row compares the
// floor with raw Enqueue, for scale: how close to a bare function call any HTTP endpoint comes
// on this machine. ids names the two rows.
func resolveFloor(ctx context.Context, e *runEnv, ids [2]string) ([]row, error) {
	conc := e.conc[0]
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	s, err := newStack(ctx, e, conc, stackOptions{keys: apiKeys})
	if err != nil {
		return nil, err
	}
	defer s.close()
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.addr})
	defer rdb.Close()
	raw := asynq.NewClientFromRedisClient(rdb)
	bare, err := serve(bareEnqueueHandler(raw))
	if err != nil {
		return nil, err
	}
	defer bare.close()
	client := newLoadClient(conc)
	defer client.CloseIdleConnections()
	var seq atomic.Int64
	ours := func(ctx context.Context, d time.Duration) sample {
		return loadLoop(ctx, conc, d, func(ctx context.Context, w int) error {
			_, err := s.submit(ctx, s.token(w), s.nextURL("rf"))
			return err
		})
	}
	floor := func(ctx context.Context, d time.Duration) sample {
		return loadLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
			_, err := postResolve(ctx, client, bare.url, "", "http://"+shortHost+"/f/"+strconv.FormatInt(seq.Add(1), 36), "", http.StatusAccepted)
			return err
		})
	}
	theirs := func(ctx context.Context, d time.Duration) sample {
		return closedLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
			t, _ := refTask()
			_, err := raw.EnqueueContext(ctx, t)
			return err
		})
	}
	e.progress("POST /v1/resolve vs the floor (bare HTTP enqueue handler), concurrency %d", conc)
	a, b, err := e.timing.pair(ctx, fmt.Sprintf("resolve-vs-floor-c%d", conc), ours, floor)
	if err != nil {
		return nil, err
	}
	r := compare(ids[0], fmt.Sprintf("accepted `POST /v1/resolve`/s vs the floor: a bare `net/http` POST handler making one raw `Enqueue`, c=%d", conc), a, b, true)
	r.target, r.min, r.byCPU = "≥ 0.7× by CPU", 0.7, true
	rows := []row{r}
	e.progress("floor: bare HTTP enqueue handler vs raw enqueue, concurrency %d", conc)
	a, b, err = e.timing.pair(ctx, fmt.Sprintf("resolve-floor-c%d", conc), floor, theirs)
	if err != nil {
		return rows, err
	}
	r = compare(ids[1], fmt.Sprintf("floor, for scale: bare `net/http` POST handler making one raw `Enqueue` vs raw `Enqueue`/s, c=%d", conc), a, b, true)
	return append(rows, r), nil
}

// bareEnqueueHandler answers POST /v1/resolve with one raw Enqueue and nothing else.
func bareEnqueueHandler(c *asynq.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/resolve", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			URL string `json:"url"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil || body.URL == "" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		t, id := refTask()
		if _, err := c.EnqueueContext(r.Context(), t); err != nil {
			http.Error(w, "enqueue", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusAccepted)
		_, _ = fmt.Fprintf(w, `{"job_id":%q,"status":"queued"}`, id)
	})
	return mux
}

// bareHandler is the polls' reference: a net/http handler making one Redis call (GET of the
// job record) and writing the stored bytes, with no authentication, limits or rendering.
func bareHandler(rdb redis.UniversalClient) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		keyID, _ := keys.ParseToken(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		writeJob(w, r, rdb.Get(r.Context(), jobs.RecordKey(keyID, r.PathValue("id"))))
	})
	return mux
}

// writeJob answers a reference's poll with the job record get read: as stored, 404 when
// there is none.
func writeJob(w http.ResponseWriter, r *http.Request, get *redis.StringCmd) {
	b, err := get.Bytes()
	if errors.Is(err, redis.Nil) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, "redis", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b) //nolint:gosec // G705: the stored job JSON, served as application/json like the API does
}

// exactPollScript is the Redis side of exactPollHandler: a key's token digest and revocation,
// then the exact rolling window of its per-minute limit (the oldest entry's time for the reset
// header), in one script. KEYS: the key record, the log. ARGV: the digest, the window (µs), the
// member to log. Reply {0} unauthenticated, {2, limit, count} over the limit, else
// {1, limit, count, reset (Unix s)}.
var exactPollScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], '` + keys.FieldHash + `', '` + keys.FieldRevokedAt + `', '` + keys.FieldRateLimit + `')
if h[1] ~= ARGV[1] or h[2] then return {0} end
local limit = (h[3] or 0) + 0
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local win = ARGV[2] + 0
local count, reset = 0, math.floor((now + win) / 1000000)
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now - win))
  count = redis.call('ZCARD', KEYS[2])
  if count >= limit then return {2, limit, count} end
  redis.call('ZADD', KEYS[2], string.format('%d', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], string.format('%d', win / 1000))
  count = count + 1
  local o = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  reset = math.floor((o[2] + win) / 1000000)
end
return {1, limit, count, reset}
`)

// exactPollHandler is a second reference for polls, for scale (row 3c): the bare handler of
// scenario 3 made to do what the contract asks of every poll besides the read: the key's token
// checked against its record, the request counted exactly against the key's per-minute limit
// (the sliding-window log, as linkhop's), and the five rate-limit headers, in one round trip
// (the script and the job's GET in a pipeline). It has no scopes, daily quota, credits,
// problem documents, metrics, logs or request ids.
func exactPollHandler(ctx context.Context, rdb redis.UniversalClient) (http.Handler, error) {
	if err := exactPollScript.Load(ctx, rdb).Err(); err != nil {
		return nil, err
	}
	var seq atomic.Uint64
	window := strconv.FormatInt(time.Minute.Microseconds(), 10)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		keyID, ok := keys.ParseToken(token)
		if !ok {
			http.Error(w, "invalid key", http.StatusUnauthorized)
			return
		}
		var adm *redis.Cmd
		var job *redis.StringCmd
		_, err := rdb.Pipelined(r.Context(), func(p redis.Pipeliner) error {
			adm = exactPollScript.EvalSha(r.Context(), p, []string{keys.RecordKey(keyID), keys.Tag(keyID) + ":bench-rl"},
				keys.Digest(token), window, "x"+strconv.FormatUint(seq.Add(1), 36))
			job = p.Get(r.Context(), jobs.RecordKey(keyID, r.PathValue("id")))
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			http.Error(w, "redis", http.StatusServiceUnavailable)
			return
		}
		res, err := adm.Int64Slice()
		if err != nil || len(res) < 1 || res[0] == 0 {
			http.Error(w, "invalid key", http.StatusUnauthorized)
			return
		}
		h := w.Header()
		limit := strconv.FormatInt(res[1], 10)
		h.Set("X-RateLimit-Limit", limit)
		h.Set("RateLimit-Policy", `"minute";q=`+limit+`;w=60`)
		if res[0] == 2 {
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return
		}
		left := strconv.FormatInt(max(res[1]-res[2], 0), 10)
		h.Set("X-RateLimit-Remaining", left)
		h.Set("X-RateLimit-Reset", strconv.FormatInt(res[3], 10))
		h.Set("RateLimit", `"minute";r=`+left+`;t=`+strconv.FormatInt(max(res[3]-time.Now().Unix(), 0), 10))
		writeJob(w, r, job)
	})
	return mux, nil
}

// scenarioPoll measures GET /v1/jobs/{id} (authentication, the per-minute limit, the job
// read, the JSON view) against the bare handler, both over loopback HTTP.
func scenarioPoll(ctx context.Context, e *runEnv) ([]row, error) {
	var rows []row
	var exact row
	for i, conc := range e.conc {
		if err := e.redis.flush(ctx); err != nil {
			return rows, err
		}
		s, err := newStack(ctx, e, conc, stackOptions{keys: apiKeys})
		if err != nil {
			return rows, err
		}
		// One queued job per key: a poll of a job still waiting is the common poll.
		ids := make([]string, len(s.tokens))
		for k, tok := range s.tokens {
			if ids[k], err = s.submit(ctx, tok, s.nextURL("p")); err != nil {
				s.close()
				return rows, fmt.Errorf("creating the polled jobs: %w", err)
			}
		}
		bareRdb, err := app.NewRedis(s.cfg)
		if err != nil {
			s.close()
			return rows, err
		}
		bare, err := serve(bareHandler(bareRdb))
		if err != nil {
			s.close()
			_ = bareRdb.Close()
			return rows, err
		}
		bareClient := newLoadClient(conc)
		poll := func(c *http.Client, base string) side {
			return func(ctx context.Context, d time.Duration) sample {
				return loadLoop(ctx, conc, d, func(ctx context.Context, w int) error {
					k := w % len(ids)
					return get(ctx, c, base+"/v1/jobs/"+ids[k], s.tokens[k])
				})
			}
		}
		e.progress("GET /v1/jobs vs bare handler, concurrency %d", conc)
		a, b, err := e.timing.pair(ctx, fmt.Sprintf("poll-c%d", conc), poll(s.client, s.api.url), poll(bareClient, bare.url))
		bare.close()
		bareClient.CloseIdleConnections()
		if err == nil {
			r := compare(fmt.Sprintf("3%c", 'a'+i),
				fmt.Sprintf("`GET /v1/jobs/{id}` polls/s vs bare `net/http` handler with one Redis `GET`, c=%d", conc), a, b, true)
			r.target, r.min, r.byCPU = "≥ 0.7× by CPU", 0.7, true
			rows = append(rows, r)
			if i == 0 {
				exact, err = pollExact(ctx, e, s, bareRdb, poll)
			}
		}
		_ = bareRdb.Close()
		s.close()
		if err != nil {
			return rows, err
		}
	}
	// The exact reference's row (3c, for scale) comes after 3a and 3b.
	if exact.id != "" {
		rows = append(rows, exact)
	}
	return rows, nil
}

// pollExact is row 3c: linkhop's polls against exactPollHandler, a bare handler that also
// authenticates and limits exactly, on s's keys and jobs. No target: it says how much of the
// gap to the bare handler of 3a is the work the contract asks of every poll.
func pollExact(ctx context.Context, e *runEnv, s *stack, rdb redis.UniversalClient, poll func(*http.Client, string) side) (row, error) {
	h, err := exactPollHandler(ctx, rdb)
	if err != nil {
		return row{}, err
	}
	ref, err := serve(h)
	if err != nil {
		return row{}, err
	}
	defer ref.close()
	c := newLoadClient(e.conc[0])
	defer c.CloseIdleConnections()
	e.progress("GET /v1/jobs vs a bare handler that authenticates and limits exactly, concurrency %d", e.conc[0])
	a, b, err := e.timing.pair(ctx, fmt.Sprintf("poll-exact-c%d", e.conc[0]), poll(s.client, s.api.url), poll(c, ref.url))
	if err != nil {
		return row{}, err
	}
	return compare("3c", fmt.Sprintf("… for scale: vs a bare handler that also checks the key's token and counts the poll exactly against its per-minute limit (one script: the key's hash and revocation, the sliding-window log), sets the five rate-limit headers and makes the same `GET`, in one round trip, c=%d", e.conc[0]), a, b, true), nil
}

// e2eTimeout bounds one job's wait in scenario 4; a job that takes longer is counted failed.
const e2eTimeout = 30 * time.Second

// scenarioE2E measures jobs end to end: each load goroutine submits a link of the local
// one-hop shortener through the API and waits until the worker has finished it (told by the
// handler's OnTerminal hook, so waiting costs no Redis calls); the reference enqueues a raw
// asynq task and waits until a no-op handler on an asynq server configured like linkhop's
// worker (jobs.NewWorker) has run it. Each side's worker runs only during its own rounds.
func scenarioE2E(ctx context.Context, e *runEnv) ([]row, error) {
	conc := e.conc[0]
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	trips := &tripCounter{worker: true}
	s, err := newStack(ctx, e, conc, stackOptions{keys: apiKeys, workHooks: []redis.Hook{trips}})
	if err != nil {
		return nil, err
	}
	defer s.close()
	var workerTrips, idlePolls, background, jobsDone int64
	raw, rawRdb, err := newRawClient(s.cfg)
	if err != nil {
		return nil, err
	}
	defer rawRdb.Close()
	refDone := newCompletions()
	warm := true // the first run is the warm-up, whose first scripts Redis still has to learn
	ours := func(ctx context.Context, d time.Duration) sample {
		if err := s.startWorker(); err != nil {
			return sample{errs: 1, firstErr: err}
		}
		trips.take()
		counted := !warm
		warm = false
		// Round trips are counted to the end of the worker, whose shutdown waits for the jobs
		// in flight: each counted job then carries its completion too (asynq's, after the
		// handler's OnTerminal hook that ended the job's wait), and no job of another round's.
		defer func() {
			s.stopWorker()
			n, idle, bg := trips.takeAll()
			if counted {
				workerTrips += int64(n)
				idlePolls += int64(idle)
				background += int64(bg)
			}
		}()
		smp := loadLoop(ctx, conc, d, func(ctx context.Context, w int) error {
			id, err := s.submit(ctx, s.token(w), s.nextURL("e"))
			if err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, e2eTimeout)
			defer cancel()
			c, err := s.done.wait(wctx, id)
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			if c.status != jobs.StatusDone {
				return fmt.Errorf("%w: job %s is %s", errJobFailed, id, c.status)
			}
			return nil
		})
		if counted {
			jobsDone += smp.ops
		}
		return smp
	}
	theirs := func(ctx context.Context, d time.Duration) sample {
		w := jobs.NewWorker(rawRdb, jobs.WorkerOptions{
			Concurrency: s.cfg.WorkerConcurrency, ShutdownTimeout: s.cfg.ShutdownTimeout,
			Queues: map[string]int{refQueue: 1},
		})
		w.Handle(refTaskType, asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
			var p jobs.ResolvePayload
			if err := json.Unmarshal(t.Payload(), &p); err != nil {
				return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
			}
			refDone.signal(p.JobID, jobs.StatusDone)
			return nil
		}), nil)
		if err := w.Start(); err != nil {
			return sample{errs: 1, firstErr: err}
		}
		defer w.Shutdown()
		return closedLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
			t, id := refTask()
			if _, err := raw.EnqueueContext(ctx, t); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, e2eTimeout)
			defer cancel()
			_, err := refDone.wait(wctx, id)
			return err
		})
	}
	e.progress("end to end vs raw asynq, concurrency %d, WORKER_CONCURRENCY %d", conc, s.cfg.WorkerConcurrency)
	a, b, err := e.timing.pair(ctx, "e2e", ours, theirs)
	if err != nil {
		return nil, err
	}
	r := compare("4a", fmt.Sprintf("end to end: jobs/s and submit→done latency, one-hop local shortener, vs raw asynq enqueue→handler, c=%d", conc), a, b, true)
	r.target, r.min = "≥ 0.3×", 0.3
	rows := []row{r}
	if len(a.lat) > 0 && len(b.lat) > 0 {
		p50, ref := a.pct(50), b.pct(50)
		rows = append(rows, row{id: "4b", what: "… its p50 submit→done latency, as a multiple of raw asynq's",
			ours: fmt.Sprintf("%s: %.1f× raw asynq's", fmtDur(p50), float64(p50)/float64(ref)), ref: fmtDur(ref),
			target: "≤ 4×", max: 4, value: float64(p50) / float64(ref)})
	}
	if jobsDone > 0 {
		per := float64(workerTrips) / float64(jobsDone)
		rows = append(rows, row{id: "4c", what: "… the worker's Redis round trips per job (asynq's dequeue and completion included, idle polls and the process's own timed calls excluded)",
			ours: fmt.Sprintf("%.2f (%d round trips, %d jobs)<br>besides, per job: %.1f idle polls, %.2f timed calls (heartbeats, lease beat, new connections)",
				per, workerTrips, jobsDone, float64(idlePolls)/float64(jobsDone), float64(background)/float64(jobsDone)),
			target: "≤ 3", max: 3, value: per})
	}
	idle, err := idleCost(ctx, s, trips, e.timing.d)
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{id: "4d", what: "… an idle worker's Redis calls per second (asynq's polls, its waits for work, the lease beat and the webhook line's pass), after 5 s without work",
		ours: fmt.Sprintf("%.1f/s, with p50 %s under load (row 4b)", idle, fmtDur(a.pct(50)))})
	e.note("4d: asynq alone polls each queue every 5-15 ms (a few hundred calls a second per worker); the worker waits for work instead, with blocking calls of up to 1 s on its queues' lists, whenever a round of dequeues finds every queue empty (docs/operations.md#an-idle-worker).")
	e.note("4: both sides run asynq with linkhop's worker configuration (jobs.NewWorker, WORKER_CONCURRENCY %d), and so both wait for work on their queues' lists rather than sleep between polls.", s.cfg.WorkerConcurrency)
	return rows, nil
}

// idleCost is an idle worker's Redis calls per second: the worker is started, left without
// work past its idle back-off's ramp, then counted for d (at least 2 s).
func idleCost(ctx context.Context, s *stack, trips *tripCounter, d time.Duration) (float64, error) {
	if err := s.startWorker(); err != nil {
		return 0, err
	}
	defer s.stopWorker()
	select {
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	_, _, _ = trips.takeAll()
	d = max(min(d, 5*time.Second), 2*time.Second)
	start := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	n, idle, bg := trips.takeAll()
	return float64(n+idle+bg) / time.Since(start).Seconds(), nil
}
