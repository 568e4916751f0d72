package ledger

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
)

// sqliteInsertChunk is how many rows one INSERT carries: 30 columns × 100 rows stays far
// below SQLite's 32766 bound parameters.
const sqliteInsertChunk = 100

// sqliteInsertSQL is a multi-row INSERT OR IGNORE of n rows (a replayed request id is
// ignored).
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
	return b.String()
}

// InsertRows inserts in one transaction, up to a hundred rows per statement. Only new rows
// are charged: when a statement inserts fewer rows than it carries (a replay), that chunk is
// redone row by row under a savepoint to learn which.
func (s *SQLite) InsertRows(ctx context.Context, node string, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	// Prepared outside the transaction, which holds the writer's one connection.
	sizes := []int{1, min(len(rows), sqliteInsertChunk)}
	if tail := len(rows) % sqliteInsertChunk; tail > 0 {
		sizes = append(sizes, tail)
	}
	prepared, err := s.insertStmts(ctx, sizes)
	if err != nil {
		return err
	}
	spend, lease := prepared[sqliteSpendStmt], prepared[sqliteLeaseStmt]
	return s.tx(ctx, func(tx *sql.Tx) error {
		costs := map[string]Micros{}
		args := make([]any, 0, sqliteInsertChunk*len(rowColumns))
		inTx := map[int]*sql.Stmt{}
		stmt := func(n int) *sql.Stmt {
			st := inTx[n]
			if st == nil {
				st = tx.StmtContext(ctx, prepared[n]) // closed with the transaction
				inTx[n] = st
			}
			return st
		}
		for start := 0; start < len(rows); start += sqliteInsertChunk {
			chunk := rows[start:min(start+sqliteInsertChunk, len(rows))]
			if len(chunk) > 1 {
				args = args[:0]
				for i := range chunk {
					args = appendRowArgs(args, &chunk[i])
				}
				if _, err := tx.ExecContext(ctx, "SAVEPOINT chunk"); err != nil {
					return err
				}
				res, err := stmt(len(chunk)).ExecContext(ctx, args...)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == int64(len(chunk)) {
					for i := range chunk {
						costs[cleanText(chunk[i].WorkspaceID)] += chunk[i].CostMicros
					}
					if _, err := tx.ExecContext(ctx, "RELEASE chunk"); err != nil {
						return err
					}
					continue
				}
				if _, err := tx.ExecContext(ctx, "ROLLBACK TO chunk; RELEASE chunk"); err != nil {
					return err
				}
			}
			for i := range chunk {
				res, err := stmt(1).ExecContext(ctx, appendRowArgs(args[:0], &chunk[i])...)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 1 {
					costs[cleanText(chunk[i].WorkspaceID)] += chunk[i].CostMicros
				}
			}
		}
		var spendTx, leaseTx *sql.Stmt
		for _, ws := range sortedKeys(costs) {
			c := int64(costs[ws])
			if c == 0 {
				continue
			}
			if spendTx == nil {
				spendTx, leaseTx = tx.StmtContext(ctx, spend), tx.StmtContext(ctx, lease)
			}
			if _, err := spendTx.ExecContext(ctx, c, ws); err != nil {
				return err
			}
			if _, err := leaseTx.ExecContext(ctx, c, ws, node); err != nil {
				return err
			}
		}
		return nil
	})
}

// The statements that charge a batch's new rows, keyed beside the n-row inserts.
const (
	sqliteSpendStmt = -1
	sqliteLeaseStmt = -2
)

func sqliteStmtSQL(key int) string {
	switch key {
	case sqliteSpendStmt:
		return `UPDATE workspaces SET spent_micros = spent_micros + ? WHERE id = ?`
	case sqliteLeaseStmt:
		return `UPDATE credit_leases SET amount_micros = max(0, amount_micros - ?) WHERE workspace_id = ? AND node_id = ?`
	}
	return sqliteInsertSQL(key)
}

// insertStmts returns the writer's prepared statements of a batch: the n-row inserts for
// each n in sizes and the two charging updates, preparing the missing ones (at most
// sqliteInsertChunk+2, kept until Close); database/sql prepares one again by itself if the
// connection is ever replaced. Call outside a write transaction.
func (s *SQLite) insertStmts(ctx context.Context, sizes []int) (map[int]*sql.Stmt, error) {
	s.insertMu.Lock()
	defer s.insertMu.Unlock()
	if s.inserts == nil {
		s.inserts = map[int]*sql.Stmt{}
	}
	out := make(map[int]*sql.Stmt, len(sizes)+2)
	for _, n := range append(sizes, sqliteSpendStmt, sqliteLeaseStmt) {
		st := s.inserts[n]
		if st == nil {
			var err error
			if st, err = s.w.PrepareContext(ctx, sqliteStmtSQL(n)); err != nil {
				return nil, err
			}
			s.inserts[n] = st
		}
		out[n] = st
	}
	return out, nil
}

func appendRowArgs(args []any, r *Row) []any {
	stream := 0
	if r.Stream {
		stream = 1
	}
	return append(args, rowValues(r, toUs(r.Time), stream)...)
}

// Summary aggregates rows in SQL.
func (s *SQLite) Summary(ctx context.Context, ws string, from, to time.Time, groupBy string) (Summary, error) {
	expr, err := groupExpr(groupBy, `strftime('%Y-%m-%d', ts / 1000000, 'unixepoch')`)
	if err != nil {
		return Summary{}, err
	}
	// One read transaction: WAL gives it one snapshot, so the balance and the totals agree
	// even while rows are being billed.
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Summary{}, err
	}
	defer func() { _ = tx.Rollback() }()
	bal, err := sqliteBalance(ctx, tx, ws)
	if err != nil {
		return Summary{}, err
	}
	from, to = normRange(from, to)
	sum := Summary{WorkspaceID: ws, From: from, To: to, GroupBy: groupBy, Balance: bal}
	rows, err := tx.QueryContext(ctx, `SELECT `+expr+` AS g, `+summaryAggregates+`
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
	// One upper bound on ts, the earlier of the range's and the cursor's (inclusive), so the
	// index on (workspace_id, ts, request_id) seeks to the page: SQLite scans a row-value
	// comparison, or a second bound, from the range's end, and every page cost the rows
	// before it.
	upper, op := to, "<"
	if !after.IsZero() && after.Time.Before(to) {
		upper, op = after.Time, "<="
	}
	q := `SELECT ` + rowColumnList + ` FROM ledger_rows WHERE workspace_id = ? AND ts >= ? AND ts ` + op + ` ?`
	args := []any{ws, toUs(from), toUs(upper)}
	if !after.IsZero() {
		q += ` AND (ts < ? OR request_id < ?)`
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
		// One lower bound on ts, the later of the range's and the cursor's, so the index seeks
		// to the page (given two, SQLite may seek by the range's and scan every earlier row).
		q := `SELECT ` + rowColumnList + ` FROM ledger_rows WHERE workspace_id = ? AND ts >= ? AND ts < ?`
		lower := from
		if !after.IsZero() && after.Time.After(from) {
			lower = after.Time
		}
		args := []any{ws, toUs(lower), toUs(to)}
		if !after.IsZero() {
			q += ` AND (ts > ? OR request_id > ?)`
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
