package ledger

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSpoolBoundsEveryField: a row carrying megabytes in every string is spooled bounded,
// and the rows after it — other tenants' money — all reach the store. Before the bound, a
// model name over 1 MiB made a record that readers took for corruption, and every row after
// it in the segment was skipped.
func TestSpoolBoundsEveryField(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSQLiteStore(t)
	victim := mustWorkspace(t, s, 100*Credit)
	attacker := mustWorkspace(t, s, 100*Credit)
	w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "n1", FlushInterval: time.Hour, BatchSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("é", 1<<20) // 2 MiB, multi-byte runes so the cut must respect them
	var total Micros
	for i := range 20 {
		r := testRow(victim.ID, i, 100)
		total += r.CostMicros
		if err := w.Append(r); err != nil {
			t.Fatal(err)
		}
		if i == 5 {
			bad := testRow(attacker.ID, i, 7)
			bad.RequestedModel, bad.UpstreamModel, bad.Provider, bad.ErrorCode = huge, huge, huge, huge
			bad.KeyID, bad.CacheOutcome = huge, huge
			if err := w.Append(bad); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, cost := countRows(t, s, victim.ID); n != 20 || cost != total {
		t.Fatalf("victim rows %d cost %v, want 20 %v", n, cost, total)
	}
	rows, _, err := s.ListRows(ctx, attacker.ID, time.Time{}, time.Time{}, 10, Cursor{})
	if err != nil || len(rows) != 1 {
		t.Fatalf("attacker rows %d %v", len(rows), err)
	}
	if m := rows[0].RequestedModel; len(m) > MaxFieldBytes || len(m) < MaxFieldBytes-1 || !strings.HasPrefix(huge, m) {
		t.Fatalf("model name stored with %d bytes", len(m))
	}
	if b, _ := s.Balance(ctx, attacker.ID); b != 100*Credit-7 {
		t.Fatalf("attacker balance %v", b)
	}
}

// TestEncodedRecordFitsItsReservation: the largest row the encoder can produce fits the
// space a reservation promises, whatever the field contents.
func TestEncodedRecordFitsItsReservation(t *testing.T) {
	big := strings.Repeat("x", 10*MaxFieldBytes)
	r := Row{RequestID: big, WorkspaceID: big, KeyID: big, NodeID: big, RequestedModel: big, Provider: big,
		UpstreamModel: big, CacheOutcome: big, ErrorCode: big, Time: time.Now(),
		Usage:      Usage{InputUncached: -1 << 63, CacheRead: 1<<63 - 1, CacheWrite5m: -1, CacheWrite1h: -1, Output: -1, Reasoning: -1},
		CostMicros: -1 << 63, BaselineMicros: -1 << 63, Status: -1 << 62, Attempts: -1 << 62, LatencyUs: -1 << 63, TTFBUs: -1 << 63,
		Savings: Savings{-1 << 63, -1 << 63, -1 << 63, -1 << 63, -1 << 63, -1 << 63, -1 << 63}}
	if n := len(appendRecord(nil, testMarker, &r)); n > MaxRecordBytes {
		t.Fatalf("record of %d bytes exceeds MaxRecordBytes %d", n, MaxRecordBytes)
	}
}

// damageRecord flips a payload byte of the k-th record (0-based) of a marked segment.
func damageRecord(t *testing.T, path string, k int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := segmentMarker(t, path)
	off := segHeaderSize
	for range k {
		_, n, err := decodeRecord(b[off:], m)
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	// One byte in place: the running writer's reader may be reading this file.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := off + recordHeaderSize + 3
	if _, err := f.WriteAt([]byte{b[at] ^ 0xff}, int64(at)); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolSkipsOnlyTheDamagedRecord: damage in the middle of a segment costs the damaged
// record and nothing after it, both when the spool is recovered at start and when the
// running writer's reader meets it (a torn write that could not be cut back).
func TestSpoolSkipsOnlyTheDamagedRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Run("recovery", func(t *testing.T) {
		s := newSQLiteStore(t)
		ws := mustWorkspace(t, s, 100*Credit)
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
		segs, _ := listSegments(dir)
		damageRecord(t, segmentPath(dir, segs[len(segs)-1]), 40)
		w2, err := NewWriter(s, WriterOptions{Dir: dir, NodeID: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		if st := w2.Stats(); st.ReplayedRows != 99 || st.CorruptBytes == 0 {
			t.Fatalf("recovery stats %+v", st)
		}
		if err := w2.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := countRows(t, s, ws.ID); n != 99 {
			t.Fatalf("rows %d, want 99: a damaged record must cost only itself", n)
		}
	})
	t.Run("running", func(t *testing.T) {
		s := newSQLiteStore(t)
		ws := mustWorkspace(t, s, 100*Credit)
		w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			if i == 40 { // half a record left behind by a write whose truncate also failed
				rec := appendRecord(nil, w.marker, &Row{RequestID: "torn", WorkspaceID: ws.ID, CostMicros: 1})
				w.mu.Lock()
				n, err := w.f.Write(rec[:len(rec)/2])
				w.end.Off += int64(n)
				w.mu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Append(testRow(ws.ID, i, 1)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := countRows(t, s, ws.ID); n != 100 || w.Stats().CorruptBytes == 0 {
			t.Fatalf("rows %d, want 100 (damage skipped: %d bytes)", n, w.Stats().CorruptBytes)
		}
	})
}

// TestSpoolGroupCommit: many concurrent appenders, each row spooled exactly once and
// committed; the writes are shared (logged, not asserted: grouping depends on scheduling).
func TestSpoolGroupCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 1000*Credit)
	w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "n1", SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 32, 100
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				slot, err := w.Reserve()
				if err != nil {
					t.Error(err)
					return
				}
				if err := slot.Append(testRow(ws.ID, g*each+i, 3)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, cost := countRows(t, s, ws.ID); n != workers*each || cost != 3*workers*each {
		t.Fatalf("rows %d cost %v", n, cost)
	}
	st := w.Stats()
	t.Logf("%d rows in %d write(2) calls across segment rotations", st.AppendedRows, st.Writes)
}

// TestSpoolFullRefusesReservations: when the disk cannot hold another row, Reserve fails
// with ErrSpoolFull (the caller refuses the request before it costs anything); rows already
// reserved are still written; space coming back makes reservations work again.
func TestSpoolFullRefusesReservations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var full sync.Map
	preallocate = func(f *os.File, off, size int64) error {
		if _, ok := full.Load("full"); ok {
			return syscall.ENOSPC
		}
		return fallocate(f, off, size)
	}
	t.Cleanup(func() { preallocate = fallocate })
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 100*Credit)
	w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "n1", SpaceChunk: 4 * MaxRecordBytes})
	if err != nil {
		t.Fatal(err)
	}
	held, err := w.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	full.Store("full", true)
	// Requests in flight hold their reservations: only what was preallocated can be promised.
	var granted []Slot
	var refused int
	for range 20 {
		slot, err := w.Reserve()
		if err != nil {
			if !errors.Is(err, ErrSpoolFull) {
				t.Fatalf("err %v, want ErrSpoolFull", err)
			}
			refused++
			continue
		}
		granted = append(granted, slot)
	}
	if len(granted) > 3 || w.Stats().SpaceErrors != int64(refused) {
		t.Fatalf("granted %d of 20 with room for 4 rows, one already held", len(granted))
	}
	for i := range granted {
		if err := granted[i].Append(testRow(ws.ID, i, 1)); err != nil {
			t.Fatalf("a reserved row must be written on a full disk: %v", err)
		}
	}
	if err := held.Append(testRow(ws.ID, 99, 1)); err != nil {
		t.Fatalf("a reserved row must be written on a full disk: %v", err)
	}
	full.Delete("full")
	if slot, err := w.Reserve(); err != nil {
		t.Fatalf("after space came back: %v", err)
	} else {
		slot.Cancel()
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := countRows(t, s, ws.ID); n != int64(len(granted)+1) {
		t.Fatalf("rows %d, want %d", n, len(granted)+1)
	}
}

// TestWriterCloseWaitsForReservations: Close lets requests in flight spend their
// reservations (a reload must not lose their rows) and refuses new ones meanwhile.
func TestWriterCloseWaitsForReservations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, 100*Credit)
	w, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	inFlight, err := w.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close(ctx) }()
	for { // Close has begun once reservations are refused
		slot, err := w.Reserve()
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		slot.Cancel()
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a reservation open", err)
	default:
	}
	if err := inFlight.Append(testRow(ws.ID, 1, 42)); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if n, cost := countRows(t, s, ws.ID); n != 1 || cost != 42 {
		t.Fatalf("rows %d cost %v", n, cost)
	}

	// A reservation still open when Close's context ends is reported, not waited for forever.
	w2, err := NewWriter(s, WriterOptions{Dir: t.TempDir(), NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	stuck, _ := w2.Reserve()
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := w2.Close(short); err == nil || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("close with an abandoned reservation: %v", err)
	}
	if err := stuck.Append(testRow(ws.ID, 2, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}
