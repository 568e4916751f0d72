package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/metrics"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/ratelimit"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// Meter decides what a request may cost and records what it did cost. Before dispatch it
// reserves an upper bound from the workspace's prepaid credits (402 insufficient_quota when
// the balance cannot cover it); when the exchange completes — just before the last bytes of
// the answer, so usage.cost can be shown — it prices the usage, settles the reservation and
// appends the ledger row to the write-ahead spool. It also serves /v1/usage/summary,
// /v1/usage/requests, /v1/usage/export, /v1/account/pricing, /v1/account/top-ups and
// /v1/billing/webhook.
//
// On completion it also updates the process's Prometheus collectors (package metrics,
// registered into each config's metrics registry) and adds these fields to Caddy's access
// log line for the request: btl_request_id, btl_workspace, btl_key_id, btl_model,
// btl_upstream_model, btl_provider, btl_tokens (an object by kind), btl_cost_usd,
// btl_saved_usd, btl_cache, btl_attempts. The key's secret is never logged.
type Meter struct {
	// AnonymousWorkspace bills requests that carry no identity (no btl_auth in the chain) to
	// this workspace. Without it such requests are refused: nobody to bill means no service.
	AnonymousWorkspace string `json:"anonymous_workspace,omitempty"`
	// DefaultOutputReserve is the output tokens reserved when neither the caller nor the
	// catalog gives a cap. Default: 4096.
	DefaultOutputReserve int64 `json:"default_output_reserve,omitempty"`

	rt      Runtime
	led     *Ledger
	logger  *zap.Logger
	metrics *metrics.Set
	slugs   map[string]bool
	exports *exportSlots
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
	h.exports = &exportSlots{}
	h.slugs = map[string]bool{}
	for _, s := range rt.Routes().Slugs() {
		h.slugs[s.Name] = true
	}
	h.metrics = metrics.Default()
	if err := h.metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("btl_meter: registering metrics: %v", err)
	}
	if w := h.led.Writer; w != nil {
		routes := rt.Routes()
		h.metrics.SetBreakerSource(func() map[string]string {
			out := map[string]string{}
			for _, a := range routes.Providers() {
				out[a.Name()] = routes.HealthOf(a.Name())
			}
			return out
		})
		h.metrics.SetLedgerSource(func() metrics.LedgerStats {
			st := w.Stats()
			return metrics.LedgerStats{PendingRows: st.PendingRows, SpoolBytes: st.SpoolBytes, InsertErrors: st.InsertErrors}
		})
	}
	return nil
}

func (h *Meter) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	switch r.URL.Path {
	case PathUsageSummary, PathUsageRequests, PathUsageExport, PathPricing, PathTopUps, PathWebhook:
		h.serveAccount(w, r, ex)
		return nil
	case PathChat, PathMessages, PathResponses, PathEmbeddings, PathCompletions, PathModerations:
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
	if err := h.led.Wait(r.Context()); err != nil {
		writeError(w, ex, ledgerUnavailable())
		return nil
	}
	// Fail closed: a request whose row could not be made durable is refused before it can
	// cost anything (a full spool disk, a ledger shutting down).
	slot, err := h.led.Writer.Reserve()
	if err != nil {
		h.metrics.LedgerWriteError()
		if c := h.logger.Check(zapcore.ErrorLevel, "refusing a request: its ledger row cannot be recorded"); c != nil {
			c.Write(zap.String("request_id", ex.ID), zap.Error(err))
		}
		e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "",
			"the gateway cannot record usage right now (its ledger spool is full or closing), so it does not serve; retry shortly")
		e.RetryAfter = 5 * time.Second
		writeError(w, ex, e)
		return nil
	}
	m := &metered{h: h, ex: ex, slot: slot}
	// Access-log fields are garbage on every request: only where the server writes an access log.
	if srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); srv == nil || srv.Logs != nil {
		m.logFields, _ = r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	}
	ex.OnComplete(m.complete)
	r, m.span = startSpan(r, "btl.request")
	// Deferred in this order: the exchange completes (its row spooled) before the answer is
	// sent; metrics, log fields and the span after, off the client's latency.
	defer m.observe()
	defer ex.Complete()

	if r.URL.Path == PathResponses {
		ex.startResponses(h.rt, h.logger) // the body is a Responses request: meter its chat view
	}
	req, perr := ex.LoadChatRequest(r, DefaultMaxBody)
	if perr != nil {
		return next.ServeHTTP(w, r) // the route answers with the parse error; the row records it
	}
	targets, rerr := ex.Candidates(h.rt.Routes(), req.Model)
	if rerr != nil {
		return next.ServeHTTP(w, r)
	}
	if perr := checkModel(ex, req.Model, targets); perr != nil {
		writeError(w, ex, perr)
		return nil
	}
	if perr := h.checkPriced(ex, req, targets); perr != nil {
		writeError(w, ex, perr)
		return nil
	}
	amount, tokens := h.estimate(ex, req, targets)
	if perr := m.holdKeyLimits(r.Context(), w, targets, amount, tokens); perr != nil {
		writeError(w, ex, perr)
		return nil
	}
	rr, span := startSpan(r, "btl.reserve")
	res, err := h.led.Credits.Reserve(rr.Context(), ex.WorkspaceID, ledger.Micros(amount))
	if span != nil {
		span.SetAttributes(attribute.String("btl.reserve_usd", ledger.Micros(amount).String()))
		endSpan(span, reserveStatus(err))
	}
	if err != nil {
		m.releaseKeyLimits()
		writeError(w, ex, h.refusal(ex, err, ledger.Micros(amount)))
		return nil
	}
	m.res, m.reserved, m.ctx = res, ledger.Micros(amount), context.WithoutCancel(r.Context())
	ex.admit = m.admit
	return next.ServeHTTP(w, r)
}

// estimate is the reservation made before the request is optimized and routed: an upper
// bound of what the call can cost on any of its candidates, for the request as the caller
// wrote it (n choices of its output cap, in its service tier), and the most tokens it can
// use there, which the tokens-per-minute limits count. Each upstream attempt then re-reserves
// for exactly what its adapter built (admit), so a rewrite that raises the bound is covered
// or refused before the call. Every candidate is priced (checkPriced).
func (h *Meter) estimate(ex *Exchange, req *providers.ChatRequest, targets []routing.Target) (amount, tokens int64) {
	bounds := providers.Bounds{MaxTokens: req.OutputCap(), Choices: req.Choices(), ServiceTier: req.ServiceTier}
	prices := h.rt.PricesFor(ex.WorkspaceID)
	for _, tg := range targets {
		p, ok := prices.Lookup(tg.Model)
		if !ok {
			continue
		}
		if tp, ok := p.ForTier(bounds.ServiceTier); ok {
			p = tp // an unpriced tier is refused at admission, once the adapter says it is sent
		}
		in, out := h.callTokens(ex, tg, p, bounds)
		amount = max(amount, p.Bound(in, out))
		tokens = max(tokens, catalog.AddSat(in, out))
	}
	return max(amount, 1), tokens
}

// bound is what a call to tg can cost at p with the given bounds. Saturating: see
// catalog.Price.Bound.
func (h *Meter) bound(ex *Exchange, tg routing.Target, p catalog.Price, b providers.Bounds) int64 {
	return p.Bound(h.callTokens(ex, tg, p, b))
}

// callTokens is the most tokens a call to tg with the given bounds can use: what the credit
// reservation prices and the tokens-per-minute limits count, so the two never disagree.
// Input tokens are over-estimated at one per three bytes of body (real tokenizers average
// about four), or at the model's calibrated estimate plus a tenth when its tokenizer has been
// seen to be denser than that; output is the cap per choice (else the model's maximum, else
// DefaultOutputReserve) times the choices (n).
func (h *Meter) callTokens(ex *Exchange, tg routing.Target, p catalog.Price, b providers.Bounds) (in, out int64) {
	size := ex.OutboundLen()
	in = max(int64(size)/3+16, calibratedPrompt(ex.WorkspaceID, tg.Model, size)*11/10+16)
	out = b.MaxTokens
	if out <= 0 {
		out = p.MaxOutput
	}
	if out <= 0 {
		out = h.DefaultOutputReserve
	}
	return in, catalog.MulSat(out, max(b.Choices, 1))
}

// checkPriced refuses, before anything is reserved or sent, a request the gateway could not
// bill: one of whose candidates the workspace's prices do not know (a model pinned at request
// time on a provider that declares no models list, say), or one asking for a billable option
// the catalog has no rate for (audio, web search, plugins). A model is priced by the catalog
// or by the config's price blocks; a free local model is one priced at zero.
func (h *Meter) checkPriced(ex *Exchange, req *providers.ChatRequest, targets []routing.Target) *providers.Error {
	prices := h.rt.PricesFor(ex.WorkspaceID)
	for _, tg := range targets {
		if _, ok := prices.Lookup(tg.Model); !ok {
			return unpricedModel(req.Model, tg.Model)
		}
	}
	if o, found := catalog.FindUnpricedOption(req); found {
		return providers.Errorf(http.StatusBadRequest, "unsupported_parameter", o.Param,
			"'%s' is not supported by this gateway yet: it asks for %s, which the provider bills at rates the gateway's price catalog does not have, "+
				"and the gateway serves nothing it cannot bill. Remove '%s' from the request.", o.Param, o.What, o.Param)
	}
	return nil
}

// unpricedModel is the 400 for a model the gateway cannot price, naming it and how the
// operator prices it.
func unpricedModel(requested, upstream string) *providers.Error {
	return providers.Errorf(http.StatusBadRequest, "model_not_priced", "model",
		"The model '%s' is not served: this gateway has no price for '%s', and it serves nothing it cannot bill. "+
			"The operator can price it with `price %s { input <usd per 1M tokens> output <usd per 1M tokens> }` in the btl block "+
			"(input 0 output 0 for a model that costs nothing, such as a local one).", requested, upstream, upstream)
}

// metered carries one request's reservation and spool slot to its completion.
type metered struct {
	h         *Meter
	ex        *Exchange
	res       *ledger.Reservation
	slot      ledger.Slot
	logFields *caddyhttp.ExtraLogFields
	// span is the request's btl.request span (nil when not tracing).
	span trace.Span
	// tokens and budget hold the request against its key's limits (keylimits.go).
	tokens *ratelimit.Grant
	budget *ledger.BudgetReservation
	// reserved is the total set aside: res plus every top-up in more.
	reserved ledger.Micros
	more     []*ledger.Reservation
	// ctx is the request's context without its cancellation: a top-up for a call that runs
	// on after its client left must still be able to reach the store.
	ctx context.Context
	// row is the ledger row complete spooled, kept for observe.
	row       ledger.Row
	completed bool
}

// reserveTimeout bounds a reservation top-up that has to lease from the store.
const reserveTimeout = 5 * time.Second

// admit runs before every upstream call, told by the adapter what it is about to send to tg
// (providers.Bounds): the output cap after the optimizer's and the adapter's rewrites (an
// Anthropic thinking budget can turn max_tokens 1 into 16,385), n and the service tier. It
// refuses a tier the catalog does not price (400), and tops the reservation up to the call's
// bound, refusing with 402 when the balance cannot cover it. Nothing is sent before it
// returns. It never lowers a reservation: the upfront one already passed.
func (m *metered) admit(tg routing.Target, b providers.Bounds) error {
	h, ex := m.h, m.ex
	ex.Sent = b
	p, ok := h.rt.PricesFor(ex.WorkspaceID).Lookup(tg.Model)
	if !ok {
		// The meter refused unpriced candidates already; nothing unpriced is ever sent.
		return notUpstream(unpricedModel(ex.Request.Model, tg.Model))
	}
	tp, ok := p.ForTier(b.ServiceTier)
	if !ok {
		msg := fmt.Sprintf("service_tier %q is not priced for %s by this gateway", b.ServiceTier, tg.Model)
		if tiers := p.Tiers(); len(tiers) > 0 {
			msg += "; priced tiers: default, " + strings.Join(tiers, ", ")
		} else {
			msg += "; omit service_tier or use default"
		}
		return notUpstream(providers.Errorf(http.StatusBadRequest, "unsupported_value", "service_tier", "%s", msg))
	}
	need := ledger.Micros(h.bound(ex, tg, tp, b))
	if need <= m.reserved || m.res == nil {
		return nil
	}
	if err := m.budget.Grow(need - m.reserved); err != nil {
		return notUpstream(budgetError(ex, err, h.logger))
	}
	ctx, cancel := context.WithTimeout(m.ctx, reserveTimeout)
	defer cancel()
	more, err := h.led.Credits.Reserve(ctx, ex.WorkspaceID, need-m.reserved)
	if err != nil {
		return notUpstream(h.refusal(ex, err, need))
	}
	m.more = append(m.more, more)
	m.reserved = need
	return nil
}

// refusal is the error for a reservation that failed: 402 when the balance cannot cover
// amount, 503 when the balance cannot be checked.
func (h *Meter) refusal(ex *Exchange, err error, amount ledger.Micros) *providers.Error {
	if errors.Is(err, ledger.ErrInsufficientCredits) {
		h.metrics.CreditRefused()
		return providers.Errorf(http.StatusPaymentRequired, "insufficient_quota", "",
			"You exceeded your current quota: the workspace's credit balance cannot cover this request (up to $%s). Top up to continue.",
			amount.String())
	}
	if c := h.logger.Check(zapcore.ErrorLevel, "credit reservation failed"); c != nil {
		c.Write(zap.String("request_id", ex.ID), zap.Error(err))
	}
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the gateway cannot check your balance right now; retry shortly")
	e.RetryAfter = 2 * time.Second
	return e
}

// settle charges cost against the reservations: each top-up up to its amount, the rest
// (which may exceed it) against the first.
func (m *metered) settle(cost ledger.Micros) {
	for _, r := range m.more {
		part := min(cost, r.Amount())
		r.Settle(part)
		cost -= part
	}
	m.res.Settle(cost)
}

func reserveStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ledger.ErrInsufficientCredits):
		return http.StatusPaymentRequired
	}
	return http.StatusServiceUnavailable
}

// complete prices the exchange, settles or releases the reservation and appends the row.
func (m *metered) complete(ex *Exchange) {
	h := m.h
	ex.cacheOutcome() // fixed before the row is made: the row says what the header says
	observePrompt(ex, h.rt.Prices())
	observeOutput(ex)
	h.attribute(ex)
	if m.res != nil {
		if ex.CostKnown {
			m.settle(ledger.Micros(ex.CostMicros))
		} else {
			m.res.Release()
			for _, r := range m.more {
				r.Release()
			}
		}
	}
	m.settleKeyLimits(ex)
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
		Savings: ledger.Savings{
			SavePromptCache: ledger.Micros(ex.Savings.PromptCache), SaveResponseCache: ledger.Micros(ex.Savings.ResponseCache),
			SaveCoalesce: ledger.Micros(ex.Savings.Coalesce), SaveCompression: ledger.Micros(ex.Savings.Compression),
			SaveDedupe: ledger.Micros(ex.Savings.Dedupe), SaveOutputBudget: ledger.Micros(ex.Savings.OutputBudget),
			SaveRouting: ledger.Micros(ex.Savings.Routing),
		},
		Status: status, CacheOutcome: ex.CacheOutcome, Attempts: ex.Attempts,
		LatencyUs: time.Since(ex.Start).Microseconds(), TTFBUs: ex.TTFB.Microseconds(),
		Stream: ex.Streamed, ErrorCode: ex.ErrorCode,
	}
	if err := m.slot.Append(row); err != nil {
		h.metrics.LedgerWriteError()
		// The spool refused the row (disk full, closed): this is money, so say so loudly.
		h.logger.Error("ledger row not recorded", zap.String("request_id", ex.ID),
			zap.String("workspace_id", ex.WorkspaceID), zap.Int64("cost_micros", ex.CostMicros), zap.Error(err))
	}
	m.row, m.completed = row, true
}

// observe reports a completed exchange to the metrics, the access log and the trace. It runs
// when btl_meter returns, after the route flushed the answer: none of it is money, and on a
// quiet server this bookkeeping was a measurable part of each answer's latency.
func (m *metered) observe() {
	if !m.completed {
		return
	}
	h, ex, row := m.h, m.ex, &m.row
	if o := ex.Optimizer; o != nil && o.EmptyLength {
		h.metrics.EmptyLength()
	}
	h.metrics.Observe(metrics.Request{
		Provider: row.Provider, ModelClass: h.modelClass(row.RequestedModel), Status: row.Status, CacheOutcome: row.CacheOutcome,
		Tokens:     [6]int64{row.InputUncached, row.CacheRead, row.CacheWrite5m, row.CacheWrite1h, row.Output, row.Reasoning},
		CostMicros: int64(row.CostMicros), BaselineMicros: int64(row.BaselineMicros),
		Savings: [7]int64{int64(row.SavePromptCache), int64(row.SaveResponseCache), int64(row.SaveCoalesce),
			int64(row.SaveCompression), int64(row.SaveDedupe), int64(row.SaveOutputBudget), int64(row.SaveRouting)},
		Latency: time.Duration(row.LatencyUs) * time.Microsecond, TTFT: ex.TTFB, Upstream: row.Provider != "",
	})
	if m.logFields != nil {
		addLogFields(m.logFields, row)
	}
	if m.span != nil {
		m.span.SetAttributes(exchangeAttributes(ex)...)
		endSpan(m.span, row.Status)
	}
}

// modelClass bounds the requested model for metric labels: a configured public slug keeps
// its name; any other model the caller names is "pinned"; no model is "".
func (h *Meter) modelClass(requested string) string {
	switch {
	case requested == "":
		return ""
	case h.slugs[requested]:
		return requested
	default:
		return "pinned"
	}
}

// addLogFields puts the row's facts on Caddy's access-log line: one inline field, encoded only
// when the line is written, with the flat btl_* keys the README documents.
func addLogFields(f *caddyhttp.ExtraLogFields, row *ledger.Row) {
	f.Add(zap.Inline((*logRow)(row)))
}

// logRow is a ledger row as access-log fields.
type logRow ledger.Row

func (row *logRow) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("btl_request_id", row.RequestID)
	enc.AddString("btl_workspace", row.WorkspaceID)
	if row.KeyID != "" {
		enc.AddString("btl_key_id", row.KeyID)
	}
	enc.AddString("btl_model", row.RequestedModel)
	enc.AddString("btl_upstream_model", row.UpstreamModel)
	enc.AddString("btl_provider", row.Provider)
	_ = enc.AddObject("btl_tokens", logTokens(row.Usage))
	enc.AddString("btl_cost_usd", row.CostMicros.String())
	enc.AddString("btl_saved_usd", (row.BaselineMicros - row.CostMicros).String())
	if row.CacheOutcome != "" {
		enc.AddString("btl_cache", row.CacheOutcome)
	}
	enc.AddInt("btl_attempts", row.Attempts)
	return nil
}

type logTokens ledger.Usage

func (u logTokens) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddInt64("input_uncached", u.InputUncached)
	enc.AddInt64("cache_read", u.CacheRead)
	enc.AddInt64("cache_write_5m", u.CacheWrite5m)
	enc.AddInt64("cache_write_1h", u.CacheWrite1h)
	enc.AddInt64("output", u.Output)
	enc.AddInt64("reasoning", u.Reasoning)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Meter)(nil)
	_ caddyhttp.MiddlewareHandler = (*Meter)(nil)
)

// attribute prices the exchange and splits what the gateway saved by lever, against an honest
// baseline: the same request sent directly, as the caller wrote it, at the requested model's
// list price (its default candidate for a slug). Each lever is measured, not assumed:
//   - routing: the usage at the default candidate's price minus at the serving one's;
//   - prompt_cache: only for cache markers the gateway added — cache reads at the input rate
//     minus at the cached rate, less the write premium paid for them;
//   - dedupe, compression: the prompt tokens removed, at the input rate;
//   - response_cache: a hit served from memory costs nothing; the lever is the whole call.
//
// The output budget only bounds worst-case spend; what the model would have written without
// the cap is unknowable, so that lever is never credited.
func (h *Meter) attribute(ex *Exchange) {
	if !ex.UsageKnown {
		return
	}
	ex.Usage = ex.Usage.Bounded() // an upstream's report is input too: no negative or absurd counts
	prices := h.rt.PricesFor(ex.WorkspaceID)
	p, ok := prices.Lookup(ex.UpstreamModel)
	if !ok {
		return
	}
	tier := ex.billedTier()
	p = inTier(p, tier)
	list := p
	if ex.HasDefaultPrice {
		list = inTier(ex.DefaultPrice, tier)
	}
	ex.CostKnown = true
	var s LeverSavings
	switch {
	case ex.CacheOutcome == "hit":
		ex.CostMicros = 0
		s.ResponseCache = list.Cost(ex.Usage)
	case ex.bill != nil && !ex.settleBill():
		// Another caller of the same coalesced call paid for it.
		ex.paidElsewhere = true
		ex.CostMicros = 0
		s.Coalesce = list.Cost(ex.Usage)
	default:
		ex.CostMicros = p.Cost(ex.Usage)
		if ex.HasDefaultPrice {
			s.Routing = ex.DefaultPrice.Cost(ex.Usage) - ex.CostMicros
		}
		if o := ex.Optimizer; o != nil && !o.Shadow {
			if o.CacheMarkers > 0 {
				u := ex.Usage
				read := u.CacheRead * (p.Input - p.CachedInput)
				premium := u.CacheWrite5m*(p.CacheWrite5m-p.Input) + u.CacheWrite1h*(p.CacheWrite1h-p.Input)
				s.PromptCache = (read - premium + 500_000) / 1_000_000
			}
			// Removed history would have been a cache read on a provider that caches
			// prefixes by itself; removed new text would have been full-price input.
			historyRate := list.Input
			if automaticPrefixCaching[ex.ProviderType] {
				historyRate = list.CachedInput
			}
			s.Dedupe = (o.DedupeTokens*list.Input + o.DedupeHistoryTokens*historyRate + 500_000) / 1_000_000
			s.Compression = (o.CompressionTokens*list.Input + 500_000) / 1_000_000
		}
	}
	ex.Savings = s
	ex.BaselineMicros = ex.CostMicros + s.PromptCache + s.ResponseCache + s.Coalesce + s.Compression + s.Dedupe + s.OutputBudget + s.Routing
	if o := ex.Optimizer; o != nil && o.SaltTokens > 0 && ex.CostMicros > 0 {
		// A direct call would not carry the workspace salt. With the gateway's markers the
		// prompt-cache saving above already counts every prompt token (the salt's too) at
		// the input rate; without them the salt, which leads the prompt, is in the cost at
		// the cached rate when the upstream read anything from its cache.
		rate := p.Input
		if o.CacheMarkers == 0 && ex.Usage.CacheRead >= o.SaltTokens {
			rate = p.CachedInput
		}
		ex.BaselineMicros -= (o.SaltTokens*rate + 500_000) / 1_000_000
	}
}

// cacheOutcome fixes and returns the request's cache outcome, the one source of the
// X-Btl-Cache header, the ledger row, metrics and traces: "hit" (answered from the response
// cache), "coalesced" (joined another caller's identical call in flight), "miss" (the
// response cache was asked and had nothing) or "bypass" (no cache took part). A stream's
// header is written before its completion and a non-stream row before its header, so both
// call it; once set, it does not change.
func (ex *Exchange) cacheOutcome() string {
	switch {
	case ex.CacheOutcome == "hit":
	case ex.Coalesced:
		ex.CacheOutcome = "coalesced"
	case ex.CacheOutcome == "":
		ex.CacheOutcome = "bypass"
	}
	return ex.CacheOutcome
}

// billedTier is the processing tier a call is billed in: the one the upstream says it served
// (OpenAI names it in every answer; "auto" resolves to the account's default there), else
// the one the adapter forwarded.
func (ex *Exchange) billedTier() string {
	if ex.ServedTier != "" {
		return ex.ServedTier
	}
	return ex.Sent.ServiceTier
}

// inTier is p in the given processing tier. A tier the catalog does not price was refused at
// admission; if an upstream reports serving one anyway, the call is billed at the tier
// forwarded, else at the standard rate, rather than not at all.
func inTier(p catalog.Price, tier string) catalog.Price {
	if tp, ok := p.ForTier(tier); ok {
		return tp
	}
	return p
}

// automaticPrefixCaching lists wire formats whose providers cache prompt prefixes without
// markers, so a caller's repeated history is billed at the cached rate even without us.
var automaticPrefixCaching = map[string]bool{"openai": true, "openrouter": true, "simulated": true, "gemini": true, "vertex": true}
