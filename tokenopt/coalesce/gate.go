package coalesce

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"sync"
)

// Gate coalesces identical non-stream calls at no cost until a duplicate is in flight. A
// caller with nothing identical in flight becomes the lead: it makes the upstream call itself,
// on its own goroutine and context, and reports the result with Finish. A caller that finds an
// identical lead in flight waits for that result instead of calling.
//
// The first look is a fingerprint of the scope and a few fixed windows of the body (O(1)
// whatever the body's size); only when it matches a lead are the bodies compared in full. So a
// request with no twin pays one small allocation and a map insert and delete: no hash of the
// body, no goroutine, no context. The price is that the lead's call is its own: if its caller
// leaves, the call is cancelled and the waiters make their own calls (Wait says so).
//
// The zero value is ready to use.
type Gate[T any] struct {
	once  sync.Once
	seed  maphash.Seed
	mu    sync.Mutex
	leads map[uint64]*Lead[T]
}

// Lead is one upstream call that identical requests may wait for.
type Lead[T any] struct {
	fp    uint64
	scope string
	body  []byte
	// waiters is the number of callers waiting; done is made for the first of them.
	waiters int
	done    chan struct{}
	val     T
	err     error
}

// fingerprintWindow is the size of each sampled window of the body.
const fingerprintWindow = 64

// fingerprint hashes the scope, the body's length and five windows of the body: the start,
// the quarters and the end (where a chat request's newest message usually sits).
func (g *Gate[T]) fingerprint(scope string, body []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(g.seed)
	h.WriteString(scope)
	n := len(body)
	var lenBuf [8]byte
	for i := range lenBuf {
		lenBuf[i] = byte(n >> (8 * i))
	}
	h.Write(lenBuf[:])
	if n <= 5*fingerprintWindow {
		h.Write(body)
		return h.Sum64()
	}
	for _, at := range [...]int{0, n / 4, n / 2, 3 * n / 4, n - fingerprintWindow} {
		h.Write(body[at : at+fingerprintWindow])
	}
	return h.Sum64()
}

// Enter registers a call of body within scope (workspace, target, shape). It returns the lead
// to Finish when the caller should make the call itself (lead != nil, wait == false), the lead
// to Wait for when an identical call is in flight (wait == true), or nil when the caller should
// call on its own without registering (another body with the same fingerprint is in flight).
// body must not change until Finish.
func (g *Gate[T]) Enter(scope string, body []byte) (l *Lead[T], wait bool) {
	g.once.Do(func() { g.seed = maphash.MakeSeed() })
	fp := g.fingerprint(scope, body)
	g.mu.Lock()
	defer g.mu.Unlock()
	if l := g.leads[fp]; l != nil {
		if l.scope != scope || !bytes.Equal(l.body, body) {
			return nil, false
		}
		l.waiters++
		if l.done == nil {
			l.done = make(chan struct{})
		}
		return l, true
	}
	if g.leads == nil {
		g.leads = make(map[uint64]*Lead[T])
	}
	l = &Lead[T]{fp: fp, scope: scope, body: body}
	g.leads[fp] = l
	return l, false
}

// ErrLeadGone is what a lead reports to Finish when its own caller left before the call
// ended: the waiters then make their own calls rather than inherit a cancellation.
var ErrLeadGone = errors.New("coalesce: the lead's caller left")

// Finish ends the lead's call with its result and hands it to every caller waiting.
func (g *Gate[T]) Finish(l *Lead[T], v T, err error) {
	g.mu.Lock()
	if g.leads[l.fp] == l {
		delete(g.leads, l.fp)
	}
	l.val, l.err = v, err
	done := l.done
	g.mu.Unlock()
	if done != nil {
		close(done)
	}
}

// InFlight is the number of leads in flight.
func (g *Gate[T]) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.leads)
}

// Wait returns the lead's result. ok is false when the caller must make its own call: the
// lead finished with ErrLeadGone. When ctx ends first, Wait returns ctx's error.
func (l *Lead[T]) Wait(ctx context.Context) (v T, ok bool, err error) {
	select {
	case <-l.done:
		if errors.Is(l.err, ErrLeadGone) {
			return v, false, nil
		}
		return l.val, true, l.err
	case <-ctx.Done():
		return v, true, ctx.Err()
	}
}
