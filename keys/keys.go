// Package keys mints, stores and authenticates API keys.
//
// A key is shown once, at creation; Redis holds only its SHA-256. The token carries the key's
// id (sk_live_<id>_<secret>), so authentication is one lookup by id and a constant-time
// comparison of digests, with no index from secret to key. All of a key's data lives under
// the hash tag {k:<id>}, so the key record, its limiter state and its jobs share one Redis
// Cluster slot.
package keys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/replicas"
)

const (
	// TokenPrefix starts every API key.
	TokenPrefix = "sk_live_"
	// SecretPrefix starts every webhook signing secret.
	SecretPrefix = "whsec_"
	// IDPrefix starts every key id.
	IDPrefix = "key_"
	// ScopeResolve grants POST /v1/resolve.
	ScopeResolve = "resolve"
	// DefaultRateLimit is the per-minute limit of a new key.
	DefaultRateLimit = 60

	idLen    = 16 // base32 characters of a key id
	indexKey = "linkhop:keys"
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// KnownScopes lists the scopes a key may hold.
var KnownScopes = []string{ScopeResolve}

// Key is a stored API key, without its secret.
type Key struct {
	ID                 string     `json:"id"`
	Name               string     `json:"name"`
	Scopes             []string   `json:"scopes"`
	RateLimitPerMinute int        `json:"rate_limit_per_minute"`
	DailyQuota         *int64     `json:"daily_quota"`
	Credits            *int64     `json:"credits"`
	CreatedAt          time.Time  `json:"created_at"`
	RevokedAt          *time.Time `json:"revoked_at"`

	hash               string
	webhookSecret      string
	prevWebhookSecret  string
	prevSecretValidEnd time.Time
}

// HasScope reports whether k holds scope s.
func (k Key) HasScope(s string) bool { return slices.Contains(k.Scopes, s) }

// Revoked reports whether k was revoked.
func (k Key) Revoked() bool { return k.RevokedAt != nil }

// WebhookSecret is the current signing secret of k.
func (k Key) WebhookSecret() string { return k.webhookSecret }

// SigningSecrets lists the secrets that sign webhooks at now: the current one first and,
// during a rotation's grace period, the previous one after it.
func (k Key) SigningSecrets(now time.Time) []string {
	out := []string{k.webhookSecret}
	if k.prevWebhookSecret != "" && now.Before(k.prevSecretValidEnd) {
		out = append(out, k.prevWebhookSecret)
	}
	return out
}

// Fields of the key record, a Redis hash at RecordKey. The record's schema belongs to this
// package: other packages' Lua scripts read and change it only through these names, written
// as a template that Script expands, so a renamed field reaches every script.
const (
	FieldHash              = "hash"             // hex SHA-256 of the token (Digest)
	FieldName              = "name"             // the key's name
	FieldScopes            = "scopes"           // comma-separated scopes
	FieldRateLimit         = "rate_limit"       // per-minute limit, 0 = unlimited
	FieldDailyQuota        = "daily_quota"      // daily quota; absent = none
	FieldCredits           = "credits"          // credit balance; absent = unlimited
	FieldCreatedAt         = "created_at"       // creation time, Unix ms
	FieldRevokedAt         = "revoked_at"       // revocation time, Unix ms; absent = live
	FieldWebhookSecret     = "whsec"            // the current webhook signing secret
	FieldPrevWebhookSecret = "whsec_prev"       //nolint:gosec // G101: a field name; the secret before the last rotation
	FieldPrevSecretUntil   = "whsec_prev_until" //nolint:gosec // G101: a field name; end of the rotation's grace, Unix ms
)

// scriptFields are the names Script offers to templates, each a quoted Lua string.
type scriptFields struct {
	Hash, Scopes, RateLimit, DailyQuota, Credits, RevokedAt string
}

// Script expands a Lua script's template: {{.Hash}}, {{.Scopes}}, {{.RateLimit}},
// {{.DailyQuota}}, {{.Credits}} and {{.RevokedAt}} become the quoted names of those record
// fields. It panics on any other name, at the caller's package initialisation, so a script
// naming a field the record does not have fails every test of its package.
func Script(src string) string {
	t := template.Must(template.New("script").Option("missingkey=error").Parse(src))
	q := func(s string) string { return "'" + s + "'" }
	var b strings.Builder
	if err := t.Execute(&b, scriptFields{
		Hash: q(FieldHash), Scopes: q(FieldScopes), RateLimit: q(FieldRateLimit), DailyQuota: q(FieldDailyQuota),
		Credits: q(FieldCredits), RevokedAt: q(FieldRevokedAt),
	}); err != nil {
		panic("keys: script template: " + err.Error())
	}
	return b.String()
}

// HasScopeLua defines the Lua function has_scope(field, scope) for scripts that check a scope
// themselves: Key.HasScope on the record's FieldScopes as stored (comma-separated; absent or
// empty: no scope). TestHasScopeLua holds the two to the same answers.
const HasScopeLua = `
local function has_scope(field, scope)
  if not field or field == '' then return false end
  return string.find(',' .. field .. ',', ',' .. scope .. ',', 1, true) ~= nil
end
`

// RecordKey is the Redis key of the record of key id. Other packages put their per-key data
// next to it under the same hash tag; see Tag.
func RecordKey(id string) string { return Tag(id) + ":key" }

// Tag is the common prefix, with Cluster hash tag, of every Redis key that belongs to key id.
func Tag(id string) string { return "linkhop:{k:" + id + "}" }

// ParseToken extracts the key id from a bearer token, checking only its shape.
func ParseToken(token string) (id string, ok bool) {
	rest, found := strings.CutPrefix(token, TokenPrefix)
	if !found {
		return "", false
	}
	idPart, secret, found := strings.Cut(rest, "_")
	if !found || len(idPart) != idLen || len(secret) != 43 {
		return "", false
	}
	for _, c := range idPart {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return "", false
		}
	}
	for _, c := range secret {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return IDPrefix + idPart, true
}

// ValidID reports whether s has the shape of a key id.
func ValidID(s string) bool {
	p, ok := strings.CutPrefix(s, IDPrefix)
	if !ok || len(p) != idLen {
		return false
	}
	_, valid := ParseToken(TokenPrefix + p + "_" + strings.Repeat("a", 43))
	return valid
}

// NewWebhookSecret mints a signing secret: whsec_ and 32 random bytes in standard base64, the
// form Standard Webhooks libraries expect.
func NewWebhookSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// Digest is the stored form of a token: hex SHA-256.
func Digest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func mint() (id, token string) {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	idPart := strings.ToLower(idEncoding.EncodeToString(b))
	s := make([]byte, 32)
	_, _ = rand.Read(s)
	return IDPrefix + idPart, TokenPrefix + idPart + "_" + base64.RawURLEncoding.EncodeToString(s)
}

// Store keeps keys in Redis.
type Store struct {
	rdb redis.UniversalClient
	now func() time.Time
	ack replicas.Ack // REDIS_MIN_REPLICAS_ACK; see RequireReplicas
}

// RequireReplicas makes Create wait, before it returns the new key, until ack.Min replicas
// hold it; a key they do not acknowledge in time is deleted again and Create fails, so no
// one is handed a token that a failover could still forget;
// docs/operations.md#durability-of-accepted-jobs.
func (s *Store) RequireReplicas(ack replicas.Ack) { s.ack = ack }

// NewStore returns a Store on rdb.
func NewStore(rdb redis.UniversalClient) *Store {
	return &Store{rdb: rdb, now: time.Now}
}

// CreateParams are the settings of a new key. Nil pointers mean "none" (unlimited).
type CreateParams struct {
	Name       string
	Scopes     []string // nil: [resolve]
	RateLimit  *int     // nil: DefaultRateLimit; 0 unlimited
	DailyQuota *int64
	Credits    *int64
}

// Created is what Create returns: the only time the full key is visible.
type Created struct {
	Key
	Token string
}

// Create mints and stores a new key.
func (s *Store) Create(ctx context.Context, p CreateParams) (Created, error) {
	if strings.TrimSpace(p.Name) == "" || utf8.RuneCountInString(p.Name) > 200 {
		return Created{}, &ArgumentError{Field: "name", Reason: "name must be 1-200 characters"}
	}
	scopes := p.Scopes
	if scopes == nil {
		scopes = []string{ScopeResolve}
	}
	scopes = slices.Compact(slices.Sorted(slices.Values(scopes)))
	for _, sc := range scopes {
		if !slices.Contains(KnownScopes, sc) {
			return Created{}, &ArgumentError{Field: "scopes", Reason: fmt.Sprintf("unknown scope %q", sc)}
		}
	}
	rl := DefaultRateLimit
	if p.RateLimit != nil {
		rl = *p.RateLimit
	}
	if err := checkLimits(&rl, p.DailyQuota, p.Credits); err != nil {
		return Created{}, err
	}
	id, token := mint()
	k := Key{
		ID: id, Name: p.Name, Scopes: slices.Clone(scopes), RateLimitPerMinute: rl,
		DailyQuota: p.DailyQuota, Credits: p.Credits, CreatedAt: s.now().UTC().Truncate(time.Millisecond),
		hash: Digest(token), webhookSecret: NewWebhookSecret(),
	}
	fields := map[string]any{
		FieldHash: k.hash, FieldName: k.Name, FieldScopes: strings.Join(k.Scopes, ","),
		FieldRateLimit: rl, FieldCreatedAt: k.CreatedAt.UnixMilli(), FieldWebhookSecret: k.webhookSecret,
	}
	if p.DailyQuota != nil {
		fields[FieldDailyQuota] = *p.DailyQuota
	}
	if p.Credits != nil {
		fields[FieldCredits] = *p.Credits
	}
	// Two keys in two slots: a plain pipeline (not MULTI) stays valid on Cluster. The index
	// only serves listing, so a crash between the two commands at worst hides a key from list.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, RecordKey(id), fields)
		p.SAdd(ctx, indexKey, id)
		return nil
	})
	if err != nil {
		return Created{}, fmt.Errorf("keys: storing key: %w", err)
	}
	if err := s.ack.Wait(ctx, s.rdb, RecordKey(id), indexKey); err != nil {
		// A fresh context: the request's may be what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, uerr := s.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
			p.Del(cctx, RecordKey(id))
			p.SRem(cctx, indexKey, id)
			return nil
		})
		return Created{}, fmt.Errorf("keys: storing key: %w", errors.Join(err, uerr))
	}
	return Created{Key: k, Token: token}, nil
}

func checkLimits(rl *int, quota, credits *int64) error {
	if rl != nil && (*rl < 0 || *rl > math.MaxInt32) {
		return &ArgumentError{Field: "rate_limit_per_minute", Reason: fmt.Sprintf("rate limit must be 0..%d", math.MaxInt32)}
	}
	if quota != nil && *quota < 0 {
		return &ArgumentError{Field: "daily_quota", Reason: "daily quota must be >= 0"}
	}
	if credits != nil && *credits < 0 {
		return &ArgumentError{Field: "credits", Reason: "credits must be >= 0"}
	}
	return nil
}

// Get reads key id.
func (s *Store) Get(ctx context.Context, id string) (Key, error) {
	var get func() (Key, error)
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = s.GetIn(ctx, p, id)
		return nil
	})
	return get()
}

// GetIn adds Get's read to pipeline p, for callers that batch it with their own commands in
// one round trip; the function returned decodes it after p has run.
func (s *Store) GetIn(ctx context.Context, p redis.Pipeliner, id string) func() (Key, error) {
	if !ValidID(id) {
		return func() (Key, error) { return Key{}, ErrNotFound }
	}
	cmd := p.HGetAll(ctx, RecordKey(id))
	return func() (Key, error) {
		m, err := cmd.Result()
		if err != nil {
			return Key{}, fmt.Errorf("keys: reading %s: %w", id, err)
		}
		if len(m) == 0 {
			return Key{}, ErrNotFound
		}
		return decode(id, m)
	}
}

// Authenticate returns the key a bearer token belongs to, or ErrInvalidKey for a malformed,
// unknown or revoked token.
func (s *Store) Authenticate(ctx context.Context, token string) (Key, error) {
	id, ok := ParseToken(token)
	if !ok {
		return Key{}, ErrInvalidKey
	}
	m, err := s.rdb.HGetAll(ctx, RecordKey(id)).Result()
	if err != nil {
		return Key{}, fmt.Errorf("keys: reading %s: %w", id, err)
	}
	return Check(id, Digest(token), m)
}

// Check authenticates a token, given as its Digest, against a record read by the caller
// (HGETALL of RecordKey(id)), for callers that read the record together with other data in
// one round trip.
func Check(id, tokenDigest string, record map[string]string) (Key, error) {
	return check(id, tokenDigest, record, decode)
}

// RequestFields are the fields of a key record that serving a request which neither shows nor
// changes its key needs: authentication, limits, scopes and the credit balance. A caller may
// read only these (HMGET) and authenticate with CheckRequest.
var RequestFields = []string{FieldHash, FieldRevokedAt, FieldScopes, FieldRateLimit, FieldDailyQuota, FieldCredits}

// CheckRequest is Check against a record read as RequestFields only. The Key it returns has
// ID, Scopes, RateLimitPerMinute, DailyQuota, Credits and RevokedAt; its name, creation time
// and webhook secrets are zero.
func CheckRequest(id, tokenDigest string, record map[string]string) (Key, error) {
	return check(id, tokenDigest, record, func(id string, m map[string]string) (Key, error) {
		k := Key{ID: id, hash: m[FieldHash]}
		return k, decodeRequestFields(&k, m)
	})
}

func check(id, tokenDigest string, record map[string]string, decode func(string, map[string]string) (Key, error)) (Key, error) {
	if len(record) == 0 {
		return Key{}, ErrInvalidKey
	}
	// Both sides are SHA-256 digests; comparing in constant time anyway costs nothing.
	if subtle.ConstantTimeCompare([]byte(tokenDigest), []byte(record[FieldHash])) != 1 {
		return Key{}, ErrInvalidKey
	}
	k, err := decode(id, record)
	if err != nil {
		return Key{}, err
	}
	if k.Revoked() {
		return Key{}, ErrInvalidKey
	}
	return k, nil
}

// List returns every key, oldest first.
func (s *Store) List(ctx context.Context) ([]Key, error) {
	ids, err := s.rdb.SMembers(ctx, indexKey).Result()
	if err != nil {
		return nil, fmt.Errorf("keys: listing: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, RecordKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keys: listing: %w", err)
	}
	out := make([]Key, 0, len(ids))
	for i, id := range ids {
		m := cmds[i].Val()
		if len(m) == 0 {
			continue
		}
		k, err := decode(id, m)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Optional is an update of a nullable number: unset leaves it, Null clears it ("none").
type Optional struct {
	Set   bool
	Null  bool
	Value int64
}

// UpdateParams changes a key's limits; unset fields stay.
type UpdateParams struct {
	RateLimit  *int
	DailyQuota Optional
	Credits    Optional
}

// Update changes key id's limits. Changes reach every replica's next request (nothing is
// cached), so they take effect at once.
func (s *Store) Update(ctx context.Context, id string, p UpdateParams) (Key, error) {
	if err := checkLimits(p.RateLimit, optPtr(p.DailyQuota), optPtr(p.Credits)); err != nil {
		return Key{}, err
	}
	if _, err := s.Get(ctx, id); err != nil {
		return Key{}, err
	}
	rk := RecordKey(id)
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		if p.RateLimit != nil {
			pipe.HSet(ctx, rk, FieldRateLimit, *p.RateLimit)
		}
		for field, o := range map[string]Optional{FieldDailyQuota: p.DailyQuota, FieldCredits: p.Credits} {
			switch {
			case o.Set && o.Null:
				pipe.HDel(ctx, rk, field)
			case o.Set:
				pipe.HSet(ctx, rk, field, o.Value)
			}
		}
		return nil
	})
	if err != nil {
		return Key{}, fmt.Errorf("keys: updating %s: %w", id, err)
	}
	return s.Get(ctx, id)
}

func optPtr(o Optional) *int64 {
	if o.Set && !o.Null {
		return &o.Value
	}
	return nil
}

// Revoke marks key id revoked; its next request anywhere is refused. Revoking twice keeps
// the first time.
func (s *Store) Revoke(ctx context.Context, id string) (Key, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return Key{}, err
	}
	if err := s.rdb.HSetNX(ctx, RecordKey(id), FieldRevokedAt, s.now().UnixMilli()).Err(); err != nil {
		return Key{}, fmt.Errorf("keys: revoking %s: %w", id, err)
	}
	return s.Get(ctx, id)
}

// RotateWebhookSecret gives key id a new signing secret; the old one keeps signing too for
// grace (0 ends it at once).
func (s *Store) RotateWebhookSecret(ctx context.Context, id string, grace time.Duration) (Key, error) {
	if grace < 0 {
		return Key{}, &ArgumentError{Field: "grace", Reason: "grace must be >= 0"}
	}
	k, err := s.Get(ctx, id)
	if err != nil {
		return Key{}, err
	}
	rk := RecordKey(id)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, rk, FieldWebhookSecret, NewWebhookSecret(), FieldPrevWebhookSecret, k.webhookSecret,
			FieldPrevSecretUntil, s.now().Add(grace).UnixMilli())
		return nil
	})
	if err != nil {
		return Key{}, fmt.Errorf("keys: rotating %s: %w", id, err)
	}
	return s.Get(ctx, id)
}

func decode(id string, m map[string]string) (Key, error) {
	k := Key{
		ID: id, Name: m[FieldName], hash: m[FieldHash], webhookSecret: m[FieldWebhookSecret],
		prevWebhookSecret: m[FieldPrevWebhookSecret],
	}
	err := decodeRequestFields(&k, m)
	num := func(field string) int64 {
		v, e := strconv.ParseInt(m[field], 10, 64)
		if e != nil && err == nil {
			err = fieldError(id, field, e)
		}
		return v
	}
	k.CreatedAt = time.UnixMilli(num(FieldCreatedAt)).UTC()
	if _, ok := m[FieldPrevSecretUntil]; ok {
		k.prevSecretValidEnd = time.UnixMilli(num(FieldPrevSecretUntil))
	}
	return k, err
}

// decodeRequestFields sets k's fields of RequestFields from m (the hash aside).
func decodeRequestFields(k *Key, m map[string]string) error {
	k.Scopes = []string{}
	if m[FieldScopes] != "" {
		k.Scopes = strings.Split(m[FieldScopes], ",")
	}
	var err error
	num := func(field string) int64 {
		v, e := strconv.ParseInt(m[field], 10, 64)
		if e != nil && err == nil {
			err = fieldError(k.ID, field, e)
		}
		return v
	}
	k.RateLimitPerMinute = int(num(FieldRateLimit))
	if _, ok := m[FieldDailyQuota]; ok {
		v := num(FieldDailyQuota)
		k.DailyQuota = &v
	}
	if _, ok := m[FieldCredits]; ok {
		v := num(FieldCredits)
		k.Credits = &v
	}
	if _, ok := m[FieldRevokedAt]; ok {
		t := time.UnixMilli(num(FieldRevokedAt)).UTC()
		k.RevokedAt = &t
	}
	return err
}

func fieldError(id, field string, err error) error {
	return fmt.Errorf("keys: record %s: field %s: %w", id, field, err)
}
