package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// discardStore accepts every batch instantly, so writer benchmarks measure the spool only.
type discardStore struct{ Store }

func (discardStore) InsertRows(context.Context, string, []Row) error { return nil }

// BenchmarkWriterAppend measures spooling one row: serial (one write(2) per row) and from
// many goroutines at once (group commit shares the write(2) among them).
func BenchmarkWriterAppend(b *testing.B) {
	w, err := NewWriter(discardStore{}, WriterOptions{Dir: b.TempDir(), NodeID: "n1"})
	if err != nil {
		b.Fatal(err)
	}
	row := testRow("ws_bench", 1, 1234)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := w.Append(row); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16) // requests in flight per core, as on a busy gateway
		before := w.Stats().Writes
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := w.Append(row); err != nil {
					b.Error(err)
					return
				}
			}
		})
		if writes := w.Stats().Writes - before; writes > 0 {
			b.ReportMetric(float64(b.N)/float64(writes), "rows/write")
		}
	})
	if err := w.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkCreditsReserve(b *testing.B) {
	ctx := context.Background()
	s := newSQLiteStore(b)
	ws := mustWorkspace(b, s, 1_000_000*Credit)
	c := NewCredits(s, "n1", CreditsOptions{})
	defer c.Close(ctx)
	if _, err := c.Reserve(ctx, ws.ID, 1000); err != nil { // warm the lease
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := c.Reserve(ctx, ws.ID, 1000)
			if err != nil {
				b.Fatal(err)
			}
			r.Release()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := c.Reserve(ctx, ws.ID, 1000)
				if err != nil {
					b.Error(err)
					return
				}
				r.Release()
			}
		})
	})
	if st := c.Stats(); st.Misses > 10 {
		b.Logf("misses %d of %d", st.Misses, st.Hits+st.Misses)
	}
}

// BenchmarkIngestPostgres measures InsertRows throughput in batches of 1000 (COPY into the
// staging table, ON CONFLICT insert, spent/lease update).
func BenchmarkIngestPostgres(b *testing.B) {
	ctx := context.Background()
	s := newPGStore(b)
	var wss []string
	for range 10 {
		wss = append(wss, mustWorkspace(b, s, 1_000_000*Credit).ID)
	}
	const batch = 1000
	rows := make([]Row, batch)
	n := 0
	start := time.Now()
	for b.Loop() {
		for i := range rows {
			n++
			rows[i] = testRow(wss[n%len(wss)], n, 1000)
			rows[i].RequestID = fmt.Sprintf("bench_%d_%d", start.UnixNano(), n)
		}
		if err := s.InsertRows(ctx, "n1", rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
}
