package handlers

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Optimize decides what must be sent upstream. It has no techniques yet, so the gateway is a
// faithful pass-through: the request reaches the upstream as the caller wrote it.
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

// Interface guard
var _ caddyhttp.MiddlewareHandler = (*Optimize)(nil)
