package ledger

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store for multi-node deployments, on a pgxpool.Pool.
type Postgres struct {
	pool *pgxpool.Pool
}

// revokeChannel is the NOTIFY channel announcing revoked key hashes (hex).
const revokeChannel = "btl_key_revoked"

// migrateLockKey is the advisory lock that serializes migrations of concurrent processes.
const migrateLockKey int64 = 0x62746c5f6d6967 // "btl_mig"

// NewPostgres builds the pool without touching the network (pgxpool connects lazily), so a
// server can start while the database is down; call Migrate (or use OpenPostgres) before use.
func NewPostgres(dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("ledger: postgres dsn: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("ledger: postgres pool: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

// OpenPostgres is NewPostgres followed by Migrate.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	p, err := NewPostgres(dsn)
	if err != nil {
		return nil, err
	}
	if err := p.Migrate(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Pool exposes the pool, e.g. for pool stats metrics.
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

// Ping checks connectivity.
func (p *Postgres) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// Close closes the pool.
func (p *Postgres) Close() error { p.pool.Close(); return nil }

// Migrate applies the embedded migrations that are not yet recorded. A transaction-scoped
// advisory lock makes two processes starting together take turns.
func (p *Postgres) Migrate(ctx context.Context) error {
	ms, err := loadMigrations("migrations/postgres")
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockKey); err != nil {
			return fmt.Errorf("ledger: migrate lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("ledger: migrate: %w", err)
		}
		done := map[int]bool{}
		rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				return err
			}
			done[v] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, m := range ms {
			if done[m.version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("ledger: migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return err
			}
		}
		return nil
	})
}

// Workspace returns one workspace.
func (p *Postgres) Workspace(ctx context.Context, ws string) (Workspace, error) {
	w, err := pgScanWorkspace(p.pool.QueryRow(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE id = $1`, ws))
	if errors.Is(err, pgx.ErrNoRows) {
		return w, ErrNotFound
	}
	return w, err
}

// CreateWorkspace creates the workspace, its owner key and the initial grant atomically.
func (p *Postgres) CreateWorkspace(ctx context.Context, name string, initialCredits Micros) (Workspace, string, error) {
	if initialCredits < 0 {
		return Workspace{}, "", fmt.Errorf("%w: negative initial credits", ErrInvalid)
	}
	w := Workspace{ID: newID("ws_"), Name: cleanText(name), Granted: initialCredits}
	var secret string
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO workspaces (id, name, granted_micros) VALUES ($1, $2, $3) RETURNING created_at`,
			w.ID, w.Name, int64(initialCredits)).Scan(&w.CreatedAt); err != nil {
			return err
		}
		var err error
		if _, secret, err = pgCreateKey(ctx, tx, w.ID, KeySpec{Name: "owner", Scopes: AllScopes}); err != nil {
			return err
		}
		if initialCredits > 0 {
			_, err = tx.Exec(ctx, `INSERT INTO credit_grants (workspace_id, amount_micros, source, idempotency_key) VALUES ($1, $2, 'initial', $3)`,
				w.ID, int64(initialCredits), "initial:"+w.ID)
		}
		return err
	})
	if err != nil {
		return Workspace{}, "", err
	}
	return w, secret, nil
}

type pgQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func pgCreateKey(ctx context.Context, tx pgx.Tx, ws string, spec KeySpec) (Key, string, error) {
	now := time.Now()
	var parent *Key
	if spec.ParentID != "" {
		// Serialize with revocations in this workspace, so a child cannot be created under a
		// parent whose revocation is committing (and so escape it).
		if err := pgLockKeys(ctx, tx, ws); err != nil {
			return Key{}, "", err
		}
		pk, err := pgScanKey(tx.QueryRow(ctx, `SELECT `+pgKeyColumns+` FROM api_keys WHERE id = $1 AND workspace_id = $2`, spec.ParentID, ws))
		if errors.Is(err, pgx.ErrNoRows) {
			return Key{}, "", ErrNotFound
		}
		if err != nil {
			return Key{}, "", err
		}
		if pk.Ancestors, err = pgKeyAncestors(ctx, tx, pk.ParentID); err != nil {
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
		Scopes: spec.Scopes, ExpiresAt: spec.ExpiresAt, ParentID: spec.ParentID, Limits: spec.Limits}
	l := spec.Limits
	err = tx.QueryRow(ctx, `INSERT INTO api_keys (id, workspace_id, name, key_hash, prefix, scopes, expires_at,
			parent_id, models, rpm, tpm, budget_micros, budget_period)
		SELECT $1, id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM workspaces WHERE id = $2 RETURNING created_at`,
		k.ID, ws, k.Name, hash[:], k.Prefix, scopesToStrings(spec.Scopes), spec.ExpiresAt,
		nullString(spec.ParentID), nonNil(l.Models), l.RPM, l.TPM, int64(l.BudgetMicros), l.BudgetPeriod).Scan(&k.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, "", ErrNotFound
	}
	if err != nil {
		return Key{}, "", err
	}
	return k, secret, nil
}

// CreateKey adds a key to a workspace.
func (p *Postgres) CreateKey(ctx context.Context, ws string, spec KeySpec) (Key, string, error) {
	var k Key
	var secret string
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		k, secret, err = pgCreateKey(ctx, tx, ws, spec)
		return err
	})
	return k, secret, err
}

const pgKeyColumns = `id, workspace_id, name, prefix, key_hash, scopes, created_at, expires_at, revoked_at,
	parent_id, models, rpm, tpm, budget_micros, budget_period`

func pgScanKey(row pgx.Row) (Key, error) {
	var k Key
	var hash []byte
	var scopes []string
	var parent *string
	l := &k.Limits
	if err := row.Scan(&k.ID, &k.WorkspaceID, &k.Name, &k.Prefix, &hash, &scopes, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt,
		&parent, &l.Models, &l.RPM, &l.TPM, &l.BudgetMicros, &l.BudgetPeriod); err != nil {
		return k, err
	}
	copy(k.Hash[:], hash)
	k.Scopes = stringsToScopes(scopes)
	if parent != nil {
		k.ParentID = *parent
	}
	if len(l.Models) == 0 {
		l.Models = nil
	}
	return k, nil
}

// LookupKey finds a key by hash; see Store.
func (p *Postgres) LookupKey(ctx context.Context, hash [32]byte) (Key, error) {
	k, err := pgScanKey(p.pool.QueryRow(ctx, `SELECT `+pgKeyColumns+` FROM api_keys WHERE key_hash = $1`, hash[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	if err != nil {
		return Key{}, err
	}
	// Defence in depth: the index lookup is by equality; re-check in constant time.
	if subtle.ConstantTimeCompare(k.Hash[:], hash[:]) != 1 {
		return Key{}, ErrNotFound
	}
	if k.Ancestors, err = pgKeyAncestors(ctx, p.pool, k.ParentID); err != nil {
		return Key{}, err
	}
	return k, k.Check(time.Now())
}

// ListKeys lists a workspace's keys.
func (p *Postgres) ListKeys(ctx context.Context, ws string) ([]Key, error) {
	return pgListKeys(ctx, p.pool, ws)
}

func pgListKeys(ctx context.Context, q pgQuerier, ws string) ([]Key, error) {
	rows, err := q.Query(ctx, `SELECT `+pgKeyColumns+` FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id`, ws)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := pgScanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RevokeKey revokes a key and the keys minted under it, and NOTIFYs listeners in the same
// transaction, so the notifications are delivered if and only if the revocation commits.
func (p *Postgres) RevokeKey(ctx context.Context, ws, keyID string) error {
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if err := pgLockKeys(ctx, tx, ws); err != nil {
			return err
		}
		keys, err := pgListKeys(ctx, tx, ws)
		if err != nil {
			return err
		}
		set, err := revocationSet(keys, keyID, time.Now())
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(set))
		for id := range set {
			ids = append(ids, id)
		}
		rows, err := tx.Query(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = ANY($1) AND revoked_at IS NULL RETURNING key_hash`, ids)
		if err != nil {
			return err
		}
		hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		for _, h := range hashes {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, revokeChannel, hex.EncodeToString(h)); err != nil {
				return err
			}
		}
		return nil
	})
}

// RevokedSince lists keys revoked at or after t.
func (p *Postgres) RevokedSince(ctx context.Context, t time.Time) ([]Revocation, error) {
	rows, err := p.pool.Query(ctx, `SELECT id, key_hash, revoked_at FROM api_keys WHERE revoked_at >= $1 ORDER BY revoked_at`, t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var r Revocation
		var hash []byte
		if err := rows.Scan(&r.KeyID, &hash, &r.RevokedAt); err != nil {
			return nil, err
		}
		copy(r.Hash[:], hash)
		out = append(out, r)
	}
	return out, rows.Err()
}

// WatchRevocations LISTENs on a dedicated connection. After any connection loss it
// reconnects with backoff and replays RevokedSince from shortly before the last known point,
// so a revocation is never missed (fn may see a hash twice).
func (p *Postgres) WatchRevocations(ctx context.Context, fn func(keyHash [32]byte)) error {
	since := time.Now().Add(-time.Second)
	backoff := 100 * time.Millisecond
	first := true
	for {
		err := p.listenOnce(ctx, fn, &since, first)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_ = err // connection trouble: retry below
		first = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (p *Postgres) listenOnce(ctx context.Context, fn func([32]byte), since *time.Time, first bool) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A LISTENing connection must not go back to the pool.
	defer func() { _ = conn.Conn().Close(context.Background()); conn.Release() }()
	if _, err := conn.Exec(ctx, "LISTEN "+revokeChannel); err != nil {
		return err
	}
	if !first { // catch up on what happened while we were not listening
		revs, err := p.RevokedSince(ctx, since.Add(-time.Second))
		if err != nil {
			return err
		}
		for _, r := range revs {
			fn(r.Hash)
		}
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		*since = time.Now().Add(-5 * time.Second)
		b, err := hex.DecodeString(n.Payload)
		if err != nil || len(b) != 32 {
			continue
		}
		var h [32]byte
		copy(h[:], b)
		fn(h)
	}
}

// Grant records an idempotent grant and raises granted_micros in one transaction.
func (p *Postgres) Grant(ctx context.Context, ws string, amount Micros, source, idempotencyKey string) (bool, error) {
	if amount == 0 {
		return false, fmt.Errorf("%w: zero grant", ErrInvalid)
	}
	if idempotencyKey == "" {
		idempotencyKey = newID("grant_")
	}
	applied := false
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE`, ws).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO credit_grants (workspace_id, amount_micros, source, idempotency_key)
			VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING`, ws, int64(amount), cleanText(source), cleanText(idempotencyKey))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		applied = true
		_, err = tx.Exec(ctx, `UPDATE workspaces SET granted_micros = granted_micros + $2 WHERE id = $1`, ws, int64(amount))
		return err
	})
	return applied, err
}

// Balance is granted − spent.
func (p *Postgres) Balance(ctx context.Context, ws string) (Micros, error) {
	var b Micros
	err := p.pool.QueryRow(ctx, `SELECT granted_micros - spent_micros FROM workspaces WHERE id = $1`, ws).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	return b, err
}

// AcquireLease checks the invariant under the workspace row lock, so concurrent nodes can
// never lease more than the balance. Expiry uses the database clock to avoid node skew.
func (p *Postgres) AcquireLease(ctx context.Context, ws, node string, want, minimum Micros, ttl time.Duration) (Lease, error) {
	if want < minimum {
		want = minimum
	}
	if minimum < 0 || want <= 0 {
		return Lease{}, fmt.Errorf("%w: lease want %d min %d", ErrInvalid, want, minimum)
	}
	var l Lease
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var free, leased, own int64
		var ownExpired bool
		// Lock first, then read the leases in a separate statement: under READ COMMITTED a
		// subquery in the locking statement would use the snapshot taken before the lock
		// wait and miss a lease another node committed meanwhile.
		err := tx.QueryRow(ctx, `SELECT granted_micros - spent_micros FROM workspaces WHERE id = $1 FOR UPDATE`, ws).Scan(&free)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `SELECT COALESCE(sum(amount_micros), 0)::bigint FROM credit_leases
			WHERE workspace_id = $1 AND expires_at > clock_timestamp()`, ws).Scan(&leased)
		if err != nil {
			return err
		}
		free -= leased
		err = tx.QueryRow(ctx, `SELECT amount_micros, expires_at <= clock_timestamp() FROM credit_leases WHERE workspace_id = $1 AND node_id = $2`, ws, node).
			Scan(&own, &ownExpired)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if ownExpired {
			l.Reset, own = true, 0
		}
		grant := min(int64(want), free)
		if grant < int64(minimum) || grant <= 0 {
			return ErrInsufficientCredits
		}
		l.Granted = Micros(grant)
		return tx.QueryRow(ctx, `INSERT INTO credit_leases (workspace_id, node_id, amount_micros, expires_at)
			VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 microsecond')
			ON CONFLICT (workspace_id, node_id) DO UPDATE SET amount_micros = EXCLUDED.amount_micros, expires_at = EXCLUDED.expires_at
			RETURNING amount_micros, expires_at`, ws, node, own+grant, ttlOrDefault(ttl).Microseconds()).Scan(&l.Amount, &l.ExpiresAt)
	})
	if err != nil {
		return Lease{}, err
	}
	return l, nil
}

// RenewLease extends an unexpired lease; a lapsed one is deleted (its amount was already
// back in the pool) and reported as ErrExpired.
func (p *Postgres) RenewLease(ctx context.Context, ws, node string, ttl time.Duration) (Lease, error) {
	var l Lease
	var expired bool
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE credit_leases SET expires_at = clock_timestamp() + $3 * interval '1 microsecond'
			WHERE workspace_id = $1 AND node_id = $2 AND expires_at > clock_timestamp() RETURNING amount_micros, expires_at`,
			ws, node, ttlOrDefault(ttl).Microseconds()).Scan(&l.Amount, &l.ExpiresAt)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM credit_leases WHERE workspace_id = $1 AND node_id = $2`, ws, node)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		expired = true // returning nil so that the DELETE commits
		return nil
	})
	if err == nil && expired {
		return Lease{}, ErrExpired
	}
	return l, err
}

// ReleaseLease returns part of a lease to the pool.
func (p *Postgres) ReleaseLease(ctx context.Context, ws, node string, amount Micros) (Lease, error) {
	if amount <= 0 {
		return Lease{}, fmt.Errorf("%w: release amount %d", ErrInvalid, amount)
	}
	var l Lease
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var before int64
		err := tx.QueryRow(ctx, `SELECT amount_micros FROM credit_leases WHERE workspace_id = $1 AND node_id = $2 FOR UPDATE`, ws, node).Scan(&before)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		after := before - min(before, int64(amount))
		l.Granted, l.Amount = Micros(before-after), Micros(after)
		if after == 0 {
			_, err = tx.Exec(ctx, `DELETE FROM credit_leases WHERE workspace_id = $1 AND node_id = $2`, ws, node)
		} else {
			_, err = tx.Exec(ctx, `UPDATE credit_leases SET amount_micros = $3 WHERE workspace_id = $1 AND node_id = $2`, ws, node, after)
		}
		return err
	})
	return l, err
}
