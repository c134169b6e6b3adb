package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
)

// Claim is what an idempotency key remembers: the job it created and the request that did.
type Claim struct {
	JobID      string `json:"job_id"`
	URL        string `json:"url"`
	WebhookURL string `json:"webhook_url"`
}

// idemKey hashes the client's key so that any printable text (braces included) makes a safe
// Redis key under the API key's hash tag.
func idemKey(keyID, key string) string {
	sum := sha256.Sum256([]byte(key))
	return keys.Tag(keyID) + ":idem:" + hex.EncodeToString(sum[:16])
}

// claimScript returns the existing claim, or stores ARGV[1] and returns false: one atomic
// step, so concurrent requests with one key see exactly one winner.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`)

// ClaimIdempotency claims key for c, remembered for the job retention. It returns the earlier
// claim when the key was used before (and then stores nothing).
func (s *Store) ClaimIdempotency(ctx context.Context, keyID, key string, c Claim) (*Claim, error) {
	b, _ := json.Marshal(c)
	v, err := claimScript.Run(ctx, s.rdb, []string{idemKey(keyID, key)}, b, s.retention.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: idempotency claim: %w", err)
	}
	var prev Claim
	if err := json.Unmarshal([]byte(v), &prev); err != nil {
		return nil, fmt.Errorf("jobs: idempotency claim: %w", err)
	}
	return &prev, nil
}

var releaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).job_id == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// ReleaseIdempotency forgets key if it still names jobID: the request that claimed it created
// nothing after all (cached answer, failure), so a retry must be free to create the job.
func (s *Store) ReleaseIdempotency(ctx context.Context, keyID, key, jobID string) error {
	return releaseScript.Run(ctx, s.rdb, []string{idemKey(keyID, key)}, jobID).Err()
}
