package handlers

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// Meter decides what a request may cost and records what it did cost. Before dispatch it
// reserves an upper bound from the workspace's prepaid credits (402 insufficient_quota when
// the balance cannot cover it); when the exchange completes — just before the last bytes of
// the answer, so usage.cost can be shown — it prices the usage, settles the reservation and
// appends the ledger row to the write-ahead spool. It also serves /v1/usage/summary,
// /v1/account/pricing, /v1/account/top-ups and /v1/billing/webhook.
type Meter struct {
	// AnonymousWorkspace bills requests that carry no identity (no btl_auth in the chain) to
	// this workspace. Without it such requests are refused: nobody to bill means no service.
	AnonymousWorkspace string `json:"anonymous_workspace,omitempty"`
	// DefaultOutputReserve is the output tokens reserved when neither the caller nor the
	// catalog gives a cap. Default: 4096.
	DefaultOutputReserve int64 `json:"default_output_reserve,omitempty"`

	rt     Runtime
	led    *Ledger
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
	h.rt, h.led = rt, rt.Ledger()
	if h.DefaultOutputReserve <= 0 {
		h.DefaultOutputReserve = 4096
	}
	return nil
}

func (h *Meter) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	switch r.URL.Path {
	case PathUsageSummary, PathPricing, PathTopUps, PathWebhook:
		h.serveAccount(w, r, ex)
		return nil
	case PathChat:
		if r.Method != http.MethodPost {
			return next.ServeHTTP(w, r)
		}
	default:
		return next.ServeHTTP(w, r)
	}
	if ex.WorkspaceID == "" {
		if h.AnonymousWorkspace == "" {
			writeError(w, ex, providers.Errorf(http.StatusUnauthorized, "invalid_api_key", "",
				"no caller identity: put btl_auth before btl_meter, or set anonymous_workspace for local use"))
			return nil
		}
		ex.WorkspaceID = h.AnonymousWorkspace
	}
	m := &metered{h: h, ex: ex}
	ex.OnComplete(m.complete)
	defer ex.Complete()

	req, perr := ex.LoadChatRequest(r, DefaultMaxBody)
	if perr != nil {
		return next.ServeHTTP(w, r) // the route answers with the parse error; the row records it
	}
	targets, rerr := h.rt.Routes().Resolve(req.Model)
	if rerr != nil {
		return next.ServeHTTP(w, r)
	}
	amount := h.estimate(ex, req, targets)
	res, err := h.led.Credits.Reserve(r.Context(), ex.WorkspaceID, ledger.Micros(amount))
	if err != nil {
		if errors.Is(err, ledger.ErrInsufficientCredits) {
			writeError(w, ex, providers.Errorf(http.StatusPaymentRequired, "insufficient_quota", "",
				"You exceeded your current quota: the workspace's credit balance cannot cover this request (up to $%s). Top up to continue.",
				ledger.Micros(amount).String()))
			return nil
		}
		if c := h.logger.Check(zapcore.ErrorLevel, "credit reservation failed"); c != nil {
			c.Write(zap.String("request_id", ex.ID), zap.Error(err))
		}
		e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the gateway cannot check your balance right now; retry shortly")
		e.RetryAfter = 2 * time.Second
		writeError(w, ex, e)
		return nil
	}
	m.res = res
	return next.ServeHTTP(w, r)
}

// estimate is the reservation: an upper bound of what the call can cost on any of its
// candidates. Input tokens are over-estimated at one per three bytes of body (real
// tokenizers average about four); output is the caller's cap, else the model's maximum.
func (h *Meter) estimate(ex *Exchange, req *providers.ChatRequest, targets []routing.Target) int64 {
	inTokens := int64(len(ex.OutboundBody()))/3 + 16
	var worst int64
	for _, tg := range targets {
		p, ok := h.rt.Prices().Lookup(tg.Model)
		if !ok {
			continue
		}
		out := req.OutputCap()
		if out == 0 {
			out = p.MaxOutput
		}
		if out == 0 {
			out = h.DefaultOutputReserve
		}
		in := max(p.Input, p.CacheWrite1h, p.LongInput)
		cost := (inTokens*in + out*max(p.Output, p.LongOutput) + 999_999) / 1_000_000
		worst = max(worst, cost)
	}
	return max(worst, 1)
}

// metered carries one request's reservation to its completion.
type metered struct {
	h   *Meter
	ex  *Exchange
	res *ledger.Reservation
}

// complete prices the exchange, settles or releases the reservation and appends the row.
func (m *metered) complete(ex *Exchange) {
	h := m.h
	if ex.UsageKnown {
		if p, ok := h.rt.Prices().Lookup(ex.UpstreamModel); ok {
			ex.CostMicros = p.Cost(ex.Usage)
			ex.BaselineMicros = ex.CostMicros
			ex.CostKnown = true
		}
	}
	if m.res != nil {
		if ex.CostKnown {
			m.res.Settle(ledger.Micros(ex.CostMicros))
		} else {
			m.res.Release()
		}
	}
	status := ex.Status
	if status == 0 {
		status = http.StatusOK
	}
	var requested string
	if ex.Request != nil {
		requested = ex.Request.Model
	}
	row := ledger.Row{
		RequestID: ex.ID, Time: ex.Start, WorkspaceID: ex.WorkspaceID, KeyID: ex.KeyID, NodeID: h.led.NodeID,
		RequestedModel: requested, Provider: ex.Provider, UpstreamModel: ex.UpstreamModel,
		Usage: ledger.Usage{
			InputUncached: ex.Usage.InputUncached, CacheRead: ex.Usage.CacheRead,
			CacheWrite5m: ex.Usage.CacheWrite5m, CacheWrite1h: ex.Usage.CacheWrite1h,
			Output: ex.Usage.Output, Reasoning: ex.Usage.Reasoning,
		},
		CostMicros: ledger.Micros(ex.CostMicros), BaselineMicros: ledger.Micros(ex.BaselineMicros),
		Status: status, CacheOutcome: ex.CacheOutcome, Attempts: ex.Attempts,
		LatencyUs: time.Since(ex.Start).Microseconds(), TTFBUs: ex.TTFB.Microseconds(),
		Stream: ex.Streamed, ErrorCode: ex.ErrorCode,
	}
	if err := h.led.Writer.Append(row); err != nil {
		// The spool refused the row (disk full, closed): this is money, so say so loudly.
		h.logger.Error("ledger row not recorded", zap.String("request_id", ex.ID),
			zap.String("workspace_id", ex.WorkspaceID), zap.Int64("cost_micros", ex.CostMicros), zap.Error(err))
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Meter)(nil)
	_ caddyhttp.MiddlewareHandler = (*Meter)(nil)
)
