package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"
)

// The key record's limits, workspaces' limits, key spend and rate windows on SQLite.

// sqliteQuerier is what *sql.DB and *sql.Tx share.
type sqliteQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func sqliteScanWorkspace(row scanner) (Workspace, error) {
	var w Workspace
	var created int64
	err := row.Scan(&w.ID, &w.Name, &created, &w.Granted, &w.Spent, &w.Limits.RPM, &w.Limits.TPM)
	w.CreatedAt = fromUs(created)
	return w, err
}

// ListWorkspaces lists every workspace, oldest first.
func (s *SQLite) ListWorkspaces(ctx context.Context) ([]Workspace, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+workspaceColumns+` FROM workspaces ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Workspace
	for rows.Next() {
		w, err := sqliteScanWorkspace(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// SetWorkspaceLimits replaces the workspace's rate limits.
func (s *SQLite) SetWorkspaceLimits(ctx context.Context, ws string, l WorkspaceLimits) error {
	if err := l.validate(); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE workspaces SET rpm = ?, tpm = ? WHERE id = ?`, l.RPM, l.TPM, ws)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

func unmarshalModels(s string, l *KeyLimits) error {
	if err := json.Unmarshal([]byte(s), &l.Models); err != nil {
		return err
	}
	if len(l.Models) == 0 {
		l.Models = nil
	}
	return nil
}

const sqliteAncestorsSQL = `WITH RECURSIVE up (id, parent_id, models, rpm, tpm, budget_micros, budget_period, depth) AS (
		SELECT id, parent_id, models, rpm, tpm, budget_micros, budget_period, 1 FROM api_keys WHERE id = ?1
		UNION ALL
		SELECT k.id, k.parent_id, k.models, k.rpm, k.tpm, k.budget_micros, k.budget_period, up.depth + 1
		FROM api_keys k JOIN up ON k.id = up.parent_id WHERE up.depth <= ?2)
	SELECT id, models, rpm, tpm, budget_micros, budget_period FROM up ORDER BY depth`

// sqliteKeyAncestors returns the key parentID and its ancestors, parent first ("" → none).
func sqliteKeyAncestors(ctx context.Context, q sqliteQuerier, parentID string) ([]KeyAncestor, error) {
	if parentID == "" {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx, sqliteAncestorsSQL, parentID, MaxKeyDepth)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []KeyAncestor
	for rows.Next() {
		var a KeyAncestor
		var models string
		l := &a.Limits
		if err := rows.Scan(&a.ID, &models, &l.RPM, &l.TPM, &l.BudgetMicros, &l.BudgetPeriod); err != nil {
			return nil, err
		}
		if err := unmarshalModels(models, l); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

const sqliteKeySpendSQL = `WITH RECURSIVE sub (id, depth) AS (
		SELECT id, 1 FROM api_keys WHERE id = ?1 AND workspace_id = ?2
		UNION ALL
		SELECT k.id, sub.depth + 1 FROM api_keys k JOIN sub ON k.parent_id = sub.id WHERE sub.depth <= ?5)
	SELECT COALESCE(SUM(CASE WHEN node_id = ?4 THEN cost_micros ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN node_id <> ?4 THEN cost_micros ELSE 0 END), 0)
	FROM ledger_rows WHERE key_id IN (SELECT id FROM sub) AND workspace_id = ?2 AND ts >= ?3`

// KeySpend sums what a key and the keys minted under it spent since a time.
func (s *SQLite) KeySpend(ctx context.Context, ws, keyID string, since time.Time, node string) (KeySpend, error) {
	since, _ = normRange(since, time.Time{})
	var ks KeySpend
	err := s.r.QueryRowContext(ctx, sqliteKeySpendSQL, keyID, ws, toUs(since), node, MaxKeyDepth).Scan(&ks.Node, &ks.Others)
	return ks, err
}

// TakeRate adds n to a rate window's counter, all or nothing; see Store.
func (s *SQLite) TakeRate(ctx context.Context, bucket string, window time.Time, n, limit int64) (int64, bool, error) {
	bucket, w := cleanText(bucket), toUs(window)
	var used int64
	ok := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if limit <= 0 || n <= limit {
			err := tx.QueryRowContext(ctx, `INSERT INTO rate_windows (bucket, window_start, used) VALUES (?1, ?2, ?3)
				ON CONFLICT (bucket, window_start) DO UPDATE SET used = used + ?3
				WHERE ?4 <= 0 OR used + ?3 <= ?4
				RETURNING used`, bucket, w, n, limit).Scan(&used)
			if err == nil {
				ok = true
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		err := tx.QueryRowContext(ctx, `SELECT used FROM rate_windows WHERE bucket = ? AND window_start = ?`, bucket, w).Scan(&used)
		if errors.Is(err, sql.ErrNoRows) {
			err = nil
		}
		return err
	})
	return used, ok, err
}

// PurgeRate deletes rate windows that started before t.
func (s *SQLite) PurgeRate(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM rate_windows WHERE window_start < ?`, toUs(before))
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}
