package ledger

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCreditsLocalAccounting(t *testing.T) {
	ctx := context.Background()
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 10*Credit)
	c := NewCredits(s, "n1", CreditsOptions{MinLease: 2 * Credit, MaxLease: 4 * Credit})
	defer c.Close(ctx)

	r1, err := c.Reserve(ctx, ws.ID, Credit/2)
	if err != nil {
		t.Fatal(err)
	}
	l, r, st := c.LocalState(ws.ID)
	if l < 2*Credit || r != Credit/2 || st != 0 {
		t.Fatalf("after reserve: lease %v reserved %v settled %v", l, r, st)
	}
	r2, err := c.Reserve(ctx, ws.ID, Credit/2)
	if err != nil {
		t.Fatal(err)
	}
	r2.Release()
	r2.Release() // idempotent
	r2.Settle(Credit)
	if _, r, _ := c.LocalState(ws.ID); r != Credit/2 {
		t.Fatalf("release: reserved %v", r)
	}
	r1.Settle(Credit / 4)
	r1.Settle(Credit) // ignored
	if _, r, st := c.LocalState(ws.ID); r != 0 || st != Credit/4 {
		t.Fatalf("settle: reserved %v settled %v", r, st)
	}
	c.Committed(map[string]Micros{ws.ID: Credit / 4, "ws_unknown": 5})
	l2, _, st := c.LocalState(ws.ID)
	if st != 0 || l2 != l-Credit/4 {
		t.Fatalf("committed: lease %v (was %v) settled %v", l2, l, st)
	}
	// More than the balance: refused without touching local state.
	if _, err := c.Reserve(ctx, ws.ID, 11*Credit); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("over-balance reserve: %v", err)
	}
	if _, err := c.Reserve(ctx, "ws_nope", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown workspace: %v", err)
	}
	// Overrun: actual above estimate beyond the lease is recorded, not hidden.
	l, _, _ = c.LocalState(ws.ID)
	r3, err := c.Reserve(ctx, ws.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	r3.Settle(l + Credit)
	if st := c.Stats(); st.Overruns != 1 || st.OverdraftMicros <= 0 {
		t.Fatalf("overdraft not recorded: %+v", st)
	}
}

func TestCreditsIdleReleaseAndClose(t *testing.T) {
	ctx := context.Background()
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 3*Credit)
	a := NewCredits(s, "a", CreditsOptions{MinLease: 3 * Credit, IdleRelease: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond})
	b := NewCredits(s, "b", CreditsOptions{MinLease: 3 * Credit})
	defer b.Close(ctx)
	res, err := a.Reserve(ctx, ws.ID, Credit)
	if err != nil {
		t.Fatal(err)
	}
	// a holds the whole balance: b is refused.
	if _, err := b.Reserve(ctx, ws.ID, Credit); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("b while a holds the lease: %v", err)
	}
	res.Release()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := b.Reserve(ctx, ws.ID, Credit); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle lease was never released")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reserve(ctx, ws.ID, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("reserve after close: %v", err)
	}
}

func TestCreditsRenewal(t *testing.T) {
	ctx := context.Background()
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 2*Credit)
	a := NewCredits(s, "a", CreditsOptions{MinLease: 2 * Credit, LeaseTTL: 200 * time.Millisecond, TickInterval: 20 * time.Millisecond, IdleRelease: time.Hour})
	defer a.Close(ctx)
	res, err := a.Reserve(ctx, ws.ID, Credit)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	time.Sleep(600 * time.Millisecond) // three TTLs: only renewal keeps the lease alive
	if _, err := s.AcquireLease(ctx, ws.ID, "b", 1, 1, time.Minute); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("lease was not renewed: %v", err)
	}
	if _, err := a.Reserve(ctx, ws.ID, Credit/2); err != nil {
		t.Fatalf("local reserve after renewals: %v", err)
	}
}
