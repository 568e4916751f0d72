package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/ratelimit"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// What a key's record allows, enforced on the request path: rate limits (auth: requests;
// meter: tokens), the model allow-list and the spend cap (meter). Each limit of the caller's
// key applies, and so does each limit of the keys that minted it and of its workspace.

// DefaultCountTokensRPM bounds /v1/messages/count_tokens per key when btl_auth sets no
// count_tokens_rpm: counting is free for the caller but not for the gateway's CPU.
const DefaultCountTokensRPM = 600

// Rate-limit bucket names: a bucket per key or workspace and per quantity.
func keyBucket(id, kind string) string { return "key:" + id + ":" + kind }
func wsBucket(id, kind string) string  { return "ws:" + id + ":" + kind }

// isMetered reports whether a path is an inference call counted by requests-per-minute:
// routes that need the inference scope (model and provider listings need either scope and
// are not counted).
func isMetered(anyOf []ledger.Scope) bool {
	return len(anyOf) == 1 && anyOf[0] == ledger.ScopeInference
}

// admitRequest takes one request from the key's, its ancestors' and its workspace's
// requests-per-minute buckets (and, for count_tokens, the key's count_tokens bucket). It
// sets the x-ratelimit-*-requests headers and answers 429 when a bucket is empty.
func (h *Auth) admitRequest(w http.ResponseWriter, r *http.Request, ex *Exchange) bool {
	lim := h.led.Limits
	if lim == nil {
		return true
	}
	var buf [4]ratelimit.Ask
	wl := ex.workspaceLimits(r.Context(), h.led.Keys, h.logger)
	asks := chainAsks(buf[:0], &ex.Key, ex.WorkspaceID, "rpm", func(l ledger.KeyLimits) int64 { return l.RPM }, wl.RPM, 1)
	if r.URL.Path == PathCountTokens && h.CountTokensRPM >= 0 {
		n := h.CountTokensRPM
		if n == 0 {
			n = DefaultCountTokensRPM
		}
		asks = append(asks, ratelimit.Ask{Bucket: keyBucket(ex.KeyID, "count_tokens"), Limit: n, N: 1})
	}
	if len(asks) == 0 {
		return true
	}
	_, st, ok := lim.Take(r.Context(), asks...)
	setRateHeaders(w.Header(), "requests", st)
	if !ok {
		writeError(w, ex, rateLimited(ex, "requests", st))
	}
	return ok
}

// chainAsks appends an ask for each limit of the key, its ancestors and its workspace that is
// set (most keys have none, and then this allocates nothing).
func chainAsks(asks []ratelimit.Ask, k *ledger.Key, ws, kind string, limit func(ledger.KeyLimits) int64, wsLimit, n int64) []ratelimit.Ask {
	if l := limit(k.Limits); l > 0 {
		asks = append(asks, ratelimit.Ask{Bucket: keyBucket(k.ID, kind), Limit: l, N: n})
	}
	for _, a := range k.Ancestors {
		if l := limit(a.Limits); l > 0 {
			asks = append(asks, ratelimit.Ask{Bucket: keyBucket(a.ID, kind), Limit: l, N: n})
		}
	}
	if wsLimit > 0 {
		asks = append(asks, ratelimit.Ask{Bucket: wsBucket(ws, kind), Limit: wsLimit, N: n})
	}
	return asks
}

// setRateHeaders writes OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens}.
func setRateHeaders(h http.Header, kind string, st ratelimit.Status) {
	if st.Limit <= 0 {
		return
	}
	names := rateHeaderNames[kind]
	h[names[0]] = []string{strconv.FormatInt(st.Limit, 10)}
	h[names[1]] = []string{strconv.FormatInt(st.Remaining, 10)}
	h[names[2]] = []string{st.Reset.Round(time.Millisecond).String()}
}

// rateHeaderNames are the canonical header names per kind, made once.
var rateHeaderNames = map[string][3]string{
	"requests": {"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
	"tokens":   {"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
}

// rateLimited is the 429 for a refused bucket, naming whose limit it is.
func rateLimited(ex *Exchange, kind string, st ratelimit.Status) *providers.Error {
	unit := map[string]string{"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)"}[kind]
	whose := "this API key"
	switch parts := strings.Split(st.Bucket, ":"); {
	case parts[0] == "ws":
		whose = "this workspace"
	case parts[len(parts)-1] == "count_tokens":
		whose = "count_tokens with this API key"
	case parts[1] != ex.KeyID:
		whose = "key " + parts[1] + ", which created this API key"
	}
	var e *providers.Error
	if st.TooLarge {
		e = providers.Errorf(http.StatusTooManyRequests, "rate_limit_exceeded", "",
			"Request too large for %s: the limit is %d %s and this request alone needs more.", whose, st.Limit, unit)
	} else {
		e = providers.Errorf(http.StatusTooManyRequests, "rate_limit_exceeded", "",
			"Rate limit reached for %s: the limit is %d %s. Please try again in %s.", whose, st.Limit, unit, st.Reset.Round(time.Second))
		e.RetryAfter = st.Reset
	}
	e.Type = kind // as OpenAI: "requests" or "tokens"
	return e
}

// WorkspaceLimits returns a workspace's rate limits from a cache refreshed in the background
// every few seconds, so an owner's change reaches every node quickly and the request path
// never waits for it (except once per workspace). If the store cannot say, there are none:
// rate limits fail open.
func (c *KeyCache) WorkspaceLimits(ctx context.Context, ws string, logger *zap.Logger) ledger.WorkspaceLimits {
	now := c.now()
	if e, ok := c.workspaces.Get(ws); ok {
		if now.Sub(e.fetched) > workspaceLimitsTTL && e.refreshing.CompareAndSwap(false, true) {
			go c.fetchWorkspaceLimits(context.Background(), ws, logger)
		}
		return e.limits
	}
	return c.fetchWorkspaceLimits(ctx, ws, logger)
}

func (c *KeyCache) fetchWorkspaceLimits(ctx context.Context, ws string, logger *zap.Logger) ledger.WorkspaceLimits {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	w, err := c.store.Workspace(ctx, ws)
	if err != nil {
		if c := logger.Check(zapcore.WarnLevel, "reading workspace limits"); c != nil {
			c.Write(zap.String("workspace_id", ws), zap.Error(err))
		}
		if e, ok := c.workspaces.Get(ws); ok {
			e.refreshing.Store(false)
			return e.limits
		}
		// Remember the failure for a refresh period, so requests do not each wait for a
		// database that is away; the next try runs in the background.
		c.workspaces.SetWithTTL(ws, &cachedWorkspace{fetched: c.now()}, 1, 10*time.Minute)
		return ledger.WorkspaceLimits{}
	}
	c.workspaces.SetWithTTL(ws, &cachedWorkspace{limits: w.Limits, fetched: c.now()}, 1, 10*time.Minute)
	return w.Limits
}

// workspaceLimits reads the caller's workspace limits once per request: auth and the meter
// both need them, and each cache read costs a push to the cache's policy buffer.
func (ex *Exchange) workspaceLimits(ctx context.Context, keys *KeyCache, logger *zap.Logger) ledger.WorkspaceLimits {
	if !ex.wsLimitsRead {
		ex.wsLimits, ex.wsLimitsRead = keys.WorkspaceLimits(ctx, ex.WorkspaceID, logger), true
	}
	return ex.wsLimits
}

// ForgetWorkspace drops a workspace's cached limits (after the owner changed them).
func (c *KeyCache) ForgetWorkspace(ws string) { c.workspaces.Del(ws) }

// restricted reports whether a model allow-list may apply to the key (its own or, through
// the keys that minted it, an ancestor's).
func restricted(k *ledger.Key) bool { return len(k.Limits.Models) > 0 || len(k.Ancestors) > 0 }

// keyAdmits reports whether every key of the caller's chain admits a model routed to targets.
func keyAdmits(k *ledger.Key, name string, targets []routing.Target) bool {
	if !restricted(k) {
		return true
	}
	var names []string
	for _, a := range k.LimitChain() {
		if len(a.Limits.Models) == 0 {
			continue
		}
		if names == nil {
			names = make([]string, len(targets))
			for i, tg := range targets {
				names[i] = tg.Provider.Name() + "/" + tg.Model
			}
		}
		if !a.Limits.AdmitsModel(name, names) {
			return false
		}
	}
	return true
}

// checkModel refuses a model outside the key's allow-list (403, naming it).
func checkModel(ex *Exchange, name string, targets []routing.Target) *providers.Error {
	if keyAdmits(&ex.Key, name, targets) {
		return nil
	}
	allowed := ex.Key.Limits.Models
	if len(allowed) == 0 { // only an ancestor restricts it
		return providers.Errorf(http.StatusForbidden, "model_not_allowed", "model",
			"This API key may not use the model '%s': the key that created it does not allow it.", name)
	}
	return providers.Errorf(http.StatusForbidden, "model_not_allowed", "model",
		"This API key may not use the model '%s' (allowed: %s).", name, strings.Join(allowed, ", "))
}

// holdKeyLimits takes the request's tokens (the meter's bound: its prompt and n times its
// output cap, see Meter.callTokens) from the tokens-per-minute buckets and reserves amount
// against the spend caps of the caller's key chain. Release or settle them with
// settleKeyLimits.
func (m *metered) holdKeyLimits(ctx context.Context, w http.ResponseWriter, targets []routing.Target, amount, tokens int64) *providers.Error {
	h, ex := m.h, m.ex
	if ex.KeyID == "" {
		return nil // anonymous use: no key, no key limits
	}
	if lim := h.led.Limits; lim != nil && len(targets) > 0 {
		var buf [4]ratelimit.Ask
		wl := ex.workspaceLimits(ctx, h.led.Keys, h.logger)
		asks := chainAsks(buf[:0], &ex.Key, ex.WorkspaceID, "tpm", func(l ledger.KeyLimits) int64 { return l.TPM }, wl.TPM, 0)
		if len(asks) > 0 {
			for i := range asks {
				asks[i].N = tokens
			}
			g, st, ok := lim.Take(ctx, asks...)
			setRateHeaders(w.Header(), "tokens", st)
			if !ok {
				return rateLimited(ex, "tokens", st)
			}
			m.tokens = g
		}
	}
	if b := h.led.Budgets; b != nil && hasBudget(&ex.Key) {
		// Reading a budget's spend (once per key and period) gets a short deadline and an
		// honest 503, never a request hanging on a stalled database.
		bctx, cancel := context.WithTimeout(ctx, budgetReadTimeout)
		res, err := b.Reserve(bctx, ex.WorkspaceID, ex.Key.LimitChain(), ledger.Micros(amount))
		cancel()
		if err != nil {
			m.tokens.Settle(0)
			m.tokens = nil
			return budgetError(ex, err, h.logger)
		}
		m.budget = res
	}
	return nil
}

// budgetReadTimeout bounds the wait for a key's spend on the request path.
const budgetReadTimeout = 2 * time.Second

func hasBudget(k *ledger.Key) bool {
	if k.Limits.BudgetMicros > 0 {
		return true
	}
	for _, a := range k.Ancestors {
		if a.Limits.BudgetMicros > 0 {
			return true
		}
	}
	return false
}

// releaseKeyLimits undoes holdKeyLimits for a request that is not sent.
func (m *metered) releaseKeyLimits() {
	m.tokens.Settle(0)
	m.budget.Release()
	m.tokens, m.budget = nil, nil
}

// settleKeyLimits settles the holds to what the request used: the upstream's tokens (none
// for a cache hit or a coalesced call) and the row's cost.
func (m *metered) settleKeyLimits(ex *Exchange) {
	if m.tokens != nil && ex.UsageKnown {
		u := ex.Usage
		used := u.InputUncached + u.CacheRead + u.CacheWrite5m + u.CacheWrite1h + u.Output
		if ex.CacheOutcome == "hit" || ex.CacheOutcome == "coalesced" || ex.paidElsewhere {
			used = 0
		}
		m.tokens.Settle(used)
	}
	if ex.CostKnown {
		m.budget.Settle(ledger.Micros(ex.CostMicros))
	} else {
		m.budget.Release()
	}
}

// budgetError maps a refused budget reservation to 402 naming the cap, or a store failure to
// 503.
func budgetError(ex *Exchange, err error, logger *zap.Logger) *providers.Error {
	var be *ledger.BudgetError
	if errors.As(err, &be) {
		whose := "this API key's budget"
		if be.KeyID != ex.KeyID {
			whose = fmt.Sprintf("the budget of key %s, which created this API key,", be.KeyID)
		}
		per := "in total"
		if be.Period != ledger.PeriodTotal {
			per = fmt.Sprintf("per %s (UTC; the next starts at %s)", be.Period, be.ResetsAt.Format(time.RFC3339))
		}
		return providers.Errorf(http.StatusPaymentRequired, "insufficient_quota", "",
			"You exceeded your current quota: %s is $%s %s; $%s of it is spent or reserved, and this request can cost up to $%s.",
			whose, be.Cap, per, be.Spent, be.Amount)
	}
	if c := logger.Check(zapcore.ErrorLevel, "key budget check failed"); c != nil {
		c.Write(zap.String("request_id", ex.ID), zap.Error(err))
	}
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the gateway cannot check this key's budget right now; retry shortly")
	e.RetryAfter = 2 * time.Second
	return e
}
