package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLeaseTTL is JOB_LEASE_TTL's default: how long a job whose worker stopped refreshing
// its lease still counts as held. Leases are refreshed every second, so five seconds forgives
// four missed refreshes (a GC pause, a slow Redis) and still bounds the recovery of a killed
// worker's job well under ten seconds (docs/reliability.md#recovery-times-and-why).
const DefaultLeaseTTL = 5 * time.Second

// Lease kinds: what a lease holds, and so which reaper queues it again.
const (
	LeaseResolve = "r" // a resolve task's run
	LeaseWebhook = "w" // a webhook delivery attempt
)

// The lease index. Every key has the hash tag {leases}, so the scripts below touch one
// Cluster slot whatever the jobs' API keys are; the jobs themselves stay under their keys' tags.
// One index for the deployment is what makes reaping cheap: a worker finds every lapsed lease
// with one range query, instead of scanning the job records of every API key.
const (
	// leaseHeldKey scores each held lease by its expiry (Redis time, ms).
	leaseHeldKey = "linkhop:lease:{leases}:held"
	// leaseReapingKey holds the lapsed leases a reaper has claimed, scored by when the claim
	// ends: a reaper that dies mid-way leaves them to the next one.
	leaseReapingKey = "linkhop:lease:{leases}:reaping"
	// leaseProcsKey scores each live worker process by the expiry of its heartbeat, for the
	// per-URL upstream lock: a lock whose holder is not here is taken over at once.
	leaseProcsKey = "linkhop:lease:{leases}:procs"
)

// leaseClaim is how long a reaper has to queue a lapsed lease's job again before another
// reaper may try.
const leaseClaim = 10 * time.Second

// reapBatch bounds the lapsed leases one tick claims, so that a mass failure (a whole node
// gone) is worked through in short scripts rather than one long one.
const reapBatch = 100

// takeScript adds a lease expiring ttl from Redis's clock (the only clock: workers' clocks
// never matter). KEYS[1] held; ARGV[1] ttl ms, ARGV[2] member. It runs in the caller's
// pipeline by EVALSHA; when Redis does not know it (its first use, or after a restart) the
// pipeline runs without it and TakeIn takes the lease alone. EVAL would spare that, but Redis
// hashes an EVAL's script twice on every call, which cost a job more Redis work than the
// script itself (docs/benchmarks.md#scripts-by-their-sha-in-the-workers-pipelines). Its
// numbers are read from strings by arithmetic, not tonumber, which parses each twice, and the
// expiry goes to ZADD printed as an integer (a number Redis would print with %.17g).
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now + ARGV[1]), ARGV[2])
return now`)

// tickScript is one beat of a worker process, in one round trip however many jobs it holds:
// it renews the process's heartbeat, removes the leases the process released, renews those it
// still holds (a lease found lapsed or gone is not renewed: it is lost, and its job is, or is
// about to be, another worker's), drops the heartbeats of dead processes, and claims up to
// ARGV[4] lapsed leases for this process to reap, together with claims of other reapers that
// ran out.
//
// KEYS[1] held, KEYS[2] reaping, KEYS[3] procs. ARGV[1] ttl ms, ARGV[2] claim ms, ARGV[3]
// process id, ARGV[4] batch, ARGV[5] number of released members, then the released members,
// then the held ones. Reply {lost members, claimed members}.
var tickScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[1])
redis.call('ZADD', KEYS[3], exp, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 1)
local nrel = tonumber(ARGV[5])
for i = 6, 5 + nrel do redis.call('ZREM', KEYS[1], ARGV[i]) end
local lost = {}
for i = 6 + nrel, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) >= now then
    redis.call('ZADD', KEYS[1], exp, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
local until_ = now + tonumber(ARGV[2])
local batch = tonumber(ARGV[4])
local claimed = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. now, 'BYSCORE', 'LIMIT', 0, batch)
for _, m in ipairs(claimed) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], until_, m)
end
local again = redis.call('ZRANGE', KEYS[2], '-inf', '(' .. now, 'BYSCORE', 'LIMIT', 0, batch)
for _, m in ipairs(again) do
  redis.call('ZADD', KEYS[2], until_, m)
  claimed[#claimed + 1] = m
end
return {lost, claimed}`)

// aliveScript reports whether process ARGV[1] beat within its TTL. KEYS[1] procs.
var aliveScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(s) >= now then return 1 end
return 0`)

// ErrLeaseLost is the cause of a lease's context when its lease lapsed while its worker was
// away (stopped, cut off from Redis): its job is another worker's now.
var ErrLeaseLost = errors.New("jobs: lease lost")

// LeaseRef names one lease: what it holds and which run of which task holds it.
type LeaseRef struct {
	Kind  string // LeaseResolve or LeaseWebhook
	KeyID string
	JobID string
	Gen   int    // the delivery generation of a webhook lease; 0 for a resolve
	Task  string // the asynq task id of the run that took the lease
	Token string // unique per take: names the run, and fences it
}

// member is the lease's entry in the index. Ids never contain '|': key ids and job ids are
// made by linkhop, tokens are hex, task ids are built from those.
func (r LeaseRef) member() string {
	return strings.Join([]string{r.Kind, r.KeyID, r.JobID, strconv.Itoa(r.Gen), r.Token, r.Task}, "|")
}

func parseLeaseRef(m string) (LeaseRef, error) {
	p := strings.SplitN(m, "|", 6)
	if len(p) != 6 {
		return LeaseRef{}, fmt.Errorf("jobs: malformed lease %q", m)
	}
	gen, err := strconv.Atoi(p[3])
	if err != nil {
		return LeaseRef{}, fmt.Errorf("jobs: malformed lease %q", m)
	}
	return LeaseRef{Kind: p[0], KeyID: p[1], JobID: p[2], Gen: gen, Token: p[4], Task: p[5]}, nil
}

// Lease is a run's hold on a job, refreshed by its process's Leases until Release.
type Lease struct {
	ref    LeaseRef
	cancel context.CancelCauseFunc
	lost   chan struct{}
	once   sync.Once
}

// Ref returns what the lease holds.
func (l *Lease) Ref() LeaseRef { return l.ref }

// Lost reports whether the lease lapsed before it was released.
func (l *Lease) Lost() bool {
	if l == nil {
		return false
	}
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

func (l *Lease) lose() {
	l.once.Do(func() {
		close(l.lost)
		l.cancel(ErrLeaseLost)
	})
}

// ReapFunc queues the job of a lapsed lease again. It must be idempotent (a reaper that dies
// half-way leaves the lease to be reaped again) and must do nothing for a lease whose run is
// no longer the job's (the job finished, or another run owns it).
type ReapFunc func(ctx context.Context, ref LeaseRef) error

// LeaseOptions configure Leases.
type LeaseOptions struct {
	// TTL is JOB_LEASE_TTL; zero means DefaultLeaseTTL.
	TTL time.Duration
	// Logger, nil for none.
	Logger *slog.Logger
}

// Leases are the job leases of one worker process: it takes them, refreshes the ones its
// handlers hold about every second in one round trip, and reaps the lapsed leases of dead or
// stopped processes, queueing their jobs again. It also tells the resolve service's upstream
// lock whether a lock's holding process still lives (resolve.LockHolder).
type Leases struct {
	rdb   redis.UniversalClient
	ttl   time.Duration
	every time.Duration
	id    string
	log   *slog.Logger
	reap  map[string]ReapFunc
	mu    sync.Mutex
	held  map[string]*Lease
	freed []string
	stop  chan struct{}
	done  chan struct{}

	starts, stopOnce sync.Once
	started          bool
}

// NewLeases returns the leases of a process on rdb; register reapers with OnLapse, then Start.
func NewLeases(rdb redis.UniversalClient, o LeaseOptions) *Leases {
	ttl := o.TTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Leases{
		rdb: rdb, ttl: ttl, every: tickEvery(ttl), id: newLeaseToken(), log: log.With("component", "leases"),
		reap: map[string]ReapFunc{}, held: map[string]*Lease{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// tickEvery is the beat: about a second, and at least four beats per TTL, so a short TTL (in
// tests) still forgives missed beats.
func tickEvery(ttl time.Duration) time.Duration {
	return min(time.Second, max(ttl/5, 20*time.Millisecond))
}

// TTL is the lease length.
func (ls *Leases) TTL() time.Duration { return ls.ttl }

// ID names this process in the lease index; resolve locks carry it (resolve.LockHolder).
func (ls *Leases) ID() string { return ls.id }

// Alive reports whether process id refreshed its heartbeat within the TTL; resolve's
// upstream lock asks it before taking over a lock (resolve.LockHolder).
func (ls *Leases) Alive(ctx context.Context, id string) (bool, error) {
	n, err := aliveScript.Run(ctx, ls.rdb, []string{leaseProcsKey}, id).Int()
	if err != nil {
		return false, fmt.Errorf("jobs: lease holder check: %w", err)
	}
	return n == 1, nil
}

// OnLapse registers the reaper of leases of kind.
func (ls *Leases) OnLapse(kind string, f ReapFunc) { ls.reap[kind] = f }

// Take starts a lease for ref (its Token is made here) and returns it with a context derived
// from ctx that ends with ErrLeaseLost as its cause if the lease is lost. One round trip: the
// lease is in Redis before the run does anything a reaper would have to undo.
func (ls *Leases) Take(ctx context.Context, ref LeaseRef) (*Lease, context.Context, error) {
	var take func() (*Lease, context.Context, error)
	_, _ = ls.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		take = ls.TakeIn(ctx, p, ref)
		return nil
	})
	return take()
}

// TakeIn adds Take's write to pipeline p, ahead of the caller's own commands in p; the
// function returned, called once p has run, gives what Take gives. A ref with a Token keeps
// it (a caller that names other things of the run after it in the same pipeline made it with
// newLeaseToken); without one, it gets a new one.
func (ls *Leases) TakeIn(ctx context.Context, p redis.Pipeliner, ref LeaseRef) func() (*Lease, context.Context, error) {
	if ref.Token == "" {
		ref.Token = newLeaseToken()
	}
	m := ref.member()
	ks, ttl := []string{leaseHeldKey}, ls.ttl.Milliseconds()
	cmd := takeScript.EvalSha(ctx, p, ks, ttl, m)
	return func() (*Lease, context.Context, error) {
		err := cmd.Err()
		if isNoScript(err) {
			// The pipeline ran without the script (nothing was taken): take the lease alone.
			err = takeScript.Eval(ctx, ls.rdb, ks, ttl, m).Err()
		}
		if err != nil {
			return nil, ctx, fmt.Errorf("jobs: taking the lease of %s: %w", ref.JobID, err)
		}
		lctx, cancel := context.WithCancelCause(ctx)
		l := &Lease{ref: ref, cancel: cancel, lost: make(chan struct{})}
		ls.mu.Lock()
		ls.held[m] = l
		ls.mu.Unlock()
		return l, lctx, nil
	}
}

// Release ends a lease. It costs no round trip: the next beat removes it from the index.
// Leaving it there a moment longer is harmless, since a lease only matters to a reaper once
// it lapsed, and the job's record, not the lease, says whether there is anything to redo.
func (ls *Leases) Release(l *Lease) {
	if l == nil {
		return
	}
	m := l.ref.member()
	ls.mu.Lock()
	if _, ok := ls.held[m]; ok {
		delete(ls.held, m)
		ls.freed = append(ls.freed, m)
	}
	ls.mu.Unlock()
	l.cancel(nil)
}

// parkIn adds to p a write that makes l expire at until (Redis's clock) and stops renewing it:
// a lease whose attempt waits in this process for a known moment (the Room) need not be
// renewed every beat until then, and lapses soon after that moment if the process is gone.
// The attempt's run takes it again (TakeIn with the same ref) when it starts. l is taken out
// of the beat before the write, so that a beat between the two cannot shorten it again.
//
// With td, the asynq task of the run that parks l, the same script completes that task as
// asynq's Done does (parkDoneScript), and asynq's own Done after the run is answered without
// Redis (TaskCompletions): the run must end without error once the write landed. The
// function returned reads the write's outcome, sending it again alone when Redis did not know
// the script, or as a plain write when the task is on another server (Cluster).
func (ls *Leases) parkIn(ctx context.Context, p redis.Pipeliner, l *Lease, until time.Time, td *taskDone) func() error {
	m := l.ref.member()
	ls.mu.Lock()
	delete(ls.held, m)
	ls.mu.Unlock()
	score := until.UnixMilli()
	plain := func(c redis.Cmdable) *redis.IntCmd {
		return c.ZAdd(ctx, leaseHeldKey, redis.Z{Score: float64(score), Member: m})
	}
	if td = td.use(); td == nil {
		cmd := plain(p)
		return cmd.Err
	}
	park := func(c redis.Scripter) *redis.Cmd {
		return parkDoneScript.EvalSha(ctx, c, []string{leaseHeldKey, td.active, td.lease, td.task, td.daily, td.total},
			score, m, td.id, td.statsExpire, maxInt64)
	}
	cmd := park(p)
	return func() error {
		err := cmd.Err()
		if isNoScript(err) {
			if err = parkDoneScript.Load(ctx, ls.rdb).Err(); err == nil {
				cmd = park(ls.rdb)
				err = cmd.Err()
			}
		}
		if isCrossSlot(err) {
			td.c.off.Store(true) // refused before anything ran
			return plain(ls.rdb).Err()
		}
		if err != nil {
			return err
		}
		if cmd.Val() == int64(2) {
			td.completed()
		}
		return nil
	}
}

// parkDoneScript parks a lease (KEYS[1] the lease index, ARGV[1] its expiry in ms, ARGV[2] its
// member) and completes the asynq task of the run that parked it (doneLua: KEYS[2] to KEYS[6],
// ARGV[3] to ARGV[5]). Reply: 2 parked and completed, 1 parked only (the task was no longer
// active).
var parkDoneScript = redis.NewScript("redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])" + doneLua(2, 3))

// releaseParked gives back a lease that parkIn took out of the beat, as Release gives back
// one in it (either kind): the next beat removes it from the index.
func (ls *Leases) releaseParked(l *Lease) { ls.drop(l, true) }

// abandon stops renewing a lease without giving it back: it lapses within the TTL and a
// reaper (of any worker) queues its job again. For a run that could not hand its job back
// itself (Redis unreachable) and must not keep it held forever.
func (ls *Leases) abandon(l *Lease) { ls.drop(l, false) }

// drop takes l out of the beat and ends its context; free also has the next beat remove it
// from the index.
func (ls *Leases) drop(l *Lease, free bool) {
	m := l.ref.member()
	ls.mu.Lock()
	delete(ls.held, m)
	if free {
		ls.freed = append(ls.freed, m)
	}
	ls.mu.Unlock()
	l.cancel(nil)
}

// Start runs the beat in the background until Stop. The first beat runs at once, so a
// worker that starts after another died reaps its jobs without waiting a beat.
func (ls *Leases) Start() {
	ls.starts.Do(func() {
		ls.started = true
		go ls.run()
	})
}

// Stop ends the beat and removes every lease this process still holds (their runs were cut
// short by the shutdown and asynq put their tasks back, so the next run may start at once)
// and the process's heartbeat. Call it after the asynq server has shut down.
func (ls *Leases) Stop(ctx context.Context) {
	ls.stopOnce.Do(func() { close(ls.stop) })
	ls.starts.Do(func() {}) // a Start after Stop starts nothing
	if ls.started {
		<-ls.done
	}
	ls.mu.Lock()
	ms := make([]any, 0, len(ls.held)+len(ls.freed))
	for m := range ls.held {
		ms = append(ms, m)
	}
	for _, m := range ls.freed {
		ms = append(ms, m)
	}
	ls.held, ls.freed = map[string]*Lease{}, nil
	ls.mu.Unlock()
	_, err := ls.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ms) > 0 {
			p.ZRem(ctx, leaseHeldKey, ms...)
		}
		p.ZRem(ctx, leaseProcsKey, ls.id)
		return nil
	})
	if err != nil {
		ls.log.Warn("removing this process's leases at shutdown failed; they lapse on their own", "err", err)
	}
}

func (ls *Leases) run() {
	defer close(ls.done)
	t := time.NewTicker(ls.every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ls.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		ls.Beat(ctx)
		select {
		case <-ls.stop:
			return
		case <-t.C:
		}
	}
}

// Beat is one beat: refresh, release, claim and reap (tickScript), then queue again the jobs
// of the claimed leases. The background loop calls it about every second; tests call it to
// step time. It returns how many lapsed leases were reaped.
func (ls *Leases) Beat(ctx context.Context) int {
	ls.mu.Lock()
	freed := ls.freed
	ls.freed = nil
	args := make([]any, 0, 5+len(freed)+len(ls.held))
	args = append(args, ls.ttl.Milliseconds(), leaseClaim.Milliseconds(), ls.id, reapBatch, len(freed))
	for _, m := range freed {
		args = append(args, m)
	}
	for m := range ls.held {
		args = append(args, m)
	}
	ls.mu.Unlock()

	bctx, cancel := context.WithTimeout(ctx, max(ls.every, time.Second))
	defer cancel()
	res, err := tickScript.Run(bctx, ls.rdb, []string{leaseHeldKey, leaseReapingKey, leaseProcsKey}, args...).Slice()
	if err != nil || len(res) != 2 {
		if ctx.Err() == nil {
			ls.log.Warn("lease beat failed", "err", err)
		}
		// The released leases are removed at the next beat instead.
		ls.mu.Lock()
		ls.freed = append(ls.freed, freed...)
		ls.mu.Unlock()
		return 0
	}
	lost, _ := res[0].([]any)
	ls.mu.Lock()
	for _, v := range lost {
		m, _ := v.(string)
		if l, ok := ls.held[m]; ok {
			delete(ls.held, m)
			ls.log.Warn("lease lost: this worker was away longer than JOB_LEASE_TTL; another worker takes the job",
				"job_id", l.ref.JobID, "kind", l.ref.Kind)
			l.lose()
		}
	}
	ls.mu.Unlock()

	claimed, _ := res[1].([]any)
	n := 0
	for _, v := range claimed {
		m, _ := v.(string)
		if ls.reapOne(ctx, m) {
			n++
		}
	}
	return n
}

// reapOne queues again the job of lapsed lease m and then forgets the lease; on failure the
// claim runs out and a later beat (of any worker) tries again.
func (ls *Leases) reapOne(ctx context.Context, m string) bool {
	ref, err := parseLeaseRef(m)
	f := ls.reap[ref.Kind]
	switch {
	case err != nil:
		ls.log.Error("dropping a malformed lease", "member", m)
	case f == nil:
		// A process of another version, or one that never registered this kind: leave the
		// lease to a reaper that knows it (the claim runs out).
		ls.log.Warn("no reaper for a lapsed lease", "kind", ref.Kind)
		return false
	default:
		if err := f(ctx, ref); err != nil {
			ls.log.Warn("queueing a lapsed lease's job again failed; retrying after the claim", "job_id", ref.JobID, "err", err)
			return false
		}
		ls.log.Info("reaped a lapsed lease", "job_id", ref.JobID, "kind", ref.Kind, "task", ref.Task)
	}
	if err := ls.rdb.ZRem(ctx, leaseReapingKey, m).Err(); err != nil {
		ls.log.Warn("forgetting a reaped lease", "err", err)
	}
	return err == nil
}

func newLeaseToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
