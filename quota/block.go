package quota

import (
	"sync"
	"time"
)

// defaultMaxBlocked bounds the memory of 429s. Failed-authentication entries are keyed by
// client address, which an attacker chooses, so the list must not grow without bound; past the
// bound a replica simply asks Redis, which stays exact.
const defaultMaxBlocked = 1 << 16

// blockList remembers, per Redis log key, that Redis rejected the key for its rolling limit,
// and until when that answer cannot change.
//
// Why it stays exact: Redis answered at its time T with "the next slot frees at T+R". The
// script ran after the request was sent at local time s, so at any later local time L the
// Redis clock reads at most T + (L - s). While L - s < R, Redis would therefore still see the
// window full and reject too: no request of the key can be admitted anywhere before T+R,
// because admitting needs a free slot. Only three things free a slot early: a refund, a raised
// limit, and the Redis clock stepping forward. Refunds made through this Limiter clear the entry; a different limit
// bypasses it; a refund on another replica is the one case where this replica may answer 429
// for up to R although one slot is free, which never admits too many.
type blockList struct {
	mu        sync.Mutex
	max       int
	m         map[string]blockEntry
	nextSweep time.Time // when full: no entry expires before this, so sweeping is pointless
}

type blockEntry struct {
	sent  time.Time // local (monotonic) time the rejecting check was sent
	until time.Time // sent + RetryAfter: before it, Redis cannot admit the key
	lim   Limits    // the limits it was judged against
	d     Decision  // the rejection as Redis gave it
}

func newBlockList(maxEntries int) *blockList {
	return &blockList{max: maxEntries, m: make(map[string]blockEntry)}
}

// lookup returns a rejection for key without Redis when one is remembered for the same limits
// and still certain at local time now.
func (b *blockList) lookup(key string, lim Limits, now time.Time) (Decision, bool) {
	if b == nil {
		return Decision{}, false
	}
	b.mu.Lock()
	e, ok := b.m[key]
	if ok && !now.Before(e.until) {
		delete(b.m, key)
		ok = false
	}
	b.mu.Unlock()
	if !ok || e.lim != lim {
		return Decision{}, false
	}
	d := e.d
	// The latest Redis time it can be now; the reported wait is therefore the shortest possible.
	d.Now = d.Now.Add(now.Sub(e.sent))
	d.RetryAfter = e.until.Sub(now)
	if d.Day != nil {
		// No request of the key is admitted anywhere while its window is full, so the day's
		// count cannot have grown; but at midnight it renews, and Redis must say so.
		if !d.Now.Before(d.Day.Reset) {
			return Decision{}, false
		}
		day := *d.Day
		d.Day = &day
	}
	return d, true
}

// add remembers Redis's rejection d of key, judged against lim, for a check sent at sent.
func (b *blockList) add(key string, lim Limits, d Decision, sent time.Time) {
	if b == nil {
		return
	}
	e := blockEntry{sent: sent, until: sent.Add(d.RetryAfter), lim: lim, d: d}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[key]; !ok && len(b.m) >= b.max {
		now := time.Now()
		if now.Before(b.nextSweep) {
			return
		}
		var earliest time.Time
		for k, o := range b.m {
			if !now.Before(o.until) {
				delete(b.m, k)
			} else if earliest.IsZero() || o.until.Before(earliest) {
				earliest = o.until
			}
		}
		if len(b.m) >= b.max {
			b.nextSweep = earliest
			return
		}
	}
	b.m[key] = e
}

// remove forgets key, after a refund freed one of its slots.
func (b *blockList) remove(key string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.m, key)
	b.mu.Unlock()
}
