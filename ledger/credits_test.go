package ledger

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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
	a := NewCredits(s, "a", CreditsOptions{MinLease: 3 * Credit, MaxLease: 3 * Credit, IdleRelease: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond})
	b := NewCredits(s, "b", CreditsOptions{MinLease: 3 * Credit, MaxLease: 3 * Credit, ShortWait: time.Millisecond})
	defer b.Close(ctx)
	res, err := a.Reserve(ctx, ws.ID, 3*Credit)
	if err != nil {
		t.Fatal(err)
	}
	// a's reservation takes the whole balance: b is refused.
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
	ws := mustWorkspace(t, s, 10*Credit)
	a := NewCredits(s, "a", CreditsOptions{MinLease: 2 * Credit, MaxLease: 2 * Credit, LeaseTTL: 3 * time.Second, TickInterval: 20 * time.Millisecond, IdleRelease: time.Hour})
	defer a.Close(ctx)
	res, err := a.Reserve(ctx, ws.ID, Credit)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	time.Sleep(600 * time.Millisecond) // three TTLs: only renewal keeps the lease usable
	ls, err := s.ListLeases(ctx, "a")
	if err != nil || len(ls) != 1 || !ls[0].ExpiresAt.After(time.Now()) || ls[0].Amount != 2*Credit {
		t.Fatalf("lease was not renewed: %+v %v", ls, err)
	}
	if _, err := a.Reserve(ctx, ws.ID, Credit/2); err != nil {
		t.Fatalf("local reserve after renewals: %v", err)
	}
	if st := a.Stats(); st.Acquires != 1 {
		t.Fatalf("renewed lease should serve locally: %+v", st)
	}
}

// partitionable is a store that node A can lose: every call fails while cut is set.
type partitionable struct {
	Store
	cut atomic.Bool
}

var errPartition = errors.New("partitioned")

func (p *partitionable) AcquireLease(ctx context.Context, ws, node string, want, min Micros, ttl time.Duration) (Lease, error) {
	if p.cut.Load() {
		return Lease{}, errPartition
	}
	return p.Store.AcquireLease(ctx, ws, node, want, min, ttl)
}

func (p *partitionable) RenewLease(ctx context.Context, ws, node string, ttl time.Duration) (Lease, error) {
	if p.cut.Load() {
		return Lease{}, errPartition
	}
	return p.Store.RenewLease(ctx, ws, node, ttl)
}

func (p *partitionable) ReleaseLease(ctx context.Context, ws, node string, amount Micros) (Lease, error) {
	if p.cut.Load() {
		return Lease{}, errPartition
	}
	return p.Store.ReleaseLease(ctx, ws, node, amount)
}

func (p *partitionable) ReturnRequests(ctx context.Context, node string) ([]string, error) {
	if p.cut.Load() {
		return nil, errPartition
	}
	return p.Store.ReturnRequests(ctx, node)
}

func (p *partitionable) InsertRows(ctx context.Context, node string, rows []Row) error {
	if p.cut.Load() {
		return errPartition
	}
	return p.Store.InsertRows(ctx, node, rows)
}

// TestMoneyLeaseOutlivesPartition (issue 13 item 1): node A loses the database and serves
// from its lease, its rows waiting in the spool, for three times the lease's TTL; node B must
// not be able to lease the money A spent, and once A's rows commit the workspace has spent
// at most what it was granted. (Before, the expired lease returned to the pool: B spent it
// again and the workspace ended overspent by A's whole lease.)
func TestMoneyLeaseOutlivesPartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSQLiteStore(t)
	const unit = Credit / 100
	grant := 2 * Credit
	ws := mustWorkspace(t, s, grant)
	pa := &partitionable{Store: s}
	opts := CreditsOptions{MinLease: Credit, MaxLease: Credit, LeaseTTL: 3 * time.Second, TickInterval: 10 * time.Millisecond, ShortWait: time.Millisecond}
	a := NewCredits(pa, "a", opts)
	defer a.Close(ctx)
	wa, err := NewWriter(pa, WriterOptions{Dir: t.TempDir(), NodeID: "a", OnCommit: a.Committed, FlushInterval: time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := NewCredits(s, "b", opts)
	defer b.Close(ctx)
	wb, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "b", OnCommit: b.Committed, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	spend := func(c *Credits, w *Writer, node string, i int) bool {
		res, err := c.Reserve(ctx, ws.ID, unit)
		if err != nil {
			return false
		}
		res.Settle(unit)
		row := testRow(ws.ID, i, unit)
		row.NodeID = node
		if err := w.Append(row); err != nil {
			t.Fatal(err)
		}
		return true
	}
	// A leases while the database is there, then loses it and serves from its lease.
	if !spend(a, wa, "a", 0) {
		t.Fatal("first reservation")
	}
	if err := wa.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	pa.cut.Store(true)
	servedA := 1
	for i := 1; i < 300 && spend(a, wa, "a", i); i++ {
		servedA++
	}
	time.Sleep(3 * opts.LeaseTTL) // A's lease has long expired in the database
	servedB := 0
	for i := 300; i < 600; i++ {
		if spend(b, wb, "b", i) {
			servedB++
		}
	}
	pa.cut.Store(false)
	if err := wa.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wb.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wsNow, err := s.Workspace(ctx, ws.ID)
	if err != nil {
		t.Fatal(err)
	}
	if wsNow.Spent > wsNow.Granted {
		t.Fatalf("overspend: spent %s of %s (A served %d, B %d during A's partition)", wsNow.Spent, wsNow.Granted, servedA, servedB)
	}
	if n, cost := countRows(t, s, ws.ID); cost != Micros(servedA+servedB)*unit || cost != wsNow.Spent || n != int64(servedA+servedB) {
		t.Fatalf("rows %d cost %s, served %d+%d, spent %s", n, cost, servedA, servedB, wsNow.Spent)
	}
	if servedA < 90 || servedB < 90 {
		t.Fatalf("A served %d and B %d: each should have served its own lease", servedA, servedB)
	}
	t.Logf("A served %d from its lease while cut off; B served %d meanwhile; spent %s of %s", servedA, servedB, wsNow.Spent, grant)
	_ = wa.Close(ctx)
	_ = wb.Close(ctx)
}

// TestMoneySmallBalanceServesEveryNode (issue 13 item 2): a balance far below the minimum
// lease, requests alternating between two nodes: every request is served while the
// workspace has money (the first node must not take it all), and none beyond.
func TestMoneySmallBalanceServesEveryNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := newSQLiteStore(t)
	const unit = 8_000 // µ$ per request
	grant := Micros(41 * unit)
	ws := mustWorkspace(t, s, grant)
	var nodes []*Credits
	var writers []*Writer
	for _, n := range []string{"a", "b"} {
		c := NewCredits(s, n, CreditsOptions{TickInterval: 20 * time.Millisecond}) // default MinLease: $1 ≫ the balance
		w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: n, OnCommit: c.Committed, FlushInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		defer w.Close(ctx)
		nodes, writers = append(nodes, c), append(writers, w)
	}
	var refusedWithMoney, served int
	for i := range 60 {
		n := i % 2
		res, err := nodes[n].Reserve(ctx, ws.ID, unit)
		if errors.Is(err, ErrInsufficientCredits) {
			if Micros(served)*unit+unit <= grant {
				refusedWithMoney++
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		res.Settle(unit)
		row := testRow(ws.ID, i, unit)
		row.NodeID = []string{"a", "b"}[n]
		if err := writers[n].Append(row); err != nil {
			t.Fatal(err)
		}
		served++
	}
	if refusedWithMoney > 0 || served != 41 {
		t.Fatalf("served %d of 41 affordable requests; %d refused while the workspace had money", served, refusedWithMoney)
	}
	for _, w := range writers {
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if bal, _ := s.Balance(ctx, ws.ID); bal != 0 {
		t.Fatalf("balance %s, want 0", bal)
	}
}

// TestMoneyConcurrentNodesNeverOverspend: two nodes on one store serve 400 concurrent
// requests against a balance of 150 units. Each reserves 3 units (the gateway reserves a
// bound) and holds its reservation for a moment, as an upstream call does, then costs 1 unit
// or, one request in three, its whole bound. However reservations, give-backs, top-ups and
// commits interleave, what is charged never exceeds the grants and the balance ends at
// exactly grants − costs.
func TestMoneyConcurrentNodesNeverOverspend(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var s Store
			if kind == "sqlite" {
				s = newSQLiteStore(t)
			} else {
				s = newPGStore(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			const unit = 8_000
			grant := Micros(150 * unit)
			ws := mustWorkspace(t, s, grant)
			names := []string{"a", "b"}
			nodes, writers := make([]*Credits, len(names)), make([]*Writer, len(names))
			for i, n := range names {
				c := NewCredits(s, n, CreditsOptions{TickInterval: 10 * time.Millisecond})
				w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: n, OnCommit: c.Committed, FlushInterval: time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Adopt(ctx); err != nil { // as the gateway does once its spool is replayed
					t.Fatal(err)
				}
				defer c.Close(ctx)
				defer w.Close(ctx)
				nodes[i], writers[i] = c, w
			}
			var served, refused, charged atomic.Int64
			var wg sync.WaitGroup
			for i := range 400 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := i % len(names)
					res, err := nodes[n].Reserve(ctx, ws.ID, 3*unit)
					if errors.Is(err, ErrInsufficientCredits) {
						refused.Add(1)
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Duration(i%7) * 300 * time.Microsecond)
					cost := Micros(unit)
					if i%3 == 0 {
						cost = 3 * unit
					}
					res.Settle(cost)
					row := testRow(ws.ID, i, cost)
					row.NodeID = names[n]
					if err := writers[n].Append(row); err != nil {
						t.Error(err)
						return
					}
					served.Add(1)
					charged.Add(int64(cost))
				}()
			}
			wg.Wait()
			for _, w := range writers {
				if err := w.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			bal, err := s.Balance(ctx, ws.ID)
			if err != nil {
				t.Fatal(err)
			}
			if charged.Load() > int64(grant) || served.Load() == 0 || bal != grant-Micros(charged.Load()) || bal < 0 {
				t.Fatalf("served %d, refused %d: charged %d of grants %d, balance %d", served.Load(), refused.Load(), charged.Load(), grant, bal)
			}
			t.Logf("served %d, refused %d; charged %s of %s", served.Load(), refused.Load(), Micros(charged.Load()), grant)
		})
	}
}

// adoptedNode is node "a" on s, adopted (its spool replayed), closed when the test ends.
func adoptedNode(t *testing.T, s Store, opts CreditsOptions) *Credits {
	t.Helper()
	c := NewCredits(s, "a", opts)
	t.Cleanup(func() { c.Close(context.Background()) })
	if err := c.Adopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// commitDuring is a store whose next lease call has a batch of rows committed (the writer's
// InsertRows and its OnCommit) after the database answered and before the answer returns.
type commitDuring struct {
	Store
	hook atomic.Pointer[func()]
}

func (s *commitDuring) AcquireLease(ctx context.Context, ws, node string, want, min Micros, ttl time.Duration) (Lease, error) {
	l, err := s.Store.AcquireLease(ctx, ws, node, want, min, ttl)
	if f := s.hook.Swap(nil); f != nil {
		(*f)()
	}
	return l, err
}

// TestMoneyCommitDuringLeaseCall: a lease call reads the node's database lease, a batch of
// rows commits (its cost leaves that lease for spent) and the local lease gives the cost up,
// then the call's answer arrives. The figure it carries still holds the cost: taken as it is,
// the node would believe in money it has already spent, and spend it again. (This is how two
// nodes once served 55 requests on a balance for 50.)
func TestMoneyCommitDuringLeaseCall(t *testing.T) {
	ctx := context.Background()
	base := newSQLiteStore(t)
	s := &commitDuring{Store: base}
	const unit = 8_000
	ws := mustWorkspace(t, base, 100*unit)
	c := adoptedNode(t, s, CreditsOptions{MinLease: 10 * unit, MaxLease: 10 * unit, Growth: 1})
	r1, err := c.Reserve(ctx, ws.ID, 3*unit)
	if err != nil {
		t.Fatal(err)
	}
	r1.Settle(3 * unit) // a row of 3 units waits in the spool
	commit := func() {
		row := testRow(ws.ID, 1, 3*unit)
		row.NodeID = "a"
		if err := base.InsertRows(ctx, "a", []Row{row}); err != nil {
			t.Error(err)
		}
		c.Committed(map[string]Micros{ws.ID: 3 * unit})
	}
	s.hook.Store(&commit)
	if _, err := c.Reserve(ctx, ws.ID, 8*unit); err != nil { // more than the headroom: a lease call
		t.Fatal(err)
	}
	if s.hook.Load() != nil {
		t.Fatal("the reservation made no lease call")
	}
	leases, err := base.ListLeases(ctx, "a")
	if err != nil || len(leases) != 1 {
		t.Fatalf("leases %+v, %v", leases, err)
	}
	if local, _, _ := c.LocalState(ws.ID); local > leases[0].Amount {
		t.Fatalf("local lease %s above the database's %s: the committed cost counted as lease again", local, leases[0].Amount)
	}
}

// commitBeforeRead is a store whose next lease calls each have a batch of rows committed
// just before the database reads the node's lease, with OnCommit arriving only once the
// read is done: the figure already lacks the batch's cost, and the node, unable to tell
// this from a commit after the read, takes the cost off again.
type commitBeforeRead struct {
	Store
	mu       sync.Mutex
	batches  [][]Row
	onCommit func(map[string]Micros)
}

func (s *commitBeforeRead) AcquireLease(ctx context.Context, ws, node string, want, min Micros, ttl time.Duration) (Lease, error) {
	s.mu.Lock()
	var batch []Row
	if len(s.batches) > 0 {
		batch, s.batches = s.batches[0], s.batches[1:]
	}
	s.mu.Unlock()
	costs := map[string]Micros{}
	if batch != nil {
		if err := s.Store.InsertRows(ctx, node, batch); err != nil {
			return Lease{}, err
		}
		for _, r := range batch {
			costs[r.WorkspaceID] += r.CostMicros
		}
	}
	l, err := s.Store.AcquireLease(ctx, ws, node, want, min, ttl)
	if batch != nil {
		s.onCommit(costs)
	}
	return l, err
}

// TestMoneyCommitsBeforeLeaseReadsStillServe: commits that land just before successive lease
// calls read the database make each call's figure look smaller than it is (the safe side).
// A reservation must still be served once a call sees the true figure, not refused because
// it ran out of calls while the workspace had money. (Two nodes on one balance once refused
// one request in about a hundred runs this way.)
func TestMoneyCommitsBeforeLeaseReadsStillServe(t *testing.T) {
	ctx := context.Background()
	base := newSQLiteStore(t)
	s := &commitBeforeRead{Store: base}
	const unit = 8_000
	ws := mustWorkspace(t, base, 100*unit)
	c := adoptedNode(t, s, CreditsOptions{MinLease: unit, MaxLease: unit, Growth: 1})
	s.onCommit = c.Committed
	var pending []Row
	for i := range 3 { // three rows of a unit wait in the spool
		r, err := c.Reserve(ctx, ws.ID, unit)
		if err != nil {
			t.Fatal(err)
		}
		r.Settle(unit)
		row := testRow(ws.ID, i, unit)
		row.NodeID = "a"
		pending = append(pending, row)
	}
	// The first lease call commits one row, the second the other two: each call's figure
	// is short by more than the one before it recovers.
	s.batches = [][]Row{pending[:1], pending[1:]}
	if _, err := c.Reserve(ctx, ws.ID, unit); err != nil {
		t.Fatalf("refused with %s of balance left: %v", Micros(97*unit), err)
	}
	if len(s.batches) != 0 {
		t.Fatal("the reservation made fewer lease calls than the test arranges")
	}
}
