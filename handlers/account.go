package handlers

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/payments"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Routes the meter serves.
const (
	PathUsageSummary  = "/v1/usage/summary"
	PathUsageRequests = "/v1/usage/requests"
	PathUsageExport   = "/v1/usage/export"
	PathPricing       = "/v1/account/pricing"
	PathTopUps        = "/v1/account/top-ups"
	PathWebhook       = "/v1/billing/webhook"
)

// usd renders micro-dollars as a JSON number of dollars, exactly (no float rounding).
type usd ledger.Micros

func (u usd) MarshalJSON() ([]byte, error) { return []byte(ledger.Micros(u).String()), nil }

// perMillion renders a catalog rate (µ$ per 1M tokens) as dollars per 1M tokens.
func perMillion(m catalog.Micros) usd { return usd(m) }

func (h *Meter) serveAccount(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	switch r.URL.Path {
	case PathWebhook:
		h.serveWebhook(w, r, ex)
		return
	}
	if ex.WorkspaceID == "" {
		writeError(w, ex, providers.Errorf(http.StatusUnauthorized, "invalid_api_key", "", "this route needs an API key (btl_auth)"))
		return
	}
	switch r.URL.Path {
	case PathUsageSummary:
		h.serveSummary(w, r, ex)
	case PathUsageRequests:
		h.serveRequests(w, r, ex)
	case PathUsageExport:
		h.serveExport(w, r, ex)
	case PathPricing:
		h.servePricing(w, r, ex)
	case PathTopUps:
		h.serveTopUp(w, r, ex)
	}
}

type usageTokens struct {
	InputUncached int64 `json:"input_uncached"`
	CacheRead     int64 `json:"cache_read"`
	CacheWrite5m  int64 `json:"cache_write_5m"`
	CacheWrite1h  int64 `json:"cache_write_1h"`
	Output        int64 `json:"output"`
	Reasoning     int64 `json:"reasoning"`
}

type usageSavings struct {
	PromptCache   usd `json:"prompt_cache"`
	ResponseCache usd `json:"response_cache"`
	Coalesce      usd `json:"coalesce"`
	Compression   usd `json:"compression"`
	Dedupe        usd `json:"dedupe"`
	OutputBudget  usd `json:"output_budget"`
	Routing       usd `json:"routing"`
}

type usageGroup struct {
	Key         string       `json:"key,omitempty"`
	Requests    int64        `json:"requests"`
	Tokens      usageTokens  `json:"tokens"`
	CostUSD     usd          `json:"cost_usd"`
	BaselineUSD usd          `json:"baseline_usd"`
	SavedUSD    usd          `json:"saved_usd"`
	Savings     usageSavings `json:"savings_usd"`
}

func toUsageGroup(g ledger.UsageGroup) usageGroup {
	s := g.Savings
	return usageGroup{
		Key: g.Key, Requests: g.Requests,
		Tokens:  usageTokens{g.InputUncached, g.CacheRead, g.CacheWrite5m, g.CacheWrite1h, g.Output, g.Reasoning},
		CostUSD: usd(g.Cost), BaselineUSD: usd(g.Baseline), SavedUSD: usd(g.Baseline - g.Cost),
		Savings: usageSavings{usd(s.SavePromptCache), usd(s.SaveResponseCache), usd(s.SaveCoalesce),
			usd(s.SaveCompression), usd(s.SaveDedupe), usd(s.SaveOutputBudget), usd(s.SaveRouting)},
	}
}

// parseTime accepts RFC 3339 or a date (UTC midnight).
func parseTime(v string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, true
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// parseRange reads from/to (default: the last 30 days up to now).
func parseRange(r *http.Request) (from, to time.Time, perr *providers.Error) {
	q := r.URL.Query()
	to = time.Now().UTC()
	from = to.AddDate(0, 0, -30)
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, ok := parseTime(v)
			if !ok {
				return from, to, providers.Errorf(http.StatusBadRequest, "invalid_value", p.name, "'%s' must be RFC 3339 or YYYY-MM-DD", p.name)
			}
			*p.dst = t
		}
	}
	if !from.Before(to) {
		return from, to, providers.Errorf(http.StatusBadRequest, "invalid_value", "from", "'from' must be before 'to'")
	}
	return from, to, nil
}

func (h *Meter) serveSummary(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return
	}
	from, to, perr := parseRange(r)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	groupBy := r.URL.Query().Get("group_by")
	switch groupBy {
	case "", "day", "model", "provider", "key":
	default:
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "group_by", "group_by must be day, model, provider or key"))
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	s, err := h.led.Store.Summary(ctx, ex.WorkspaceID, from, to, groupBy)
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	groups := make([]usageGroup, 0, len(s.Groups))
	for _, g := range s.Groups {
		groups = append(groups, toUsageGroup(g))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "usage.summary", "workspace_id": ex.WorkspaceID,
		"from": s.From, "to": s.To, "group_by": groupBy,
		"balance_usd": usd(s.Balance), "total": toUsageGroup(s.Total), "groups": groups,
	})
}

type priceEntry struct {
	Model        string `json:"model"`
	Provider     string `json:"provider,omitempty"`
	Upstream     string `json:"upstream_model,omitempty"`
	Input        usd    `json:"input_per_1m_usd"`
	CachedInput  usd    `json:"cached_input_per_1m_usd"`
	CacheWrite5m usd    `json:"cache_write_5m_per_1m_usd"`
	CacheWrite1h usd    `json:"cache_write_1h_per_1m_usd"`
	Output       usd    `json:"output_per_1m_usd"`
	Context      int64  `json:"context_window,omitempty"`
}

// servePricing shows what this workspace pays per public slug (its first candidate's rates,
// the one tried first) and per pinned model, plus the balance.
func (h *Meter) servePricing(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return
	}
	prices := h.rt.PricesFor(ex.WorkspaceID)
	routes := h.rt.Routes()
	entry := func(name, provider, upstream string) (priceEntry, bool) {
		p, ok := prices.Lookup(upstream)
		if !ok {
			return priceEntry{}, false
		}
		return priceEntry{Model: name, Provider: provider, Upstream: upstream, Input: perMillion(p.Input),
			CachedInput: perMillion(p.CachedInput), CacheWrite5m: perMillion(p.CacheWrite5m),
			CacheWrite1h: perMillion(p.CacheWrite1h), Output: perMillion(p.Output), Context: p.Context}, true
	}
	data := []priceEntry{}
	for _, s := range routes.Slugs() {
		for _, c := range s.Candidates {
			if e, ok := entry(s.Name, c.Provider.Name(), c.Model); ok {
				data = append(data, e)
				break
			}
		}
	}
	for _, m := range routes.PinnedModels() {
		prov, upstream, _ := strings.Cut(m, "/")
		if e, ok := entry(m, prov, upstream); ok {
			data = append(data, e)
		}
	}
	ctx, cancel := detached(r)
	defer cancel()
	bal, err := h.led.Store.Balance(ctx, ex.WorkspaceID)
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data, "balance_usd": usd(bal),
		"prices_as_of": prices.AsOf})
}

func (h *Meter) serveTopUp(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, ex, http.MethodPost)
		return
	}
	pay := h.rt.Payments()
	if pay == nil {
		writeError(w, ex, providers.Errorf(http.StatusNotImplemented, "payments_not_configured", "",
			"top-ups are not enabled on this gateway (no payments block in the btl config)"))
		return
	}
	var req struct {
		AmountUSD json.Number `json:"amount_usd"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object with amount_usd"))
		return
	}
	dollars, err := req.AmountUSD.Float64()
	cents := int64(math.Round(dollars * 100))
	if err != nil || cents < 100 || cents > 1_000_000 || math.Abs(dollars*100-float64(cents)) > 1e-6 {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "amount_usd", "amount_usd must be between 1 and 10000, in whole cents"))
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	sess, err := pay.CreateCheckout(ctx, ex.WorkspaceID, cents)
	if err != nil {
		h.logger.Error("creating a checkout session", zap.String("request_id", ex.ID), zap.Error(err))
		writeError(w, ex, providers.Errorf(http.StatusBadGateway, "payment_provider_error", "", "the payment provider could not start a checkout; retry shortly"))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"object": "top_up", "id": sess.ID, "url": sess.URL,
		"amount_usd": usd(cents * 10_000)})
}

// serveWebhook credits a paid checkout exactly once per payment: the grant's idempotency key
// is the checkout session, so the provider's retries, replays and the several events it
// sends about one payment change nothing.
func (h *Meter) serveWebhook(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, ex, http.MethodPost)
		return
	}
	pay := h.rt.Payments()
	if pay == nil {
		writeError(w, ex, providers.Errorf(http.StatusNotFound, "not_found", "", "no payment provider is configured"))
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_request_body", "", "could not read the body"))
		return
	}
	ev, err := pay.VerifyWebhook(payload, r.Header.Get("Stripe-Signature"))
	if errors.Is(err, payments.ErrMalformedEvent) {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_request_body", "", "the webhook body is not a valid event"))
		return
	}
	if err != nil {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_signature", "", "webhook signature verification failed"))
		return
	}
	paid, ok, err := ev.PaidCredit()
	var amount ledger.Micros
	if err == nil && ok {
		amount, err = ledger.CentsToMicros(paid.Cents)
	}
	if err != nil {
		h.logger.Error("webhook amount refused", zap.String("event_id", ev.ID), zap.Error(err))
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "amount_total", "amount_total is out of range"))
		return
	}
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{"received": true, "credited": false})
		return
	}
	ws := paid.WorkspaceID
	ctx, cancel := detached(r)
	defer cancel()
	// Keyed by the payment, not the event: every event about one checkout credits it once.
	applied, err := h.led.Store.Grant(ctx, ws, amount, "stripe", paid.Key)
	if err != nil {
		if errors.Is(err, ledger.ErrNotFound) {
			h.logger.Error("paid checkout for an unknown workspace", zap.String("event_id", ev.ID), zap.String("workspace_id", ws))
			writeJSON(w, http.StatusOK, map[string]any{"received": true, "credited": false})
			return
		}
		// 5xx makes the provider retry later; the idempotency key keeps that safe.
		writeError(w, ex, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "credited": applied})
}
