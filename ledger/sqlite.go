package ledger

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// SQLite is the embedded Store for single-node use. Writes go through one connection
// (SQLite allows one writer anyway; queuing in Go beats spinning on SQLITE_BUSY), reads use
// a separate pool that WAL lets run alongside the writer. BEGIN IMMEDIATE plus a busy timeout
// keep a second process (e.g. the CLI) safe.
type SQLite struct {
	w *sql.DB // exactly one connection: every write transaction
	r *sql.DB // readers: reports, listings, exports
	k *sql.DB // key lookups and revocation checks: never behind a report

	// The ledger's n-row inserts, prepared once on the writer's one connection: a large
	// INSERT takes longer to parse than to run on a small batch.
	insertMu sync.Mutex
	inserts  map[int]*sql.Stmt
}

func sqliteDSN(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)") // WAL + NORMAL: durable across app crashes, fast
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
		// The statement and savepoint journals of the ledger inserts are a few pages: kept
		// in memory they cost no temp-file write per page (a sixth of ingest CPU).
		q.Add("_pragma", "temp_store(MEMORY)")
	}
	return "file:" + path + "?" + q.Encode()
}

// OpenSQLite opens (creating if needed) the database file at path and applies migrations.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	s, err := NewSQLite(path)
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// NewSQLite prepares the store without touching the file (connections open on first use),
// so a config can be validated while a gateway runs; call Migrate before use.
func NewSQLite(path string) (*SQLite, error) {
	w, err := sql.Open("sqlite", sqliteDSN(path, false))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	r, err := sql.Open("sqlite", sqliteDSN(path, true))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	k, err := sql.Open("sqlite", sqliteDSN(path, true))
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	k.SetMaxOpenConns(2)
	return &SQLite{w: w, r: r, k: k}, nil
}

// Migrate creates the file if needed and applies the embedded migrations not yet recorded.
func (s *SQLite) Migrate(ctx context.Context) error { return s.migrate(ctx) }

func (s *SQLite) migrate(ctx context.Context) error {
	ms, err := loadMigrations("migrations/sqlite")
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at integer NOT NULL)`); err != nil {
			return err
		}
		for _, m := range ms {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("ledger: migration %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, toUs(time.Now())); err != nil {
				return err
			}
		}
		return nil
	})
}

// tx runs fn in a write transaction, committing when it returns nil.
func (s *SQLite) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func toUs(t time.Time) int64 { return t.UnixMicro() }

func fromUs(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullUs(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func fromNullUs(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromUs(v.Int64)
	return &t
}

// Ping checks the database file is usable.
func (s *SQLite) Ping(ctx context.Context) error { return s.w.PingContext(ctx) }

// Close closes the pools.
func (s *SQLite) Close() error {
	s.insertMu.Lock()
	for _, st := range s.inserts {
		st.Close()
	}
	s.inserts = nil
	s.insertMu.Unlock()
	return errors.Join(s.k.Close(), s.r.Close(), s.w.Close())
}

// Workspace returns one workspace.
func (s *SQLite) Workspace(ctx context.Context, ws string) (Workspace, error) {
	w, err := sqliteScanWorkspace(s.r.QueryRowContext(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE id = ?`, ws))
	if errors.Is(err, sql.ErrNoRows) {
		return w, ErrNotFound
	}
	return w, err
}

// CreateWorkspace creates the workspace, its owner key and the initial grant atomically.
func (s *SQLite) CreateWorkspace(ctx context.Context, name string, initialCredits Micros) (Workspace, string, error) {
	if initialCredits < 0 {
		return Workspace{}, "", fmt.Errorf("%w: negative initial credits", ErrInvalid)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	w := Workspace{ID: newID("ws_"), Name: cleanText(name), CreatedAt: now, Granted: initialCredits}
	var secret string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO workspaces (id, name, created_at, granted_micros) VALUES (?, ?, ?, ?)`,
			w.ID, w.Name, toUs(now), int64(initialCredits)); err != nil {
			return err
		}
		var err error
		if _, secret, err = sqliteCreateKey(ctx, tx, w.ID, KeySpec{Name: "owner", Scopes: AllScopes}); err != nil {
			return err
		}
		if initialCredits > 0 {
			_, err = tx.ExecContext(ctx, `INSERT INTO credit_grants (workspace_id, amount_micros, source, idempotency_key, created_at)
				VALUES (?, ?, 'initial', ?, ?)`, w.ID, int64(initialCredits), "initial:"+w.ID, toUs(now))
		}
		return err
	})
	if err != nil {
		return Workspace{}, "", err
	}
	return w, secret, nil
}

func sqliteCreateKey(ctx context.Context, tx *sql.Tx, ws string, spec KeySpec) (Key, string, error) {
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM workspaces WHERE id = ?`, ws).Scan(&one); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Key{}, "", ErrNotFound
		}
		return Key{}, "", err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	var parent *Key
	if spec.ParentID != "" {
		pk, err := sqliteScanKey(tx.QueryRowContext(ctx, `SELECT `+sqliteKeyColumns+` FROM api_keys WHERE id = ? AND workspace_id = ?`, spec.ParentID, ws))
		if errors.Is(err, sql.ErrNoRows) {
			return Key{}, "", ErrNotFound
		}
		if err != nil {
			return Key{}, "", err
		}
		if pk.Ancestors, err = sqliteKeyAncestors(ctx, tx, pk.ParentID); err != nil {
			return Key{}, "", err
		}
		parent = &pk
	}
	spec, err := prepareKey(spec, parent, now)
	if err != nil {
		return Key{}, "", err
	}
	secret, hash := GenerateKey()
	k := Key{ID: newID("key_"), WorkspaceID: ws, Name: cleanText(spec.Name), Prefix: keyDisplayPrefix(secret), Hash: hash,
		Scopes: spec.Scopes, CreatedAt: now, ExpiresAt: spec.ExpiresAt, ParentID: spec.ParentID, Limits: spec.Limits}
	sj, _ := json.Marshal(scopesToStrings(spec.Scopes))
	mj, _ := json.Marshal(nonNil(spec.Limits.Models))
	l := spec.Limits
	_, err = tx.ExecContext(ctx, `INSERT INTO api_keys (id, workspace_id, name, key_hash, prefix, scopes, created_at, expires_at,
			parent_id, models, rpm, tpm, budget_micros, budget_period)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, ws, k.Name, hash[:], k.Prefix, string(sj), toUs(now), nullUs(spec.ExpiresAt),
		nullString(spec.ParentID), string(mj), l.RPM, l.TPM, int64(l.BudgetMicros), l.BudgetPeriod)
	if err != nil {
		return Key{}, "", err
	}
	return k, secret, nil
}

// CreateKey adds a key to a workspace. The single writer connection serializes it with
// revocations, so a child cannot be created under a parent being revoked.
func (s *SQLite) CreateKey(ctx context.Context, ws string, spec KeySpec) (Key, string, error) {
	var k Key
	var secret string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		k, secret, err = sqliteCreateKey(ctx, tx, ws, spec)
		return err
	})
	return k, secret, err
}

const sqliteKeyColumns = `id, workspace_id, name, prefix, key_hash, scopes, created_at, expires_at, revoked_at,
	parent_id, models, rpm, tpm, budget_micros, budget_period`

type scanner interface{ Scan(...any) error }

func sqliteScanKey(row scanner) (Key, error) {
	var k Key
	var hash []byte
	var scopes, models string
	var created int64
	var expires, revoked sql.NullInt64
	var parent sql.NullString
	l := &k.Limits
	if err := row.Scan(&k.ID, &k.WorkspaceID, &k.Name, &k.Prefix, &hash, &scopes, &created, &expires, &revoked,
		&parent, &models, &l.RPM, &l.TPM, &l.BudgetMicros, &l.BudgetPeriod); err != nil {
		return k, err
	}
	copy(k.Hash[:], hash)
	var ss []string
	if err := json.Unmarshal([]byte(scopes), &ss); err != nil {
		return k, fmt.Errorf("ledger: key %s scopes: %w", k.ID, err)
	}
	if err := unmarshalModels(models, l); err != nil {
		return k, fmt.Errorf("ledger: key %s models: %w", k.ID, err)
	}
	k.Scopes = stringsToScopes(ss)
	k.CreatedAt = fromUs(created)
	k.ExpiresAt, k.RevokedAt = fromNullUs(expires), fromNullUs(revoked)
	k.ParentID = parent.String
	return k, nil
}

// LookupKey finds a key by hash; see Store.
func (s *SQLite) LookupKey(ctx context.Context, hash [32]byte) (Key, error) {
	k, err := sqliteScanKey(s.k.QueryRowContext(ctx, `SELECT `+sqliteKeyColumns+` FROM api_keys WHERE key_hash = ?`, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	if err != nil {
		return Key{}, err
	}
	if subtle.ConstantTimeCompare(k.Hash[:], hash[:]) != 1 {
		return Key{}, ErrNotFound
	}
	if k.Ancestors, err = sqliteKeyAncestors(ctx, s.r, k.ParentID); err != nil {
		return Key{}, err
	}
	return k, k.Check(time.Now())
}

// ListKeys lists a workspace's keys.
func (s *SQLite) ListKeys(ctx context.Context, ws string) ([]Key, error) {
	return sqliteListKeys(ctx, s.r, ws)
}

func sqliteListKeys(ctx context.Context, q sqliteQuerier, ws string) ([]Key, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+sqliteKeyColumns+` FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id`, ws)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := sqliteScanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RevokeKey revokes a key and the keys minted under it; watchers learn about it by polling
// RevokedSince.
func (s *SQLite) RevokeKey(ctx context.Context, ws, keyID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		keys, err := sqliteListKeys(ctx, tx, ws)
		if err != nil {
			return err
		}
		set, err := revocationSet(keys, keyID, time.Now())
		if err != nil {
			return err
		}
		now := toUs(time.Now())
		for _, k := range keys {
			if set[k.ID] && k.RevokedAt == nil {
				if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, now, k.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// RevokedSince lists keys revoked at or after t.
func (s *SQLite) RevokedSince(ctx context.Context, t time.Time) ([]Revocation, error) {
	rows, err := s.k.QueryContext(ctx, `SELECT id, key_hash, revoked_at FROM api_keys WHERE revoked_at >= ? ORDER BY revoked_at`, toUs(t))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var r Revocation
		var hash []byte
		var at int64
		if err := rows.Scan(&r.KeyID, &hash, &at); err != nil {
			return nil, err
		}
		copy(r.Hash[:], hash)
		r.RevokedAt = fromUs(at)
		out = append(out, r)
	}
	return out, rows.Err()
}

// sqlitePollInterval is how often WatchRevocations polls: revocation reaches every cache
// within about half a second.
const sqlitePollInterval = 500 * time.Millisecond

// WatchRevocations polls RevokedSince. The window overlaps by a second so a revocation
// committed while a poll runs is not missed; fn may therefore see a hash more than once.
func (s *SQLite) WatchRevocations(ctx context.Context, fn func(keyHash [32]byte)) error {
	since := time.Now().Add(-time.Second)
	t := time.NewTicker(sqlitePollInterval)
	defer t.Stop()
	seen := map[[32]byte]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		start := time.Now()
		revs, err := s.RevokedSince(ctx, since.Add(-time.Second))
		if err != nil {
			continue
		}
		for _, r := range revs {
			if _, ok := seen[r.Hash]; ok {
				continue
			}
			seen[r.Hash] = r.RevokedAt
			fn(r.Hash)
		}
		since = start
		for h, at := range seen { // forget what can no longer reappear in the window
			if at.Before(since.Add(-5 * time.Second)) {
				delete(seen, h)
			}
		}
	}
}

// Grant records an idempotent grant and raises granted_micros in one transaction.
func (s *SQLite) Grant(ctx context.Context, ws string, amount Micros, source, idempotencyKey string) (bool, error) {
	if amount == 0 {
		return false, fmt.Errorf("%w: zero grant", ErrInvalid)
	}
	if idempotencyKey == "" {
		idempotencyKey = newID("grant_")
	}
	applied := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM workspaces WHERE id = ?`, ws).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO credit_grants (workspace_id, amount_micros, source, idempotency_key, created_at)
			VALUES (?, ?, ?, ?, ?)`, ws, int64(amount), cleanText(source), cleanText(idempotencyKey), toUs(time.Now()))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		applied = true
		_, err = tx.ExecContext(ctx, `UPDATE workspaces SET granted_micros = granted_micros + ? WHERE id = ?`, int64(amount), ws)
		return err
	})
	return applied, err
}

// Balance is granted − spent.
func (s *SQLite) Balance(ctx context.Context, ws string) (Micros, error) {
	return sqliteBalance(ctx, s.r, ws)
}

// sqliteBalance reads a workspace's balance on db or inside a transaction.
func sqliteBalance(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, ws string) (Micros, error) {
	var b Micros
	err := q.QueryRowContext(ctx, `SELECT granted_micros - spent_micros FROM workspaces WHERE id = ?`, ws).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	return b, err
}

// AcquireLease: the single write connection (and BEGIN IMMEDIATE across processes) makes
// the check-then-update atomic, standing in for PostgreSQL's FOR UPDATE.
func (s *SQLite) AcquireLease(ctx context.Context, ws, node string, want, minimum Micros, ttl time.Duration) (Lease, error) {
	if want < minimum {
		want = minimum
	}
	if minimum < 0 || want <= 0 {
		return Lease{}, fmt.Errorf("%w: lease want %d min %d", ErrInvalid, want, minimum)
	}
	var l Lease
	var short *ShortError
	err := s.tx(ctx, func(tx *sql.Tx) error {
		now := toUs(time.Now())
		var free, leased, own, live Micros
		err := tx.QueryRowContext(ctx, `SELECT w.granted_micros - w.spent_micros,
				COALESCE((SELECT sum(amount_micros) FROM credit_leases c WHERE c.workspace_id = w.id), 0),
				COALESCE((SELECT amount_micros FROM credit_leases c WHERE c.workspace_id = w.id AND c.node_id = ?), 0),
				COALESCE((SELECT sum(amount_micros) FROM credit_leases c WHERE c.workspace_id = w.id AND c.node_id <> ? AND c.expires_at > ?), 0)
			FROM workspaces w WHERE w.id = ?`, node, node, now, ws).Scan(&free, &leased, &own, &live)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		free -= leased
		grant := leaseGrant(want, minimum, free)
		if grant == 0 {
			short = &ShortError{Available: max(free, 0), HeldByOthers: leased - own, Returnable: live, Own: own}
			if short.HeldByOthers > 0 { // ask them to give back what they do not use
				_, err = tx.ExecContext(ctx, `UPDATE credit_leases SET return_requested_at = ?
					WHERE workspace_id = ? AND node_id <> ? AND amount_micros > 0`, now, ws, node)
			}
			return err // commit the request; the caller gets short
		}
		expires := now + ttlOrDefault(ttl).Microseconds()
		if _, err := tx.ExecContext(ctx, `INSERT INTO credit_leases (workspace_id, node_id, amount_micros, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (workspace_id, node_id) DO UPDATE SET amount_micros = amount_micros + excluded.amount_micros,
				expires_at = excluded.expires_at`,
			ws, node, int64(grant), expires); err != nil {
			return err
		}
		l.Granted, l.Amount, l.ExpiresAt, l.Available = grant, own+grant, fromUs(expires), free-grant
		return nil
	})
	if err == nil && short != nil {
		return Lease{}, short
	}
	if err != nil {
		return Lease{}, err
	}
	return l, nil
}

// RenewLease extends node's lease, expired or not (an expired lease still holds its money).
func (s *SQLite) RenewLease(ctx context.Context, ws, node string, ttl time.Duration) (Lease, error) {
	var l Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		exp := toUs(time.Now()) + ttlOrDefault(ttl).Microseconds()
		var amount int64
		err := tx.QueryRowContext(ctx, `UPDATE credit_leases SET expires_at = ? WHERE workspace_id = ? AND node_id = ?
			RETURNING amount_micros`, exp, ws, node).Scan(&amount)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		l.Amount, l.ExpiresAt = Micros(amount), fromUs(exp)
		return err
	})
	return l, err
}

// ReturnRequests lists the workspaces whose lease of node another node asked back.
func (s *SQLite) ReturnRequests(ctx context.Context, node string) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT workspace_id FROM credit_leases WHERE node_id = ? AND return_requested_at IS NOT NULL`, node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var ws string
		if err := rows.Scan(&ws); err != nil {
			return nil, err
		}
		out = append(out, ws)
	}
	return out, rows.Err()
}

// ListLeases lists leases, of one node or all.
func (s *SQLite) ListLeases(ctx context.Context, node string) ([]LeaseRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT workspace_id, node_id, amount_micros, expires_at, return_requested_at IS NOT NULL
		FROM credit_leases WHERE ? = '' OR node_id = ? ORDER BY workspace_id, node_id`, node, node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LeaseRecord
	for rows.Next() {
		var r LeaseRecord
		var exp int64
		if err := rows.Scan(&r.WorkspaceID, &r.NodeID, &r.Amount, &exp, &r.ReturnRequested); err != nil {
			return nil, err
		}
		r.ExpiresAt = fromUs(exp)
		out = append(out, r)
	}
	return out, rows.Err()
}

// ReleaseLease returns part of a lease to the pool.
func (s *SQLite) ReleaseLease(ctx context.Context, ws, node string, amount Micros) (Lease, error) {
	if amount <= 0 {
		return Lease{}, fmt.Errorf("%w: release amount %d", ErrInvalid, amount)
	}
	return s.adjustLease(ctx, ws, node, func(before Micros) Micros { return before - min(before, amount) })
}

// TrimLease lowers a lease to at most keep.
func (s *SQLite) TrimLease(ctx context.Context, ws, node string, keep Micros) (Lease, error) {
	if keep < 0 {
		return Lease{}, fmt.Errorf("%w: trim to %d", ErrInvalid, keep)
	}
	return s.adjustLease(ctx, ws, node, func(before Micros) Micros { return min(before, keep) })
}

// adjustLease lowers node's lease to after(before), clearing a return request; the row goes
// at 0.
func (s *SQLite) adjustLease(ctx context.Context, ws, node string, after func(Micros) Micros) (Lease, error) {
	var l Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var before Micros
		var exp int64
		err := tx.QueryRowContext(ctx, `SELECT amount_micros, expires_at FROM credit_leases WHERE workspace_id = ? AND node_id = ?`, ws, node).
			Scan(&before, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		a := after(before)
		l.Granted, l.Amount, l.ExpiresAt = before-a, a, fromUs(exp)
		if a == 0 {
			_, err = tx.ExecContext(ctx, `DELETE FROM credit_leases WHERE workspace_id = ? AND node_id = ?`, ws, node)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE credit_leases SET amount_micros = ?, return_requested_at = NULL
				WHERE workspace_id = ? AND node_id = ?`, int64(a), ws, node)
		}
		return err
	})
	return l, err
}
