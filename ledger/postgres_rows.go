package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgStageDDL is a per-connection temp table that COPY fills; ON COMMIT DELETE ROWS empties
// it for the next batch without dropping it (no catalog churn per batch).
const pgStageDDL = `CREATE TEMP TABLE IF NOT EXISTS ledger_rows_stage
	(LIKE ledger_rows INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`

// InsertRows COPYs the batch into a staging table and moves it with ON CONFLICT DO NOTHING;
// RETURNING tells which rows were really new, and only those change spent and the lease.
func (p *Postgres) InsertRows(ctx context.Context, node string, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pgStageDDL); err != nil {
			return fmt.Errorf("ledger: stage table: %w", err)
		}
		src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := &rows[i]
			return rowValues(r, r.Time.UTC().Truncate(time.Microsecond), r.Stream), nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ledger_rows_stage"}, rowColumns, src); err != nil {
			return fmt.Errorf("ledger: copy rows: %w", err)
		}
		// DISTINCT ON guards against one batch carrying the same request id twice.
		res, err := tx.Query(ctx, `WITH ins AS (
				INSERT INTO ledger_rows (`+rowColumnList+`)
				SELECT DISTINCT ON (request_id) `+rowColumnList+` FROM ledger_rows_stage ORDER BY request_id
				ON CONFLICT (request_id) DO NOTHING
				RETURNING workspace_id, cost_micros)
			SELECT workspace_id, sum(cost_micros)::bigint FROM ins GROUP BY workspace_id`)
		if err != nil {
			return fmt.Errorf("ledger: insert rows: %w", err)
		}
		costs := map[string]Micros{}
		for res.Next() {
			var ws string
			var c Micros
			if err := res.Scan(&ws, &c); err != nil {
				res.Close()
				return err
			}
			costs[ws] = c
		}
		res.Close()
		if err := res.Err(); err != nil {
			return err
		}
		return pgCharge(ctx, tx, node, costs)
	})
}

// pgCharge moves committed cost from the node's lease to spent. Workspaces are locked in id
// order so concurrent batches and lease calls cannot deadlock.
func pgCharge(ctx context.Context, tx pgx.Tx, node string, costs map[string]Micros) error {
	for _, ws := range sortedKeys(costs) {
		c := int64(costs[ws])
		if c == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE workspaces SET spent_micros = spent_micros + $2 WHERE id = $1`, ws, c); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE credit_leases SET amount_micros = GREATEST(0, amount_micros - $3)
			WHERE workspace_id = $1 AND node_id = $2`, ws, node, c); err != nil {
			return err
		}
	}
	return nil
}

// Summary aggregates rows in SQL; only the groups travel.
func (p *Postgres) Summary(ctx context.Context, ws string, from, to time.Time, groupBy string) (Summary, error) {
	expr, err := groupExpr(groupBy, `to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')`)
	if err != nil {
		return Summary{}, err
	}
	// One repeatable-read transaction, so the balance and the totals come from one snapshot
	// even while rows are being billed.
	tx, err := p.report.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return Summary{}, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	bal, err := pgBalance(ctx, tx, ws)
	if err != nil {
		return Summary{}, err
	}
	from, to = normRange(from, to)
	s := Summary{WorkspaceID: ws, From: from, To: to, GroupBy: groupBy, Balance: bal}
	rows, err := tx.Query(ctx, `SELECT `+expr+` AS g, `+summaryAggregates+`
		FROM ledger_rows WHERE workspace_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1 ORDER BY 1`, ws, from, to)
	if err != nil {
		return Summary{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var g UsageGroup
		if err := rows.Scan(groupDests(&g)...); err != nil {
			return Summary{}, err
		}
		s.Groups = append(s.Groups, g)
	}
	if err := rows.Err(); err != nil {
		return Summary{}, err
	}
	finishSummary(&s)
	return s, nil
}

func pgScanRow(rows pgx.Rows) (Row, error) {
	var r Row
	err := rows.Scan(rowDests(&r, &r.Time, &r.Stream)...)
	r.Time = r.Time.UTC()
	return r, err
}

// ListRows pages newest first by (ts, request_id), a keyset cursor that stays correct while
// rows are being appended.
func (p *Postgres) ListRows(ctx context.Context, ws string, from, to time.Time, limit int, after Cursor) ([]Row, Cursor, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	from, to = normRange(from, to)
	q := `SELECT ` + rowColumnList + ` FROM ledger_rows WHERE workspace_id = $1 AND ts >= $2 AND ts < $3`
	args := []any{ws, from, to}
	if !after.IsZero() {
		q += ` AND (ts, request_id) < ($5, $6)`
		args = append(args, nil, after.Time.UTC(), after.RequestID)
	} else {
		args = append(args, nil)
	}
	q += ` ORDER BY ts DESC, request_id DESC LIMIT $4`
	args[3] = limit
	rows, err := p.report.Query(ctx, q, args...)
	if err != nil {
		return nil, Cursor{}, err
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		r, err := pgScanRow(rows)
		if err != nil {
			return nil, Cursor{}, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, Cursor{}, err
	}
	var next Cursor
	if len(out) == limit {
		last := out[len(out)-1]
		next = Cursor{Time: last.Time, RequestID: last.RequestID}
	}
	return out, next, nil
}

// ExportRows pages through the range (exportPageRows at a time, keyset on (ts, request_id))
// and hands each page to fn with no connection held, so a client that stops reading an
// export holds nothing of the database.
func (p *Postgres) ExportRows(ctx context.Context, ws string, from, to time.Time, fn func(Row) error) error {
	from, to = normRange(from, to)
	return exportPaged(fn, func(after Cursor, out []Row) ([]Row, error) {
		q := `SELECT ` + rowColumnList + ` FROM ledger_rows WHERE workspace_id = $1 AND ts >= $2 AND ts < $3`
		args := []any{ws, from, to, exportPageRows}
		if !after.IsZero() {
			q += ` AND (ts, request_id) > ($5, $6)`
			args = append(args, after.Time.UTC(), after.RequestID)
		}
		rows, err := p.report.Query(ctx, q+` ORDER BY ts, request_id LIMIT $4`, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := pgScanRow(rows)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	})
}

var _ Store = (*Postgres)(nil)

// Audit computes a workspace's money figures independently of each other.
func (p *Postgres) Audit(ctx context.Context, ws string) (Audit, error) {
	a, err := scanAudit(ws, p.report.QueryRow(ctx, auditSQL+`$1`, ws).Scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return Audit{}, ErrNotFound
	}
	return a, err
}
