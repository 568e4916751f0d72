package ledger

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
)

// sqliteInsertChunk is how many rows one INSERT carries: 30 columns × 100 rows stays far
// below SQLite's 32766 bound parameters, and one statement per hundred rows cuts the
// per-statement overhead that dominated single-row inserts.
const sqliteInsertChunk = 100

// sqliteInsertSQL is a multi-row INSERT OR IGNORE of n rows; RETURNING lists only the rows
// actually inserted (a replayed request id is ignored), which is what gets charged.
func sqliteInsertSQL(n int) string {
	one := "(?" + strings.Repeat(", ?", len(rowColumns)-1) + ")"
	var b strings.Builder
	b.WriteString("INSERT OR IGNORE INTO ledger_rows (" + rowColumnList + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(one)
	}
	b.WriteString(" RETURNING workspace_id, cost_micros")
	return b.String()
}

var sqliteInsertFull = sqliteInsertSQL(sqliteInsertChunk)

// InsertRows inserts in one transaction with multi-row INSERTs; only the rows RETURNING
// reports as new are charged to spent and the node's lease.
func (s *SQLite) InsertRows(ctx context.Context, node string, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		costs := map[string]Micros{}
		args := make([]any, 0, sqliteInsertChunk*len(rowColumns))
		var full *sql.Stmt
		for start := 0; start < len(rows); start += sqliteInsertChunk {
			chunk := rows[start:min(start+sqliteInsertChunk, len(rows))]
			args = args[:0]
			for i := range chunk {
				r := &chunk[i]
				stream := 0
				if r.Stream {
					stream = 1
				}
				args = append(args, rowValues(r, toUs(r.Time), stream)...)
			}
			var res *sql.Rows
			var err error
			if len(chunk) == sqliteInsertChunk {
				if full == nil {
					if full, err = tx.PrepareContext(ctx, sqliteInsertFull); err != nil {
						return err
					}
					defer full.Close()
				}
				res, err = full.QueryContext(ctx, args...)
			} else {
				res, err = tx.QueryContext(ctx, sqliteInsertSQL(len(chunk)), args...)
			}
			if err != nil {
				return err
			}
			for res.Next() {
				var ws string
				var c Micros
				if err := res.Scan(&ws, &c); err != nil {
					res.Close()
					return err
				}
				costs[ws] += c
			}
			if err := res.Close(); err != nil {
				return err
			}
		}
		for _, ws := range sortedKeys(costs) {
			c := int64(costs[ws])
			if c == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE workspaces SET spent_micros = spent_micros + ? WHERE id = ?`, c, ws); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE credit_leases SET amount_micros = max(0, amount_micros - ?)
				WHERE workspace_id = ? AND node_id = ?`, c, ws, node); err != nil {
				return err
			}
		}
		return nil
	})
}

// Summary aggregates rows in SQL.
func (s *SQLite) Summary(ctx context.Context, ws string, from, to time.Time, groupBy string) (Summary, error) {
	expr, err := groupExpr(groupBy, `strftime('%Y-%m-%d', ts / 1000000, 'unixepoch')`)
	if err != nil {
		return Summary{}, err
	}
	bal, err := s.Balance(ctx, ws)
	if err != nil {
		return Summary{}, err
	}
	from, to = normRange(from, to)
	sum := Summary{WorkspaceID: ws, From: from, To: to, GroupBy: groupBy, Balance: bal}
	rows, err := s.r.QueryContext(ctx, `SELECT `+expr+` AS g, `+summaryAggregates+`
		FROM ledger_rows WHERE workspace_id = ? AND ts >= ? AND ts < ? GROUP BY 1 ORDER BY 1`, ws, toUs(from), toUs(to))
	if err != nil {
		return Summary{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var g UsageGroup
		if err := rows.Scan(groupDests(&g)...); err != nil {
			return Summary{}, err
		}
		sum.Groups = append(sum.Groups, g)
	}
	if err := rows.Err(); err != nil {
		return Summary{}, err
	}
	finishSummary(&sum)
	return sum, nil
}

func sqliteScanRow(rows *sql.Rows) (Row, error) {
	var r Row
	var ts int64
	var stream int
	err := rows.Scan(rowDests(&r, &ts, &stream)...)
	r.Time, r.Stream = fromUs(ts), stream != 0
	return r, err
}

// ListRows pages newest first by (ts, request_id).
func (s *SQLite) ListRows(ctx context.Context, ws string, from, to time.Time, limit int, after Cursor) ([]Row, Cursor, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	from, to = normRange(from, to)
	q := `SELECT ` + rowColumnList + ` FROM ledger_rows WHERE workspace_id = ? AND ts >= ? AND ts < ?`
	args := []any{ws, toUs(from), toUs(to)}
	if !after.IsZero() {
		q += ` AND (ts, request_id) < (?, ?)`
		args = append(args, toUs(after.Time), after.RequestID)
	}
	q += ` ORDER BY ts DESC, request_id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, Cursor{}, err
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		r, err := sqliteScanRow(rows)
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

// ExportRows pages through the range on the reader pool (keyset on (ts, request_id)) and
// hands each page to fn with no connection held: a client that stops reading an export
// holds no reader, and key lookups have their own connection anyway.
func (s *SQLite) ExportRows(ctx context.Context, ws string, from, to time.Time, fn func(Row) error) error {
	from, to = normRange(from, to)
	return exportPaged(fn, func(after Cursor, out []Row) ([]Row, error) {
		q := `SELECT ` + rowColumnList + ` FROM ledger_rows WHERE workspace_id = ? AND ts >= ? AND ts < ?`
		args := []any{ws, toUs(from), toUs(to)}
		if !after.IsZero() {
			q += ` AND (ts, request_id) > (?, ?)`
			args = append(args, toUs(after.Time), after.RequestID)
		}
		rows, err := s.r.QueryContext(ctx, q+` ORDER BY ts, request_id LIMIT ?`, append(args, exportPageRows)...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := sqliteScanRow(rows)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	})
}

var _ Store = (*SQLite)(nil)

// Audit computes a workspace's money figures independently of each other.
func (s *SQLite) Audit(ctx context.Context, ws string) (Audit, error) {
	a, err := scanAudit(ws, s.r.QueryRowContext(ctx, auditSQL+`?`, ws).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return Audit{}, ErrNotFound
	}
	return a, err
}
