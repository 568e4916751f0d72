// Package respcache is the gateway's exact response cache: a finished answer is stored under
// (workspace, canonical request) and replayed, as JSON or as an SSE stream, to a later identical
// request. It is bounded by bytes (ristretto, cost = entry size) and by a TTL.
//
// Policy. Only requests for a deterministic answer (temperature 0, n absent or 1, no
// sampling-only parameter such as top_p below 1 or top_k) are cacheable by default: a sampled
// request is an independent draw, and replaying one changes what the caller asked for. Sampled
// requests need Policy.AllowSampled, an explicit opt-in by the operator. Errors and
// unfinished answers (cut streams, missing finish_reason) are never stored.
//
// Replay. Entry.Body returns the stored chat.completion verbatim: the original id, created and
// usage are kept, so a client sees exactly the answer it would have got the first time. The
// caller marks the reply as replayed with the response header "x-btl-cache: hit" (HeaderHit),
// and bills it at zero upstream cost; Entry.Usage is the original call's usage, which is what the
// hit saved.
package respcache

import (
	"crypto/subtle"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// HeaderHit is the value of x-btl-cache for an answer served from this cache.
const HeaderHit = "hit"

// entryOverhead approximates the fixed memory of an entry (struct, ristretto item, key).
const entryOverhead = 256

// Cache is the exact response cache. It is safe for concurrent use.
type Cache struct {
	rc     *ristretto.Cache[string, *Entry]
	ttl    time.Duration
	policy Policy
	life   *lifetime
}

// lifetime guards the ristretto cache against Close while a request still uses it: after a
// config reload the old handler is cleaned up while its last requests may still store their
// answers, and ristretto panics on a Set racing its Close. Shared by WithPolicy views.
type lifetime struct {
	mu     sync.RWMutex
	closed bool
}

// Entry is one cached answer. It is immutable and shared by all readers.
type Entry struct {
	key    Key
	body   []byte
	usage  providers.Usage
	stored time.Time
	c      *completion
}

// New makes a cache holding at most maxBytes of entries, each kept for ttl (0: until evicted).
func New(maxBytes int64, ttl time.Duration) *Cache {
	if maxBytes < 1<<10 {
		maxBytes = 1 << 10
	}
	// Ristretto wants ~10 counters per item it may hold; assume 2 KiB answers on average.
	counters := min(max(maxBytes/2048*10, 10_000), 50_000_000)
	rc, err := ristretto.NewCache(&ristretto.Config[string, *Entry]{
		NumCounters:        counters,
		MaxCost:            maxBytes,
		BufferItems:        64,
		Metrics:            true,
		IgnoreInternalCost: true,
	})
	if err != nil { // only for invalid config, which the bounds above rule out
		panic(err)
	}
	return &Cache{rc: rc, ttl: ttl, life: new(lifetime)}
}

// WithPolicy returns a view of the cache that computes keys under p (for a route or request
// that opted in to caching sampled answers). Both share storage.
func (c *Cache) WithPolicy(p Policy) *Cache {
	cc := *c
	cc.policy = p
	return &cc
}

// Key is MakeKey under the cache's policy.
func (c *Cache) Key(workspace string, body []byte) (Key, bool) {
	return MakeKey(workspace, body, c.policy)
}

// AllowsSampled reports whether the cache's policy replays sampled requests.
func (c *Cache) AllowsSampled() bool { return c.policy.AllowSampled }

// Get returns the live entry for k.
func (c *Cache) Get(k Key) (*Entry, bool) {
	c.life.mu.RLock()
	defer c.life.mu.RUnlock()
	if c.life.closed {
		return nil, false
	}
	e, ok := c.rc.Get(string(k[:]))
	if !ok || e == nil || subtle.ConstantTimeCompare(e.key[:], k[:]) != 1 {
		return nil, false
	}
	if c.ttl > 0 && time.Since(e.stored) > c.ttl { // ristretto expires lazily, at a tick
		return nil, false
	}
	return e, true
}

// Put stores a finished chat.completion (a non-stream body, or an Assembler's result) with the
// usage the call was billed. It reports whether the answer was stored: a body that is not a
// finished chat.completion is refused, and the cache's admission policy may refuse an entry or
// drop it under contention (a cache, not a store).
func (c *Cache) Put(k Key, completionJSON []byte, usage providers.Usage) bool {
	parsed, err := parseCompletion(completionJSON)
	if err != nil {
		return false
	}
	e := &Entry{key: k, body: append([]byte(nil), completionJSON...), usage: usage, stored: time.Now(), c: parsed}
	c.life.mu.RLock()
	defer c.life.mu.RUnlock()
	if c.life.closed {
		return false
	}
	ok := c.rc.SetWithTTL(string(k[:]), e, e.cost(), c.ttl)
	c.rc.Wait()
	return ok
}

// Delete drops k.
func (c *Cache) Delete(k Key) {
	c.life.mu.RLock()
	defer c.life.mu.RUnlock()
	if !c.life.closed {
		c.rc.Del(string(k[:]))
	}
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	Hits, Misses        uint64
	BytesAdded          uint64
	BytesEvicted        uint64
	Evicted, SetsDenied uint64
}

// Stats returns the cache's counters. Bytes held = BytesAdded - BytesEvicted (approximately:
// updates and expiries are not all counted as evictions).
func (c *Cache) Stats() Stats {
	m := c.rc.Metrics
	return Stats{Hits: m.Hits(), Misses: m.Misses(), BytesAdded: m.CostAdded(), BytesEvicted: m.CostEvicted(),
		Evicted: m.KeysEvicted(), SetsDenied: m.SetsRejected() + m.SetsDropped()}
}

// Close stops the cache's goroutines and drops its contents. It waits for calls in progress;
// later calls miss and store nothing.
func (c *Cache) Close() {
	c.life.mu.Lock()
	defer c.life.mu.Unlock()
	if !c.life.closed {
		c.life.closed = true
		c.rc.Close()
	}
}

func (e *Entry) cost() int64 { return int64(len(e.body)) + e.c.size() + entryOverhead }

// Body is the stored chat.completion JSON, verbatim (original id and usage). Do not modify it.
func (e *Entry) Body() []byte { return e.body }

// Usage is the usage of the upstream call that produced the answer: what a hit saves.
func (e *Entry) Usage() providers.Usage { return e.usage }

// StoredAt is when the answer was stored (for an Age header).
func (e *Entry) StoredAt() time.Time { return e.stored }

// Size is the entry's cost in the byte bound.
func (e *Entry) Size() int64 { return e.cost() }
