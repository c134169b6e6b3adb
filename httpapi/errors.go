package httpapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
)

// problemFor is the one mapping from an error of the domain packages to the problem a client
// is answered with (docs/errors.md). A nil internal means the error is the client's to see;
// otherwise it is logged and the client gets only the problem, never the internals.
func problemFor(err error) (p *problem.Problem, internal bool) {
	var ae *keys.ArgumentError
	switch {
	case errors.As(err, &p):
		return p, false
	case errors.As(err, &ae):
		return invalid(ae.Field, ae.Reason), false
	case errors.Is(err, keys.ErrNotFound):
		return problem.New(problem.NotFound, "No key has this id."), false
	case errors.Is(err, jobs.ErrNotFound):
		return problem.New(problem.NotFound, "No such job."), false
	case errors.Is(err, jobs.ErrNoWebhook):
		return problem.New(problem.NotFound, "This job was submitted without a webhook_url."), false
	case errors.Is(err, jobs.ErrWebhookPending):
		return problem.New(problem.IdempotencyConflict,
			"A delivery of this job's webhook is still pending; redeliver once it is delivered or failed."), false
	case unavailable(err):
		// Nothing was done (every write path undoes what it took), so the client may retry.
		return problem.New(problem.ServiceUnavailable,
			"The service cannot reach its data store; nothing was done. Retry later.").WithRetryAfter(5 * time.Second), true
	}
	return problem.New(problem.InternalError, "An unexpected error occurred."), true
}

// fail answers err with problemFor's problem, and logs what the client is not told: Redis
// trouble as a warning, anything else (a bug) as an error.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p, internal := problemFor(err)
	switch {
	case !internal:
	case p.Code == problem.ServiceUnavailable:
		s.log.Warn("redis unavailable", "request_id", RequestID(r), "err", err)
	default:
		s.log.Error("internal error", "request_id", RequestID(r), "err", err)
	}
	problem.Write(w, RequestID(r), p)
}

// unavailable reports whether err means Redis could not be reached or could not answer in
// time: a network error (refused, reset, timed out), a connection closed mid-reply, a pool or
// client that is closed or exhausted, a Redis still loading its data after a restart or in
// the middle of a failover, replicas that did not acknowledge a write in time
// (REDIS_MIN_REPLICAS_ACK; the write was undone), or a Redis that refuses for now: full
// (OOM under noeviction), out of connections, short of the replicas its own
// min-replicas-to-write asks for (NOREPLICAS), or a Cluster whose slots are still moving when
// go-redis has used up its redirects (MOVED, ASK).
func unavailable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, replicas.ErrTooFew) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) ||
		redis.IsLoadingError(err) ||
		// A failover in progress: a demoted primary (READONLY), a Cluster without a primary
		// for a slot (CLUSTERDOWN, TRYAGAIN), a replica whose primary is gone (MASTERDOWN).
		redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsOOMError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redirected(err)
}

// redirected reports a Cluster redirect that go-redis did not follow to the end (MOVED, ASK).
func redirected(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask
}
