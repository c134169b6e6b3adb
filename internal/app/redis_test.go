package app_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
)

// These tests connect NewRedis's clients to real servers that want a password, an ACL user
// or TLS, through Sentinel and Cluster too, and use them the way linkhop does: plain
// commands, and asynq's client and inspector on the same client (asynq dials nothing of its
// own, so what works here works for every connection of a process).

// load is config.Load of the API with env.
func load(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	c, err := config.Load(config.API, func(n string) (string, bool) { v, ok := env[n]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// connect builds NewRedis's client of env and returns it with the error of a first write.
func connect(t *testing.T, env map[string]string) (redis.UniversalClient, error) {
	t.Helper()
	rdb, err := app.NewRedis(load(t, env))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rdb, rdb.Set(ctx, "linkhop:{probe}:x", "1", time.Minute).Err()
}

// useLikeLinkhop enqueues a task with asynq's client on rdb and reads it back with asynq's
// inspector.
func useLikeLinkhop(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("probe", nil, asynq.TaskID("t1"), asynq.Queue("probe"))); err != nil {
		t.Fatalf("asynq enqueue: %v", err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("probe", "t1"); err != nil {
		t.Fatalf("asynq inspector: %v", err)
	}
}

func TestRedisPassword(t *testing.T) {
	t.Parallel()
	n := redistest.StartNode(t, false, "requirepass s3cret")
	rdb, err := connect(t, map[string]string{"REDIS_URL": "redis://:s3cret@" + n.Addr + "/2"})
	if err != nil {
		t.Fatal(err)
	}
	useLikeLinkhop(t, rdb)
	// The write went to database 2.
	direct := n.Client(redis.Options{Password: "s3cret", DB: 2})
	if direct.Exists(context.Background(), "linkhop:{probe}:x").Val() != 1 {
		t.Error("the write is not in database 2")
	}
	if _, err := connect(t, map[string]string{"REDIS_URL": "redis://:wrong@" + n.Addr + "/0"}); err == nil {
		t.Error("a wrong password was accepted")
	}
	if _, err := connect(t, map[string]string{"REDIS_URL": "redis://" + n.Addr + "/0"}); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("no password: %v, want NOAUTH", err)
	}
}

func TestRedisACLUser(t *testing.T) {
	t.Parallel()
	n := redistest.StartNode(t, false, "user default off", "user linkhop on >pw ~* &* +@all")
	rdb, err := connect(t, map[string]string{"REDIS_URL": "redis://linkhop:pw@" + n.Addr + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	useLikeLinkhop(t, rdb)
	if _, err := connect(t, map[string]string{"REDIS_URL": "redis://other:pw@" + n.Addr + "/0"}); err == nil {
		t.Error("an unknown user was accepted")
	}
}

func TestRedisTLS(t *testing.T) {
	t.Parallel()
	f := redistest.NewTLSFiles(t)
	n := redistest.StartNode(t, false, append(f.Conf(), "requirepass tlspw")...)
	url := "rediss://:tlspw@" + n.Addr + "/0"
	rdb, err := connect(t, map[string]string{"REDIS_URL": url, "REDIS_TLS_CA_FILE": f.CA})
	if err != nil {
		t.Fatal(err)
	}
	useLikeLinkhop(t, rdb)
	// Without the CA, the server's certificate is refused (the system roots do not know it).
	if _, err := connect(t, map[string]string{"REDIS_URL": url}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without REDIS_TLS_CA_FILE: %v, want a certificate error", err)
	}
	// A plain connection to a TLS port fails.
	if _, err := connect(t, map[string]string{"REDIS_URL": "redis://:tlspw@" + n.Addr + "/0"}); err == nil {
		t.Error("a plain connection to the TLS port worked")
	}
}

// TestRedisSentinelPasswords: the primary wants one password, the sentinels another; the
// database is 3.
func TestRedisSentinelPasswords(t *testing.T) {
	t.Parallel()
	primary := redistest.StartNode(t, false, "requirepass datapw")
	sentinels := redistest.Sentinels(t, 1, "linkhop", primary.Addr, 5*time.Second,
		"sentinel auth-pass linkhop datapw", "requirepass sentpw")
	base := "redis-sentinel://:datapw@" + redistest.SentinelAddrs(sentinels) + "/3?master=linkhop"
	rdb, err := connect(t, map[string]string{"REDIS_URL": base, "REDIS_SENTINEL_PASSWORD": "sentpw"})
	if err != nil {
		t.Fatal(err)
	}
	useLikeLinkhop(t, rdb)
	if primary.Client(redis.Options{Password: "datapw", DB: 3}).Exists(context.Background(), "linkhop:{probe}:x").Val() != 1 {
		t.Error("the write is not in database 3 of the primary")
	}
	// Without the sentinels' password the sentinels refuse to name the primary.
	if _, err := connect(t, map[string]string{"REDIS_URL": base}); err == nil {
		t.Error("the sentinels answered without their password")
	}
	// The same password for both needs no second variable.
	same := redistest.StartNode(t, false, "requirepass both")
	sameSentinels := redistest.Sentinels(t, 1, "linkhop", same.Addr, 5*time.Second,
		"sentinel auth-pass linkhop both", "requirepass both")
	if _, err := connect(t, map[string]string{"REDIS_URL": "redis-sentinel://:both@" + redistest.SentinelAddrs(sameSentinels) + "?master=linkhop"}); err != nil {
		t.Errorf("one password for sentinels and data nodes: %v", err)
	}
}

// TestRedisClusterTLSAndPassword: a TLS-only Cluster whose nodes want a password.
func TestRedisClusterTLSAndPassword(t *testing.T) {
	t.Parallel()
	f := redistest.NewTLSFiles(t)
	auth := redis.Options{Password: "clpw", TLSConfig: f.ClientTLS(t)}
	prim, _ := redistest.Cluster(t, 3, 0, auth, append(f.Conf(), "requirepass clpw", "masterauth clpw")...)
	clusterLogin(t, prim, map[string]string{"REDIS_URL": "rediss://:clpw@127.0.0.1/0", "REDIS_TLS_CA_FILE": f.CA},
		"rediss://:nope@127.0.0.1/0")
}

// clusterLogin connects NewRedis's Cluster client to the primaries prim with env, uses it as
// linkhop does and writes keys of every node; then it checks that REDIS_URL wrong (wrong
// credentials) is refused.
func clusterLogin(t *testing.T, prim []*redistest.Node, env map[string]string, wrong string) {
	t.Helper()
	addrs := make([]string, len(prim))
	for i, n := range prim {
		addrs[i] = n.Addr
	}
	env["REDIS_CLUSTER_ADDRS"] = strings.Join(addrs, ",")
	rdb, err := connect(t, env)
	if err != nil {
		t.Fatal(err)
	}
	useLikeLinkhop(t, rdb)
	ctx := context.Background()
	for i := range 30 {
		if err := rdb.Set(ctx, "k"+string(rune('a'+i)), "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	env["REDIS_URL"] = wrong
	if _, err := connect(t, env); err == nil {
		t.Errorf("the wrong credentials of %s were accepted", wrong)
	}
}

func TestNewRedisRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"redis-sentinel://127.0.0.1:26379", "master"},
		{"redis-sentinel://127.0.0.1:26379/x?master=m", "database"},
	} {
		_, err := app.NewRedis(load(t, map[string]string{"REDIS_URL": tc.url}))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Var != "REDIS_URL" || !strings.Contains(ce.Reason, tc.want) {
			t.Errorf("%s: %v, want a REDIS_URL error about %s", tc.url, err, tc.want)
		}
	}
	// REDIS_TLS_CA_FILE that holds no certificate.
	dir := t.TempDir() + "/empty.pem"
	if err := writeFile(dir, "not a certificate"); err != nil {
		t.Fatal(err)
	}
	_, err := app.NewRedis(load(t, map[string]string{"REDIS_URL": "rediss://127.0.0.1:6379/0", "REDIS_TLS_CA_FILE": dir}))
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Var != "REDIS_TLS_CA_FILE" {
		t.Errorf("a CA file without certificates: %v", err)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// TestRedisClusterACLUser: a Cluster whose nodes know only an ACL user.
func TestRedisClusterACLUser(t *testing.T) {
	t.Parallel()
	auth := redis.Options{Username: "linkhop", Password: "clpw"}
	prim, _ := redistest.Cluster(t, 3, 0, auth, "user default off", "user linkhop on >clpw ~* &* +@all")
	clusterLogin(t, prim, map[string]string{"REDIS_URL": "redis://linkhop:clpw@127.0.0.1/0"}, "redis://other:clpw@127.0.0.1/0")
}
