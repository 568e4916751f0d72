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
// workspace opted in (coalesce.Deterministic, WorkspacePolicy.CoalesceSampled). The call runs detached from any one client, so the
// first caller leaving does not cut the others off.
//
// Billing: the shared call is paid once. Whoever finishes first with the upstream's complete
// usage pays it; the others are recorded as coalesced at zero cost, the call's list price
// credited to the coalesce lever. A caller that leaves early pays for what it used, as any
// abandoned stream does, so a flight whose first caller left is never left unpaid.
type coalescer struct {
	streams coalesce.Streams
	calls   coalesce.Group[*providers.Response]
	mu      sync.Mutex
	bills   map[string]*flightBill
}

// flightBill is shared by the callers of one coalesced call.
type flightBill struct {
	refs int
	paid atomic.Bool
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

func (c *coalescer) acquire(key string) *flightBill {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bills == nil {
		c.bills = map[string]*flightBill{}
	}
	b := c.bills[key]
	if b == nil {
		b = &flightBill{}
		c.bills[key] = b
	}
	b.refs++
	return b
}

func (c *coalescer) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.bills[key]; b != nil {
		if b.refs--; b.refs <= 0 {
			delete(c.bills, key)
		}
	}
}

// call makes the upstream call through the coalescer.
func (c *coalescer) call(ctx context.Context, ex *Exchange, tg routing.Target, pc *providers.Call) (*providers.Response, error) {
	key := coalesceKey(ex, tg, pc.Stream, pc.Body)
	ex.bill = c.acquire(key)
	ex.releaseBill = func() { c.release(key) }
	if !pc.Stream {
		resp, shared, err := c.calls.Do(ctx, key, func(ctx context.Context) (*providers.Response, error) {
			return tg.Provider.Chat(ctx, pc)
		})
		ex.Coalesced = shared
		return resp, err
	}
	sub, shared := c.streams.Join(ctx, key, func(ctx context.Context) (coalesce.Source, error) {
		resp, err := tg.Provider.Chat(ctx, pc)
		if err != nil {
			return nil, err
		}
		if resp.Stream == nil {
			return nil, &providers.Error{Status: 502, Type: "server_error", Code: "upstream_bad_response", Message: "the upstream did not stream", Class: providers.ClassRetryable}
		}
		return resp.Stream, nil
	})
	ex.Coalesced = shared
	return &providers.Response{Status: 200, Stream: &subStream{sub: sub, ctx: ctx}}, nil
}

// subStream reads a coalesced flight as a ChunkStream.
type subStream struct {
	sub *coalesce.Sub
	ctx context.Context
}

func (s *subStream) Next() ([]byte, error) { return s.sub.Next(s.ctx) }
func (s *subStream) Close() error          { s.sub.Close(); return nil }

// settleBill decides whether this caller pays the shared call (see coalescer).
func (ex *Exchange) settleBill() (pays bool) {
	if ex.bill == nil || ex.Partial || ex.UsageEstimated || !ex.UsageKnown {
		return true
	}
	return ex.bill.paid.CompareAndSwap(false, true)
}
