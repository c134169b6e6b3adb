package resolve

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/redis/go-redis/v9"
)

// Upstream is one worker's resolve of a link taken in steps whose Redis calls the caller adds
// to pipelines of its own, so that a job costs its worker few round trips
// (docs/benchmarks.md#the-worker-in-four-round-trips): LookupIn and LockIn with the caller's
// first reads, then Resolve (or Resume), then PublishIn with its last write.
// The outcome is Service.Resolve's: the cache, one upstream resolve per URL across workers,
// and waiting for another worker's resolve of the same URL.
type Upstream struct {
	s      *Service
	rawURL string
	u      *url.URL
	norm   string
	k      urlKeys
	token  string
	lock   *redis.BoolCmd
	// open: this run resolved upstream (holding the lock, or resuming a parked walk) and has
	// not yet published the outcome.
	open bool
}

// Upstream starts a stepwise resolve of rawURL; a URL that cannot be resolved at all is
// refused here with an *Error, as Resolve would.
func (s *Service) Upstream(ctx context.Context, rawURL string) (*Upstream, error) {
	u, _, _, err := s.r.checkSubmitted(rawURL)
	if err != nil {
		return nil, err
	}
	norm := normalized(u)
	return &Upstream{s: s, rawURL: rawURL, u: u, norm: norm, k: keysFor(norm), token: s.lockToken(ctx)}, nil
}

// lockToken is the value of a lock this caller takes: random, and naming the caller's process
// when ctx carries a LockHolder, so that a waiter can tell a dead holder.
func (s *Service) lockToken(ctx context.Context) string {
	token := newToken()
	if h := lockHolderOf(ctx); h != nil {
		token += "@" + h.ID()
	}
	return token
}

// LookupIn adds the cache read to p; the function returned decodes it after p has run, as
// Service.Lookup answers.
func (up *Upstream) LookupIn(ctx context.Context, p redis.Pipeliner) func() (res Result, found, removed bool, err error) {
	cmd := p.Get(ctx, up.k.rec)
	return func() (Result, bool, bool, error) {
		return up.s.decodeLookup(cmd, up.rawURL, up.norm, up.u)
	}
}

// Removed is the error of a link that the negative cache remembers removed.
func (up *Upstream) Removed() *Error { return removedError(up.rawURL) }

// LockIn adds the attempt to take the link's upstream lock to p. Resolve then resolves
// upstream itself if the attempt succeeded.
func (up *Upstream) LockIn(ctx context.Context, p redis.Pipeliner) {
	up.lock = p.SetNX(ctx, up.k.lock, up.token, up.s.opts.LockTTL)
}

// Resolve resolves the link: upstream, when LockIn took the lock (PublishIn must then store
// the outcome and release the lock), else as Service.Resolve does, waiting for the lock's
// holder or taking the lock when it frees. A long countdown returns a *Parked.
func (up *Upstream) Resolve(ctx context.Context) (Result, error) {
	if up.lock != nil {
		if ok, err := up.lock.Result(); err == nil && ok {
			up.open = true
			return up.s.r.Park(ctx, up.rawURL)
		}
	}
	return up.s.Resolve(ctx, up.rawURL)
}

// Resume finishes a walk that Resolve parked; PublishIn stores its outcome. When LockIn took
// the link's lock, the resumed walk holds it (the link's other resolves wait for its outcome)
// and PublishIn releases it; when another resolve holds it, the walk resumes without, as
// Service.Resume does, and PublishIn leaves that lock alone.
func (up *Upstream) Resume(ctx context.Context, c *Continuation) (Result, error) {
	up.open = true
	return up.s.r.Resume(ctx, up.rawURL, c)
}

// PublishIn adds to p what Service.Resolve writes after an upstream resolve: the outcome for
// every worker (the cache, the negative cache, or the failure for this lock's waiters), the
// lock's release and the provider's latency. It adds nothing when this run did not resolve
// upstream (another worker's outcome was taken, and that worker published it). The caller
// calls the function returned once p has run: it repeats what Redis could not run in p (a
// script it did not know yet, after a restart).
func (up *Upstream) PublishIn(ctx context.Context, p redis.Pipeliner, res Result, rerr error) (after func()) {
	if !up.open {
		return func() {}
	}
	up.open = false
	return up.s.publishIn(ctx, p, up.norm, up.k, up.token, res, rerr)
}

// Pending reports whether this run resolved upstream and PublishIn has yet to store the
// outcome.
func (up *Upstream) Pending() bool { return up.open }

// Release gives the lock back without an outcome when LockIn took it and nothing was
// published: the caller found it had nothing to resolve after all (the job was another run's).
func (up *Upstream) Release(ctx context.Context) {
	if up.lock == nil {
		return
	}
	if ok, err := up.lock.Result(); err != nil || !ok {
		return
	}
	up.lock = nil
	up.open = false
	_ = finishScript.Run(context.WithoutCancel(ctx), up.s.rdb, []string{up.k.lock, up.k.lock}, up.token, "", 0).Err()
}

// decodeLookup reads the reply of a cache GET.
func (s *Service) decodeLookup(cmd *redis.StringCmd, rawURL, norm string, u *url.URL) (Result, bool, bool, error) {
	raw, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return Result{}, false, false, nil
	}
	if err != nil {
		return Result{}, false, false, fmt.Errorf("resolve cache read: %w", err)
	}
	return s.fromRecord(raw, rawURL, norm, u)
}
