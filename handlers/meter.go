package handlers

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Meter prices every exchange from its usage and the price catalog. It registers a completion
// hook so the cost is known before the last byte of the answer is written (for usage.cost
// and the x-btl-cost-usd header), and completes exchanges that ended without one (errors,
// aborted streams) after the chain returns.
type Meter struct {
	rt     Runtime
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Meter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_meter", New: func() caddy.Module { return new(Meter) }}
}

// Provision finds the btl app.
func (h *Meter) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	rt, err := runtimeFrom(ctx, "btl_meter")
	if err != nil {
		return err
	}
	h.rt = rt
	return nil
}

func (h *Meter) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	ex.OnComplete(h.price)
	err := next.ServeHTTP(w, r)
	ex.Complete()
	return err
}

// price computes cost and baseline. Without the optimizer the baseline is the cost: the
// gateway changed nothing that would make the direct call cost more.
func (h *Meter) price(ex *Exchange) {
	if !ex.UsageKnown {
		return
	}
	p, ok := h.rt.Prices().Lookup(ex.UpstreamModel)
	if !ok {
		return
	}
	ex.CostMicros = p.Cost(ex.Usage)
	ex.BaselineMicros = ex.CostMicros
	ex.CostKnown = true
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Meter)(nil)
	_ caddyhttp.MiddlewareHandler = (*Meter)(nil)
)
