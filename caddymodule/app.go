// Package caddymodule is the Caddy glue: the global btl app, Caddyfile parsing for it and the
// four handler directives, their order, and the `caddy btl` CLI. Importing it (xcaddy
// --with github.com/badtheorylabs/btl-runtime) registers everything.
package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/handlers"
	"github.com/badtheorylabs/btl-runtime/payments"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"

	// Wire formats register themselves.
	_ "github.com/badtheorylabs/btl-runtime/providers/anthropic"
	_ "github.com/badtheorylabs/btl-runtime/providers/bedrock"
	_ "github.com/badtheorylabs/btl-runtime/providers/gemini"
	_ "github.com/badtheorylabs/btl-runtime/providers/openai"
)

func init() {
	caddy.RegisterModule(App{})
	caddy.RegisterModule(handlers.Auth{})
	caddy.RegisterModule(handlers.Meter{})
	caddy.RegisterModule(handlers.Optimize{})
	caddy.RegisterModule(handlers.Route{})
}

// App is the global `btl` app: providers, public model slugs, prices and storage. It is
// immutable once provisioned; handlers only read from it.
type App struct {
	// Storage selects the ledger store. Default: SQLite in Caddy's data directory.
	Storage *StorageConfig `json:"storage,omitempty"`
	// Providers are the upstreams the gateway may call.
	Providers []ProviderConfig `json:"providers,omitempty"`
	// Models are public slugs (such as btl-frontier) and their candidates.
	Models []ModelConfig `json:"models,omitempty"`
	// PricesFile overrides and extends the embedded price catalog.
	PricesFile string `json:"prices_file,omitempty"`
	// ModelPrices prices upstream models the catalog does not know (a local model behind an
	// openai_compatible provider), per 1M tokens; they apply over the catalog and PricesFile.
	ModelPrices map[string]catalog.Entry `json:"model_prices,omitempty"`
	// WorkspacePrices maps a workspace id to a catalog file of its negotiated prices
	// (overriding and extending the list prices for that workspace only).
	WorkspacePrices map[string]string `json:"workspace_prices,omitempty"`
	// Payments configures credit top-ups through a Stripe-compatible API.
	PaymentsConfig *PaymentsConfig `json:"payments,omitempty"`
	// RetainResponses is how long stored Responses API objects (store, default true) are
	// kept for GET /v1/responses/{id} and previous_response_id. Default: 720h (30 days).
	RetainResponses caddy.Duration `json:"responses_retention,omitempty"`

	// AllowFileURIs maps a workspace id to the provider-side references its requests may
	// pass (gs://bucket/prefix/ prefixes, or exact file ids). Such references are read by the
	// provider with the operator's identity, so every other workspace is refused them.
	AllowFileURIs map[string][]string `json:"allow_file_uris,omitempty"`
	// Images bounds inlining of image URLs for providers that need the bytes (Bedrock,
	// Gemini): per image, per request, and whether private addresses may be fetched.
	Images *providers.ImageLimits `json:"images,omitempty"`
	// BodyTimeout bounds reading an authenticated request's body, so a client that stops
	// sending cannot hold a connection and its buffers. Default 60s.
	BodyTimeout caddy.Duration `json:"body_timeout,omitempty"`

	routes          *routing.Table
	workspacePrices map[string]*catalog.Catalog
	ledger          *ledgerSet
	ledgerKey       string
	storage         resolvedStorage
	led             *handlers.Ledger
	pay             *payments.Stripe
	prices          *catalog.Catalog
	clients         []*http.Client
	simulator       bool
	logger          *zap.Logger
}

// StorageConfig names the ledger store.
type StorageConfig struct {
	// Type is "sqlite" or "postgres".
	Type string `json:"type"`
	// Path is the SQLite file (default: btl.db in Caddy's data directory).
	Path string `json:"path,omitempty"`
	// DSN is the PostgreSQL connection string; placeholders such as {env.BTL_DATABASE_URL}
	// are expanded at provision time.
	DSN string `json:"dsn,omitempty"`
	// SpoolDir holds the ledger's write-ahead spool. Default: under Caddy's data directory.
	SpoolDir string `json:"spool_dir,omitempty"`
	// NodeID names this gateway node for credit leases; it must differ between nodes that
	// share a database, and stay the same across restarts on one spool (the restart adopts
	// the leases). Default: hostname and a hash of the spool directory.
	NodeID string `json:"node_id,omitempty"`
	// LeaseTTL is how long a node may reserve from a credit lease without reaching the
	// database. Default: 1m. It bounds how long a node cut off from the database serves;
	// the lease's money stays held until the node is back either way.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`
}

// PaymentsConfig is a Stripe-compatible payment provider.
type PaymentsConfig struct {
	// Provider is "stripe".
	Provider      string `json:"provider"`
	SecretKey     string `json:"secret_key"`
	WebhookSecret string `json:"webhook_secret"`
	// BaseURL defaults to https://api.stripe.com.
	BaseURL    string `json:"base_url,omitempty"`
	SuccessURL string `json:"success_url,omitempty"`
	CancelURL  string `json:"cancel_url,omitempty"`
}

// ProviderConfig is one upstream.
type ProviderConfig struct {
	// Name is how models pin it: "<name>/<upstream-model>".
	Name string `json:"name"`
	// Type is the wire format: openai, openrouter, openai_compatible, simulated, ….
	Type string `json:"type"`
	// BaseURL is what the provider's own SDK calls its base URL (with /v1 for OpenAI-style
	// APIs). A simulated provider without one is served in-process.
	BaseURL string `json:"base_url,omitempty"`
	// APIKey is the provider secret; use a placeholder such as {env.OPENAI_API_KEY}. It is
	// expanded at provision time and never logged.
	APIKey string `json:"api_key,omitempty"`
	// APIKeys are more keys of the same provider; with APIKey they form a pool spread by
	// KeyWeights and away from keys the provider is rate limiting.
	APIKeys    []string `json:"api_keys,omitempty"`
	KeyWeights []int    `json:"key_weights,omitempty"`
	// Models lists upstream model ids this provider serves, for /v1/models and for bare
	// model names.
	Models []string `json:"models,omitempty"`
	// Optional skips the provider (with a log line) when its API key is empty, so one config
	// works with and without each provider's credentials.
	Optional bool `json:"optional,omitempty"`
	// ConnectTimeout bounds dialing and TLS. Default: 10s.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`
	// FirstByteTimeout bounds the wait for response headers. Default: 120s.
	FirstByteTimeout caddy.Duration `json:"first_byte_timeout,omitempty"`
	// IdleTimeout bounds the silence between two stream events. Default: 120s.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`
	// Options are type-specific settings (region, project, …).
	Options map[string]string `json:"options,omitempty"`
}

// ModelConfig is a public slug.
type ModelConfig struct {
	Name string `json:"name"`
	// Candidates are "<provider>/<upstream-model>" in preference order.
	Candidates []string `json:"candidates"`
	// Strategy picks among candidates: cheapest, fastest, ordered or weighted. Default: ordered.
	Strategy string `json:"strategy,omitempty"`
	// Weights parallel Candidates for the weighted strategy.
	Weights []int `json:"weights,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "btl", New: func() caddy.Module { return new(App) }}
}

// Provision expands secrets, builds the adapters and the routing table.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	var adapters []providers.Adapter
	models := map[string][]string{}
	skip := map[string]bool{}
	for _, pc := range a.Providers {
		cfg := providers.Config{
			Name:       pc.Name,
			Type:       pc.Type,
			BaseURL:    repl.ReplaceKnown(pc.BaseURL, ""),
			APIKey:     repl.ReplaceKnown(pc.APIKey, ""),
			Models:     pc.Models,
			KeyWeights: pc.KeyWeights,
			Timeouts: providers.Timeouts{
				Connect:   time.Duration(pc.ConnectTimeout),
				FirstByte: time.Duration(pc.FirstByteTimeout),
				Idle:      time.Duration(pc.IdleTimeout),
			},
		}
		for _, k := range pc.APIKeys {
			if k = repl.ReplaceKnown(k, ""); k != "" {
				cfg.APIKeys = append(cfg.APIKeys, k)
			}
		}
		if len(pc.Options) > 0 {
			cfg.Options = make(map[string]string, len(pc.Options))
			for k, v := range pc.Options {
				cfg.Options[k] = repl.ReplaceKnown(v, "")
			}
		}
		if pc.Optional && cfg.APIKey == "" && len(cfg.APIKeys) == 0 {
			a.logger.Info("provider skipped: no API key", zap.String("provider", pc.Name), zap.String("type", pc.Type))
			skip[pc.Name] = true
			continue
		}
		if pc.Type == "simulated" && cfg.BaseURL == "" {
			url, err := acquireSimulator()
			if err != nil {
				return fmt.Errorf("provider %q: starting the in-process simulator: %v", pc.Name, err)
			}
			a.simulator = true
			cfg.BaseURL = url
		}
		if pc.Type == "simulated" {
			if err := simulatedFormat(&cfg); err != nil {
				return err
			}
		}
		client := providers.NewHTTPClient(cfg.Timeouts)
		ad, err := providers.New(cfg, client)
		if err != nil {
			return err
		}
		a.clients = append(a.clients, client)
		adapters = append(adapters, ad)
		models[pc.Name] = pc.Models
	}
	a.prices = catalog.Default()
	if a.PricesFile != "" {
		var err error
		if a.prices, err = catalog.Load(repl.ReplaceKnown(a.PricesFile, "")); err != nil {
			return fmt.Errorf("prices: %v", err)
		}
	}
	if len(a.ModelPrices) > 0 {
		var err error
		if a.prices, err = a.prices.WithEntries(a.ModelPrices); err != nil {
			return fmt.Errorf("price: %v", err)
		}
	}
	for ws, file := range a.WorkspacePrices {
		c, err := catalog.LoadOver(a.prices, repl.ReplaceKnown(file, ""))
		if err != nil {
			return fmt.Errorf("prices for workspace %s: %v", ws, err)
		}
		if a.workspacePrices == nil {
			a.workspacePrices = map[string]*catalog.Catalog{}
		}
		a.workspacePrices[ws] = c
	}
	slugs := make([]routing.SlugConfig, 0, len(a.Models))
	for _, m := range a.Models {
		slugs = append(slugs, routing.SlugConfig{Name: m.Name, Candidates: m.Candidates, Strategy: m.Strategy, Weights: m.Weights})
	}
	routes, err := routing.New(adapters, models, slugs, skip, a.prices, routing.Options{})
	if err != nil {
		return err
	}
	a.routes = routes
	// A shipped slug the README documents but no provider can serve: say what it needs
	// (caddy validate shows this), and the request error says it again.
	for _, s := range routes.Unserved() {
		a.logger.Warn("model slug unavailable: no configured provider declares one of its models",
			zap.String("slug", s.Name), zap.Strings("needs_one_of", s.Models))
	}
	rs, err := resolveStorage(a.Storage, repl)
	if err != nil {
		return err
	}
	// Built, not opened: Start opens it, so validating a config beside a running gateway
	// takes no spool lock and writes nothing.
	if a.ledger, err = acquireLedger(rs, a.logger); err != nil {
		return err
	}
	a.ledgerKey, a.storage = rs.key(), rs
	a.led = a.ledger.handlersLedger()
	if pc := a.PaymentsConfig; pc != nil {
		a.pay = &payments.Stripe{
			SecretKey: repl.ReplaceKnown(pc.SecretKey, ""), WebhookSecret: repl.ReplaceKnown(pc.WebhookSecret, ""),
			BaseURL: repl.ReplaceKnown(pc.BaseURL, ""), SuccessURL: repl.ReplaceKnown(pc.SuccessURL, ""),
			CancelURL: repl.ReplaceKnown(pc.CancelURL, ""),
		}
		if a.pay.SecretKey == "" || a.pay.WebhookSecret == "" {
			return fmt.Errorf("payments: secret_key and webhook_secret are required (are the environment variables set?)")
		}
	}
	return nil
}

// simulatedFormat turns a simulated provider with `format anthropic` into an Anthropic
// adapter on the simulator's Messages API, so prompt caching with explicit markers (the
// largest saving) can be seen without any provider key.
func simulatedFormat(cfg *providers.Config) error {
	format := cfg.Options["format"]
	delete(cfg.Options, "format")
	switch format {
	case "", "openai":
	case "anthropic":
		cfg.Type = "anthropic"
		cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/v1")
		if cfg.APIKey == "" {
			cfg.APIKey = "sim-key"
		}
	default:
		return fmt.Errorf("provider %q: format must be openai or anthropic, not %q", cfg.Name, format)
	}
	return nil
}

// Start implements caddy.App: it opens the ledger (shared with the running config when the
// storage is the same) and applies rotated database credentials.
func (a *App) Start() error {
	if err := a.ledger.start(); err != nil {
		return err
	}
	if a.ledger.pg != nil {
		return a.ledger.pg.SetDSN(a.storage.target)
	}
	return nil
}

// Stop implements caddy.App.
func (a *App) Stop() error { return nil }

// Cleanup releases what Provision acquired. It also runs after a partial Provision.
func (a *App) Cleanup() error {
	for _, c := range a.clients {
		c.CloseIdleConnections()
	}
	if a.simulator {
		releaseSimulator()
	}
	if a.ledger != nil {
		if _, err := ledgers.Delete(a.ledgerKey); err != nil {
			a.logger.Warn("releasing the ledger", zap.Error(err))
		}
	}
	return nil
}

// Ledger implements handlers.Runtime.
func (a *App) Ledger() *handlers.Ledger { return a.led }

// Payments implements handlers.Runtime.
func (a *App) Payments() *payments.Stripe { return a.pay }

// Routes implements handlers.Runtime.
func (a *App) Routes() *routing.Table { return a.routes }

// Prices implements handlers.Runtime.
func (a *App) Prices() *catalog.Catalog { return a.prices }

// PricesFor implements handlers.Runtime.
func (a *App) PricesFor(workspace string) *catalog.Catalog {
	if c, ok := a.workspacePrices[workspace]; ok {
		return c
	}
	return a.prices
}

// ResponsesRetention is how long stored responses are kept (handlers' default when 0).
func (a *App) ResponsesRetention() time.Duration { return time.Duration(a.RetainResponses) }

// AllowedProviderRefs is what AllowFileURIs allows for workspace.
func (a *App) AllowedProviderRefs(workspace string) []string { return a.AllowFileURIs[workspace] }

// ImageLimits is the images block, defaults for what it leaves out.
func (a *App) ImageLimits() providers.ImageLimits {
	if a.Images == nil {
		return providers.ImageLimits{}
	}
	return *a.Images
}

// RequestBodyTimeout is BodyTimeout, or the default.
func (a *App) RequestBodyTimeout() time.Duration {
	if a.BodyTimeout > 0 {
		return time.Duration(a.BodyTimeout)
	}
	return handlers.DefaultBodyTimeout
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ handlers.Runtime   = (*App)(nil)
)
