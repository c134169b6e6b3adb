package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
)

// loadingError is a Redis error reply as go-redis hands it over while Redis loads its data.
type loadingError string

func (e loadingError) Error() string { return string(e) }
func (loadingError) RedisError()     {}

// TestProblemFor pins the one error→problem mapping: by type, never by message text.
func TestProblemFor(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		err      error
		code     problem.Code
		field    string
		internal bool
	}{
		"a problem as it is":   {problem.New(problem.LinkRemoved, "x"), problem.LinkRemoved, "", false},
		"key argument":         {fmt.Errorf("admin: %w", &keys.ArgumentError{Field: "credits", Reason: "credits must be >= 0"}), problem.InvalidRequest, "credits", false},
		"unknown key":          {keys.ErrNotFound, problem.NotFound, "", false},
		"unknown job":          {fmt.Errorf("x: %w", jobs.ErrNotFound), problem.NotFound, "", false},
		"job without webhook":  {jobs.ErrNoWebhook, problem.NotFound, "", false},
		"delivery pending":     {jobs.ErrWebhookPending, problem.IdempotencyConflict, "", false},
		"connection closed":    {fmt.Errorf("quota: admit: %w", io.EOF), problem.ServiceUnavailable, "", true},
		"reply cut short":      {io.ErrUnexpectedEOF, problem.ServiceUnavailable, "", true},
		"refused":              {&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, problem.ServiceUnavailable, "", true},
		"deadline":             {context.DeadlineExceeded, problem.ServiceUnavailable, "", true},
		"client closed":        {redis.ErrClosed, problem.ServiceUnavailable, "", true},
		"closed, wrapped":      {fmt.Errorf("jobs: %w", redis.ErrClosed), problem.ServiceUnavailable, "", true},
		"a bug":                {errors.New("EOF LOADING connection refused"), problem.InternalError, "", true},
		"a Redis error reply":  {loadingError("ERR wrong number of arguments"), problem.InternalError, "", true},
		"Redis loading its DB": {loadingError("LOADING Redis is loading the dataset in memory"), problem.ServiceUnavailable, "", true},
		"demoted primary":      {loadingError("READONLY You can't write against a read only replica."), problem.ServiceUnavailable, "", true},
		"cluster down":         {loadingError("CLUSTERDOWN The cluster is down"), problem.ServiceUnavailable, "", true},
		"slot moving":          {loadingError("TRYAGAIN Multiple keys request during rehashing of slot"), problem.ServiceUnavailable, "", true},
		"primary gone":         {loadingError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), problem.ServiceUnavailable, "", true},
		"replicas did not ack": {fmt.Errorf("jobs: %w", replicas.ErrTooFew), problem.ServiceUnavailable, "", true},
		"Redis full":           {loadingError("OOM command not allowed when used memory > 'maxmemory'."), problem.ServiceUnavailable, "", true},
		"Redis out of clients": {loadingError("ERR max number of clients reached"), problem.ServiceUnavailable, "", true},
		"too few replicas":     {loadingError("NOREPLICAS Not enough good replicas to write."), problem.ServiceUnavailable, "", true},
		"slot moved":           {loadingError("MOVED 3999 127.0.0.1:6381"), problem.ServiceUnavailable, "", true},
		"slot migrating":       {loadingError("ASK 3999 127.0.0.1:6381"), problem.ServiceUnavailable, "", true},
		"a script's error":     {loadingError("ERR user_script:1: Script attempted to access nonexistent global variable"), problem.InternalError, "", true},
	} {
		p, internal := problemFor(tc.err)
		if p.Code != tc.code || internal != tc.internal {
			t.Errorf("%s: %s (internal %v), want %s (internal %v)", name, p.Code, internal, tc.code, tc.internal)
		}
		if tc.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tc.field) {
			t.Errorf("%s: errors %+v, want one for %s", name, p.Errors, tc.field)
		}
	}
}

// TestProblemForRedisRefusals: a Redis that refuses writes for now (full under noeviction,
// short of the replicas its min-replicas-to-write asks for) is a 503 as go-redis reports it,
// wrapped by the domain packages.
func TestProblemForRedisRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, args := range map[string][]string{
		"full":             {"--maxmemory", "1", "--maxmemory-policy", "noeviction"},
		"too few replicas": {"--min-replicas-to-write", "1"},
	} {
		rdb := redistest.Start(t, args...).Client(t)
		err := rdb.Set(ctx, "k", "v", 0).Err()
		if err == nil {
			t.Fatalf("%s: the write was not refused", name)
		}
		if p, _ := problemFor(fmt.Errorf("jobs: %w", err)); p.Code != problem.ServiceUnavailable {
			t.Errorf("%s (%v): %s, want service_unavailable", name, err, p.Code)
		}
	}
}
