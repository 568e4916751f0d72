package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// seedRow is the i-th row of a deterministic seeded period: one row every 25 s, oldest first,
// with every column exercised (CSV quoting included).
func seedRow(ws string, base time.Time, i int) ledger.Row {
	providers := []string{"openai", "anthropic", "bedrock", "gemini"}
	models := []string{"btl-fast", "btl-frontier", "openai/gpt-4o-mini", `odd,"model"`}
	r := ledger.Row{
		RequestID: fmt.Sprintf("req_seed_%07d", i), Time: base.Add(time.Duration(i) * 25 * time.Second),
		WorkspaceID: ws, KeyID: fmt.Sprintf("key_%d", i%3), NodeID: "seed",
		RequestedModel: models[i%len(models)], Provider: providers[i%len(providers)], UpstreamModel: "up-" + strconv.Itoa(i%5),
		Usage: ledger.Usage{InputUncached: int64(100 + i%900), CacheRead: int64(i % 700), CacheWrite5m: int64(i % 11),
			CacheWrite1h: int64(i % 3), Output: int64(20 + i%300), Reasoning: int64(i % 7)},
		CostMicros: ledger.Micros(37 + i%5000), Status: 200, CacheOutcome: []string{"miss", "hit", "coalesced", "bypass"}[i%4],
		Attempts: 1 + i%2, LatencyUs: int64(150_000 + i%90_000), TTFBUs: int64(40_000 + i%1000), Stream: i%3 == 0,
	}
	r.Savings = ledger.Savings{SavePromptCache: ledger.Micros(i % 13), SaveResponseCache: ledger.Micros(i % 17),
		SaveCoalesce: ledger.Micros(i % 5), SaveCompression: ledger.Micros(i % 19), SaveDedupe: ledger.Micros(i % 2),
		SaveOutputBudget: ledger.Micros(i % 23), SaveRouting: ledger.Micros(i % 29)}
	var saved ledger.Micros
	for _, v := range []ledger.Micros{r.SavePromptCache, r.SaveResponseCache, r.SaveCoalesce, r.SaveCompression, r.SaveDedupe, r.SaveOutputBudget, r.SaveRouting} {
		saved += v
	}
	r.BaselineMicros = r.CostMicros + saved
	if i%97 == 0 {
		r.Status, r.ErrorCode, r.CostMicros, r.BaselineMicros, r.Savings = 502, "upstream_error", 0, 0, ledger.Savings{}
		r.Usage = ledger.Usage{}
	}
	return r
}

func seedRows(t testing.TB, db, ws string, base time.Time, n int) {
	t.Helper()
	ctx := context.Background()
	store, err := ledger.OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	batch := make([]ledger.Row, 0, 5000)
	for i := 0; i < n; i++ {
		batch = append(batch, seedRow(ws, base, i))
		if len(batch) == cap(batch) || i == n-1 {
			if err := store.InsertRows(ctx, "seed", batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// expectedCSV renders rows the way the export documents them, written here independently of
// the handler's code: the test's own formatting of dollars, milliseconds and times.
func expectedCSV(w io.Writer, ws string, base time.Time, lo, hi int) error {
	dollars := func(m ledger.Micros) string {
		neg := ""
		if m < 0 {
			neg, m = "-", -m
		}
		return fmt.Sprintf("%s%d.%06d", neg, m/1e6, m%1e6)
	}
	msec := func(us int64) string { return fmt.Sprintf("%d.%03d", us/1000, us%1000) }
	cw := csv.NewWriter(w)
	cw.Write([]string{"time", "request_id", "workspace_id", "key_id", "requested_model", "provider", "upstream_model",
		"input_uncached_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens", "reasoning_tokens",
		"cost_usd", "baseline_usd", "saved_usd", "saved_prompt_cache_usd", "saved_response_cache_usd", "saved_coalesce_usd",
		"saved_compression_usd", "saved_dedupe_usd", "saved_output_budget_usd", "saved_routing_usd",
		"status", "cache", "attempts", "latency_ms", "ttfb_ms", "stream", "error_code"})
	for i := lo; i < hi; i++ {
		r := seedRow(ws, base, i)
		d := func(n int64) string { return fmt.Sprint(n) }
		cw.Write([]string{r.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), r.RequestID, r.WorkspaceID, r.KeyID, r.RequestedModel, r.Provider, r.UpstreamModel,
			d(r.InputUncached), d(r.CacheRead), d(r.CacheWrite5m), d(r.CacheWrite1h), d(r.Output), d(r.Reasoning),
			dollars(r.CostMicros), dollars(r.BaselineMicros), dollars(r.BaselineMicros - r.CostMicros),
			dollars(r.SavePromptCache), dollars(r.SaveResponseCache), dollars(r.SaveCoalesce), dollars(r.SaveCompression),
			dollars(r.SaveDedupe), dollars(r.SaveOutputBudget), dollars(r.SaveRouting),
			d(int64(r.Status)), r.CacheOutcome, d(int64(r.Attempts)), msec(r.LatencyUs), msec(r.TTFBUs), fmt.Sprint(r.Stream), r.ErrorCode})
		if i%1000 == 0 {
			cw.Flush()
		}
	}
	cw.Flush()
	return cw.Error()
}

// heapPeak samples the in-process heap until stop is called and returns the peak above the
// starting (just collected) heap.
func heapPeak() (stop func() (base, peak uint64)) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	peak.Store(base)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		return base, peak.Load()
	}
}

// exportAndCompare downloads the export of rows [lo, hi) and compares it line by line with
// the independently rendered CSV, never holding either whole. It returns the byte count and
// the heap growth while streaming.
func exportAndCompare(t *testing.T, base, key, ws string, seedBase time.Time, lo, hi int) (int64, uint64) {
	t.Helper()
	from := seedBase.Add(time.Duration(lo) * 25 * time.Second).Format(time.RFC3339Nano)
	to := seedBase.Add(time.Duration(hi) * 25 * time.Second).Format(time.RFC3339Nano)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(expectedCSV(pw, ws, seedBase, lo, hi)) }()
	defer pr.Close()

	stop := heapPeak()
	req, _ := http.NewRequest("GET", base+"/v1/usage/export?format=csv&from="+from+"&to="+to, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("export: %d %s", resp.StatusCode, b)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="btl-usage-`+ws) || !strings.HasSuffix(cd, `.csv"`) {
		t.Errorf("Content-Disposition = %q", cd)
	}
	got, want := bufio.NewReaderSize(resp.Body, 64<<10), bufio.NewReaderSize(pr, 64<<10)
	hg, hw := sha256.New(), sha256.New()
	var n int64
	for line := 1; ; line++ {
		g, gerr := got.ReadBytes('\n')
		w, werr := want.ReadBytes('\n')
		hg.Write(g)
		hw.Write(w)
		n += int64(len(g))
		if !bytes.Equal(g, w) {
			t.Fatalf("export line %d differs:\n got %q\nwant %q", line, g, w)
		}
		if gerr != nil || werr != nil {
			if gerr != werr && !(gerr == io.EOF && werr == io.EOF) {
				t.Fatalf("export ended differently at line %d: got %v, want %v", line, gerr, werr)
			}
			break
		}
	}
	heapBase, peak := stop()
	if !bytes.Equal(hg.Sum(nil), hw.Sum(nil)) {
		t.Fatal("export digest differs")
	}
	return n, peak - heapBase
}

// TestUsageExportStreamsLargeRange seeds a large period straight into the store, exports it
// through a real Caddy and compares the CSV byte for byte with the test's own rendering,
// watching the process's heap: streaming must not grow with the range.
func TestUsageExportStreamsLargeRange(t *testing.T) {
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	tl := newTestLedger(t, 100*ledger.Credit)
	seedBase := time.Now().UTC().Truncate(time.Microsecond).Add(-time.Duration(n+10) * 25 * time.Second)
	started := time.Now()
	seedRows(t, tl.db, tl.workspace, seedBase, n)
	// Another workspace's rows in the same period must never appear.
	other := func() string {
		store, err := ledger.OpenSQLite(context.Background(), tl.db)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		ws, _, err := store.CreateWorkspace(context.Background(), "other", 0)
		if err != nil {
			t.Fatal(err)
		}
		return ws.ID
	}()
	seedRowsWithPrefix(t, tl.db, other, seedBase, 500)
	t.Logf("seeded %d rows in %v", n, time.Since(started).Round(time.Millisecond))

	base := startGateway(t, tl.withStorage(`btl {
	}`), fullChain)

	old := debug.SetGCPercent(25) // tight GC so the heap peak reflects live memory
	defer debug.SetGCPercent(old)
	small := n / 10
	smallBytes, smallGrowth := exportAndCompare(t, base, tl.ownerKey, tl.workspace, seedBase, 0, small)
	started = time.Now()
	bigBytes, bigGrowth := exportAndCompare(t, base, tl.ownerKey, tl.workspace, seedBase, 0, n)
	t.Logf("export: %d rows = %d bytes in %v, heap growth %.1f MiB (range of %d rows: %d bytes, heap growth %.1f MiB)",
		n, bigBytes, time.Since(started).Round(time.Millisecond), float64(bigGrowth)/(1<<20), small, smallBytes, float64(smallGrowth)/(1<<20))
	if bigGrowth > uint64(bigBytes)/4 || bigGrowth > 32<<20 {
		t.Errorf("heap grew by %d bytes while exporting %d bytes: the export is not streaming", bigGrowth, bigBytes)
	}
	// A sub-range in the middle, with from/to cutting exactly at row times.
	exportAndCompare(t, base, tl.ownerKey, tl.workspace, seedBase, 1234, 2345)

	// JSONL: one object per row, same rows, oldest first.
	from := seedBase.Format(time.RFC3339Nano)
	to := seedBase.Add(100 * 25 * time.Second).Format(time.RFC3339Nano)
	status, raw := call(t, "GET", base+"/v1/usage/export?format=jsonl&from="+from+"&to="+to, tl.ownerKey, "")
	if status != 200 {
		t.Fatalf("jsonl: %d %s", status, raw)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 100 {
		t.Fatalf("jsonl: %d lines, want 100", len(lines))
	}
	for i, l := range lines {
		var row struct {
			RequestID string      `json:"request_id"`
			Workspace string      `json:"workspace_id"`
			Cost      json.Number `json:"cost_usd"`
			Saved     json.Number `json:"saved_usd"`
		}
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		if err := dec.Decode(&row); err != nil {
			t.Fatalf("jsonl line %d: %v", i, err)
		}
		want := seedRow(tl.workspace, seedBase, i)
		if row.RequestID != want.RequestID || row.Workspace != tl.workspace || row.Cost.String() != want.CostMicros.String() ||
			row.Saved.String() != (want.BaselineMicros-want.CostMicros).String() {
			t.Fatalf("jsonl line %d = %s, want row %+v", i, l, want)
		}
	}
	if status, raw := call(t, "GET", base+"/v1/usage/export?format=xml", tl.ownerKey, ""); status != 400 {
		t.Errorf("format=xml: %d %s", status, raw)
	}

	// /v1/usage/requests: newest first, paged by cursor, no gaps or repeats, own rows only.
	cursor, seen, prev := "", 0, ""
	to = seedBase.Add(time.Duration(n) * 25 * time.Second).Format(time.RFC3339Nano)
	from = seedBase.Add(time.Duration(n-2500) * 25 * time.Second).Format(time.RFC3339Nano)
	for page := 0; ; page++ {
		status, raw := call(t, "GET", base+"/v1/usage/requests?limit=1000&from="+from+"&to="+to+"&cursor="+cursor, tl.ownerKey, "")
		if status != 200 {
			t.Fatalf("requests page %d: %d %s", page, status, raw)
		}
		var res struct {
			Data []struct {
				RequestID string      `json:"request_id"`
				Time      string      `json:"time"`
				Cost      json.Number `json:"cost_usd"`
				Latency   json.Number `json:"latency_ms"`
				Tokens    struct {
					CacheRead int64 `json:"cache_read"`
				} `json:"tokens"`
			} `json:"data"`
			Next    string `json:"next_cursor"`
			HasMore bool   `json:"has_more"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&res); err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Data {
			want := seedRow(tl.workspace, seedBase, n-1-seen)
			if r.RequestID != want.RequestID || r.Cost.String() != want.CostMicros.String() || r.Tokens.CacheRead != want.CacheRead ||
				r.Latency.String() != fmt.Sprintf("%d.%03d", want.LatencyUs/1000, want.LatencyUs%1000) || (prev != "" && r.Time > prev) {
				t.Fatalf("requests row %d = %+v, want %+v", seen, r, want)
			}
			prev = r.Time
			seen++
		}
		if !res.HasMore {
			break
		}
		cursor = res.Next
	}
	if seen != 2500 {
		t.Fatalf("paged through %d rows, want 2500", seen)
	}
	if status, _ := call(t, "GET", base+"/v1/usage/requests?limit=0", tl.ownerKey, ""); status != 400 {
		t.Errorf("limit=0: %d", status)
	}
	if status, _ := call(t, "GET", base+"/v1/usage/requests?cursor=!!", tl.ownerKey, ""); status != 400 {
		t.Errorf("bad cursor: %d", status)
	}
}

// seedRowsWithPrefix seeds rows for another workspace with their own request ids.
func seedRowsWithPrefix(t testing.TB, db, ws string, base time.Time, n int) {
	t.Helper()
	store, err := ledger.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rows := make([]ledger.Row, n)
	for i := range rows {
		rows[i] = seedRow(ws, base, i*7)
		rows[i].RequestID = "req_other_" + strconv.Itoa(i)
	}
	if err := store.InsertRows(context.Background(), "seed", rows); err != nil {
		t.Fatal(err)
	}
}
