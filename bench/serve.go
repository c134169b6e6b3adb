package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
)

// Reference servers for a check with an outside load tool (scripts/vegeta-check.sh): the same
// handlers as the in-process references of scenarios 2 and 3, alone in a process, so that
// the process's CPU is the server's only.
const (
	serveFloor   = "floor"    // bareEnqueueHandler: POST /v1/resolve making one raw Enqueue
	servePollRef = "poll-ref" // bareHandler: GET /v1/jobs/{id} making one Redis GET
)

var errServeMode = errors.New("-serve: want floor or poll-ref")

// serveRef serves one reference on addr (a loopback address) until ctx ends, with Redis from
// REDIS_URL as cmd/api reads it.
func serveRef(ctx context.Context, mode, addr string, stderr io.Writer) error {
	cfg, err := config.Load(config.API, os.LookupEnv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var h http.Handler
	var closer io.Closer
	switch mode {
	case serveFloor:
		// As resolveFloor: a plain go-redis client under asynq's.
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(opt)
		closer = rdb
		h = bareEnqueueHandler(asynq.NewClientFromRedisClient(rdb))
	case servePollRef:
		rdb, err := app.NewRedis(cfg)
		if err != nil {
			return err
		}
		closer = rdb
		h = bareHandler(rdb)
	default:
		return errServeMode
	}
	defer closer.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s, err := serveOn(ln, h)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench: serving %s on %s\n", mode, s.url)
	<-ctx.Done()
	s.close()
	return nil
}
