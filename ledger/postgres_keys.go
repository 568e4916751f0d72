package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The key record's limits, workspaces' limits, key spend and rate windows on PostgreSQL.

const workspaceColumns = `id, name, created_at, granted_micros, spent_micros, rpm, tpm`

func pgScanWorkspace(row pgx.Row) (Workspace, error) {
	var w Workspace
	err := row.Scan(&w.ID, &w.Name, &w.CreatedAt, &w.Granted, &w.Spent, &w.Limits.RPM, &w.Limits.TPM)
	return w, err
}

// ListWorkspaces lists every workspace, oldest first.
func (p *Postgres) ListWorkspaces(ctx context.Context) ([]Workspace, error) {
	rows, err := p.pool.Query(ctx, `SELECT `+workspaceColumns+` FROM workspaces ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Workspace
	for rows.Next() {
		w, err := pgScanWorkspace(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// SetWorkspaceLimits replaces the workspace's rate limits.
func (p *Postgres) SetWorkspaceLimits(ctx context.Context, ws string, l WorkspaceLimits) error {
	if err := l.validate(); err != nil {
		return err
	}
	tag, err := p.pool.Exec(ctx, `UPDATE workspaces SET rpm = $2, tpm = $3 WHERE id = $1`, ws, l.RPM, l.TPM)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// pgLockKeys serializes key creation under a parent with revocations in one workspace. An
// advisory lock, not the workspace row, so key management never waits on the money path.
func pgLockKeys(ctx context.Context, tx pgx.Tx, ws string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('btl_keys:' || $1, 0))`, ws)
	return err
}

// ancestorsSQL walks up from a key through its parents (bounded, though cycles cannot be
// made: a parent always exists before its child).
const ancestorsSQL = `WITH RECURSIVE up (id, parent_id, models, rpm, tpm, budget_micros, budget_period, depth) AS (
		SELECT id, parent_id, models, rpm, tpm, budget_micros, budget_period, 1 FROM api_keys WHERE id = $1
		UNION ALL
		SELECT k.id, k.parent_id, k.models, k.rpm, k.tpm, k.budget_micros, k.budget_period, up.depth + 1
		FROM api_keys k JOIN up ON k.id = up.parent_id WHERE up.depth <= $2)
	SELECT id, models, rpm, tpm, budget_micros, budget_period FROM up ORDER BY depth`

// pgKeyAncestors returns the key parentID and its ancestors, parent first ("" → none).
func pgKeyAncestors(ctx context.Context, q pgQuerier, parentID string) ([]KeyAncestor, error) {
	if parentID == "" {
		return nil, nil
	}
	rows, err := q.Query(ctx, ancestorsSQL, parentID, MaxKeyDepth)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []KeyAncestor
	for rows.Next() {
		var a KeyAncestor
		l := &a.Limits
		if err := rows.Scan(&a.ID, &l.Models, &l.RPM, &l.TPM, &l.BudgetMicros, &l.BudgetPeriod); err != nil {
			return nil, err
		}
		if len(l.Models) == 0 {
			l.Models = nil
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// keySpendSQL sums a key's subtree's rows since a time, this node's and the others'.
const keySpendSQL = `WITH RECURSIVE sub (id, depth) AS (
		SELECT id, 1 FROM api_keys WHERE id = $1 AND workspace_id = $2
		UNION ALL
		SELECT k.id, sub.depth + 1 FROM api_keys k JOIN sub ON k.parent_id = sub.id WHERE sub.depth <= $5)
	SELECT CAST(COALESCE(SUM(CASE WHEN node_id = $4 THEN cost_micros ELSE 0 END), 0) AS bigint),
		CAST(COALESCE(SUM(CASE WHEN node_id <> $4 THEN cost_micros ELSE 0 END), 0) AS bigint)
	FROM ledger_rows WHERE key_id IN (SELECT id FROM sub) AND workspace_id = $2 AND ts >= $3`

// KeySpend sums what a key and the keys minted under it spent since a time.
func (p *Postgres) KeySpend(ctx context.Context, ws, keyID string, since time.Time, node string) (KeySpend, error) {
	since, _ = normRange(since, time.Time{})
	var s KeySpend
	err := p.pool.QueryRow(ctx, keySpendSQL, keyID, ws, since, node, MaxKeyDepth).Scan(&s.Node, &s.Others)
	return s, err
}

// TakeRate adds n to a rate window's counter, all or nothing; see Store.
func (p *Postgres) TakeRate(ctx context.Context, bucket string, window time.Time, n, limit int64) (int64, bool, error) {
	window = window.UTC().Truncate(time.Microsecond)
	if limit <= 0 || n <= limit {
		var used int64
		err := p.pool.QueryRow(ctx, `INSERT INTO rate_windows AS r (bucket, window_start, used) VALUES ($1, $2, $3)
			ON CONFLICT (bucket, window_start) DO UPDATE SET used = r.used + $3
			WHERE $4 <= 0 OR r.used + $3 <= $4
			RETURNING used`, cleanText(bucket), window, n, limit).Scan(&used)
		if err == nil {
			return used, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, false, err
		}
	}
	var used int64
	err := p.pool.QueryRow(ctx, `SELECT used FROM rate_windows WHERE bucket = $1 AND window_start = $2`, cleanText(bucket), window).Scan(&used)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	return used, false, err
}

// PurgeRate deletes rate windows that started before t.
func (p *Postgres) PurgeRate(ctx context.Context, before time.Time) (int64, error) {
	tag, err := p.pool.Exec(ctx, `DELETE FROM rate_windows WHERE window_start < $1`, before.UTC())
	return tag.RowsAffected(), err
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nonNil stores an empty list as '{}' rather than NULL.
func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}
