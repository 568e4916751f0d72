package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"sync/atomic"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/coalesce"
)

// Coalescing: identical deterministic requests in flight at the same time (same workspace,
// upstream target, shape and bytes) share one upstream call; sampled ones only where the
// workspace opted in (coalesce.Deterministic, WorkspacePolicy.CoalesceSampled).
//
// Non-stream calls go through coalesce.Gate, which costs a fingerprint and a map entry until an
// identical call is in flight: the caller that found nothing identical makes the call itself
// and pays it; those that wait for it are recorded as coalesced at zero cost, the call's list
// price credited to the coalesce lever.
//
// Streams go through a shared flight, read by a goroutine detached from any one client, so the
// first caller leaving does not cut the others off. Whoever finishes first with the upstream's
// complete usage pays it; a caller that leaves early pays for what it used, as any abandoned
// stream does, so a flight whose first caller left is never left unpaid. Any caller may end
// up paying, so each reserves what the shared call can cost: the first through its own
// admission before the call, each later one for the bounds that admission was given (the same
// body, so the same bounds) before it relays anything.
type coalescer struct {
	streams coalesce.Streams
	gate    coalesce.Gate[*providers.Response]
	mu      sync.Mutex
	bills   map[string]*flightBill
}

// paidBill is the bill of a caller that waited for another's call: that caller pays it.
var paidBill = func() *flightBill {
	b := new(flightBill)
	b.paid.Store(true)
	return b
}()

func noRelease() {}

// flightBill is shared by the callers of one coalesced call.
type flightBill struct {
	refs int
	paid atomic.Bool
	// sent is what the call's adapter admitted (set before the call is made).
	sent atomic.Pointer[providers.Bounds]
}

func coalesceKey(ex *Exchange, tg routing.Target, stream bool, body []byte) string {
	h := sha256.New()
	h.Write([]byte(ex.WorkspaceID))
	h.Write([]byte{0})
	h.Write([]byte(tg.Provider.Name() + "/" + tg.Model))
	if stream {
		h.Write([]byte{1})
	}
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// join subscribes to the flight for key (starting it with open when there is none) and sets
// *bill to the flight's bill: a new one for a new flight, even while callers of an earlier
// flight for the same key still hold theirs (its paid flag must not pass to a fresh call).
// open runs on the flight's goroutine, and reads *bill with c.flightBill: under the lock join
// holds until *bill is set.
func (c *coalescer) join(ctx context.Context, key string, open func(ctx context.Context) (coalesce.Source, error), bill **flightBill) (*coalesce.Sub, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sub, shared := c.streams.Join(ctx, key, open)
	if c.bills == nil {
		c.bills = map[string]*flightBill{}
	}
	b := c.bills[key]
	if !shared || b == nil {
		b = &flightBill{}
		c.bills[key] = b
	}
	b.refs++
	*bill = b
	return sub, shared
}

// flightBill reads *bill under the lock join holds while it sets it.
func (c *coalescer) flightBill(bill **flightBill) *flightBill {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *bill
}

func (c *coalescer) release(key string, b *flightBill) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.refs--; b.refs <= 0 && c.bills[key] == b {
		delete(c.bills, key)
	}
}

// call makes the upstream call through the coalescer.
func (c *coalescer) call(ctx context.Context, ex *Exchange, tg routing.Target, pc *providers.Call) (*providers.Response, error) {
	if !pc.Stream {
		return c.callOnce(ctx, ex, tg, pc)
	}
	key := coalesceKey(ex, tg, pc.Stream, pc.Body)
	var bill *flightBill
	// The call is made with this caller's admission, and what it admits is kept for the
	// callers that join later.
	lead := *pc
	lead.Admit = func(b providers.Bounds) error {
		c.flightBill(&bill).sent.Store(&b)
		return providers.Admit(pc.Admit, b)
	}
	sub, shared := c.join(ctx, key, func(ctx context.Context) (coalesce.Source, error) {
		resp, err := tg.Provider.Chat(ctx, &lead)
		if err != nil {
			return nil, err
		}
		if resp.Stream == nil {
			return nil, &providers.Error{Status: 502, Type: "server_error", Code: "upstream_bad_response", Message: "the upstream did not stream", Class: providers.ClassRetryable}
		}
		return resp.Stream, nil
	}, &bill)
	ex.bill = bill
	ex.releaseBill = func() { c.release(key, bill) }
	ex.Coalesced = false
	stream := &subStream{sub: sub, ctx: ctx}
	if shared {
		// Before its first byte, a joiner reserves for the call as it was admitted: it may be
		// the one that pays (its leader may leave before the usage arrives).
		stream.first = func() error {
			if b := bill.sent.Load(); b != nil {
				if err := providers.Admit(ex.admitFor(tg), *b); err != nil {
					return err
				}
			}
			ex.Coalesced = true
			return nil
		}
	}
	return &providers.Response{Status: 200, Stream: stream}, nil
}

// callOnce makes a non-stream call, or waits for an identical one in flight.
func (c *coalescer) callOnce(ctx context.Context, ex *Exchange, tg routing.Target, pc *providers.Call) (*providers.Response, error) {
	ex.releaseBill = noRelease
	scope := ex.WorkspaceID + "\x00" + tg.Provider.Name() + "/" + tg.Model
	lead, wait := c.gate.Enter(scope, pc.Body)
	if wait {
		resp, ok, err := lead.Wait(ctx)
		if ok {
			ex.Coalesced, ex.bill = true, paidBill
			return resp, err
		}
		// The call's own caller left and took the call with it: make our own.
		return tg.Provider.Chat(ctx, pc)
	}
	if lead == nil {
		return tg.Provider.Chat(ctx, pc)
	}
	// Whatever happens (a panic included), the waiters are released; if this caller left,
	// they call on their own rather than inherit its cancellation.
	var resp *providers.Response
	err := coalesce.ErrLeadGone
	defer func() {
		if ctx.Err() != nil {
			c.gate.Finish(lead, nil, coalesce.ErrLeadGone)
			return
		}
		c.gate.Finish(lead, resp, err)
	}()
	resp, err = tg.Provider.Chat(ctx, pc)
	return resp, err
}

// subStream reads a coalesced flight as a ChunkStream.
type subStream struct {
	sub *coalesce.Sub
	ctx context.Context
	// first, when set, runs once the first event is in, before it is returned; its error
	// ends the stream before the caller relays anything.
	first func() error
}

func (s *subStream) Next() ([]byte, error) {
	ev, err := s.sub.Next(s.ctx)
	if err == nil && s.first != nil {
		first := s.first
		s.first = nil
		if err := first(); err != nil {
			return nil, err
		}
	}
	return ev, err
}
func (s *subStream) Close() error { s.sub.Close(); return nil }

// Pending passes the flight's "next event already here" through, so a coalesced stream is
// relayed in bursts like a direct one.
func (s *subStream) Pending() bool { return s.sub.Pending() }

// settleBill decides whether this caller pays the shared call (see coalescer).
func (ex *Exchange) settleBill() (pays bool) {
	if ex.bill == nil || ex.Partial || ex.UsageEstimated || !ex.UsageKnown {
		return true
	}
	return ex.bill.paid.CompareAndSwap(false, true)
}

// Interface guards
var _ providers.Pender = (*subStream)(nil)
