package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/handlers"
	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/ratelimit"
)

// ledgers holds one store, spool writer, credit leases and key cache per storage config
// for the whole process. A reload provisions the new config before the old one stops and old
// handlers keep serving open streams after their Cleanup, so these must outlive any single
// config: the pool reference-counts them and the last user drains them.
//
// Provision only builds them (no file, no lock, no connection), so `caddy validate` can run
// beside a live gateway; the btl app's Start opens them.
var ledgers = caddy.NewUsagePool()

// spoolOwners maps a spool directory to the ledger that owns it in this process, until
// that ledger has drained and let go of it.
var spoolOwners = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// drainTimeout bounds how long a ledger replaced by a reload waits for its requests still in
// flight (streams can be long) and for their rows to reach the database.
const drainTimeout = 15 * time.Minute

// ledgerSet is what the handlers use for money and identity.
type ledgerSet struct {
	rs      resolvedStorage
	store   ledger.Store
	pg      *ledger.Postgres // for credential rotation; nil on SQLite
	writer  *ledger.Writer
	credits *ledger.Credits
	keys    *handlers.KeyCache
	limits  *ratelimit.Limiter
	budgets *ledger.Budgets
	logger  *zap.Logger

	startOnce sync.Once
	startErr  error
	ready     chan struct{} // closed when start has finished; startErr says how
	started   atomic.Bool
	stop      context.CancelFunc // ends the revocation watch and the adoption
	drained   chan struct{}      // closed when Destruct has finished draining
}

// resolvedStorage is a storage config with placeholders expanded and defaults applied.
type resolvedStorage struct {
	kind     string
	target   string // SQLite path or PostgreSQL DSN (with credentials)
	identity string // the data it reaches: the path, or the DSN without credentials
	spoolDir string
	node     string
	legacy   string // the spool directory earlier versions defaulted to, if different
	leaseTTL time.Duration
}

// key identifies a ledger: a DSN that differs only in credentials (a rotation) is the same
// ledger, so a reload keeps its spool, leases and in-flight requests.
func (s resolvedStorage) key() string {
	h := sha256.Sum256([]byte(s.kind + "\x00" + s.identity + "\x00" + s.spoolDir + "\x00" + s.node))
	return hex.EncodeToString(h[:8])
}

func shortHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// resolveStorage expands the storage config. The default is SQLite in Caddy's data dir.
func resolveStorage(cfg *StorageConfig, repl *caddy.Replacer) (resolvedStorage, error) {
	rs := resolvedStorage{kind: "sqlite"}
	if cfg != nil && cfg.Type != "" {
		rs.kind = cfg.Type
	}
	switch rs.kind {
	case "sqlite":
		rs.target = filepath.Join(caddy.AppDataDir(), "btl", "btl.db")
		if cfg != nil && cfg.Path != "" {
			rs.target = repl.ReplaceKnown(cfg.Path, "")
		}
		abs, err := filepath.Abs(rs.target)
		if err != nil {
			return rs, err
		}
		rs.target, rs.identity = abs, abs
	case "postgres":
		rs.target = repl.ReplaceKnown(cfg.DSN, "")
		if rs.target == "" {
			return rs, fmt.Errorf("storage postgres: the connection string is empty (is the environment variable set?)")
		}
		id, err := ledger.PostgresIdentity(rs.target)
		if err != nil {
			return rs, fmt.Errorf("storage postgres: %v", err)
		}
		rs.identity = id
	default:
		return rs, fmt.Errorf("storage: unknown type %q", rs.kind)
	}
	if cfg != nil && cfg.SpoolDir != "" {
		rs.spoolDir = repl.ReplaceKnown(cfg.SpoolDir, "")
	}
	if rs.spoolDir == "" {
		base := filepath.Join(caddy.AppDataDir(), "btl", "spool")
		rs.spoolDir = filepath.Join(base, shortHash(rs.kind, rs.identity))
		// Earlier versions hashed the whole DSN, credentials included.
		old := sha256.Sum256([]byte(rs.kind + "\x00" + rs.target))
		if legacy := filepath.Join(base, hex.EncodeToString(old[:6])); legacy != rs.spoolDir {
			rs.legacy = legacy
		}
	}
	abs, err := filepath.Abs(rs.spoolDir)
	if err != nil {
		return rs, err
	}
	rs.spoolDir = abs
	if cfg != nil && cfg.NodeID != "" {
		rs.node = repl.ReplaceKnown(cfg.NodeID, "")
	}
	if cfg != nil {
		rs.leaseTTL = time.Duration(cfg.LeaseTTL)
	}
	if rs.node == "" {
		// Stable across restarts on the same spool, so a restart adopts its leases, and
		// distinct for every spool on a host (one writer per spool).
		host, _ := os.Hostname()
		rs.node = host + "-" + shortHash(rs.spoolDir)
	}
	return rs, nil
}

// openStore opens a store without the writer and leases: for the CLI.
func openStore(ctx context.Context, rs resolvedStorage) (ledger.Store, error) {
	switch rs.kind {
	case "postgres":
		return ledger.OpenPostgres(ctx, rs.target)
	default:
		if err := os.MkdirAll(filepath.Dir(rs.target), 0o700); err != nil {
			return nil, err
		}
		return ledger.OpenSQLite(ctx, rs.target)
	}
}

// acquireLedger shares (or builds, touching nothing) the ledger for a storage config.
func acquireLedger(rs resolvedStorage, logger *zap.Logger) (*ledgerSet, error) {
	key := rs.key()
	spoolOwners.Lock()
	owner, taken := spoolOwners.m[rs.spoolDir]
	spoolOwners.Unlock()
	if taken && owner != key {
		return nil, fmt.Errorf("spool_dir %s belongs to the running configuration's ledger (another database or node_id); "+
			"give this storage its own spool_dir, or restart instead of reloading", rs.spoolDir)
	}
	v, _, err := ledgers.LoadOrNew(key, func() (caddy.Destructor, error) {
		l := &ledgerSet{rs: rs, logger: logger, ready: make(chan struct{}), drained: make(chan struct{})}
		var err error
		switch rs.kind {
		case "postgres":
			l.pg, err = ledger.NewPostgres(rs.target)
			l.store = l.pg
		default:
			l.store, err = ledger.NewSQLite(rs.target)
		}
		if err != nil {
			return nil, fmt.Errorf("storage %s: %v", rs.kind, err)
		}
		l.credits = ledger.NewCredits(l.store, rs.node, ledger.CreditsOptions{
			Deferred: true, AwaitAdopt: true, LeaseTTL: rs.leaseTTL,
			OnError: func(err error) { logger.Warn("credit lease", zap.Error(err)) },
		})
		l.writer, err = ledger.PrepareWriter(l.store, ledger.WriterOptions{
			Dir:      rs.spoolDir,
			NodeID:   rs.node,
			OnCommit: l.credits.Committed,
			OnError:  func(err error) { logger.Warn("ledger writer", zap.Error(err)) },
		})
		if err != nil {
			l.store.Close()
			return nil, err
		}
		l.keys = handlers.NewKeyCache(l.store)
		// Rate limits and key budgets keep per-node state (slices of the minute's allowance,
		// spend read from rows) that must survive reloads like the credit leases. Their loops
		// only sweep memory, so building them here touches nothing.
		l.limits = ratelimit.New(l.store, ratelimit.Options{OnError: func(err error) { logger.Warn("rate limit", zap.Error(err)) }})
		l.budgets = ledger.NewBudgets(l.store, ledger.BudgetsOptions{
			NodeID:      rs.node,
			PendingRows: func() int64 { return l.writer.Stats().PendingRows },
			OnError:     func(err error) { logger.Warn("key budget", zap.Error(err)) },
		})
		spoolOwners.Lock()
		spoolOwners.m[rs.spoolDir] = key
		spoolOwners.Unlock()
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*ledgerSet), nil
}

// handlersLedger is the view the handlers get.
func (l *ledgerSet) handlersLedger() *handlers.Ledger {
	return &handlers.Ledger{Store: l.store, Writer: l.writer, Credits: l.credits, Keys: l.keys, Limits: l.limits,
		Budgets: l.budgets, NodeID: l.rs.node, SpoolDir: l.rs.spoolDir, Ready: l.ready, Err: func() error { return l.startErr }}
}

// start opens the ledger once: migrations, the spool (lock, recovery, replay), leases and
// the revocation watch. Configs that share the ledger share the outcome.
func (l *ledgerSet) start() error {
	l.startOnce.Do(func() {
		defer close(l.ready)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if l.rs.kind == "sqlite" {
			if err := os.MkdirAll(filepath.Dir(l.rs.target), 0o700); err != nil {
				l.startErr = err
				return
			}
		}
		if err := l.store.(interface{ Migrate(context.Context) error }).Migrate(ctx); err != nil {
			l.startErr = fmt.Errorf("opening %s storage: %v", l.rs.kind, err)
			return
		}
		if err := l.writer.Open(); err != nil {
			l.startErr = fmt.Errorf("opening the ledger spool in %s: %v", l.rs.spoolDir, err)
			return
		}
		l.started.Store(true)
		l.credits.Start()
		bg, stop := context.WithCancel(context.Background())
		l.stop = stop
		go watchRevocations(bg, l.store, l.keys, l.logger)
		go l.adopt(bg)
		if l.rs.legacy != "" {
			go drainLegacySpool(bg, l.store, l.rs.legacy, l.logger)
		}
	})
	return l.startErr
}

// adopt hands the previous process's leases on this spool to the new Credits once the
// replayed rows are in the database (until then they are what those leases pay for).
func (l *ledgerSet) adopt(ctx context.Context) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := l.writer.Flush(fctx)
		if err == nil {
			err = l.credits.Adopt(fctx)
		}
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// drainLegacySpool replays a spool left where earlier versions put it by default, then
// removes it. Its rows charge no lease (their process's leases expired under the old rules).
func drainLegacySpool(ctx context.Context, store ledger.Store, dir string, logger *zap.Logger) {
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) == 0 {
		return
	}
	w, err := ledger.NewWriter(store, ledger.WriterOptions{Dir: dir, NodeID: "legacy"})
	if err != nil {
		logger.Warn("replaying the spool of an earlier version", zap.String("dir", dir), zap.Error(err))
		return
	}
	dctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	if err := w.Close(dctx); err != nil {
		logger.Warn("replaying the spool of an earlier version", zap.String("dir", dir), zap.Error(err))
		return
	}
	_ = os.RemoveAll(dir)
}

// Destruct runs when the last config using the ledger is cleaned up. It lets requests still
// in flight append their rows, drains the spool into the database (rows that cannot go stay
// in the spool for the next start), gives leases back and closes the store. A reload with
// requests still in flight does not wait for that (old streams may run for minutes).
func (l *ledgerSet) Destruct() error {
	if l.stop != nil {
		l.stop()
	}
	release := func() {
		spoolOwners.Lock()
		if spoolOwners.m[l.rs.spoolDir] == l.rs.key() {
			delete(spoolOwners.m, l.rs.spoolDir)
		}
		spoolOwners.Unlock()
		close(l.drained)
	}
	if !l.started.Load() { // only provisioned (or failed to open): nothing to drain
		_ = l.writer.Close(context.Background())
		_ = l.credits.Close(context.Background())
		l.keys.Close()
		l.limits.Close()
		l.budgets.Close()
		err := l.store.Close()
		release()
		return err
	}
	drain := func(timeout time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := l.writer.Close(ctx); err != nil {
			l.logger.Warn("ledger writer did not drain; rows stay in the spool for the next start", zap.Error(err))
		}
		if err := l.credits.Close(ctx); err != nil {
			l.logger.Warn("releasing credit leases", zap.Error(err))
		}
		l.keys.Close()
		l.limits.Close()
		l.budgets.Close()
		_ = l.store.Close()
		release()
	}
	if caddy.Exiting() || l.writer.Stats().OpenSlots == 0 {
		drain(10 * time.Second) // nothing in flight: as quick as the database allows
		return nil
	}
	go drain(drainTimeout)
	return nil
}

// watchRevocations keeps the key cache honest across nodes: PostgreSQL pushes revocations
// with NOTIFY (and re-reads them on every reconnect), SQLite is polled. It restarts until the
// ledger is destroyed.
func watchRevocations(ctx context.Context, store ledger.Store, keys *handlers.KeyCache, logger *zap.Logger) {
	for ctx.Err() == nil {
		err := store.WatchRevocations(ctx, keys.Invalidate)
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return
		}
		logger.Warn("revocation watch stopped; retrying", zap.Error(err))
		// Anything revoked while we were not listening must not stay cached.
		keys.Purge()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
