package handlers

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
)

// ExportColumns is the CSV header of /v1/usage/export, in order. Columns are only ever added
// at the end, so scripts that read by position keep working.
var ExportColumns = []string{
	"time", "request_id", "workspace_id", "key_id", "requested_model", "provider", "upstream_model",
	"input_uncached_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
	"output_tokens", "reasoning_tokens",
	"cost_usd", "baseline_usd", "saved_usd",
	"saved_prompt_cache_usd", "saved_response_cache_usd", "saved_coalesce_usd", "saved_compression_usd",
	"saved_dedupe_usd", "saved_output_budget_usd", "saved_routing_usd",
	"status", "cache", "attempts", "latency_ms", "ttfb_ms", "stream", "error_code",
}

// exportFlushRows is how many rows go out between two flushes to the client.
const exportFlushRows = 512

const (
	// exportWriteTimeout: a client that takes nothing of its export for this long loses it
	// (and the slot below), so a stalled reader cannot hold the gateway.
	exportWriteTimeout = 30 * time.Second
	// maxExportsPerWorkspace bounds a workspace's concurrent exports; more get a 429.
	maxExportsPerWorkspace = 2
)

// exportSlots counts each workspace's running exports.
type exportSlots struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *exportSlots) take(ws string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	if e.n[ws] >= maxExportsPerWorkspace {
		return false
	}
	e.n[ws]++
	return true
}

func (e *exportSlots) give(ws string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n[ws]--; e.n[ws] <= 0 {
		delete(e.n, ws)
	}
}

// csvRecord fills rec (len(ExportColumns)) with the row's fields.
func csvRecord(rec []string, r *ledger.Row) {
	i64 := func(n int64) string { return strconv.FormatInt(n, 10) }
	copy(rec, []string{
		rowTime(r.Time), csvText(r.RequestID), csvText(r.WorkspaceID), csvText(r.KeyID), csvText(r.RequestedModel),
		csvText(r.Provider), csvText(r.UpstreamModel),
		i64(r.InputUncached), i64(r.CacheRead), i64(r.CacheWrite5m), i64(r.CacheWrite1h), i64(r.Output), i64(r.Reasoning),
		r.CostMicros.String(), r.BaselineMicros.String(), (r.BaselineMicros - r.CostMicros).String(),
		r.SavePromptCache.String(), r.SaveResponseCache.String(), r.SaveCoalesce.String(), r.SaveCompression.String(),
		r.SaveDedupe.String(), r.SaveOutputBudget.String(), r.SaveRouting.String(),
		strconv.Itoa(r.Status), csvText(r.CacheOutcome), strconv.Itoa(r.Attempts),
		millis(r.LatencyUs).String(), millis(r.TTFBUs).String(), strconv.FormatBool(r.Stream), csvText(r.ErrorCode),
	})
}

// csvText neutralises a text cell a spreadsheet would run as a formula (OWASP's CSV
// injection rule): one starting with =, +, -, @, tab or CR gets a leading apostrophe.
// Only text columns pass through here, so negative amounts stay numbers.
func csvText(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

// exportRow is a JSONL line: the /v1/usage/requests row plus the workspace.
type exportRow struct {
	WorkspaceID string `json:"workspace_id"`
	requestRow
}

// serveExport answers GET /v1/usage/export?from&to&format=csv|jsonl: the workspace's ledger
// rows with from ≤ time < to, oldest first, streamed from the store straight to the client
// (a bounded buffer, flushed every few hundred rows), for reconciliation with invoices.
func (h *Meter) serveExport(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return
	}
	from, to, perr := parseRange(r)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	if !h.exports.take(ex.WorkspaceID) {
		e := providers.Errorf(http.StatusTooManyRequests, "rate_limit_exceeded", "",
			"this workspace already has %d exports running; retry when one has finished", maxExportsPerWorkspace)
		e.RetryAfter = 5 * time.Second
		writeError(w, ex, e)
		return
	}
	defer h.exports.give(ex.WorkspaceID)
	format := r.URL.Query().Get("format")
	var contentType, ext string
	switch format {
	case "", "csv":
		format, contentType, ext = "csv", "text/csv; charset=utf-8", "csv"
	case "jsonl":
		contentType, ext = "application/jsonl; charset=utf-8", "jsonl"
	default:
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "format", "format must be csv or jsonl"))
		return
	}
	name := "btl-usage-" + ex.WorkspaceID + "-" + from.UTC().Format("20060102T150405Z") + "-" + to.UTC().Format("20060102T150405Z") + "." + ext
	hdr := w.Header()
	hdr.Set("Content-Type", contentType)
	hdr.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")

	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 32<<10)
	started := false
	start := func() {
		if !started {
			started = true
			w.WriteHeader(http.StatusOK)
		}
	}
	var (
		cw  *csv.Writer
		enc *json.Encoder
		rec []string
	)
	if format == "csv" {
		cw = csv.NewWriter(bw)
		rec = make([]string, len(ExportColumns))
	} else {
		enc = json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
	}
	// Every flush extends the write deadline: the export goes on while the client reads.
	deadline := func() error {
		if err := rc.SetWriteDeadline(time.Now().Add(exportWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	if err := deadline(); err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	flush := func() error {
		if err := deadline(); err != nil {
			return err
		}
		if cw != nil {
			cw.Flush()
			if err := cw.Error(); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	if cw != nil {
		start()
		if err := cw.Write(ExportColumns); err != nil {
			return
		}
	}
	n := 0
	err := h.led.Store.ExportRows(r.Context(), ex.WorkspaceID, from, to, func(row ledger.Row) error {
		start()
		if cw != nil {
			csvRecord(rec, &row)
			if err := cw.Write(rec); err != nil {
				return err
			}
		} else if err := enc.Encode(exportRow{WorkspaceID: row.WorkspaceID, requestRow: toRequestRow(&row)}); err != nil {
			return err
		}
		n++
		if n%exportFlushRows == 0 {
			return flush()
		}
		return nil
	})
	if err == nil {
		start()
		err = flush()
	}
	if err == nil {
		return
	}
	if r.Context().Err() != nil {
		return // the client left
	}
	h.logger.Error("usage export failed", zap.String("request_id", ex.ID), zap.String("workspace_id", ex.WorkspaceID),
		zap.Int("rows_sent", n), zap.Error(err))
	if !started {
		hdr.Del("Content-Disposition")
		writeError(w, ex, storeError(err))
		return
	}
	// Headers are gone: cut the connection so the client sees an incomplete body rather
	// than a short export that looks whole.
	panic(http.ErrAbortHandler)
}
