// Package ratelimit enforces per-minute limits (requests or tokens per key, per workspace)
// across gateway nodes without a database round trip per request.
//
// Each limit is a bucket counted in fixed UTC minutes. The shared Store holds, per bucket and
// minute, how much all nodes together have taken; a node takes a slice of what is left (a
// quarter, at least what the request needs) and spends it locally, so a request waits for the
// store only when its node's slice runs out. Slices shrink as the minute's allowance runs
// low, so little is stranded on a node that stops sending: near the limit the node asks for
// exactly what it needs. The store's counter never passes the limit, so nodes together never
// admit more than the limit in a minute, however many there are.
//
// When the store fails, the bucket falls back to counting on this node alone until the minute
// ends (each node then admits up to the limit): a rate limit protects capacity, and refusing
// every request while the database is away would be the larger harm.
//
// The package imports neither Caddy nor the rest of the repository.
package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Window is the length of a rate-limit window.
const Window = time.Minute

// Store keeps the per-minute counters the nodes share; ledger.Store implements it.
type Store interface {
	// TakeRate adds n to bucket's counter for the window starting at window if the counter
	// stays ≤ limit (limit ≤ 0: unconditionally), all or nothing, and returns the counter.
	TakeRate(ctx context.Context, bucket string, window time.Time, n, limit int64) (used int64, ok bool, err error)
	// PurgeRate deletes windows that started before t.
	PurgeRate(ctx context.Context, before time.Time) (int64, error)
}

// Options tune a Limiter. Zero values take the defaults in brackets.
type Options struct {
	// StoreTimeout bounds one store call on the request path [500ms].
	StoreTimeout time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
	// OnError is told when the store fails and a bucket falls back to local counting.
	OnError func(error)
}

// Limiter enforces per-minute limits; safe for concurrent use. Make one per process (per
// store) and Close it when done.
type Limiter struct {
	store Store
	opts  Options

	mu      sync.Mutex
	buckets map[string]*bucket

	stop chan struct{}
	done chan struct{}
}

// bucket is this node's view of one bucket in the current window.
type bucket struct {
	mu     sync.Mutex
	name   string
	window time.Time
	// avail is leased from the store and not yet spent (negative after an under-estimate
	// was settled: the next take leases the difference).
	avail int64
	// used is the store's counter after this node's last call: every node's leases.
	used int64
	// local: the store failed this window, so the node counts alone (taken vs the limit).
	local bool
	taken int64
}

// New makes a Limiter over store and starts its housekeeping (forgetting idle buckets,
// purging old windows from the store).
func New(store Store, opts Options) *Limiter {
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = 500 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Limiter{store: store, opts: opts, buckets: map[string]*bucket{}, stop: make(chan struct{}), done: make(chan struct{})}
	go l.loop()
	return l
}

// Ask is one limit a request must fit: take N from Bucket, whose limit per minute is Limit.
// Asks with Limit ≤ 0 are ignored.
type Ask struct {
	Bucket string
	Limit  int64
	N      int64
}

// Status describes a bucket after a take, for x-ratelimit-* headers and 429 messages.
type Status struct {
	Bucket    string
	Limit     int64
	Remaining int64
	// Reset is the time until the window ends and the bucket refills.
	Reset time.Duration
	// TooLarge means the ask exceeds the limit itself: it can never be admitted.
	TooLarge bool
}

// Grant is what one Take took, so a caller can settle an estimate to the actual amount.
type Grant struct {
	window time.Time
	taken  []taken
}

type taken struct {
	b *bucket
	n int64
}

// Take takes every ask, all or nothing. It returns the grant (nil when refused or when no
// ask has a limit), the status of the tightest bucket (the refusing one when refused) and
// whether the request is admitted.
func (l *Limiter) Take(ctx context.Context, asks ...Ask) (*Grant, Status, bool) {
	now := l.opts.Now()
	window := now.UTC().Truncate(Window)
	reset := window.Add(Window).Sub(now)
	var g *Grant
	var tightest Status
	for _, a := range asks {
		if a.Limit <= 0 {
			continue
		}
		b := l.bucket(a.Bucket)
		st, ok := l.take(ctx, b, window, a.Limit, a.N)
		st.Bucket, st.Limit, st.Reset = a.Bucket, a.Limit, reset
		if !ok {
			g.Settle(0) // give back what the earlier asks took
			return nil, st, false
		}
		if g == nil {
			g = &Grant{window: window, taken: make([]taken, 0, len(asks))}
			tightest = st
		} else if st.Remaining < tightest.Remaining {
			tightest = st
		}
		g.taken = append(g.taken, taken{b, a.N})
	}
	return g, tightest, true
}

// Settle replaces the amounts taken with actual (per bucket of the grant): less gives the
// difference back, more spends it (a later take leases it). Only while the window lasts;
// a nil Grant ignores it.
func (g *Grant) Settle(actual int64) {
	if g == nil {
		return
	}
	for i := range g.taken {
		b, delta := g.taken[i].b, actual-g.taken[i].n
		g.taken[i].n = actual
		b.mu.Lock()
		if b.window.Equal(g.window) {
			b.avail -= delta
			b.taken += delta
		}
		b.mu.Unlock()
	}
}

func (l *Limiter) bucket(name string) *bucket {
	l.mu.Lock()
	b, ok := l.buckets[name]
	if !ok {
		b = &bucket{name: name}
		l.buckets[name] = b
	}
	l.mu.Unlock()
	return b
}

func (l *Limiter) take(ctx context.Context, b *bucket, window time.Time, limit, n int64) (Status, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.window.Equal(window) {
		b.window, b.avail, b.used, b.local, b.taken = window, 0, 0, false, 0
	}
	if n > limit {
		return Status{Remaining: b.remaining(limit), TooLarge: true}, false
	}
	if b.avail >= n {
		b.avail -= n
		b.taken += n
		return Status{Remaining: b.remaining(limit)}, true
	}
	if b.local {
		return b.takeLocal(limit, n)
	}
	need := n - b.avail
	left := limit - b.used
	if need > left { // the store's counter only grows within a window: no need to ask
		return Status{Remaining: b.remaining(limit)}, false
	}
	want := min(left, max(need, (left+3)/4))
	for {
		cctx, cancel := context.WithTimeout(ctx, l.opts.StoreTimeout)
		used, ok, err := l.store.TakeRate(cctx, b.name, window, want, limit)
		cancel()
		if err != nil {
			if ctx.Err() != nil { // the caller left: nothing is wrong with the store
				return Status{Remaining: b.remaining(limit)}, false
			}
			if l.opts.OnError != nil {
				l.opts.OnError(fmt.Errorf("ratelimit: bucket %s: counting on this node until the minute ends: %w", b.name, err))
			}
			b.local = true
			return b.takeLocal(limit, n)
		}
		b.used = max(b.used, used)
		if ok {
			b.avail += want - n
			b.taken += n
			return Status{Remaining: b.remaining(limit)}, true
		}
		if want == need || need > limit-b.used {
			return Status{Remaining: b.remaining(limit)}, false
		}
		want = need // others took more than we knew: ask for exactly what this request needs
	}
}

func (b *bucket) takeLocal(limit, n int64) (Status, bool) {
	if b.taken+n > limit {
		return Status{Remaining: max(0, limit-b.taken)}, false
	}
	b.taken += n
	return Status{Remaining: limit - b.taken}, true
}

// remaining is what is left for anyone this window, as far as this node knows: the store's
// unleased allowance plus this node's unspent slice.
func (b *bucket) remaining(limit int64) int64 {
	if b.local {
		return max(0, limit-b.taken)
	}
	return max(0, limit-b.used+max(0, b.avail))
}

// Close stops the housekeeping.
func (l *Limiter) Close() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// loop forgets buckets whose window has passed (memory stays bounded by the buckets used in
// the last minute or two) and purges old windows from the store.
func (l *Limiter) loop() {
	defer close(l.done)
	t := time.NewTicker(Window / 2)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.sweep()
	}
}

func (l *Limiter) sweep() {
	current := l.opts.Now().UTC().Truncate(Window)
	l.mu.Lock()
	for name, b := range l.buckets {
		b.mu.Lock()
		stale := b.window.Before(current)
		b.mu.Unlock()
		if stale {
			delete(l.buckets, name)
		}
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.store.PurgeRate(ctx, current.Add(-2*Window)); err != nil && l.opts.OnError != nil {
		l.opts.OnError(fmt.Errorf("ratelimit: purging old windows: %w", err))
	}
}
