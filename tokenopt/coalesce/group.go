// Package coalesce runs identical in-flight requests once: the first request for a key starts
// the upstream call, later identical ones wait for it, and everyone gets the same answer —
// non-stream (Group.Do) and stream (Streams.Join) alike.
//
// Cancellation. The upstream call runs on a context detached from the request that started it
// (values kept, cancellation not): the leader leaving does not cancel the others. The call is
// cancelled only when every waiter has gone.
//
// Errors are shared with the waiters of that call but never remembered: the call leaves the
// group when it ends, so the next request goes upstream again.
//
// Accounting policy. Exactly one upstream call is made and billed; the caller that started it
// (shared=false) owns its usage, even when it leaves early (the gateway should record the call's
// usage from the flight's end, not from the leader's handler). Followers (shared=true) record
// zero upstream cost and the call's cost as coalescing savings.
package coalesce

import (
	"context"
	"fmt"
	"sync"
)

// Group coalesces non-stream calls returning T. The zero value is ready to use.
type Group[T any] struct {
	mu    sync.Mutex
	calls map[string]*call[T]
}

type call[T any] struct {
	done    chan struct{}
	val     T
	err     error
	waiters int
	cancel  context.CancelFunc
}

// Do returns the result of fn for key, running fn at most once for all concurrent callers with
// the same key. fn gets a context detached from ctx (ctx's values, not its cancellation), which
// is cancelled when every caller waiting for it has gone. A caller whose ctx ends stops waiting
// and gets ctx's error. shared is false for the caller that started the call and true for the
// others.
func (g *Group[T]) Do(ctx context.Context, key string, fn func(ctx context.Context) (T, error)) (v T, shared bool, err error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = make(map[string]*call[T])
	}
	c, shared := g.calls[key]
	if shared {
		c.waiters++
	} else {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[T]{done: make(chan struct{}), waiters: 1, cancel: cancel}
		g.calls[key] = c
		go g.run(cctx, key, c, fn)
	}
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.val, shared, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel()
			if g.calls[key] == c {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		var zero T
		return zero, shared, ctx.Err()
	}
}

func (g *Group[T]) run(ctx context.Context, key string, c *call[T], fn func(context.Context) (T, error)) {
	defer func() {
		if r := recover(); r != nil {
			c.err = fmt.Errorf("coalesce: call panicked: %v", r)
		}
		g.mu.Lock()
		if g.calls[key] == c {
			delete(g.calls, key)
		}
		g.mu.Unlock()
		c.cancel()
		close(c.done)
	}()
	c.val, c.err = fn(ctx)
}

// InFlight is the number of calls running.
func (g *Group[T]) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls)
}
