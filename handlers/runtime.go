package handlers

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/payments"
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
}

// runtimeFrom finds the configured btl app.
func runtimeFrom(ctx caddy.Context, who string) (Runtime, error) {
	app, err := ctx.AppIfConfigured("btl")
	if err != nil {
		return nil, fmt.Errorf("%s needs the global btl app (a `btl { … }` block in the Caddyfile's global options): %w", who, err)
	}
	rt, ok := app.(Runtime)
	if !ok {
		return nil, fmt.Errorf("%s: the btl app has unexpected type %T", who, app)
	}
	return rt, nil
}
