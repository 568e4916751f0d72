package handlers

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// KeyCache answers key lookups from memory so authentication costs no database round trip on
// the hot path. Entries live briefly (positiveTTL) as a backstop; revocations evict them at
// once on the node that revoked and through Store.WatchRevocations on every other node.
type KeyCache struct {
	store ledger.Store
	cache *ristretto.Cache[string, *cachedKey]
	now   func() time.Time
	// workspaces caches workspaces' rate limits (keylimits.go).
	workspaces *ristretto.Cache[string, *cachedWorkspace]
}

type cachedWorkspace struct {
	limits     ledger.WorkspaceLimits
	fetched    time.Time
	refreshing atomic.Bool
}

type cachedKey struct {
	key     ledger.Key
	err     error // a negative entry: ledger.ErrNotFound
	revoked atomic.Bool
}

const (
	positiveTTL = 5 * time.Minute
	negativeTTL = 2 * time.Second
	// workspaceLimitsTTL is how stale a workspace's rate limits may be before a background
	// refresh: how long an owner's change takes to reach every node.
	workspaceLimitsTTL = 5 * time.Second
)

// NewKeyCache makes a cache over store.
func NewKeyCache(store ledger.Store) *KeyCache {
	c, err := ristretto.NewCache(&ristretto.Config[string, *cachedKey]{
		NumCounters: 1 << 17,
		MaxCost:     1 << 14, // entries, each cost 1
		BufferItems: 64,
	})
	if err != nil {
		panic("keycache: " + err.Error()) // only on an invalid static config
	}
	ws, err := ristretto.NewCache(&ristretto.Config[string, *cachedWorkspace]{
		NumCounters: 1 << 15,
		MaxCost:     1 << 12,
		BufferItems: 64,
	})
	if err != nil {
		panic("keycache: " + err.Error())
	}
	return &KeyCache{store: store, cache: c, now: time.Now, workspaces: ws}
}

// Lookup resolves a secret to its key. It returns ledger.ErrNotFound, ErrRevoked or
// ErrExpired for keys that must not be used.
func (c *KeyCache) Lookup(ctx context.Context, secret string) (ledger.Key, error) {
	hash := ledger.HashKey(secret)
	id := string(hash[:])
	if e, ok := c.cache.Get(id); ok {
		if e.err != nil {
			return ledger.Key{}, e.err
		}
		if e.revoked.Load() {
			return e.key, ledger.ErrRevoked
		}
		return e.key, e.key.Check(c.now())
	}
	key, err := c.store.LookupKey(ctx, hash)
	switch {
	case err == nil:
		c.cache.SetWithTTL(id, &cachedKey{key: key}, 1, positiveTTL)
		return key, key.Check(c.now())
	case errors.Is(err, ledger.ErrNotFound):
		c.cache.SetWithTTL(id, &cachedKey{err: ledger.ErrNotFound}, 1, negativeTTL)
		return ledger.Key{}, err
	case errors.Is(err, ledger.ErrRevoked), errors.Is(err, ledger.ErrExpired):
		return key, err
	default:
		return ledger.Key{}, err
	}
}

// Invalidate forgets a key, marking any copy a request already holds as revoked.
func (c *KeyCache) Invalidate(hash [32]byte) {
	id := string(hash[:])
	if e, ok := c.cache.Get(id); ok {
		e.revoked.Store(true)
	}
	c.cache.Del(id)
}

// Purge forgets every key (after a gap in revocation notices).
func (c *KeyCache) Purge() { c.cache.Clear() }

// Close stops the cache's goroutines.
func (c *KeyCache) Close() { c.cache.Close(); c.workspaces.Close() }
