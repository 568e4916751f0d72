package handlers

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Auth identifies the caller. It is the first btl handler, so it creates the request's
// exchange and its x-btl-request-id.
type Auth struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_auth", New: func() caddy.Module { return new(Auth) }}
}

// Provision sets up the handler.
func (h *Auth) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	return nil
}

func (h *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	return next.ServeHTTP(w, r)
}

// Optimize decides what must be sent upstream. Without it the gateway is a faithful
// pass-through.
type Optimize struct{}

// CaddyModule returns the Caddy module information.
func (Optimize) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_optimize", New: func() caddy.Module { return new(Optimize) }}
}

func (h *Optimize) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Optimize)(nil)
)
