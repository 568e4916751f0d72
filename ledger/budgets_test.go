package ledger

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func newTestBudgets(t *testing.T, s Store, c *testClock, pending func() int64) *Budgets {
	b := NewBudgets(s, BudgetsOptions{NodeID: "n1", Now: c.now, PendingRows: pending})
	t.Cleanup(b.Close)
	return b
}

func budgetChain(limits ...KeyLimits) []KeyAncestor {
	out := make([]KeyAncestor, len(limits))
	for i, l := range limits {
		out[i] = KeyAncestor{ID: "key_" + string(rune('a'+i)), Limits: l}
	}
	return out
}

func TestBudgetInFlightCountsAgainstTheCap(t *testing.T) {
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 0)
	c := &testClock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	b := newTestBudgets(t, s, c, nil)
	ctx := context.Background()
	chain := budgetChain(KeyLimits{BudgetMicros: Credit, BudgetPeriod: PeriodTotal})
	r1, err := b.Reserve(ctx, ws.ID, chain, 600_000)
	if err != nil || r1 == nil {
		t.Fatalf("first reservation: %v", err)
	}
	_, err = b.Reserve(ctx, ws.ID, chain, 600_000)
	var be *BudgetError
	if !errors.As(err, &be) || !errors.Is(err, ErrBudgetExceeded) || be.KeyID != "key_a" || be.Cap != Credit || be.Spent != 600_000 {
		t.Fatalf("second reservation while the first is in flight: %v", err)
	}
	r1.Settle(500_000)
	r1.Release() // a second finish changes nothing
	if _, err := b.Reserve(ctx, ws.ID, chain, 600_000); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("0.5 spent + 0.6: %v", err)
	}
	r3, err := b.Reserve(ctx, ws.ID, chain, 500_000)
	if err != nil {
		t.Fatalf("0.5 spent + 0.5: %v", err)
	}
	r3.Release()
	if r, err := b.Reserve(ctx, ws.ID, budgetChain(KeyLimits{}), Credit*100); r != nil || err != nil {
		t.Fatalf("a key without a budget: %v %v", r, err)
	}
}

func TestBudgetSpendComesFromRows(t *testing.T) {
	s := newSQLiteStore(t)
	ctx := context.Background()
	ws := mustWorkspace(t, s, 100*Credit)
	parent, _, _ := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: AllScopes, Limits: KeyLimits{BudgetMicros: Credit, BudgetPeriod: PeriodDay}})
	child, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID})
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	row := func(key, node string, at time.Time, cost Micros) Row {
		r := testRow(ws.ID, 0, cost)
		r.KeyID, r.NodeID, r.Time = key, node, at
		return r
	}
	if err := s.InsertRows(ctx, "n2", []Row{
		row(child.ID, "n2", day.Add(time.Hour), 300_000),        // another node, through the child
		row(parent.ID, "n1", day.Add(2*time.Hour), 200_000),     // this node
		row(parent.ID, "n1", day.Add(-time.Hour), 900_000),      // yesterday
		row("key_unrelated", "n1", day.Add(time.Hour), 900_000), // another key
	}); err != nil {
		t.Fatal(err)
	}
	c := &testClock{t: day.Add(12 * time.Hour)}
	b := newTestBudgets(t, s, c, nil)
	full, _ := s.LookupKey(ctx, child.Hash)
	chain := full.LimitChain()
	if _, err := b.Reserve(ctx, ws.ID, chain, 500_001); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("0.5 spent today by the parent's keys + 0.500001: %v", err)
	}
	r, err := b.Reserve(ctx, ws.ID, chain, 500_000)
	if err != nil {
		t.Fatalf("0.5 spent + 0.5: %v", err)
	}
	r.Settle(400_000)
	// Tomorrow the budget starts again; the settle of yesterday's request stays there.
	c.set(day.Add(36 * time.Hour))
	r2, err := b.Reserve(ctx, ws.ID, chain, Credit)
	if err != nil {
		t.Fatalf("a new day: %v", err)
	}
	r2.Release()

	// Another node's spend appears after a refresh, without a request waiting for it.
	if err := s.InsertRows(ctx, "n2", []Row{row(child.ID, "n2", day.Add(25*time.Hour), 700_000)}); err != nil {
		t.Fatal(err)
	}
	c.set(day.Add(36*time.Hour + 2*time.Second))
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := b.Reserve(ctx, ws.ID, chain, 400_000)
		if errors.Is(err, ErrBudgetExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		r.Release()
		if time.Now().After(deadline) {
			t.Fatal("the other node's spend never arrived")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBudgetSweepWaitsForPendingRows(t *testing.T) {
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 0)
	c := &testClock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	var pending sync.Mutex
	rows := int64(1)
	b := newTestBudgets(t, s, c, func() int64 { pending.Lock(); defer pending.Unlock(); return rows })
	r, err := b.Reserve(context.Background(), ws.ID, budgetChain(KeyLimits{BudgetMicros: Credit, BudgetPeriod: PeriodTotal}), 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Settle(1)
	c.set(c.now().Add(time.Hour))
	count := func() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.entries) }
	b.sweep()
	if count() != 1 {
		t.Fatal("a budget was forgotten while this node had rows pending")
	}
	pending.Lock()
	rows = 0
	pending.Unlock()
	b.sweep()
	if count() != 0 {
		t.Fatal("an idle budget was kept")
	}
}

// stallingStore never answers KeySpend until the caller gives up, like a database that
// stopped responding without closing the connection.
type stallingStore struct{ Store }

func (stallingStore) KeySpend(ctx context.Context, _, _ string, _ time.Time, _ string) (KeySpend, error) {
	<-ctx.Done()
	return KeySpend{}, ctx.Err()
}

func TestBudgetReadHonoursDeadline(t *testing.T) {
	s := newSQLiteStore(t)
	c := &testClock{t: time.Now()}
	b := newTestBudgets(t, stallingStore{s}, c, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := b.Reserve(ctx, "ws", budgetChain(KeyLimits{BudgetMicros: Credit, BudgetPeriod: PeriodTotal}), 1)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("a stalled spend read: %v", err)
	}
	// The next request tries again rather than finding a half-loaded budget.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := b.Reserve(ctx2, "ws", budgetChain(KeyLimits{BudgetMicros: Credit, BudgetPeriod: PeriodTotal}), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second attempt: %v", err)
	}
}

func TestBudgetGrow(t *testing.T) {
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 0)
	c := &testClock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	b := newTestBudgets(t, s, c, nil)
	ctx := context.Background()
	chain := budgetChain(KeyLimits{}, KeyLimits{BudgetMicros: Credit, BudgetPeriod: PeriodTotal})
	r, err := b.Reserve(ctx, ws.ID, chain, 500_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Grow(400_000); err != nil {
		t.Fatalf("growing within the cap: %v", err)
	}
	var be *BudgetError
	if err := r.Grow(200_000); !errors.As(err, &be) || be.Amount != 1_100_000 || be.Spent != 0 || be.KeyID != "key_b" {
		t.Fatalf("growing past the cap: %v %+v", err, be)
	}
	if _, err := b.Reserve(ctx, ws.ID, chain, 100_001); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("the refused growth was kept or the granted one lost: %v", err)
	}
	r.Settle(300_000)
	r2, err := b.Reserve(ctx, ws.ID, chain, 700_000)
	if err != nil {
		t.Fatalf("after settling 0.3 of a 0.9 hold: %v", err)
	}
	r2.Release()
	var nilRes *BudgetReservation
	if err := nilRes.Grow(Credit); err != nil {
		t.Fatal("a request without a budget cannot be refused by one")
	}
}
