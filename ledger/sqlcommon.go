package ledger

import (
	"fmt"
	"strings"
	"time"
)

// rowColumns is the column order of ledger_rows used by every insert, COPY and select,
// matched by rowValues and the scanners.
var rowColumns = []string{
	"request_id", "ts", "workspace_id", "key_id", "node_id",
	"requested_model", "provider", "upstream_model",
	"input_uncached", "cache_read", "cache_write_5m", "cache_write_1h", "output_tokens", "reasoning_tokens",
	"cost_micros", "baseline_micros",
	"save_prompt_cache", "save_response_cache", "save_coalesce", "save_compression", "save_dedupe", "save_output_budget", "save_routing",
	"status", "cache_outcome", "attempts", "latency_us", "ttfb_us", "stream", "error_code",
}

var rowColumnList = strings.Join(rowColumns, ", ")

// rowValues returns r's values in rowColumns order; ts is whatever the backend stores.
func rowValues(r *Row, ts any, stream any) []any {
	return []any{
		cleanText(r.RequestID), ts, cleanText(r.WorkspaceID), cleanText(r.KeyID), cleanText(r.NodeID),
		cleanText(r.RequestedModel), cleanText(r.Provider), cleanText(r.UpstreamModel),
		r.InputUncached, r.CacheRead, r.CacheWrite5m, r.CacheWrite1h, r.Output, r.Reasoning,
		int64(r.CostMicros), int64(r.BaselineMicros),
		int64(r.SavePromptCache), int64(r.SaveResponseCache), int64(r.SaveCoalesce), int64(r.SaveCompression),
		int64(r.SaveDedupe), int64(r.SaveOutputBudget), int64(r.SaveRouting),
		r.Status, cleanText(r.CacheOutcome), r.Attempts, r.LatencyUs, r.TTFBUs, stream, cleanText(r.ErrorCode),
	}
}

// rowDests returns scan destinations in rowColumns order; ts and stream are backend-typed.
func rowDests(r *Row, ts any, stream any) []any {
	return []any{
		&r.RequestID, ts, &r.WorkspaceID, &r.KeyID, &r.NodeID,
		&r.RequestedModel, &r.Provider, &r.UpstreamModel,
		&r.InputUncached, &r.CacheRead, &r.CacheWrite5m, &r.CacheWrite1h, &r.Output, &r.Reasoning,
		&r.CostMicros, &r.BaselineMicros,
		&r.SavePromptCache, &r.SaveResponseCache, &r.SaveCoalesce, &r.SaveCompression,
		&r.SaveDedupe, &r.SaveOutputBudget, &r.SaveRouting,
		&r.Status, &r.CacheOutcome, &r.Attempts, &r.LatencyUs, &r.TTFBUs, stream, &r.ErrorCode,
	}
}

// summaryAggregates is the aggregate select list shared by both backends, in the order
// scanGroup expects. The casts keep PostgreSQL from returning numeric for sum(bigint); CAST (not ::) works in SQLite too.
const summaryAggregates = `count(*),
	CAST(sum(input_uncached) AS bigint), CAST(sum(cache_read) AS bigint), CAST(sum(cache_write_5m) AS bigint),
	CAST(sum(cache_write_1h) AS bigint), CAST(sum(output_tokens) AS bigint), CAST(sum(reasoning_tokens) AS bigint),
	CAST(sum(cost_micros) AS bigint), CAST(sum(baseline_micros) AS bigint),
	CAST(sum(save_prompt_cache) AS bigint), CAST(sum(save_response_cache) AS bigint), CAST(sum(save_coalesce) AS bigint),
	CAST(sum(save_compression) AS bigint), CAST(sum(save_dedupe) AS bigint), CAST(sum(save_output_budget) AS bigint),
	CAST(sum(save_routing) AS bigint)`

func groupDests(g *UsageGroup) []any {
	return []any{
		&g.Key, &g.Requests,
		&g.InputUncached, &g.CacheRead, &g.CacheWrite5m, &g.CacheWrite1h, &g.Output, &g.Reasoning,
		&g.Cost, &g.Baseline,
		&g.SavePromptCache, &g.SaveResponseCache, &g.SaveCoalesce, &g.SaveCompression,
		&g.SaveDedupe, &g.SaveOutputBudget, &g.SaveRouting,
	}
}

// groupExpr maps a group-by name to a column expression; day is rendered by the backend.
func groupExpr(groupBy, dayExpr string) (string, error) {
	switch groupBy {
	case "":
		return "''", nil
	case "day":
		return dayExpr, nil
	case "model":
		return "requested_model", nil
	case "provider":
		return "provider", nil
	case "key":
		return "key_id", nil
	}
	return "", fmt.Errorf("%w: group by %q (want day, model, provider or key)", ErrInvalid, groupBy)
}

// sortedKeys returns the workspace ids of a cost map in order, so transactions that touch
// several workspaces lock them in one global order and cannot deadlock each other.
func sortedKeys(m map[string]Micros) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ { // tiny maps: insertion sort avoids an import
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

func ttlOrDefault(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return time.Minute
	}
	return ttl
}

// exportPageRows is how many rows an export reads per query.
const exportPageRows = 500

// exportPaged drives a keyset-paged export: page appends the rows after the cursor to out;
// fn sees each page's rows once the page's query is done.
func exportPaged(fn func(Row) error, page func(after Cursor, out []Row) ([]Row, error)) error {
	var after Cursor
	buf := make([]Row, 0, exportPageRows)
	for {
		rows, err := page(after, buf[:0])
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rows) < exportPageRows {
			return nil
		}
		last := rows[len(rows)-1]
		after = Cursor{Time: last.Time, RequestID: last.RequestID}
		buf = rows
	}
}
