package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/handlers"
	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/ratelimit"
)

// ledgers holds one open store, spool writer, credit leases and key cache per storage config
// for the whole process. A reload provisions the new config before the old one stops and old
// handlers keep serving open streams after their Cleanup, so these must outlive any single
// config: the pool reference-counts them and the last user drains them.
var ledgers = caddy.NewUsagePool()

// ledgerSet is what the handlers use for money and identity.
type ledgerSet struct {
	store   ledger.Store
	writer  *ledger.Writer
	credits *ledger.Credits
	keys    *handlers.KeyCache
	limits  *ratelimit.Limiter
	budgets *ledger.Budgets
	node    string
	cancel  context.CancelFunc
	logger  *zap.Logger
}

// Destruct drains the writer (rows go to the database, or stay safely in the spool), gives
// leases back, and closes the store.
func (l *ledgerSet) Destruct() error {
	l.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
	return l.store.Close()
}

// resolvedStorage is a storage config with placeholders expanded and defaults applied.
type resolvedStorage struct {
	kind, target, spoolDir, node string
}

func (s resolvedStorage) key() string {
	h := sha256.Sum256([]byte(s.kind + "\x00" + s.target + "\x00" + s.spoolDir + "\x00" + s.node))
	return hex.EncodeToString(h[:8])
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
		rs.target = abs
	case "postgres":
		rs.target = repl.ReplaceKnown(cfg.DSN, "")
		if rs.target == "" {
			return rs, fmt.Errorf("storage postgres: the connection string is empty (is the environment variable set?)")
		}
	default:
		return rs, fmt.Errorf("storage: unknown type %q", rs.kind)
	}
	if cfg != nil && cfg.SpoolDir != "" {
		rs.spoolDir = repl.ReplaceKnown(cfg.SpoolDir, "")
	}
	if cfg != nil && cfg.NodeID != "" {
		rs.node = repl.ReplaceKnown(cfg.NodeID, "")
	}
	if rs.node == "" {
		host, _ := os.Hostname()
		rs.node = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if rs.spoolDir == "" {
		h := sha256.Sum256([]byte(rs.kind + "\x00" + rs.target))
		rs.spoolDir = filepath.Join(caddy.AppDataDir(), "btl", "spool", hex.EncodeToString(h[:6]))
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

// acquireLedger opens (or shares) the ledger for a storage config.
func acquireLedger(rs resolvedStorage, logger *zap.Logger) (*ledgerSet, error) {
	v, _, err := ledgers.LoadOrNew(rs.key(), func() (caddy.Destructor, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		store, err := openStore(ctx, rs)
		if err != nil {
			return nil, fmt.Errorf("opening %s storage: %v", rs.kind, err)
		}
		credits := ledger.NewCredits(store, rs.node, ledger.CreditsOptions{
			OnError: func(err error) { logger.Warn("credit lease", zap.Error(err)) },
		})
		if err := os.MkdirAll(rs.spoolDir, 0o700); err != nil {
			store.Close()
			return nil, err
		}
		writer, err := ledger.NewWriter(store, ledger.WriterOptions{
			Dir:      rs.spoolDir,
			NodeID:   rs.node,
			OnCommit: credits.Committed,
			OnError:  func(err error) { logger.Warn("ledger writer", zap.Error(err)) },
		})
		if err != nil {
			_ = credits.Close(ctx)
			store.Close()
			return nil, fmt.Errorf("opening the ledger spool in %s: %v", rs.spoolDir, err)
		}
		keys := handlers.NewKeyCache(store)
		watchCtx, stopWatch := context.WithCancel(context.Background())
		go watchRevocations(watchCtx, store, keys, logger)
		// Rate limits and key budgets keep per-node state (slices of the minute's allowance,
		// spend read from rows) that must survive reloads like the credit leases.
		limits := ratelimit.New(store, ratelimit.Options{OnError: func(err error) { logger.Warn("rate limit", zap.Error(err)) }})
		budgets := ledger.NewBudgets(store, ledger.BudgetsOptions{
			NodeID:      rs.node,
			PendingRows: func() int64 { return writer.Stats().PendingRows },
			OnError:     func(err error) { logger.Warn("key budget", zap.Error(err)) },
		})
		return &ledgerSet{store: store, writer: writer, credits: credits, keys: keys, limits: limits, budgets: budgets,
			node: rs.node, cancel: stopWatch, logger: logger}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*ledgerSet), nil
}

// watchRevocations keeps the key cache honest across nodes: PostgreSQL pushes revocations
// with NOTIFY, SQLite is polled. It reconnects until the pool entry is destroyed.
func watchRevocations(ctx context.Context, store ledger.Store, keys *handlers.KeyCache, logger *zap.Logger) {
	for ctx.Err() == nil {
		err := store.WatchRevocations(ctx, keys.Invalidate)
		if ctx.Err() != nil {
			return
		}
		logger.Warn("revocation watch stopped; retrying", zap.Error(err))
		// Anything revoked while we were not listening must not stay cached.
		keys.Purge()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}
