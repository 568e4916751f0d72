package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memStore is the store contract in memory, counting calls.
type memStore struct {
	mu    sync.Mutex
	used  map[string]int64
	calls atomic.Int64
	fail  atomic.Bool
}

func newMemStore() *memStore { return &memStore{used: map[string]int64{}} }

func (m *memStore) TakeRate(_ context.Context, bucket string, window time.Time, n, limit int64) (int64, bool, error) {
	m.calls.Add(1)
	if m.fail.Load() {
		return 0, false, errors.New("store down")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := bucket + window.String()
	if limit > 0 && m.used[k]+n > limit {
		return m.used[k], false, nil
	}
	m.used[k] += n
	return m.used[k], true, nil
}

func (m *memStore) PurgeRate(context.Context, time.Time) (int64, error) { return 0, nil }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newLimiter(t *testing.T, s Store, c *clock) *Limiter {
	l := New(s, Options{Now: c.now})
	t.Cleanup(l.Close)
	return l
}

func TestLimitWithinOneNode(t *testing.T) {
	s := newMemStore()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 10, 0, time.UTC)}
	l := newLimiter(t, s, c)
	admitted := 0
	var last Status
	for range 15 {
		_, st, ok := l.Take(context.Background(), Ask{Bucket: "k", Limit: 10, N: 1})
		if ok {
			admitted++
			if st.Remaining != int64(10-admitted) {
				t.Fatalf("remaining after %d = %d", admitted, st.Remaining)
			}
		}
		last = st
	}
	if admitted != 10 {
		t.Fatalf("admitted %d of a limit of 10", admitted)
	}
	if last.Remaining != 0 || last.Reset != 50*time.Second || last.Limit != 10 {
		t.Fatalf("refusal status %+v", last)
	}
	if n := s.calls.Load(); n >= 10 {
		t.Fatalf("%d store calls for 10 admitted requests: slices should spare most", n)
	}
	// The next minute refills.
	c.add(50 * time.Second)
	if _, st, ok := l.Take(context.Background(), Ask{Bucket: "k", Limit: 10, N: 1}); !ok || st.Remaining != 9 || st.Reset != time.Minute {
		t.Fatalf("next window: %v %+v", ok, st)
	}
}

func TestNodesShareOneLimit(t *testing.T) {
	s := newMemStore()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	a, b := newLimiter(t, s, c), newLimiter(t, s, c)
	admitted := 0
	for i := range 40 { // alternate, as a load balancer would
		node := a
		if i%2 == 1 {
			node = b
		}
		if _, _, ok := node.Take(context.Background(), Ask{Bucket: "k", Limit: 17, N: 1}); ok {
			admitted++
		}
	}
	if admitted != 17 {
		t.Fatalf("two nodes admitted %d for a limit of 17", admitted)
	}
}

func TestConcurrentNodesNeverExceedTheLimit(t *testing.T) {
	s := newMemStore()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	nodes := []*Limiter{newLimiter(t, s, c), newLimiter(t, s, c), newLimiter(t, s, c)}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, _, ok := nodes[i%3].Take(context.Background(), Ask{Bucket: "k", Limit: 250, N: 1}); ok {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// 600 asks, a limit of 250: never more; slices stranded on a node leave at most a few out.
	if got := admitted.Load(); got > 250 || got < 240 {
		t.Fatalf("admitted %d for a limit of 250", got)
	}
}

func TestTokensSettleToActual(t *testing.T) {
	s := newMemStore()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	l := newLimiter(t, s, c)
	ask := Ask{Bucket: "tok", Limit: 1000, N: 400}
	g, _, ok := l.Take(context.Background(), ask)
	if !ok {
		t.Fatal("first take refused")
	}
	g.Settle(100) // the estimate was high: 300 come back
	if _, st, ok := l.Take(context.Background(), Ask{Bucket: "tok", Limit: 1000, N: 900}); !ok || st.Remaining != 0 {
		t.Fatalf("after giving back: %v %+v", ok, st)
	}
	// An under-estimate is charged: the bucket is over, so even one token is refused.
	c.add(time.Minute)
	g, _, _ = l.Take(context.Background(), Ask{Bucket: "tok", Limit: 1000, N: 10})
	g.Settle(995)
	if _, _, ok := l.Take(context.Background(), Ask{Bucket: "tok", Limit: 1000, N: 10}); ok {
		t.Fatal("a take after an over-limit settle was admitted")
	}
	// A settle after the window ended changes nothing in the new one.
	c.add(time.Minute)
	g, _, _ = l.Take(context.Background(), Ask{Bucket: "tok", Limit: 1000, N: 10})
	c.add(time.Minute)
	g.Settle(1000)
	if _, st, ok := l.Take(context.Background(), Ask{Bucket: "tok", Limit: 1000, N: 10}); !ok || st.Remaining != 990 {
		t.Fatalf("stale settle leaked into the next window: %v %+v", ok, st)
	}
}

func TestAllOrNothing(t *testing.T) {
	s := newMemStore()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	l := newLimiter(t, s, c)
	// The workspace allows 2, the key 5: the key's count must not drop for refused requests.
	for i := range 4 {
		_, st, ok := l.Take(context.Background(), Ask{Bucket: "key", Limit: 5, N: 1}, Ask{Bucket: "ws", Limit: 2, N: 1})
		if ok != (i < 2) {
			t.Fatalf("take %d: %v", i, ok)
		}
		if !ok && st.Bucket != "ws" {
			t.Fatalf("refused by %q, want ws", st.Bucket)
		}
	}
	if _, st, ok := l.Take(context.Background(), Ask{Bucket: "key", Limit: 5, N: 1}); !ok || st.Remaining != 2 {
		t.Fatalf("the key bucket after refusals: %v %+v (want 2 left: 5 - 2 admitted - this one)", ok, st)
	}
	if _, st, ok := l.Take(context.Background(), Ask{Bucket: "key", Limit: 5, N: 6}); ok || !st.TooLarge {
		t.Fatalf("an ask above the limit: %v %+v", ok, st)
	}
	if g, _, ok := l.Take(context.Background(), Ask{Bucket: "none", Limit: 0, N: 100}); !ok || g != nil {
		t.Fatal("an ask without a limit must pass untracked")
	}
}

func TestStoreFailureCountsLocally(t *testing.T) {
	s := newMemStore()
	s.fail.Store(true)
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	var errs atomic.Int64
	l := New(s, Options{Now: c.now, OnError: func(error) { errs.Add(1) }})
	t.Cleanup(l.Close)
	admitted := 0
	for range 8 {
		if _, _, ok := l.Take(context.Background(), Ask{Bucket: "k", Limit: 5, N: 1}); ok {
			admitted++
		}
	}
	if admitted != 5 || errs.Load() != 1 || s.calls.Load() != 1 {
		t.Fatalf("store down: admitted %d, %d errors, %d store calls", admitted, errs.Load(), s.calls.Load())
	}
	// Next minute, the store is back and used again.
	s.fail.Store(false)
	c.add(time.Minute)
	if _, _, ok := l.Take(context.Background(), Ask{Bucket: "k", Limit: 5, N: 1}); !ok || s.calls.Load() != 2 {
		t.Fatalf("store back: %v, %d calls", ok, s.calls.Load())
	}
}

func TestSweepForgetsOldBuckets(t *testing.T) {
	s := newMemStore()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	l := newLimiter(t, s, c)
	l.Take(context.Background(), Ask{Bucket: "a", Limit: 5, N: 1})
	c.add(time.Minute)
	l.Take(context.Background(), Ask{Bucket: "b", Limit: 5, N: 1})
	l.sweep()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.buckets["a"]; ok || len(l.buckets) != 1 {
		t.Fatalf("buckets after sweep: %v", l.buckets)
	}
}

// BenchmarkTake is one request's take from a bucket whose node holds a slice of the minute:
// the common case, with no store call.
func BenchmarkTake(b *testing.B) {
	s := newMemStore()
	l := New(s, Options{})
	b.Cleanup(l.Close)
	ask := Ask{Bucket: "key:k:rpm", Limit: 1 << 40, N: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := l.Take(context.Background(), ask); !ok {
			b.Fatal("refused")
		}
	}
	b.ReportMetric(float64(s.calls.Load())/float64(b.N), "store-calls/op")
}
