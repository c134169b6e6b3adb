package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// hookReceivers is how many local webhook receivers scenario 5 delivers to.
const hookReceivers = 100

// receivers are the local webhook receivers: each its own loopback server and URL, answering
// 204 at once. They count linkhop's deliveries (told apart by their webhook-id header) and the
// bare loop's POSTs separately and, while recording, note each delivery's arrival time, from
// which the highest per-hook rate in any 1-second span is computed.
type receivers struct {
	srvs      []*server
	urls      []string
	delivered atomic.Int64 // linkhop's deliveries
	bare      atomic.Int64 // the reference's POSTs
	recording atomic.Bool
	mu        sync.Mutex
	arrivals  [][]time.Time
}

func newReceivers(n int) (*receivers, error) {
	rc := &receivers{arrivals: make([][]time.Time, n)}
	for i := range n {
		srv, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if r.Header.Get("webhook-id") == "" {
				rc.bare.Add(1)
				w.WriteHeader(http.StatusNoContent)
				return
			}
			rc.delivered.Add(1)
			if rc.recording.Load() {
				t := time.Now()
				rc.mu.Lock()
				rc.arrivals[i] = append(rc.arrivals[i], t)
				rc.mu.Unlock()
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		if err != nil {
			rc.close()
			return nil, err
		}
		rc.srvs = append(rc.srvs, srv)
		rc.urls = append(rc.urls, srv.url+"/hook")
	}
	return rc, nil
}

func (rc *receivers) close() {
	for _, s := range rc.srvs {
		s.close()
	}
}

// arrivalStats is the most deliveries one receiver got within any 1-second span while
// recording, and the shortest time in which one receiver got k+1 of them.
func (rc *receivers) arrivalStats(k int) (most int, tight time.Duration) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	base := time.Now()
	for _, ts := range rc.arrivals {
		ds := make([]time.Duration, len(ts))
		for i, t := range ts {
			ds[i] = t.Sub(base)
		}
		most = max(most, densest(ds))
		if t := tightest(ds, k); t > 0 && (tight == 0 || t < tight) {
			tight = t
		}
	}
	return most, tight
}

// admissions is a go-redis hook on the worker's client that reads the per-URL rate script's
// replies: {0, now} admits an attempt at Redis time now (µs); an admission given back unused
// (GiveBack) is taken out again. It shows the limiter's own view, on Redis's clock, next to
// what the receivers saw on theirs. Purely an observation: if the script's reply ever changes
// shape it sees nothing and the report says so.
type admissions struct {
	mu sync.Mutex
	on bool
	at map[string][]int64 // rate log key → admission times, µs
	// holds counts the replies that held an attempt back, per name of the attempt's place in
	// line: how often the same attempt was held back (1 each with places kept).
	holds map[string]int
	// places is the time of each place in line given (µs, Redis's clock), by name, until its
	// attempt comes back; seen whether or not the round is recorded, so that a place given in
	// one round and lost in the next is told apart.
	places map[string]int64
	// roundStart is when the recorded round's worker started (µs; Redis runs on this machine's
	// clock). lapsed counts the places lost because they came due while no worker ran (before
	// roundStart: the bench stops its worker between rounds), late those lost because their
	// attempts started more than the script's placeLate after them in a running worker.
	roundStart   int64
	lapsed, late int
}

// DialHook implements redis.Hook.
func (a *admissions) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (a *admissions) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		a.note(cmd, err) // cmd.Err() is set only after the hooks
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (a *admissions) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			a.note(c, c.Err())
		}
		return err
	}
}

// note reads cmd, which ran with the outcome err.
func (a *admissions) note(cmd redis.Cmder, err error) {
	if key, at, ok := webhooks.GivenBackAdmission(cmd, err); ok {
		// An admission that its attempt did not use: the limiter dropped it from its log, so
		// it is dropped here too, and the count as admitted is the limiter's own.
		a.mu.Lock()
		if i := slices.Index(a.at[key], at); i >= 0 {
			a.at[key] = slices.Delete(a.at[key], i, i+1)
		}
		a.mu.Unlock()
		return
	}
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	if (name != "evalsha" && name != "eval") || len(args) < 4 || err != nil {
		return
	}
	key := fmt.Sprint(args[3])
	if !strings.HasPrefix(key, "linkhop:webhook:") || !strings.HasSuffix(key, ":rate") {
		return
	}
	c, ok := cmd.(*redis.Cmd)
	if !ok {
		return
	}
	if len(args) == 6 {
		// MovePlace (EVALSHA, the SHA, the key count, the key, from, to), reply 1 when it
		// moved: a place handed to another run, which asks for it under the new name.
		if n, err := c.Int64(); err == nil && n == 1 {
			a.mu.Lock()
			if at, ok := a.places[fmt.Sprint(args[4])]; ok {
				delete(a.places, fmt.Sprint(args[4]))
				a.places[fmt.Sprint(args[5])] = at
			}
			a.mu.Unlock()
		}
		return
	}
	// {wait, now, admission − now, placed}: admitted when wait is 0, at its place's time.
	res, err := c.Int64Slice()
	if err != nil || len(res) != 4 {
		return
	}
	// ARGV[6] and ARGV[8], after EVALSHA, the SHA, the key count and two keys: the place's
	// name, and how late its attempt may start (µs).
	place := ""
	var lateMax int64
	if len(args) > 12 {
		place = fmt.Sprint(args[10])
		lateMax, _ = strconv.ParseInt(fmt.Sprint(args[12]), 10, 64)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if place != "" {
		if at, ok := a.places[place]; ok && (res[0] == 0 || res[3] == 0 || res[1]+res[0] != at) {
			// The attempt came back and did not keep waiting for the same place.
			delete(a.places, place)
			if a.on && res[1]-at > lateMax {
				if at < a.roundStart {
					a.lapsed++
				} else {
					a.late++
				}
			}
		}
		if res[0] > 0 && res[3] == 1 {
			if a.places == nil {
				a.places = map[string]int64{}
			}
			a.places[place] = res[1] + res[0]
		}
	}
	if !a.on {
		return
	}
	if res[0] > 0 {
		if place != "" {
			if a.holds == nil {
				a.holds = map[string]int{}
			}
			a.holds[place]++
		}
		return
	}
	a.at[key] = append(a.at[key], res[1]+res[2])
}

// holdsPerAttempt is how often, on average, an attempt that was held back at all was held
// back, and how many such attempts there were.
func (a *admissions) holdsPerAttempt() (float64, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	total := 0
	for _, n := range a.holds {
		total += n
	}
	if len(a.holds) == 0 {
		return 0, 0
	}
	return float64(total) / float64(len(a.holds)), len(a.holds)
}

func (a *admissions) record(on bool) {
	a.mu.Lock()
	a.on = on
	if on {
		a.roundStart = time.Now().UnixMicro()
	}
	a.mu.Unlock()
}

// lost is how many places were lost in the recorded rounds: lapsed while no worker ran, and
// given up by attempts that started late.
func (a *admissions) lost() (lapsed, late int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lapsed, a.late
}

// unasked is how many places passed before now (µs) with their attempts never asked for them
// again: places that came due after the last round, and places of attempts handed back when a
// round's worker stopped whose new tasks asked afresh after all (a place moved to a new task
// is followed under its new name).
func (a *admissions) unasked(now int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.places {
		if at < now {
			n++
		}
	}
	return n
}

// maxPerSecond is the most attempts admitted to one URL within any 1-second span of Redis
// time, and how many admissions were seen in all.
func (a *admissions) maxPerSecond() (most, seen int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ts := range a.at {
		seen += len(ts)
		most = max(most, densest(durations(ts, time.Microsecond)))
	}
	return most, seen
}

func durations(ts []int64, unit time.Duration) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = time.Duration(t) * unit
	}
	return out
}

// densest is the most of ts (any order) within any span shorter than one second.
func densest(ts []time.Duration) int {
	ts = slices.Clone(ts)
	slices.Sort(ts)
	best, j := 0, 0
	for i := range ts {
		for ts[i]-ts[j] >= time.Second {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// tightest is the shortest time in which k+1 of ts (any order) happened; 0 when there are
// not that many.
func tightest(ts []time.Duration, k int) time.Duration {
	ts = slices.Clone(ts)
	slices.Sort(ts)
	var best time.Duration
	for i := 0; i+k < len(ts); i++ {
		if d := ts[i+k] - ts[i]; best == 0 || d < best {
			best = d
		}
	}
	return best
}

// hookVariant is one workload of scenario 5.
type hookVariant struct {
	id   string
	rate int // WEBHOOK_RATE_PER_SECOND
	what string
}

// scenarioWebhooks measures webhook deliveries to 100 local receivers. linkhop's side is the
// production path from a finished job on: a backlog of done jobs with a webhook_url whose
// deliveries were queued by the worker's own OnTerminal, then a worker (internal/app.NewWorker,
// WORKER_CONCURRENCY goroutines) delivering them, signed and paced per URL, counted at the
// receivers. The reference is a bare loop of as many goroutines POSTing the same sized body
// round robin to the same receivers. Variant a runs the default per-URL rate, so it shows the
// rate holding (100 hooks × 10/s caps it at 1,000/s); variant b raises the rate out of the
// way to show what the delivery machinery itself costs.
func scenarioWebhooks(ctx context.Context, e *runEnv) ([]row, error) {
	variants := []hookVariant{
		{"5a", 10, "webhook deliveries/s to 100 local receivers at the default `WEBHOOK_RATE_PER_SECOND` 10 (caps at 1,000/s) vs a bare HTTP POST loop"},
		{"5b", 100_000, "… with `WEBHOOK_RATE_PER_SECOND` 100000 (the rate out of the way: the delivery machinery's own cost)"},
	}
	var rows []row
	for _, v := range variants {
		r, err := webhookVariant(ctx, e, v)
		if err != nil {
			return rows, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func webhookVariant(ctx context.Context, e *runEnv, v hookVariant) ([]row, error) {
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	rc, err := newReceivers(hookReceivers)
	if err != nil {
		return nil, err
	}
	defer rc.close()
	trips := &tripCounter{worker: true}
	adm := &admissions{at: map[string][]int64{}}
	s, err := newStack(ctx, e, 1, stackOptions{keys: 16, workHooks: []redis.Hook{trips, adm}, env: map[string]any{
		"LINKHOP_ALLOW_PRIVATE_TARGETS": "true", // the receivers are on loopback, over plain http
		"WEBHOOK_RATE_PER_SECOND":       v.rate,
	}})
	if err != nil {
		return nil, err
	}
	defer s.close()
	keyIDs := s.keyIDs()
	// The OnTerminal of a webhook handler wired like the worker's queues each delivery.
	queuer, err := app.NewWebhookHandler(s.cfg, s.workRdb, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	store := jobs.NewStore(s.workRdb, s.cfg.JobRetention)
	var queued, seq atomic.Int64
	// backlog tops the queued deliveries up to n, 16 at a time.
	backlog := func(ctx context.Context, n int64) error {
		delivered := rc.delivered.Load()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		for queued.Load()-delivered < n {
			queued.Add(1)
			i := seq.Add(1)
			g.Go(func() error {
				return queueDelivery(gctx, store, queuer, keyIDs[i%int64(len(keyIDs))], rc.urls[i%int64(len(rc.urls))])
			})
		}
		return g.Wait()
	}
	conc := s.cfg.WorkerConcurrency
	// calibrated is the rate seen in the first run (the warm-up), to size later backlogs so
	// that a round never runs out of work; a run that did run out is flagged.
	var calibrated float64
	var dry bool
	var heldBack, measuredDeliveries, roundTrips, idlePolls, background int64
	ours := func(ctx context.Context, d time.Duration) sample {
		first := calibrated == 0
		// 5,000 a second is above what this class of machine delivers; short runs need fewer.
		want := int64(max(200, min(5000, 5000*d.Seconds())))
		if !first {
			want = int64(calibrated*d.Seconds()*2.5) + 1000
		}
		if err := backlog(ctx, min(want, 300_000)); err != nil {
			return sample{errs: 1, firstErr: fmt.Errorf("queueing deliveries: %w", err)}
		}
		reg := prometheus.NewRegistry()
		// Each round's worker has a client of its own (newWorkerClient says why).
		wrdb, err := s.newWorkerClient()
		if err != nil {
			return sample{errs: 1, firstErr: err}
		}
		defer func() { _ = wrdb.Close() }()
		w, err := app.NewWorker(s.cfg, wrdb, slog.New(slog.DiscardHandler), app.NewResolver(s.cfg, wrdb, s.reg), reg)
		if err != nil {
			return sample{errs: 1, firstErr: fmt.Errorf("building the worker: %w", err)}
		}
		g0, r0 := e.timing.cpuNow(ctx)
		c0 := rc.delivered.Load()
		trips.take()
		rc.recording.Store(!first)
		adm.record(!first)
		start := time.Now()
		if err := w.Start(); err != nil {
			return sample{errs: 1, firstErr: err}
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		n := rc.delivered.Load() - c0
		elapsed := time.Since(start)
		rc.recording.Store(false)
		adm.record(false)
		g1, r1 := e.timing.cpuNow(ctx)
		w.Shutdown()
		// Round trips are counted to the end of the deliveries in flight at the deadline, so
		// that each counted delivery carries all of its own and no more.
		rt, idle, bg := trips.takeAll()
		all := rc.delivered.Load() - c0
		ranOut := rc.delivered.Load() >= queued.Load()
		if first {
			calibrated = float64(n) / elapsed.Seconds()
			if ranOut {
				calibrated *= 2
			}
		} else {
			dry = dry || ranOut
			heldBack += counterSum(reg, "linkhop_webhook_held_back_total")
			measuredDeliveries += all
			roundTrips += int64(rt)
			idlePolls += int64(idle)
			background += int64(bg)
		}
		return sample{ops: n, elapsed: elapsed, goCPU: g1 - g0, redisCPU: r1 - r0, cpuSet: true}
	}
	body := bytes.Repeat([]byte("x"), eventSize)
	client := newHTTPClient(conc)
	defer client.CloseIdleConnections()
	var next atomic.Int64
	theirs := func(ctx context.Context, d time.Duration) sample {
		return closedLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
			u := rc.urls[next.Add(1)%int64(len(rc.urls))]
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			res, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode/100 != 2 {
				return fmt.Errorf("%w: %d", errStatus, res.StatusCode)
			}
			return nil
		})
	}
	e.progress("webhooks to %d receivers, WEBHOOK_RATE_PER_SECOND %d, WORKER_CONCURRENCY %d", hookReceivers, v.rate, conc)
	a, b, err := e.timing.pair(ctx, "webhooks-"+v.id, ours, theirs)
	if err != nil {
		return nil, err
	}
	r := compare(v.id, v.what+fmt.Sprintf(", %d goroutines each", conc), a, b, false)
	peak, tight := rc.arrivalStats(v.rate)
	r.ours += fmt.Sprintf("<br>most to one hook in any 1 s: %d as received", peak)
	if admitted, seen := adm.maxPerSecond(); seen > 0 {
		r.ours += fmt.Sprintf(", %d as admitted (Redis clock)", admitted)
	} else {
		r.ours += ", admissions not observed"
	}
	if tight > 0 && v.rate < 1000 {
		r.ours += fmt.Sprintf("; fastest %d in a row to one hook arrived within %s", v.rate+1, fmtDur(tight))
	}
	rows := []row{r}
	if measuredDeliveries > 0 {
		per := float64(roundTrips) / float64(measuredDeliveries)
		r.ours += fmt.Sprintf("<br>per delivery: held back (rescheduled) %.1f times; %.1f Redis round trips (worker and asynq; besides, %.1f idle polls and %.2f timed calls)",
			float64(heldBack)/float64(measuredDeliveries), per, float64(idlePolls)/float64(measuredDeliveries), float64(background)/float64(measuredDeliveries))
		if per, n := adm.holdsPerAttempt(); n > 0 {
			r.ours += fmt.Sprintf("; an attempt held back at all was held back %.2f times (%d attempts; 1 = each waited once, for its place in line)", per, n)
			lapsed, late := adm.lost()
			r.ours += fmt.Sprintf("; places lost: %d came due while the bench's worker was stopped between rounds, %d to attempts that started late, %d never asked for again (due after the last round, or handed back with their attempts when a round's worker stopped and then not asked for)",
				lapsed, late, adm.unasked(time.Now().UnixMicro()))
		}
		rows[0] = r
		if v.rate >= 1000 {
			rows = append(rows, row{id: "5c", what: "… the worker's Redis round trips per delivery without a backlog at any URL (asynq's dequeue and completion included, idle polls and timed calls excluded)",
				ours: fmt.Sprintf("%.2f (%d round trips, %d deliveries)", per, roundTrips, measuredDeliveries), target: "≤ 3", max: 3, value: per})
		}
	}
	if v.rate < 1000 {
		rows[0].target, rows[0].max, rows[0].value = fmt.Sprintf("≤ %d per hook in any 1 s", v.rate), float64(v.rate), float64(peak)
	}
	if dry {
		rows[0].errs = joinErrs(rows[0].errs, "the backlog ran out during a round: linkhop's rate is underestimated")
	}
	return rows, nil
}

// counterSum adds up the counter family name of reg (0 when it is missing).
func counterSum(reg *prometheus.Registry, name string) int64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return int64(sum)
}

// eventSize is about the size of a resolve.done event body, for the bare loop's POSTs.
const eventSize = 330

// queueDelivery stores a done job of keyID with a pending delivery to hook and queues it the
// way the worker does when a job finishes (WebhookHandler.OnTerminal).
func queueDelivery(ctx context.Context, store *jobs.Store, h *jobs.WebhookHandler, keyID, hook string) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	target := "https://example.com/dest/" + strconv.FormatInt(now.UnixNano(), 36)
	rec := &jobs.Record{
		ID: uuid.NewString(), KeyID: keyID, Status: jobs.StatusDone, URL: "http://" + shortHost + "/w",
		WebhookURL: hook, TargetURL: &target, Provider: "short", Tier: resolve.TierStandard,
		CreatedAt: now, UpdatedAt: now, CompletedAt: &now, Webhook: webhooks.NewState(hook, now),
	}
	if err := store.Create(ctx, rec); err != nil {
		return err
	}
	return h.OnTerminal(ctx, *rec)
}
