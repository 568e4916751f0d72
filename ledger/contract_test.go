package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestContractSQLite and TestContractPostgres run the same suite against both backends.
func TestContractSQLite(t *testing.T) {
	runContract(t, func(t *testing.T) Store { return newSQLiteStore(t) })
}

func TestContractPostgres(t *testing.T) {
	newPGStore(t) // skip (or fail in CI) once, up front, when the server is unreachable
	runContract(t, func(t *testing.T) Store { return newPGStore(t) })
}

func runContract(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"Keys", testKeys},
		{"KeyLimits", testKeyLimits},
		{"KeyLifecycle", testKeyLifecycle},
		{"KeySpend", testKeySpend},
		{"RateWindows", testRateWindows},
		{"WorkspaceLimits", testWorkspaceLimits},
		{"WatchRevocations", testWatchRevocations},
		{"Grants", testGrants},
		{"LeaseInvariant", testLeaseInvariant},
		{"InsertRowsIdempotent", testInsertRowsIdempotent},
		{"ConcurrentReservations", testConcurrentReservations},
		{"WriterCrashReplay", testWriterCrashReplay},
		{"WriterOutage", testWriterOutage},
		{"WriterTornRecord", testWriterTornRecord},
		{"Summary", testSummary},
		{"SummaryIsOneSnapshot", testSummaryIsOneSnapshot},
		{"ListAndExport", testListAndExport},
		{"StoredResponses", testStoredResponses},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func testKeys(t *testing.T, s Store) {
	ctx := context.Background()
	ws, owner, err := s.CreateWorkspace(ctx, "acme", 25*Credit)
	if err != nil {
		t.Fatal(err)
	}
	if len(owner) != 4+43 || owner[:4] != "btl_" {
		t.Fatalf("owner secret %q has the wrong shape", owner)
	}
	k, err := s.LookupKey(ctx, HashKey(owner))
	if err != nil {
		t.Fatal(err)
	}
	if k.WorkspaceID != ws.ID || len(k.Scopes) != 3 || !k.Has(ScopeKeysWrite) || !k.Has(ScopeInference) || !k.Has(ScopeUsageRead) {
		t.Fatalf("owner key %+v", k)
	}
	if k.Prefix != owner[:12] || k.Hash != HashKey(owner) {
		t.Fatalf("stored prefix/hash wrong: %q", k.Prefix)
	}
	if _, err := s.LookupKey(ctx, HashKey(owner+"x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	if b, _ := s.Balance(ctx, ws.ID); b != 25*Credit {
		t.Fatalf("initial balance %v", b)
	}

	// Scopes and expiry.
	if _, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "bad", Scopes: []Scope{"admin"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad scope: %v", err)
	}
	if _, _, err := s.CreateKey(ctx, "ws_nope", KeySpec{Name: "x", Scopes: []Scope{ScopeInference}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key for unknown workspace: %v", err)
	}
	past := time.Now().Add(-time.Minute)
	kExp, secExp, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "old", Scopes: []Scope{ScopeUsageRead}, ExpiresAt: &past})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.LookupKey(ctx, HashKey(secExp)); !errors.Is(err, ErrExpired) || got.ID != kExp.ID {
		t.Fatalf("expired key: %v %+v", err, got)
	}
	future := time.Now().Add(time.Hour)
	kRead, secRead, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "reader", Scopes: []Scope{ScopeUsageRead}, ExpiresAt: &future})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LookupKey(ctx, HashKey(secRead))
	if err != nil || !got.Has(ScopeUsageRead) || got.Has(ScopeInference) || got.ExpiresAt == nil {
		t.Fatalf("reader key: %v %+v", err, got)
	}

	keys, err := s.ListKeys(ctx, ws.ID)
	if err != nil || len(keys) != 3 {
		t.Fatalf("ListKeys: %v %d", err, len(keys))
	}
	for _, k := range keys {
		if k.Prefix == owner || k.Prefix == secRead || len(k.Prefix) != 12 {
			t.Fatalf("a listing exposes a secret: %+v", k)
		}
	}

	// Revocation: other workspace → ErrNotFound; then revoke; idempotent.
	ws2, _, err := s.CreateWorkspace(ctx, "other", 0)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if err := s.RevokeKey(ctx, ws2.ID, kRead.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke from other workspace: %v", err)
	}
	if _, err := s.LookupKey(ctx, HashKey(secRead)); err != nil {
		t.Fatalf("key must survive a foreign revoke: %v", err)
	}
	if err := s.RevokeKey(ctx, ws.ID, kRead.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeKey(ctx, ws.ID, kRead.ID); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if got, err := s.LookupKey(ctx, HashKey(secRead)); !errors.Is(err, ErrRevoked) || got.RevokedAt == nil {
		t.Fatalf("revoked key: %v", err)
	}
	revs, err := s.RevokedSince(ctx, before)
	if err != nil || len(revs) != 1 || revs[0].Hash != HashKey(secRead) || revs[0].KeyID != kRead.ID {
		t.Fatalf("RevokedSince: %v %+v", err, revs)
	}
	if revs, _ := s.RevokedSince(ctx, time.Now().Add(time.Minute)); len(revs) != 0 {
		t.Fatalf("RevokedSince(future) = %d", len(revs))
	}
}

func testWatchRevocations(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := mustWorkspace(t, s, 0)
	k, sec, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "x", Scopes: []Scope{ScopeInference}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan [32]byte, 16)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.WatchRevocations(wctx, func(h [32]byte) { got <- h }) }()
	time.Sleep(300 * time.Millisecond) // let LISTEN start
	if err := s.RevokeKey(ctx, ws.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case h := <-got:
			if h != HashKey(sec) {
				continue // another test's revocation (PostgreSQL NOTIFY is database-wide)
			}
			wcancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("WatchRevocations returned %v", err)
			}
			return
		case <-ctx.Done():
			t.Fatal("revocation not delivered")
		}
	}
}

func testGrants(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, Credit)
	ok, err := s.Grant(ctx, ws.ID, 5*Credit, "stripe", "evt_1")
	if err != nil || !ok {
		t.Fatalf("grant: %v %v", ok, err)
	}
	ok, err = s.Grant(ctx, ws.ID, 5*Credit, "stripe", "evt_1")
	if err != nil || ok {
		t.Fatalf("replayed grant applied=%v err=%v", ok, err)
	}
	if ok, err := s.Grant(ctx, ws.ID, 500_000, "cli", ""); err != nil || !ok {
		t.Fatalf("grant without key: %v %v", ok, err)
	}
	if b, _ := s.Balance(ctx, ws.ID); b != 6*Credit+500_000 {
		t.Fatalf("balance %v", b)
	}
	if _, err := s.Grant(ctx, "ws_nope", Credit, "x", "evt_2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown workspace: %v", err)
	}
	if _, err := s.Grant(ctx, ws.ID, 0, "x", "evt_3"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero grant: %v", err)
	}
	if _, err := s.Balance(ctx, "ws_nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("balance of unknown workspace: %v", err)
	}
	w, err := s.Workspace(ctx, ws.ID)
	if err != nil || w.Granted != 6*Credit+500_000 || w.Spent != 0 || w.Name != "test" {
		t.Fatalf("workspace %+v %v", w, err)
	}
}

func testLeaseInvariant(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, 10*Credit)
	ttl := time.Minute
	a, err := s.AcquireLease(ctx, ws.ID, "a", 6*Credit, Credit, ttl)
	if err != nil || a.Granted != 6*Credit || a.Amount != 6*Credit || a.Available != 4*Credit {
		t.Fatalf("a: %+v %v", a, err)
	}
	// Short: b learns what is free and what a holds, and a is asked to give back.
	_, err = s.AcquireLease(ctx, ws.ID, "b", 6*Credit, 5*Credit, ttl)
	var short *ShortError
	if !errors.As(err, &short) || !errors.Is(err, ErrInsufficientCredits) || short.Available != 4*Credit || short.HeldByOthers != 6*Credit || short.Returnable != 6*Credit {
		t.Fatalf("b over min: %v", err)
	}
	if wss, err := s.ReturnRequests(ctx, "a"); err != nil || len(wss) != 1 || wss[0] != ws.ID {
		t.Fatalf("return requests of a: %v %v", wss, err)
	}
	if wss, _ := s.ReturnRequests(ctx, "b"); len(wss) != 0 {
		t.Fatalf("b holds nothing to give back: %v", wss)
	}
	// Wanting more than is free: half of what is free, at least the minimum.
	b, err := s.AcquireLease(ctx, ws.ID, "b", 6*Credit, Credit, ttl)
	if err != nil || b.Granted != 2*Credit || b.Available != 2*Credit {
		t.Fatalf("b: %+v %v", b, err)
	}
	if b, err = s.AcquireLease(ctx, ws.ID, "b", 2*Credit, Credit, ttl); err != nil || b.Granted != 2*Credit || b.Amount != 4*Credit || b.Available != 0 {
		t.Fatalf("b again: %+v %v", b, err)
	}
	if _, err := s.AcquireLease(ctx, ws.ID, "c", Credit, 1, ttl); !errors.As(err, &short) || short.HeldByOthers != 10*Credit {
		t.Fatalf("c: %v", err)
	}
	r, err := s.ReleaseLease(ctx, ws.ID, "a", 2*Credit)
	if err != nil || r.Amount != 4*Credit || r.Granted != 2*Credit {
		t.Fatalf("release: %+v %v", r, err)
	}
	if wss, _ := s.ReturnRequests(ctx, "a"); len(wss) != 0 {
		t.Fatalf("a gave back, yet is still asked: %v", wss)
	}
	if c, err := s.AcquireLease(ctx, ws.ID, "c", 2*Credit, 1, ttl); err != nil || c.Granted != 2*Credit {
		t.Fatalf("c after release: %+v %v", c, err)
	}
	// Committing rows moves cost from the node's lease to spent: the invariant holds.
	rows := []Row{testRow(ws.ID, 1, 3*Credit)}
	if err := s.InsertRows(ctx, "a", rows); err != nil {
		t.Fatal(err)
	}
	if bal, _ := s.Balance(ctx, ws.ID); bal != 7*Credit {
		t.Fatalf("balance after rows %v", bal)
	}
	// a has 1, b 4, c 2 = 7 = balance: nothing left to lease.
	if _, err := s.AcquireLease(ctx, ws.ID, "d", 1, 1, ttl); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("d: %v", err)
	}
	if ls, err := s.ListLeases(ctx, ""); err != nil || len(ls) < 3 {
		t.Fatalf("list leases: %v %v", ls, err)
	}
	if ls, err := s.ListLeases(ctx, "b"); err != nil || len(ls) != 1 || ls[0].Amount != 4*Credit || ls[0].WorkspaceID != ws.ID || ls[0].ExpiresAt.Before(time.Now()) {
		t.Fatalf("leases of b: %+v %v", ls, err)
	}
	if r, err := s.ReleaseLease(ctx, ws.ID, "a", ReleaseAll); err != nil || r.Granted != Credit || r.Amount != 0 {
		t.Fatalf("release all: %+v %v", r, err)
	}
	if _, err := s.ReleaseLease(ctx, ws.ID, "a", Credit); !errors.Is(err, ErrNotFound) {
		t.Fatalf("release of gone lease: %v", err)
	}
	if l, err := s.RenewLease(ctx, ws.ID, "b", ttl); err != nil || l.Amount != 4*Credit {
		t.Fatalf("renew: %+v %v", l, err)
	}

	// Expiry ends the right to reserve, not the hold: an expired lease still counts (its
	// node may have spooled rows against it) until its node renews or gives it back.
	ws2 := mustWorkspace(t, s, 2*Credit)
	if _, err := s.AcquireLease(ctx, ws2.ID, "a", 2*Credit, 1, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	if _, err := s.AcquireLease(ctx, ws2.ID, "b", Credit, 1, ttl); !errors.As(err, &short) || short.HeldByOthers != 2*Credit || short.Returnable != 0 {
		t.Fatalf("after expiry the money must stay held (but is not coming back soon): %v", err)
	}
	if l, err := s.RenewLease(ctx, ws2.ID, "a", ttl); err != nil || l.Amount != 2*Credit {
		t.Fatalf("renew expired: %+v %v", l, err)
	}
	if l, err := s.AcquireLease(ctx, ws2.ID, "a", Credit, 1, ttl); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("nothing free: %+v %v", l, err)
	}
	if _, err := s.ReleaseLease(ctx, ws2.ID, "a", ReleaseAll); err != nil {
		t.Fatal(err)
	}
	if l, err := s.AcquireLease(ctx, ws2.ID, "b", Credit, 1, ttl); err != nil || l.Granted != Credit {
		t.Fatalf("after release: %+v %v", l, err)
	}
	if _, err := s.RenewLease(ctx, ws2.ID, "a", ttl); !errors.Is(err, ErrNotFound) {
		t.Fatalf("renew after release: %v", err)
	}
	if _, err := s.AcquireLease(ctx, "ws_nope", "a", 1, 1, ttl); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown ws: %v", err)
	}
}

func testInsertRowsIdempotent(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, 100*Credit)
	var rows []Row
	var total Micros
	for i := range 10 {
		r := testRow(ws.ID, i, Micros(1000+i))
		rows = append(rows, r)
		total += r.CostMicros
	}
	if err := s.InsertRows(ctx, "n1", rows); err != nil {
		t.Fatal(err)
	}
	more := append([]Row(nil), rows...)
	more = append(more, rows[0]) // duplicate inside one batch
	for i := 10; i < 15; i++ {
		r := testRow(ws.ID, i, Micros(1000+i))
		more = append(more, r)
		total += r.CostMicros
	}
	if err := s.InsertRows(ctx, "n1", more); err != nil {
		t.Fatal(err)
	}
	if n, cost := countRows(t, s, ws.ID); n != 15 || cost != total {
		t.Fatalf("rows %d cost %v, want 15 %v", n, cost, total)
	}
	if b, _ := s.Balance(ctx, ws.ID); b != 100*Credit-total {
		t.Fatalf("balance %v want %v", b, 100*Credit-total)
	}
	// Round trip of every field, including the awkward strings.
	odd := testRow(ws.ID, 99, 1)
	odd.RequestedModel = "bad\x00name\xff"
	if err := s.InsertRows(ctx, "n1", []Row{odd}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.ListRows(ctx, ws.ID, time.Time{}, time.Time{}, 1, Cursor{})
	if err != nil || len(got) != 1 {
		t.Fatal(err)
	}
	want := odd
	want.RequestedModel = cleanText(odd.RequestedModel)
	if got[0] != want {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got[0], want)
	}
}

// testConcurrentReservations runs two nodes (two Credits on one store) against a balance
// that covers exactly 50 reservations, with 200 concurrent requests.
func testConcurrentReservations(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const amount = Micros(20_000)
	grant := 50 * amount
	ws := mustWorkspace(t, s, grant)
	opts := CreditsOptions{MinLease: 3 * amount, MaxLease: 10 * amount, Growth: 5}
	nodes := []string{"node-a", "node-b"}
	var credits []*Credits
	var writers []*Writer
	for _, n := range nodes {
		c := NewCredits(s, n, opts)
		w, err := NewWriter(s, WriterOptions{Dir: filepath.Join(t.TempDir(), n), NodeID: n, FlushInterval: 5 * time.Millisecond,
			BatchSize: 16, OnCommit: c.Committed})
		if err != nil {
			t.Fatal(err)
		}
		credits, writers = append(credits, c), append(writers, w)
	}
	var wg sync.WaitGroup
	var successes atomic.Int64
	var spent atomic.Int64
	for i := range 200 {
		wg.Go(func() {
			node := i % 2
			res, err := credits[node].Reserve(ctx, ws.ID, amount)
			if errors.Is(err, ErrInsufficientCredits) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			cost := amount - Micros(i%7) // actual cost, at most the estimate
			res.Settle(cost)
			successes.Add(1)
			spent.Add(int64(cost))
			row := testRow(ws.ID, i, cost)
			row.NodeID = nodes[node]
			if err := writers[node].Append(row); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, w := range writers {
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := successes.Load(); n > 50 || n == 0 {
		t.Fatalf("successes = %d, want 1..50", n)
	}
	bal, err := s.Balance(ctx, ws.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bal != grant-Micros(spent.Load()) {
		t.Fatalf("balance %v, want %v", bal, grant-Micros(spent.Load()))
	}
	if n, cost := countRows(t, s, ws.ID); n != successes.Load() || cost != Micros(spent.Load()) {
		t.Fatalf("ledger has %d rows cost %v; want %d, %v", n, cost, successes.Load(), Micros(spent.Load()))
	}
	for i, c := range credits {
		l, r, st := c.LocalState(ws.ID)
		if r != 0 || st != 0 || l < 0 {
			t.Errorf("node %d local state lease=%v reserved=%v settled=%v", i, l, r, st)
		}
		if c.Stats().OverdraftMicros != 0 {
			t.Errorf("node %d overdraft %v", i, c.Stats().OverdraftMicros)
		}
		_ = c.Close(ctx)
		_ = writers[i].Close(ctx)
	}
	t.Logf("successes %d of 200", successes.Load())
}

func testWriterCrashReplay(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := mustWorkspace(t, s, 1000*Credit)
	dir := t.TempDir()
	// The first writer never flushes on its own: its rows exist only in the spool.
	w1, err := NewWriter(s, WriterOptions{Dir: dir, NodeID: "n1", FlushInterval: time.Hour, BatchSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(s, WriterOptions{Dir: dir}); err == nil {
		t.Fatal("a second writer on a locked spool dir must fail")
	}
	var total Micros
	for i := range 500 {
		r := testRow(ws.ID, i, Micros(100+i))
		total += r.CostMicros
		if err := w1.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	w1.crash()
	if n, _ := countRows(t, s, ws.ID); n != 0 {
		t.Fatalf("%d rows committed before the crash", n)
	}
	backup, dir2 := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	segs, _ := listSegments(dir)
	for _, seg := range segs {
		b, err := os.ReadFile(segmentPath(dir, seg))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(segmentPath(backup, seg), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w2, err := NewWriter(s, WriterOptions{Dir: dir, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if st := w2.Stats(); st.ReplayedRows != 500 || st.PendingRows != 500 {
		t.Fatalf("replay stats %+v", st)
	}
	if err := w2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if segs, _ := listSegments(dir); len(segs) != 0 {
		t.Fatalf("committed segments left behind: %v", segs)
	}
	// Replay the same spool again (as if the checkpoint had been lost): idempotency must
	// absorb it.
	if err := os.CopyFS(dir2, os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	w3, err := NewWriter(s, WriterOptions{Dir: dir2, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w3.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, cost := countRows(t, s, ws.ID); n != 500 || cost != total {
		t.Fatalf("rows %d cost %v, want 500 %v", n, cost, total)
	}
	if b, _ := s.Balance(ctx, ws.ID); b != 1000*Credit-total {
		t.Fatalf("balance %v", b)
	}
}

// flakyStore fails InsertRows while failing is set; every other failure happens after the
// rows were committed (a lost acknowledgement), which the retry must not double.
type flakyStore struct {
	Store
	failing atomic.Bool
	calls   atomic.Int64
}

var errOutage = errors.New("simulated outage")

func (f *flakyStore) InsertRows(ctx context.Context, node string, rows []Row) error {
	n := f.calls.Add(1)
	if f.failing.Load() {
		if n%2 == 0 {
			if err := f.Store.InsertRows(ctx, node, rows); err != nil {
				return err
			}
		}
		return errOutage
	}
	return f.Store.InsertRows(ctx, node, rows)
}

func testWriterOutage(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := mustWorkspace(t, s, 1000*Credit)
	fs := &flakyStore{Store: s}
	fs.failing.Store(true)
	var errs atomic.Int64
	w, err := NewWriter(fs, WriterOptions{Dir: t.TempDir(), NodeID: "n1", BatchSize: 50, FlushInterval: 2 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, OnError: func(error) { errs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	var total Micros
	for i := range 300 {
		r := testRow(ws.ID, i, Micros(10+i))
		total += r.CostMicros
		if err := w.Append(r); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if st := w.Stats(); st.InsertErrors == 0 || st.PendingRows == 0 || st.LastError == "" {
		t.Fatalf("outage not visible in stats: %+v", st)
	}
	fs.failing.Store(false)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.PendingRows != 0 || st.CommittedRows != 300 {
		t.Fatalf("stats after recovery %+v", st)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, cost := countRows(t, s, ws.ID); n != 300 || cost != total {
		t.Fatalf("rows %d cost %v, want 300 %v", n, cost, total)
	}
	if b, _ := s.Balance(ctx, ws.ID); b != 1000*Credit-total {
		t.Fatalf("balance %v", b)
	}
	if errs.Load() == 0 {
		t.Fatal("OnError never called")
	}
	if err := w.Append(testRow(ws.ID, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

func testWriterTornRecord(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := mustWorkspace(t, s, 1000*Credit)
	dir := t.TempDir()
	w1, err := NewWriter(s, WriterOptions{Dir: dir, NodeID: "n1", FlushInterval: time.Hour, BatchSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := w1.Append(testRow(ws.ID, i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	w1.crash()
	// A crash in the middle of write(2): half a record at the end of the last segment.
	segs, _ := listSegments(dir)
	last := segmentPath(dir, segs[len(segs)-1])
	rec := appendRecord(nil, segmentMarker(t, last), &Row{RequestID: "torn", WorkspaceID: ws.ID, CostMicros: 1})
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w2, err := NewWriter(s, WriterOptions{Dir: dir, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if st := w2.Stats(); st.CorruptBytes != int64(len(rec)/2) || st.ReplayedRows != 100 {
		t.Fatalf("recovery stats %+v", st)
	}
	for i := 100; i < 110; i++ {
		if err := w2.Append(testRow(ws.ID, i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := countRows(t, s, ws.ID); n != 110 {
		t.Fatalf("rows %d, want 110", n)
	}
}

func testSummary(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, 10*Credit)
	other := mustWorkspace(t, s, 10*Credit)
	day1 := time.Date(2026, 5, 1, 23, 59, 0, 0, time.UTC)
	day2 := time.Date(2026, 5, 2, 0, 1, 0, 0, time.UTC)
	mk := func(i int, at time.Time, model, provider, key string, cost Micros) Row {
		r := testRow(ws.ID, i, cost)
		r.Time, r.RequestedModel, r.Provider, r.KeyID = at, model, provider, key
		return r
	}
	rows := []Row{
		mk(1, day1, "m-a", "openai", "k1", 100),
		mk(2, day1, "m-b", "anthropic", "k1", 200),
		mk(3, day2, "m-a", "anthropic", "k2", 300),
		mk(4, day2, "m-a", "openai", "k2", 400),
	}
	rows = append(rows, testRow(other.ID, 5, 999)) // another workspace: never counted
	if err := s.InsertRows(ctx, "n1", rows); err != nil {
		t.Fatal(err)
	}
	type want struct {
		key  string
		n    int64
		cost Micros
	}
	cases := map[string][]want{
		"":         {{"", 4, 1000}},
		"day":      {{"2026-05-01", 2, 300}, {"2026-05-02", 2, 700}},
		"model":    {{"m-a", 3, 800}, {"m-b", 1, 200}},
		"provider": {{"anthropic", 2, 500}, {"openai", 2, 500}},
		"key":      {{"k1", 2, 300}, {"k2", 2, 700}},
	}
	for groupBy, ws2 := range cases {
		sum, err := s.Summary(ctx, ws.ID, time.Time{}, time.Time{}, groupBy)
		if err != nil {
			t.Fatal(groupBy, err)
		}
		if len(sum.Groups) != len(ws2) {
			t.Fatalf("%q: %d groups, want %d: %+v", groupBy, len(sum.Groups), len(ws2), sum.Groups)
		}
		for i, w := range ws2 {
			g := sum.Groups[i]
			if g.Key != w.key || g.Requests != w.n || g.Cost != w.cost || g.Baseline != w.cost+Micros(10*w.n) {
				t.Fatalf("%q group %d = %+v, want %+v", groupBy, i, g, w)
			}
			if g.Output != 50*w.n || g.Reasoning != 7*w.n || g.CacheWrite1h != 4*w.n || g.SaveRouting != Micros(7*w.n) || g.SavePromptCache != Micros(w.n) {
				t.Fatalf("%q group %d tokens/savings %+v", groupBy, i, g)
			}
		}
		if sum.Total.Requests != 4 || sum.Total.Cost != 1000 || sum.Total.InputUncached != 400 || sum.Total.SaveDedupe != 20 {
			t.Fatalf("%q total %+v", groupBy, sum.Total)
		}
		if sum.Balance != 10*Credit-1000 {
			t.Fatalf("%q balance %v", groupBy, sum.Balance)
		}
	}
	// Time bounds are [from, to).
	sum, err := s.Summary(ctx, ws.ID, day1, day2, "")
	if err != nil || sum.Total.Requests != 2 || sum.Total.Cost != 300 {
		t.Fatalf("bounded summary %+v %v", sum.Total, err)
	}
	if _, err := s.Summary(ctx, ws.ID, time.Time{}, time.Time{}, "week"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad group by: %v", err)
	}
	if _, err := s.Summary(ctx, "ws_nope", time.Time{}, time.Time{}, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown workspace: %v", err)
	}
}

// testSummaryIsOneSnapshot reads summaries while rows are billed: the balance and the totals
// must come from one snapshot, so balance + billed cost is always the grant.
func testSummaryIsOneSnapshot(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, 10*Credit)
	done := make(chan error, 1)
	go func() {
		for i := range 200 {
			if err := s.InsertRows(ctx, "n1", []Row{testRow(ws.ID, i, 7)}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for reads := 0; ; reads++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if reads == 0 {
				t.Fatal("no summary read while rows were billed")
			}
			return
		default:
		}
		sum, err := s.Summary(ctx, ws.ID, time.Time{}, time.Time{}, "")
		if err != nil {
			t.Fatal(err)
		}
		if sum.Balance+sum.Total.Cost != 10*Credit {
			t.Fatalf("read %d: balance %d + billed %d != grant %d: two snapshots", reads, sum.Balance, sum.Total.Cost, 10*Credit)
		}
	}
}

func testListAndExport(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, 10*Credit)
	var rows []Row
	for i := range 250 {
		r := testRow(ws.ID, i/2, 1) // pairs share a timestamp: the cursor must break ties
		rows = append(rows, r)
	}
	if err := s.InsertRows(ctx, "n1", rows); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var cur Cursor
	var prev *Row
	pages := 0
	for {
		page, next, err := s.ListRows(ctx, ws.ID, time.Time{}, time.Time{}, 100, cur)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for i := range page {
			r := page[i]
			if seen[r.RequestID] {
				t.Fatalf("row %s listed twice", r.RequestID)
			}
			seen[r.RequestID] = true
			if prev != nil && (r.Time.After(prev.Time) || (r.Time.Equal(prev.Time) && r.RequestID > prev.RequestID)) {
				t.Fatalf("not newest first: %v %s after %v %s", r.Time, r.RequestID, prev.Time, prev.RequestID)
			}
			prev = &page[i]
		}
		if next.IsZero() {
			break
		}
		cur = next
	}
	if len(seen) != 250 || pages != 3 {
		t.Fatalf("listed %d rows in %d pages", len(seen), pages)
	}
	n := 0
	var last time.Time
	err := s.ExportRows(ctx, ws.ID, time.Time{}, time.Time{}, func(r Row) error {
		if r.Time.Before(last) {
			t.Fatalf("export not oldest first")
		}
		last = r.Time
		n++
		return nil
	})
	if err != nil || n != 250 {
		t.Fatalf("export %d rows, %v", n, err)
	}
	stop := errors.New("stop")
	n = 0
	err = s.ExportRows(ctx, ws.ID, time.Time{}, time.Time{}, func(Row) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Fatalf("export stop: %d %v", n, err)
	}
}

func testStoredResponses(t *testing.T, s Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	r := StoredResponse{ID: "resp_" + randHex(8), WorkspaceID: "ws_a", Response: []byte(`{"id":"x","b":1,"a":2}`),
		InputItems: []byte(`[{"role":"user","content":"hi"}]`), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.PutResponse(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetResponse(ctx, "ws_a", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Response) != string(r.Response) || string(got.InputItems) != string(r.InputItems) ||
		!got.CreatedAt.Equal(r.CreatedAt) || !got.ExpiresAt.Equal(r.ExpiresAt) || got.WorkspaceID != "ws_a" {
		t.Fatalf("round trip: %+v", got)
	}
	// Another workspace neither sees, deletes nor overwrites it.
	if _, err := s.GetResponse(ctx, "ws_b", r.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other workspace get: %v", err)
	}
	if err := s.DeleteResponse(ctx, "ws_b", r.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other workspace delete: %v", err)
	}
	steal := r
	steal.WorkspaceID, steal.Response = "ws_b", []byte(`{"stolen":true}`)
	if err := s.PutResponse(ctx, steal); !errors.Is(err, ErrInvalid) {
		t.Fatalf("other workspace overwrite: %v", err)
	}
	// The owner may replace it.
	r.Response = []byte(`{"id":"x","v":2}`)
	if err := s.PutResponse(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetResponse(ctx, "ws_a", r.ID); string(got.Response) != `{"id":"x","v":2}` {
		t.Fatalf("replace: %s", got.Response)
	}
	if err := s.PutResponse(ctx, StoredResponse{ID: "resp_bad", WorkspaceID: "ws_a"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid put: %v", err)
	}
	// Expired rows are invisible, then purged.
	old := StoredResponse{ID: "resp_" + randHex(8), WorkspaceID: "ws_a", Response: []byte(`{}`), InputItems: []byte(`[]`),
		CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
	if err := s.PutResponse(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetResponse(ctx, "ws_a", old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired get: %v", err)
	}
	if err := s.DeleteResponse(ctx, "ws_a", old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired delete: %v", err)
	}
	if n, err := s.PurgeResponses(ctx, now); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	// Delete.
	if err := s.DeleteResponse(ctx, "ws_a", r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetResponse(ctx, "ws_a", r.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted get: %v", err)
	}
	if err := s.DeleteResponse(ctx, "ws_a", r.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
