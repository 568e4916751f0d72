package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/payments"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/ratelimit"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// Runtime is what the handlers need from the global btl app. The app implements it; keeping
// it an interface lets caddymodule import handlers, not the reverse.
type Runtime interface {
	Routes() *routing.Table
	Prices() *catalog.Catalog
	// PricesFor is what a workspace pays: its negotiated catalog, else the list prices.
	PricesFor(workspace string) *catalog.Catalog
	Ledger() *Ledger
	// Payments is the configured payment provider, or nil.
	Payments() *payments.Stripe
}

// Ledger bundles the process-wide money and identity services (shared across reloads).
type Ledger struct {
	Store   ledger.Store
	Writer  *ledger.Writer
	Credits *ledger.Credits
	Keys    *KeyCache
	// Limits enforces per-minute rate limits of keys and workspaces; Budgets keys' spend caps.
	Limits  *ratelimit.Limiter
	Budgets *ledger.Budgets
	NodeID  string
	// SpoolDir is the ledger spool's directory (/readyz checks it takes a file).
	SpoolDir string
	// Ready, when set, is closed once the storage is open (the btl app opens it in Start, so
	// that validating a config touches nothing); Err then says whether opening failed.
	Ready <-chan struct{}
	Err   func() error
}

// errLedgerStarting answers requests that arrive before the storage is open.
var errLedgerStarting = errors.New("the ledger is still opening")

// Wait holds a request until the storage is open (a few milliseconds after a start or a
// storage-changing reload) and reports whether it can be used.
func (l *Ledger) Wait(ctx context.Context) error {
	if l.Ready == nil {
		return nil
	}
	select {
	case <-l.Ready:
	default:
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-l.Ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return errLedgerStarting
		}
	}
	if l.Err != nil {
		return l.Err()
	}
	return nil
}

// ledgerUnavailable is the answer when the storage cannot be used at all.
func ledgerUnavailable() *providers.Error {
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the gateway's ledger is not available right now; retry shortly")
	e.RetryAfter = time.Second
	return e
}

// runtimeFrom finds the configured btl app.
func runtimeFrom(ctx caddy.Context, who string) (Runtime, error) {
	app, err := ctx.AppIfConfigured("btl")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s needs the global btl app (a `btl { … }` block in the Caddyfile's global options): %w", who, err)
	}
	if err != nil { // configured, but it failed: say why, not that it is missing
		return nil, fmt.Errorf("%s: %w", who, err)
	}
	rt, ok := app.(Runtime)
	if !ok {
		return nil, fmt.Errorf("%s: the btl app has unexpected type %T", who, app)
	}
	return rt, nil
}
