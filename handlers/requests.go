package handlers

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
)

// millis renders microseconds as a JSON number of milliseconds with three exact decimals.
type millis int64

func (m millis) MarshalJSON() ([]byte, error) { return []byte(millis(m).String()), nil }

func (m millis) String() string {
	if m < 0 {
		return "-" + millis(-m).String()
	}
	return fmt.Sprintf("%d.%03d", m/1000, m%1000)
}

// requestRow is one ledger row as /v1/usage/requests and the JSONL export show it.
type requestRow struct {
	Time           string       `json:"time"`
	RequestID      string       `json:"request_id"`
	KeyID          string       `json:"key_id,omitempty"`
	RequestedModel string       `json:"model"`
	Provider       string       `json:"provider"`
	UpstreamModel  string       `json:"upstream_model"`
	Tokens         usageTokens  `json:"tokens"`
	CostUSD        usd          `json:"cost_usd"`
	BaselineUSD    usd          `json:"baseline_usd"`
	SavedUSD       usd          `json:"saved_usd"`
	Savings        usageSavings `json:"savings_usd"`
	LatencyMS      millis       `json:"latency_ms"`
	TTFBMS         millis       `json:"ttfb_ms"`
	Status         int          `json:"status"`
	Cache          string       `json:"cache"`
	Stream         bool         `json:"stream"`
	Attempts       int          `json:"attempts"`
	ErrorCode      string       `json:"error_code,omitempty"`
}

// rowTime formats a ledger time: UTC, always six fractional digits (the store keeps µs).
func rowTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

func toRequestRow(r *ledger.Row) requestRow {
	s := r.Savings
	return requestRow{
		Time: rowTime(r.Time), RequestID: r.RequestID, KeyID: r.KeyID,
		RequestedModel: r.RequestedModel, Provider: r.Provider, UpstreamModel: r.UpstreamModel,
		Tokens:  usageTokens{r.InputUncached, r.CacheRead, r.CacheWrite5m, r.CacheWrite1h, r.Output, r.Reasoning},
		CostUSD: usd(r.CostMicros), BaselineUSD: usd(r.BaselineMicros), SavedUSD: usd(r.BaselineMicros - r.CostMicros),
		Savings: usageSavings{usd(s.SavePromptCache), usd(s.SaveResponseCache), usd(s.SaveCoalesce),
			usd(s.SaveCompression), usd(s.SaveDedupe), usd(s.SaveOutputBudget), usd(s.SaveRouting)},
		LatencyMS: millis(r.LatencyUs), TTFBMS: millis(r.TTFBUs), Status: r.Status, Cache: r.CacheOutcome,
		Stream: r.Stream, Attempts: r.Attempts, ErrorCode: r.ErrorCode,
	}
}

// serveRequests answers GET /v1/usage/requests?from&to&limit&cursor: the workspace's ledger
// rows, newest first, one page at a time. next_cursor is empty on the last page.
func (h *Meter) serveRequests(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return
	}
	from, to, perr := parseRange(r)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "limit", "limit must be an integer from 1 to 1000"))
			return
		}
		limit = n
	}
	cur, err := ledger.ParseCursor(q.Get("cursor"))
	if err != nil {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "cursor", "cursor is not one this API returned"))
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	rows, next, err := h.led.Store.ListRows(ctx, ex.WorkspaceID, from, to, limit, cur)
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	data := make([]requestRow, len(rows))
	for i := range rows {
		data[i] = toRequestRow(&rows[i])
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "workspace_id": ex.WorkspaceID, "from": from.UTC(), "to": to.UTC(),
		"data": data, "next_cursor": next.String(), "has_more": !next.IsZero(),
	})
}
