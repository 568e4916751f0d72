package coalesce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// settle fails the test if goroutines started during it are still running after a grace period.
func settle(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), base, buf[:n])
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (g *Group[T]) waiters(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		return c.waiters
	}
	return 0
}

func TestDoCoalesces(t *testing.T) {
	settle(t)
	var g Group[string]
	var calls atomic.Int32
	release := make(chan struct{})
	const n = 50
	var wg sync.WaitGroup
	results := make([]string, n)
	shared := make([]bool, n)
	for i := range n {
		wg.Go(func() {
			v, s, err := g.Do(context.Background(), "k", func(ctx context.Context) (string, error) {
				calls.Add(1)
				<-release
				return "answer", nil
			})
			if err != nil {
				t.Error(err)
			}
			results[i], shared[i] = v, s
		})
	}
	waitFor(t, "50 waiters", func() bool { return g.waiters("k") == n })
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d upstream calls, want 1", calls.Load())
	}
	leaders := 0
	for i := range n {
		if results[i] != "answer" {
			t.Fatalf("result %d = %q", i, results[i])
		}
		if !shared[i] {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders", leaders)
	}
	if g.InFlight() != 0 {
		t.Fatal("call still listed")
	}
}

func TestDoLeaderLeavesOthersGetAnswer(t *testing.T) {
	settle(t)
	var g Group[int]
	release := make(chan struct{})
	var upstreamErr error
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderDone := make(chan error)
	go func() {
		_, _, err := g.Do(leaderCtx, "k", func(ctx context.Context) (int, error) {
			<-release
			upstreamErr = ctx.Err()
			return 42, upstreamErr
		})
		leaderDone <- err
	}()
	waitFor(t, "leader", func() bool { return g.waiters("k") == 1 })
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			v, shared, err := g.Do(context.Background(), "k", func(context.Context) (int, error) { return 0, errors.New("must not run") })
			if v != 42 || !shared || err != nil {
				t.Errorf("follower got %d %v %v", v, shared, err)
			}
		})
	}
	waitFor(t, "followers", func() bool { return g.waiters("k") == 4 })
	cancelLeader()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader err %v", err)
	}
	close(release)
	wg.Wait()
	if upstreamErr != nil {
		t.Fatal("upstream call saw the leader's cancellation")
	}
}

func TestDoAllLeaveCancelsUpstream(t *testing.T) {
	settle(t)
	var g Group[int]
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = g.Do(ctx, "k", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			close(cancelled)
			return 0, ctx.Err()
		})
	}()
	waitFor(t, "leader", func() bool { return g.waiters("k") == 1 })
	cancel()
	<-done
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("upstream not cancelled when every waiter left")
	}
}

func TestDoErrorsFanOutAndAreNotRemembered(t *testing.T) {
	settle(t)
	var g Group[int]
	boom := errors.New("boom")
	release := make(chan struct{})
	var calls atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			_, _, err := g.Do(context.Background(), "k", func(context.Context) (int, error) {
				calls.Add(1)
				<-release
				return 0, boom
			})
			if !errors.Is(err, boom) {
				t.Errorf("err %v", err)
			}
		})
	}
	waitFor(t, "waiters", func() bool { return g.waiters("k") == 10 })
	close(release)
	wg.Wait()
	v, _, err := g.Do(context.Background(), "k", func(context.Context) (int, error) { calls.Add(1); return 7, nil })
	if v != 7 || err != nil || calls.Load() != 2 {
		t.Fatalf("retry after error: %d %v calls=%d", v, err, calls.Load())
	}
	_, _, err = g.Do(context.Background(), "p", func(context.Context) (int, error) { panic("kaboom") })
	if err == nil {
		t.Fatal("panic not reported")
	}
}

// --- streams ---

// upstream is a controllable Source: the test feeds events, then ends it.
type upstream struct {
	ctx    context.Context
	events chan []byte
	end    error
	closed atomic.Bool
}

func (u *upstream) Next() ([]byte, error) {
	select {
	case ev, ok := <-u.events:
		if !ok {
			if u.end != nil {
				return nil, u.end
			}
			return nil, io.EOF
		}
		return ev, nil
	case <-u.ctx.Done():
		return nil, u.ctx.Err()
	}
}

func (u *upstream) Close() error { u.closed.Store(true); return nil }

type opener struct {
	mu    sync.Mutex
	opens int
	ups   []*upstream
	end   error
}

func (o *opener) open(ctx context.Context) (Source, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	u := &upstream{ctx: ctx, events: make(chan []byte), end: o.end}
	o.opens++
	o.ups = append(o.ups, u)
	return u, nil
}

func (o *opener) up(t *testing.T, i int) *upstream {
	t.Helper()
	waitFor(t, "upstream open", func() bool { o.mu.Lock(); defer o.mu.Unlock(); return len(o.ups) > i })
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ups[i]
}

func ev(i int) []byte {
	return fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, bytes.Repeat([]byte("x"), 20))
}

func readAll(ctx context.Context, s *Sub) ([][]byte, error) {
	defer s.Close()
	var out [][]byte
	for {
		e, err := s.Next(ctx)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func want(n int) [][]byte {
	var w [][]byte
	for i := range n {
		w = append(w, ev(i))
	}
	return w
}

func equal(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func subs(f *Flight) int { _, _, n := f.Stats(); return n }

func (s *Streams) flight(key string) *Flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flights[key]
}

func TestStreamsFiftyClientsOneUpstream(t *testing.T) {
	settle(t)
	var s Streams
	o := &opener{}
	const n = 50
	var wg sync.WaitGroup
	got := make([][][]byte, n)
	leaders := atomic.Int32{}
	for i := range n {
		wg.Go(func() {
			sub, shared := s.Join(context.Background(), "k", o.open)
			if !shared {
				leaders.Add(1)
			}
			var err error
			if got[i], err = readAll(context.Background(), sub); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "50 subscribers", func() bool { f := s.flight("k"); return f != nil && subs(f) == n })
	u := o.up(t, 0)
	for i := range 20 {
		u.events <- ev(i)
	}
	close(u.events)
	wg.Wait()
	if o.opens != 1 || leaders.Load() != 1 {
		t.Fatalf("opens=%d leaders=%d", o.opens, leaders.Load())
	}
	for i := range n {
		if !equal(got[i], want(20)) {
			t.Fatalf("client %d got %d events", i, len(got[i]))
		}
	}
	waitFor(t, "source closed", u.closed.Load)
	if s.InFlight() != 0 {
		t.Fatal("finished flight still listed")
	}
}

func TestStreamsFollowersGetFullAnswerWhenLeaderDisconnects(t *testing.T) {
	settle(t)
	var s Streams
	o := &opener{}
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leader, shared := s.Join(leaderCtx, "k", o.open)
	if shared {
		t.Fatal("first caller is not the leader")
	}
	u := o.up(t, 0)
	var wg sync.WaitGroup
	got := make([][][]byte, 5)
	for i := range 5 {
		sub, shared := s.Join(context.Background(), "k", o.open)
		if !shared {
			t.Fatal("follower started its own flight")
		}
		wg.Go(func() {
			var err error
			if got[i], err = readAll(context.Background(), sub); err != nil {
				t.Error(err)
			}
		})
	}
	for i := range 3 {
		u.events <- ev(i)
		if e, err := leader.Next(leaderCtx); err != nil || !bytes.Equal(e, ev(i)) {
			t.Fatalf("leader read %s %v", e, err)
		}
	}
	cancelLeader() // the leader's client goes away mid-stream
	// Its subscription ends either way: Next sees the context, or the context's AfterFunc
	// closed the subscription first.
	if _, err := leader.Next(leaderCtx); !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
		t.Fatalf("leader after cancel: %v", err)
	}
	waitFor(t, "leader left", func() bool { return subs(s.flight("k")) == 5 })
	if u.ctx.Err() != nil {
		t.Fatal("upstream cancelled with followers waiting")
	}
	for i := 3; i < 10; i++ {
		u.events <- ev(i)
	}
	close(u.events)
	wg.Wait()
	for i := range got {
		if !equal(got[i], want(10)) {
			t.Fatalf("follower %d got %d/10 events", i, len(got[i]))
		}
	}
}

func TestStreamsLateFollowerReplaysFromStart(t *testing.T) {
	settle(t)
	var s Streams
	o := &opener{}
	leader, _ := s.Join(context.Background(), "k", o.open)
	u := o.up(t, 0)
	for i := range 4 {
		u.events <- ev(i)
	}
	waitFor(t, "published", func() bool { p, _, _ := s.flight("k").Stats(); return p == int64(4*len(ev(0))) })
	late, shared := s.Join(context.Background(), "k", o.open)
	if !shared {
		t.Fatal("late follower did not join")
	}
	done := make(chan [][]byte)
	go func() { g, _ := readAll(context.Background(), late); done <- g }()
	go func() {
		for i := 4; i < 8; i++ {
			u.events <- ev(i)
		}
		close(u.events)
	}()
	g, err := readAll(context.Background(), leader)
	if err != nil || !equal(g, want(8)) {
		t.Fatalf("leader %d events, %v", len(g), err)
	}
	if g := <-done; !equal(g, want(8)) {
		t.Fatalf("late follower got %d/8 events", len(g))
	}
}

func TestStreamsErrorFansOut(t *testing.T) {
	settle(t)
	var s Streams
	boom := errors.New("upstream 529")
	o := &opener{end: boom}
	var wg sync.WaitGroup
	for range 4 {
		sub, _ := s.Join(context.Background(), "k", o.open)
		wg.Go(func() {
			g, err := readAll(context.Background(), sub)
			if !errors.Is(err, boom) || !equal(g, want(2)) {
				t.Errorf("got %d events, err %v", len(g), err)
			}
		})
	}
	u := o.up(t, 0)
	u.events <- ev(0)
	u.events <- ev(1)
	close(u.events)
	wg.Wait()
	// not remembered: the next caller goes upstream again
	sub, shared := s.Join(context.Background(), "k", o.open)
	if shared {
		t.Fatal("joined a failed flight")
	}
	close(o.up(t, 1).events)
	o.end = nil
	_, _ = readAll(context.Background(), sub)

	// open failing fans out too
	var s2 Streams
	sub2, _ := s2.Join(context.Background(), "k", func(context.Context) (Source, error) { return nil, boom })
	if _, err := sub2.Next(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("open error: %v", err)
	}
	sub2.Close()
}

func TestStreamsAllLeaveCancelsUpstream(t *testing.T) {
	settle(t)
	var s Streams
	o := &opener{}
	ctx1, c1 := context.WithCancel(context.Background())
	ctx2, c2 := context.WithCancel(context.Background())
	_, _ = s.Join(ctx1, "k", o.open)
	_, _ = s.Join(ctx2, "k", o.open)
	u := o.up(t, 0)
	u.events <- ev(0)
	c1()
	time.Sleep(10 * time.Millisecond)
	if u.ctx.Err() != nil {
		t.Fatal("cancelled with a subscriber left")
	}
	c2()
	waitFor(t, "upstream cancelled", func() bool { return u.ctx.Err() != nil })
	waitFor(t, "source closed", u.closed.Load)
	if s.InFlight() != 0 {
		t.Fatal("abandoned flight still listed")
	}
}

func TestStreamsBufferLimit(t *testing.T) {
	settle(t)
	evLen := int64(len(ev(0)))
	s := Streams{MaxBuffer: 5 * evLen}
	o := &opener{}
	first, _ := s.Join(context.Background(), "k", o.open)
	slow, _ := s.Join(context.Background(), "k", o.open)
	u := o.up(t, 0)
	firstDone := make(chan [][]byte)
	go func() { g, _ := readAll(context.Background(), first); firstDone <- g }()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := range 40 {
			u.events <- ev(i)
		}
		close(u.events)
	}()
	// Past the limit the flight stops taking joiners: a new caller goes upstream itself.
	waitFor(t, "limit passed", func() bool { return s.InFlight() == 0 })
	other, shared := s.Join(context.Background(), "k", o.open)
	if shared {
		t.Fatal("joined a flight past its buffer limit")
	}
	close(o.up(t, 1).events)
	_, _ = readAll(context.Background(), other)

	// The slow subscriber holds the upstream back: memory stays bounded.
	time.Sleep(20 * time.Millisecond)
	if _, retained, _ := slow.f.Stats(); retained > 5*evLen {
		t.Fatalf("retained %d bytes, bound %d", retained, 6*evLen)
	}
	g, err := readAll(context.Background(), slow)
	if err != nil || !equal(g, want(40)) {
		t.Fatalf("slow subscriber got %d/40, %v", len(g), err)
	}
	if g := <-firstDone; !equal(g, want(40)) {
		t.Fatalf("fast subscriber got %d/40", len(g))
	}
	<-fed
}

func TestFlightManual(t *testing.T) {
	settle(t)
	f := NewFlight(context.Background(), 0)
	a, _ := f.Subscribe(context.Background())
	if err := f.Publish([]byte("one")); err != nil {
		t.Fatal(err)
	}
	b, ok := f.Subscribe(context.Background())
	if !ok {
		t.Fatal("subscribe refused")
	}
	_ = f.Publish([]byte("two"))
	f.Finish(nil)
	f.Finish(errors.New("ignored"))
	for _, s := range []*Sub{a, b} {
		g, err := readAll(context.Background(), s)
		if err != nil || len(g) != 2 || string(g[0]) != "one" || string(g[1]) != "two" {
			t.Fatalf("got %q %v", g, err)
		}
		if _, err := s.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
	}
	if err := f.Publish([]byte("x")); err == nil {
		t.Fatal("publish after finish")
	}
}

// sliceSource streams a fixed list of events, yielding between them so joins interleave.
type sliceSource struct {
	evs [][]byte
	i   int
}

func (s *sliceSource) Next() ([]byte, error) {
	if s.i == len(s.evs) {
		return nil, io.EOF
	}
	runtime.Gosched()
	s.i++
	return s.evs[s.i-1], nil
}
func (s *sliceSource) Close() error { return nil }

// TestStreamsJoinRaceFullAnswerOrOwnCall: callers join one key at random moments while flights
// stream, finish and are replaced. Every caller reads the whole answer exactly once, from the
// first event to the last — by joining a flight (its buffered events, then live ones) or, when
// it came too late, through a flight of its own — never a truncated or doubled one.
func TestStreamsJoinRaceFullAnswerOrOwnCall(t *testing.T) {
	settle(t)
	var s Streams
	var opens atomic.Int64
	open := func(context.Context) (Source, error) {
		opens.Add(1)
		return &sliceSource{evs: want(16)}, nil
	}
	const callers = 200
	var wg sync.WaitGroup
	var shared atomic.Int64
	errs := make(chan string, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c%3 == 0 {
				runtime.Gosched()
			}
			sub, sh := s.Join(context.Background(), "k", open)
			if sh {
				shared.Add(1)
			}
			got, err := readAll(context.Background(), sub)
			if err != nil || !equal(got, want(16)) {
				errs <- fmt.Sprintf("caller %d (shared %v): %d/16 events, %v", c, sh, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Each caller either joined or opened its own flight; nothing else.
	if n := opens.Load() + shared.Load(); n != callers {
		t.Fatalf("%d opens + %d joins for %d callers", opens.Load(), shared.Load(), callers)
	}
	t.Logf("%d flights, %d joins", opens.Load(), shared.Load())
	waitFor(t, "flights to end", func() bool { return s.InFlight() == 0 })
}
