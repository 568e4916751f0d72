package handlers

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
)

// PathKeys is the key-management route (scope keys:write).
const PathKeys = "/v1/api-keys"

// apiKey is a key as the API shows it; Secret only in the create response.
type apiKey struct {
	ID        string     `json:"id"`
	Object    string     `json:"object"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Secret    string     `json:"key,omitempty"`
}

func toAPIKey(k ledger.Key) apiKey {
	scopes := make([]string, len(k.Scopes))
	for i, s := range k.Scopes {
		scopes[i] = string(s)
	}
	return apiKey{ID: k.ID, Object: "api_key", Name: k.Name, Prefix: k.Prefix, Scopes: scopes,
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt}
}

type createKeyRequest struct {
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	ExpiresAt *time.Time `json:"expires_at"`
	// ExpiresIn is a lifetime in seconds, an alternative to ExpiresAt.
	ExpiresIn *int64 `json:"expires_in"`
}

func (h *Auth) serveKeys(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	ctx, cancel := detached(r)
	defer cancel()
	id, hasID := strings.CutPrefix(r.URL.Path, PathKeys+"/")
	switch {
	case !hasID && r.Method == http.MethodPost:
		h.createKey(w, r, ex)
	case !hasID && r.Method == http.MethodGet:
		keys, err := h.led.Store.ListKeys(ctx, ex.WorkspaceID)
		if err != nil {
			writeError(w, ex, storeError(err))
			return
		}
		data := make([]apiKey, 0, len(keys))
		for _, k := range keys {
			data = append(data, toAPIKey(k))
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
	case hasID && id != "" && !strings.Contains(id, "/") && r.Method == http.MethodDelete:
		// Find the hash first so this node's cache forgets the key at once.
		keys, err := h.led.Store.ListKeys(ctx, ex.WorkspaceID)
		if err != nil {
			writeError(w, ex, storeError(err))
			return
		}
		var hash [32]byte
		found := false
		for _, k := range keys {
			if k.ID == id {
				hash, found = k.Hash, true
			}
		}
		if !found {
			writeError(w, ex, providers.Errorf(http.StatusNotFound, "not_found", "id", "no API key with id '%s'", id))
			return
		}
		if err := h.led.Store.RevokeKey(ctx, ex.WorkspaceID, id); err != nil {
			if errors.Is(err, ledger.ErrNotFound) {
				writeError(w, ex, providers.Errorf(http.StatusNotFound, "not_found", "id", "no API key with id '%s'", id))
				return
			}
			writeError(w, ex, storeError(err))
			return
		}
		h.led.Keys.Invalidate(hash)
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "api_key", "deleted": true})
	case hasID:
		if r.Method != http.MethodDelete {
			methodNotAllowed(w, ex, http.MethodDelete)
			return
		}
		writeError(w, ex, providers.Errorf(http.StatusNotFound, "not_found", "id", "no API key with id '%s'", id))
	default:
		methodNotAllowed(w, ex, "GET, POST")
	}
}

func (h *Auth) createKey(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	var req createKeyRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil && len(body) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object: %v", err))
		return
	}
	if len(req.Scopes) == 0 {
		req.Scopes = []string{string(ledger.ScopeInference)}
	}
	scopes := make([]ledger.Scope, 0, len(req.Scopes))
	for _, s := range req.Scopes {
		sc := ledger.Scope(s)
		known := false
		for _, k := range ledger.AllScopes {
			known = known || k == sc
		}
		if !known {
			writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "scopes", "unknown scope '%s' (known: inference, usage:read, keys:write)", s))
			return
		}
		// A key can only hand out what it has.
		held := false
		for _, c := range ex.Scopes {
			held = held || c == sc
		}
		if !held {
			writeError(w, ex, providers.Errorf(http.StatusForbidden, "insufficient_scope", "scopes", "cannot grant scope '%s': the calling key does not have it", s))
			return
		}
		scopes = append(scopes, sc)
	}
	expires := req.ExpiresAt
	if req.ExpiresIn != nil {
		if *req.ExpiresIn <= 0 {
			writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "expires_in", "expires_in must be a positive number of seconds"))
			return
		}
		t := time.Now().Add(time.Duration(*req.ExpiresIn) * time.Second)
		expires = &t
	}
	if expires != nil && !expires.After(time.Now()) {
		writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "expires_at", "expires_at must be in the future"))
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	key, secret, err := h.led.Store.CreateKey(ctx, ex.WorkspaceID, ledger.KeySpec{Name: req.Name, Scopes: scopes, ExpiresAt: expires})
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	out := toAPIKey(key)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
}

// storeError hides store internals from the client.
func storeError(err error) *providers.Error {
	if errors.Is(err, ledger.ErrInvalid) {
		return providers.Errorf(http.StatusBadRequest, "invalid_value", "", "%s", strings.TrimPrefix(err.Error(), "ledger: "))
	}
	if errors.Is(err, ledger.ErrNotFound) {
		return providers.Errorf(http.StatusNotFound, "not_found", "", "not found")
	}
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the account store is unavailable; retry shortly")
	e.RetryAfter = 2 * time.Second
	e.Internal = err
	return e
}
