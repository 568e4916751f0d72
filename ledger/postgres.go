package ledger

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store for multi-node deployments. It keeps three pools so that nothing
// on the request path queues behind reporting: key lookups have their own, usage reports
// and exports theirs, and money (rows, leases, grants) the main one.
type Postgres struct {
	pool   *pgxpool.Pool // money and everything else
	keys   *pgxpool.Pool // key lookups: never behind a report
	report *pgxpool.Pool // summaries, listings, exports
	cfg    *pgxpool.Config
	creds  atomic.Pointer[pgCredentials]
}

type pgCredentials struct{ user, password string }

// Pool sizes of the key-lookup and reporting pools.
const (
	pgKeyConns    = 2
	pgReportConns = 3
)

// revokeChannel is the NOTIFY channel announcing revoked key hashes (hex).
const revokeChannel = "btl_key_revoked"

// migrateLockKey is the advisory lock that serializes migrations of concurrent processes.
const migrateLockKey int64 = 0x62746c5f6d6967 // "btl_mig"

// NewPostgres builds the pools without touching the network (pgxpool connects lazily), so a
// server can start while the database is down and a config can be validated without a
// connection; call Migrate (or use OpenPostgres) before use.
func NewPostgres(dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("ledger: postgres dsn: %w", err)
	}
	p := &Postgres{cfg: cfg}
	p.creds.Store(&pgCredentials{cfg.ConnConfig.User, cfg.ConnConfig.Password})
	newPool := func(maxConns int32) (*pgxpool.Pool, error) {
		c := cfg.Copy()
		if maxConns > 0 {
			c.MaxConns = maxConns
		}
		// New connections log in with the current credentials (SetDSN rotates them).
		c.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
			cr := p.creds.Load()
			cc.User, cc.Password = cr.user, cr.password
			return nil
		}
		return pgxpool.NewWithConfig(context.Background(), c)
	}
	if p.pool, err = newPool(0); err == nil {
		if p.keys, err = newPool(pgKeyConns); err == nil {
			p.report, err = newPool(pgReportConns)
		}
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("ledger: postgres pool: %w", err)
	}
	return p, nil
}

// PostgresIdentity names the database a DSN points at, without its credentials: two DSNs
// with the same identity reach the same data, so a change of credentials alone (a rotation)
// keeps the ledger, its spool and its leases.
func PostgresIdentity(dsn string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("ledger: postgres dsn: %w", err)
	}
	var params []string // only those that change which tables are reached
	for _, k := range []string{"search_path", "options"} {
		if v, ok := cfg.RuntimeParams[k]; ok {
			params = append(params, k+"="+v)
		}
	}
	hosts := []string{fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)}
	for _, fb := range cfg.Fallbacks {
		hosts = append(hosts, fmt.Sprintf("%s:%d", fb.Host, fb.Port))
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	return strings.Join(hosts, ",") + "/" + cfg.Database + "?" + strings.Join(params, "&"), nil
}

// SetDSN rotates the credentials that new connections log in with. The DSN must name the
// same database (PostgresIdentity); open connections keep their sessions.
func (p *Postgres) SetDSN(dsn string) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("ledger: postgres dsn: %w", err)
	}
	p.creds.Store(&pgCredentials{cfg.User, cfg.Password})
	return nil
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

// Pool exposes the main pool, e.g. for pool stats metrics.
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

// Ping checks connectivity.
func (p *Postgres) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// Close closes the pools.
func (p *Postgres) Close() error {
	for _, pl := range []*pgxpool.Pool{p.pool, p.keys, p.report} {
		if pl != nil {
			pl.Close()
		}
	}
	return nil
}

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
	k, err := pgScanKey(p.keys.QueryRow(ctx, `SELECT `+pgKeyColumns+` FROM api_keys WHERE key_hash = $1`, hash[:]))
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
	rows, err := p.keys.Query(ctx, `SELECT id, key_hash, revoked_at FROM api_keys WHERE revoked_at >= $1 ORDER BY revoked_at`, t)
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

// Revocation watch timing: a quiet LISTEN connection is checked (and revocations re-read)
// every revocationCheck, so a dead or stalled connection is noticed within about a second;
// reconnects back off from revocationMinBackoff to revocationMaxBackoff and start over after
// any connection that worked.
const (
	revocationCheck      = time.Second
	revocationMinBackoff = 50 * time.Millisecond
	revocationMaxBackoff = time.Second
)

// WatchRevocations LISTENs on a connection of its own. On every (re)connection, and after
// every quiet second, it re-reads the revocations since its last successful read (database
// clock, overlapped by a second), so a revocation is never missed and, once the database is
// reachable again, reaches fn within about a second however long the outage was (fn may
// see a hash twice).
func (p *Postgres) WatchRevocations(ctx context.Context, fn func(keyHash [32]byte)) error {
	// Database clock of the last successful read. Before the first one, look back far
	// enough to cover any key cached meanwhile, whatever the clocks' skew.
	since := time.Now().Add(-5 * time.Minute)
	backoff := revocationMinBackoff
	for {
		worked, _ := p.listenOnce(ctx, fn, &since)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if worked {
			backoff = revocationMinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, revocationMaxBackoff)
	}
}

// listenOnce runs one LISTEN connection until it fails; worked says whether it got as far
// as listening and reading.
func (p *Postgres) listenOnce(ctx context.Context, fn func([32]byte), since *time.Time) (worked bool, err error) {
	cfg := p.cfg.ConnConfig.Copy()
	cr := p.creds.Load()
	cfg.User, cfg.Password = cr.user, cr.password
	cctx, cancel := context.WithTimeout(ctx, 2*revocationCheck)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	// Listen first, then read: a revocation committed in between is both read and notified.
	lctx, cancel := context.WithTimeout(ctx, 2*revocationCheck)
	_, err = conn.Exec(lctx, "LISTEN "+revokeChannel)
	cancel()
	if err != nil {
		return false, err
	}
	check := func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*revocationCheck)
		defer cancel()
		var now time.Time
		if err := conn.QueryRow(cctx, "SELECT now()").Scan(&now); err != nil {
			return err
		}
		rows, err := conn.Query(cctx, `SELECT key_hash FROM api_keys WHERE revoked_at >= $1`, since.Add(-time.Second))
		if err != nil {
			return err
		}
		hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		for _, b := range hashes {
			var h [32]byte
			copy(h[:], b)
			fn(h)
		}
		*since = now
		return nil
	}
	if err := check(); err != nil {
		return false, err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, revocationCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) || conn.IsClosed() {
				return true, err
			}
			// A quiet second: prove the connection still answers, and catch up.
			if err := check(); err != nil {
				return true, err
			}
			continue
		}
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
	return pgBalance(ctx, p.pool, ws)
}

// pgBalance reads a workspace's balance on a pool or inside a transaction.
func pgBalance(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, ws string) (Micros, error) {
	var b Micros
	err := q.QueryRow(ctx, `SELECT granted_micros - spent_micros FROM workspaces WHERE id = $1`, ws).Scan(&b)
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
	var short *ShortError
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var free, leased, own, live Micros
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
		err = tx.QueryRow(ctx, `SELECT COALESCE(sum(amount_micros), 0)::bigint,
				COALESCE(sum(amount_micros) FILTER (WHERE node_id = $2), 0)::bigint,
				COALESCE(sum(amount_micros) FILTER (WHERE node_id <> $2 AND expires_at > clock_timestamp()), 0)::bigint
			FROM credit_leases WHERE workspace_id = $1`, ws, node).Scan(&leased, &own, &live)
		if err != nil {
			return err
		}
		free -= leased
		grant := leaseGrant(want, minimum, free)
		if grant == 0 {
			short = &ShortError{Available: max(free, 0), HeldByOthers: leased - own, Returnable: live, Own: own}
			if short.HeldByOthers > 0 { // ask them to give back what they do not use
				_, err = tx.Exec(ctx, `UPDATE credit_leases SET return_requested_at = clock_timestamp()
					WHERE workspace_id = $1 AND node_id <> $2 AND amount_micros > 0`, ws, node)
			}
			return err // commit the request; the caller gets short
		}
		l.Granted, l.Available = grant, free-grant
		return tx.QueryRow(ctx, `INSERT INTO credit_leases (workspace_id, node_id, amount_micros, expires_at)
			VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 microsecond')
			ON CONFLICT (workspace_id, node_id) DO UPDATE SET amount_micros = credit_leases.amount_micros + EXCLUDED.amount_micros,
				expires_at = EXCLUDED.expires_at
			RETURNING amount_micros, expires_at`, ws, node, int64(grant), ttlOrDefault(ttl).Microseconds()).Scan(&l.Amount, &l.ExpiresAt)
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
func (p *Postgres) RenewLease(ctx context.Context, ws, node string, ttl time.Duration) (Lease, error) {
	var l Lease
	err := p.pool.QueryRow(ctx, `UPDATE credit_leases SET expires_at = clock_timestamp() + $3 * interval '1 microsecond'
		WHERE workspace_id = $1 AND node_id = $2 RETURNING amount_micros, expires_at`,
		ws, node, ttlOrDefault(ttl).Microseconds()).Scan(&l.Amount, &l.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Lease{}, ErrNotFound
	}
	return l, err
}

// ReturnRequests lists the workspaces whose lease of node another node asked back.
func (p *Postgres) ReturnRequests(ctx context.Context, node string) ([]string, error) {
	rows, err := p.pool.Query(ctx, `SELECT workspace_id FROM credit_leases WHERE node_id = $1 AND return_requested_at IS NOT NULL`, node)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ListLeases lists leases, of one node or all.
func (p *Postgres) ListLeases(ctx context.Context, node string) ([]LeaseRecord, error) {
	rows, err := p.pool.Query(ctx, `SELECT workspace_id, node_id, amount_micros, expires_at, return_requested_at IS NOT NULL
		FROM credit_leases WHERE $1 = '' OR node_id = $1 ORDER BY workspace_id, node_id`, node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LeaseRecord
	for rows.Next() {
		var r LeaseRecord
		if err := rows.Scan(&r.WorkspaceID, &r.NodeID, &r.Amount, &r.ExpiresAt, &r.ReturnRequested); err != nil {
			return nil, err
		}
		r.ExpiresAt = r.ExpiresAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// ReleaseLease returns part of a lease to the pool.
func (p *Postgres) ReleaseLease(ctx context.Context, ws, node string, amount Micros) (Lease, error) {
	if amount <= 0 {
		return Lease{}, fmt.Errorf("%w: release amount %d", ErrInvalid, amount)
	}
	return p.adjustLease(ctx, ws, node, func(before Micros) Micros { return before - min(before, amount) })
}

// TrimLease lowers a lease to at most keep.
func (p *Postgres) TrimLease(ctx context.Context, ws, node string, keep Micros) (Lease, error) {
	if keep < 0 {
		return Lease{}, fmt.Errorf("%w: trim to %d", ErrInvalid, keep)
	}
	return p.adjustLease(ctx, ws, node, func(before Micros) Micros { return min(before, keep) })
}

// adjustLease lowers node's lease to after(before) under the row lock, clearing a return
// request; the row goes at 0.
func (p *Postgres) adjustLease(ctx context.Context, ws, node string, after func(Micros) Micros) (Lease, error) {
	var l Lease
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var before Micros
		err := tx.QueryRow(ctx, `SELECT amount_micros FROM credit_leases WHERE workspace_id = $1 AND node_id = $2 FOR UPDATE`, ws, node).Scan(&before)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		a := after(before)
		l.Granted, l.Amount = before-a, a
		if a == 0 {
			_, err = tx.Exec(ctx, `DELETE FROM credit_leases WHERE workspace_id = $1 AND node_id = $2`, ws, node)
		} else {
			_, err = tx.Exec(ctx, `UPDATE credit_leases SET amount_micros = $3, return_requested_at = NULL
				WHERE workspace_id = $1 AND node_id = $2`, ws, node, int64(a))
		}
		return err
	})
	return l, err
}
