package ledger

import (
	"context"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
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

// timeOrderedID mimics the gateway's request ids (handlers/exchange.go): milliseconds first,
// so new rows land at the right edge of the primary key.
func timeOrderedID(t time.Time, r *rand.Rand) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16|r.Uint64()&0xffff)
	binary.LittleEndian.PutUint64(b[8:], r.Uint64())
	return "req_" + base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// ingestRows fills rows with the next batch of a steady stream: 10 workspaces, 2000 rows
// per simulated second.
func ingestRows(rows []Row, wss []string, clock *time.Time, seq *int, r *rand.Rand) {
	for i := range rows {
		*seq++
		*clock = clock.Add(500 * time.Microsecond)
		rows[i] = testRow(wss[*seq%len(wss)], *seq, 1000)
		rows[i].Time = *clock
		rows[i].RequestID = timeOrderedID(*clock, r)
	}
}

// BenchmarkIngestSQLite measures the writer's InsertRows batches (1000 rows, time-ordered
// ids) on an empty ledger and on one that already holds a million rows: ingest must stay
// flat as the table grows. Set BTL_INGEST_ROWS to change the prefill.
func BenchmarkIngestSQLite(b *testing.B) {
	big := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("BTL_INGEST_ROWS")); err == nil && v > 0 {
		big = v
	}
	// 1000-row batches are the writer's full ones; 600 rows is one 200 ms flush at ~3,000
	// requests/s and 60 one at 300, where a transaction's fixed cost (the last page of each
	// index rewritten) is not yet amortised.
	for _, pre := range []int{0, big} {
		for _, batch := range []int{1000, 600, 60} {
			benchIngestSQLite(b, pre, batch)
		}
	}
}

func benchIngestSQLite(b *testing.B, pre, batch int) {
	b.Run(fmt.Sprintf("table=%d/batch=%d", pre, batch), func(b *testing.B) {
		ctx := context.Background()
		s := newSQLiteStore(b)
		var wss []string
		for range 10 {
			wss = append(wss, mustWorkspace(b, s, 1_000_000_000*Credit).ID)
		}
		r := rand.New(rand.NewPCG(1, 2))
		clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		seq := 0
		rows := make([]Row, batch)
		for seq < pre {
			ingestRows(rows, wss, &clock, &seq, r)
			if err := s.InsertRows(ctx, "n1", rows); err != nil {
				b.Fatal(err)
			}
		}
		start := seq
		cpu0 := processCPU()
		for b.Loop() {
			ingestRows(rows, wss, &clock, &seq, r)
			if err := s.InsertRows(ctx, "n1", rows); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(seq-start)/b.Elapsed().Seconds(), "rows/s")
		// CPU per row is steadier than wall time on a shared machine.
		b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(seq-start), "cpu-µs/row")
	})
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWriterThroughput appends 1000 rows from 16 goroutines and waits until the
// writer's reader has handed them all to the store: the spool's whole cost per row, reader
// included (an appender-only figure flatters a writer whose reader falls behind).
func BenchmarkWriterThroughput(b *testing.B) {
	w, err := NewWriter(discardStore{}, WriterOptions{Dir: b.TempDir(), NodeID: "n1"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	row := testRow("ws_bench", 1, 1234)
	const goroutines, each = 16, 1000 / 16
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range each {
					if err := w.Append(row); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := w.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*goroutines*each), "ns/row")
}
