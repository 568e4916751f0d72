package handlers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
)

// Auth identifies the caller from its API key (Authorization: Bearer btl_…, or x-api-key for
// Anthropic SDKs), enforces the scope each /v1 route needs, and serves /v1/api-keys. It is the
// first btl handler, so it creates the request's exchange and x-btl-request-id.
//
// Placeholders set: {http.vars.btl.workspace_id}, {http.vars.btl.key_id}.
type Auth struct {
	// CountTokensRPM bounds /v1/messages/count_tokens per key per minute (0: the default, 600;
	// negative: no bound beyond the key's own limits).
	CountTokensRPM int64 `json:"count_tokens_rpm,omitempty"`

	rt          Runtime
	led         *Ledger
	logger      *zap.Logger
	bodyTimeout time.Duration
}

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_auth", New: func() caddy.Module { return new(Auth) }}
}

// Provision finds the btl app.
func (h *Auth) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	rt, err := runtimeFrom(ctx, "btl_auth")
	if err != nil {
		return err
	}
	h.rt, h.led = rt, rt.Ledger()
	h.bodyTimeout = DefaultBodyTimeout
	if bt, ok := rt.(bodyTimeouter); ok {
		h.bodyTimeout = bt.RequestBodyTimeout()
	}
	return nil
}

// routeAccess says what a path needs: public paths need no key; the others need a valid key
// carrying at least one of the scopes (none listed: any valid key).
func routeAccess(path string) (public bool, anyOf []ledger.Scope) {
	switch {
	case path == "/v1/billing/webhook":
		return true, nil // verified by the payment provider's signature instead
	case path == PathOpenAPI:
		return true, nil // the route list is no secret, and tools fetch it before they have a key
	case !strings.HasPrefix(path, "/v1/"):
		return true, nil
	case path == PathChat, path == "/v1/responses", strings.HasPrefix(path, "/v1/responses/"),
		path == PathEmbeddings, path == PathCompletions, path == PathModerations,
		path == "/v1/messages", strings.HasPrefix(path, "/v1/messages/"):
		return false, []ledger.Scope{ledger.ScopeInference}
	case path == PathModels, strings.HasPrefix(path, PathModels+"/"), path == PathProviders:
		return false, []ledger.Scope{ledger.ScopeInference, ledger.ScopeUsageRead}
	case strings.HasPrefix(path, "/v1/usage/"), path == "/v1/account/pricing":
		return false, []ledger.Scope{ledger.ScopeUsageRead}
	case path == PathKeys, strings.HasPrefix(path, PathKeys+"/"), path == PathTopUps, path == PathLimits:
		return false, []ledger.Scope{ledger.ScopeKeysWrite}
	default:
		return false, nil
	}
}

// bearer extracts the API key.
func bearer(r *http.Request) string {
	if v := r.Header.Get("Authorization"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
		return ""
	}
	return strings.TrimSpace(r.Header.Get("X-Api-Key"))
}

var errNoKey = providers.Errorf(http.StatusUnauthorized, "invalid_api_key", "",
	"You didn't provide an API key. Send it as 'Authorization: Bearer btl_…'.")

func invalidKey(why string) *providers.Error {
	return providers.Errorf(http.StatusUnauthorized, "invalid_api_key", "", "Incorrect API key provided: %s.", why)
}

func (h *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	public, anyOf := routeAccess(r.URL.Path)
	if public {
		return next.ServeHTTP(w, r)
	}
	secret := bearer(r)
	if secret == "" {
		writeError(w, ex, errNoKey)
		return nil
	}
	if err := h.led.Wait(r.Context()); err != nil {
		writeError(w, ex, ledgerUnavailable())
		return nil
	}
	tr, span := startSpan(r, "btl.auth")
	key, err := h.led.Keys.Lookup(tr.Context(), secret)
	if err != nil {
		e := h.lookupError(ex, err)
		endSpan(span, e.Status)
		writeError(w, ex, e)
		return nil
	}
	if span != nil {
		span.SetAttributes(attribute.String("btl.workspace_id", key.WorkspaceID), attribute.String("btl.key_id", key.ID))
		endSpan(span, http.StatusOK)
	}
	if !hasAny(key, anyOf) {
		names := make([]string, len(anyOf))
		for i, s := range anyOf {
			names[i] = string(s)
		}
		writeError(w, ex, providers.Errorf(http.StatusForbidden, "insufficient_scope", "",
			"this API key lacks the scope this route needs (one of: %s)", strings.Join(names, ", ")))
		return nil
	}
	withBodyDeadline(w, r, h.bodyTimeout)
	ex.WorkspaceID, ex.KeyID, ex.Scopes, ex.Key = key.WorkspaceID, key.ID, key.Scopes, key
	caddyhttp.SetVar(r.Context(), "btl.workspace_id", key.WorkspaceID)
	caddyhttp.SetVar(r.Context(), "btl.key_id", key.ID)
	switch {
	case r.URL.Path == PathKeys || strings.HasPrefix(r.URL.Path, PathKeys+"/"):
		h.serveKeys(w, r, ex)
		return nil
	case r.URL.Path == PathLimits:
		h.serveLimits(w, r, ex)
		return nil
	case isMetered(anyOf) && !h.admitRequest(w, r, ex):
		return nil
	}
	return next.ServeHTTP(w, r)
}

func (h *Auth) lookupError(ex *Exchange, err error) *providers.Error {
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return invalidKey("the key does not exist")
	case errors.Is(err, ledger.ErrRevoked):
		return invalidKey("the key was revoked")
	case errors.Is(err, ledger.ErrExpired):
		return invalidKey("the key has expired")
	}
	if c := h.logger.Check(zapcore.ErrorLevel, "key lookup failed"); c != nil {
		c.Write(zap.String("request_id", ex.ID), zap.Error(err))
	}
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the gateway cannot verify API keys right now; retry shortly")
	e.RetryAfter = 2 * time.Second
	return e
}

func hasAny(k ledger.Key, anyOf []ledger.Scope) bool {
	if len(anyOf) == 0 {
		return true
	}
	for _, s := range anyOf {
		if k.Has(s) {
			return true
		}
	}
	return false
}

// detached gives store calls made on behalf of a request their own deadline, so a client
// that disconnects cannot cut a write in half.
func detached(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
)
