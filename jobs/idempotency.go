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

// GetClaim reads the claim of an idempotency key, nil when it was not used.
func (s *Store) GetClaim(ctx context.Context, keyID, key string) (*Claim, error) {
	v, err := s.rdb.Get(ctx, idemKey(keyID, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: idempotency claim: %w", err)
	}
	var c Claim
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("jobs: idempotency claim: %w", err)
	}
	return &c, nil
}
