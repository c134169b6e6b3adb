package resolve

import (
	"math"
	"math/rand/v2"
	"time"
)

// maxBackoff keeps Backoff finite for absurd attempt numbers.
const maxBackoff = 24 * time.Hour

// Backoff returns the delay before retry n (n ≥ 1; smaller n counts as 1): base × 4^(n−1) with
// ±20 % uniform jitter, so a burst of jobs failing together does not retry in lockstep. The result
// is capped at 24 hours.
func Backoff(base time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	if n < 1 {
		n = 1
	}
	d := float64(base) * math.Pow(4, float64(n-1))
	d *= 0.8 + 0.4*rand.Float64() //nolint:gosec // jitter needs no cryptographic randomness
	if d > float64(maxBackoff) || math.IsInf(d, 0) {
		return maxBackoff
	}
	return time.Duration(d)
}
