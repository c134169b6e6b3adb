package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/stamp"
	"github.com/linkhop/linkhop/keys"
)

const keysUsage = `usage:
  api keys create --name NAME [--scopes resolve] [--rate-limit 60] [--daily-quota N] [--credits N]
  api keys list
  api keys show ID
  api keys update ID [--rate-limit N] [--daily-quota N|none] [--credits N|none]
  api keys revoke ID
  api keys rotate-webhook-secret ID [--grace 24h]
Every command prints JSON on stdout. Redis is found through REDIS_URL (docs/configuration.md#variables).`

// keysCommand runs "api keys …" and returns the exit status: 0 ok, 1 failed, 2 usage.
func keysCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, keysUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "create", "list", "show", "update", "revoke", "rotate-webhook-secret":
	default:
		// Before anything else asks for a key ID or Redis: a typo is a usage error.
		fmt.Fprintf(stderr, "api keys: unknown command %q\n%s\n", args[0], keysUsage)
		return 2
	}
	cfg, err := config.FromEnv(config.API)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	rdb, err := app.NewRedis(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := keysRun(ctx, app.NewKeyStore(cfg, rdb), args)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "api keys: %s\n%s\n", ue, keysUsage)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "api keys:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(stderr, "api keys:", err)
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) }

// nullableInt parses N or "none" for --daily-quota and --credits.
type nullableInt struct{ o keys.Optional }

func (n *nullableInt) String() string { return "" }
func (n *nullableInt) Set(s string) error {
	if s == "none" {
		n.o = keys.Optional{Set: true, Null: true}
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return errors.New("must be a non-negative integer or none")
	}
	n.o = keys.Optional{Set: true, Value: v}
	return nil
}

func (n *nullableInt) ptr() *int64 {
	if n.o.Set && !n.o.Null {
		return &n.o.Value
	}
	return nil
}

func keysRun(ctx context.Context, s *keys.Store, args []string) (any, error) {
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var id string
	if cmd != "create" && cmd != "list" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return nil, usageError(cmd + " needs a key ID")
		}
		id, rest = rest[0], rest[1:]
	}
	switch cmd {
	case "create":
		name := fs.String("name", "", "key name")
		scopes := fs.String("scopes", keys.ScopeResolve, "comma-separated scopes")
		rate := fs.Int("rate-limit", keys.DefaultRateLimit, "requests per minute, 0 unlimited")
		var quota, credits nullableInt
		fs.Var(&quota, "daily-quota", "accepted resolves per UTC day")
		fs.Var(&credits, "credits", "credit balance")
		if err := fs.Parse(rest); err != nil {
			return nil, usageError(err.Error())
		}
		if *name == "" {
			return nil, usageError("--name is required")
		}
		sc := []string{}
		for _, s := range strings.Split(*scopes, ",") {
			if s = strings.TrimSpace(s); s != "" {
				sc = append(sc, s)
			}
		}
		c, err := s.Create(ctx, keys.CreateParams{Name: *name, Scopes: sc, RateLimit: rate, DailyQuota: quota.ptr(), Credits: credits.ptr()})
		if err != nil {
			return nil, err
		}
		return keys.ViewOfCreated(c), nil
	case "list":
		if err := fs.Parse(rest); err != nil || fs.NArg() > 0 {
			return nil, usageError("list takes no arguments")
		}
		all, err := s.List(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]keys.View, 0, len(all))
		for _, k := range all {
			out = append(out, keys.ViewOf(k, false))
		}
		return map[string]any{"keys": out}, nil
	case "show":
		if err := fs.Parse(rest); err != nil || fs.NArg() > 0 {
			return nil, usageError("show takes only an ID")
		}
		k, err := s.Get(ctx, id)
		return keys.ViewOf(k, true), err
	case "update":
		var rate intFlag
		var quota, credits nullableInt
		fs.Var(&rate, "rate-limit", "requests per minute, 0 unlimited")
		fs.Var(&quota, "daily-quota", "N or none")
		fs.Var(&credits, "credits", "N or none")
		if err := fs.Parse(rest); err != nil {
			return nil, usageError(err.Error())
		}
		k, err := s.Update(ctx, id, keys.UpdateParams{RateLimit: rate.p, DailyQuota: quota.o, Credits: credits.o})
		return keys.ViewOf(k, false), err
	case "revoke":
		if err := fs.Parse(rest); err != nil || fs.NArg() > 0 {
			return nil, usageError("revoke takes only an ID")
		}
		k, err := s.Revoke(ctx, id)
		return keys.ViewOf(k, false), err
	case "rotate-webhook-secret":
		grace := fs.Duration("grace", 24*time.Hour, "how long the previous secret keeps signing")
		if err := fs.Parse(rest); err != nil {
			return nil, usageError(err.Error())
		}
		k, err := s.RotateWebhookSecret(ctx, id, *grace)
		if err != nil {
			return nil, err
		}
		return struct {
			keys.View
			PreviousValidUntil string `json:"previous_secret_valid_until"`
		}{keys.ViewOf(k, true), stamp.Format(time.Now().Add(*grace))}, nil
	}
	return nil, usageError("unknown command " + cmd)
}

type intFlag struct{ p *int }

func (f *intFlag) String() string { return "" }
func (f *intFlag) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return errors.New("must be a non-negative integer")
	}
	f.p = &v
	return nil
}
