package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
)

// PathKeys is the key-management route (scope keys:write).
const PathKeys = "/v1/api-keys"

// PathLimits is the workspace's rate limits: any keys:write key reads them, the owner (a key
// with every scope) sets them.
const PathLimits = "/v1/account/limits"

// apiKey is a key as the API shows it; Secret only in the create response.
type apiKey struct {
	ID           string     `json:"id"`
	Object       string     `json:"object"`
	Name         string     `json:"name"`
	Prefix       string     `json:"prefix"`
	Scopes       []string   `json:"scopes"`
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    *time.Time `json:"expires_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	ParentID     *string    `json:"parent_id"`
	Models       []string   `json:"models"`
	RPM          int64      `json:"rpm"`
	TPM          int64      `json:"tpm"`
	BudgetUSD    *usd       `json:"budget_usd"`
	BudgetPeriod *string    `json:"budget_period"`
	Secret       string     `json:"key,omitempty"`
}

func toAPIKey(k ledger.Key) apiKey {
	scopes := make([]string, len(k.Scopes))
	for i, s := range k.Scopes {
		scopes[i] = string(s)
	}
	out := apiKey{ID: k.ID, Object: "api_key", Name: k.Name, Prefix: k.Prefix, Scopes: scopes,
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt,
		Models: k.Limits.Models, RPM: k.Limits.RPM, TPM: k.Limits.TPM}
	if out.Models == nil {
		out.Models = []string{}
	}
	if k.ParentID != "" {
		out.ParentID = &k.ParentID
	}
	if l := k.Limits; l.BudgetMicros > 0 {
		b, p := usd(l.BudgetMicros), l.BudgetPeriod
		out.BudgetUSD, out.BudgetPeriod = &b, &p
	}
	return out
}

// createKeyRequest is POST /v1/api-keys. Unknown fields are refused: a limit the gateway
// silently ignored would be worse than an error.
type createKeyRequest struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// ExpiresAt (RFC 3339) or ExpiresIn (seconds) sets the expiry; a child key never outlives
	// the key creating it, and without either inherits its expiry.
	ExpiresAt *time.Time `json:"expires_at"`
	ExpiresIn *int64     `json:"expires_in"`
	// Models is the allow-list: slugs, "provider/model", "provider/*" or bare model ids.
	Models []string `json:"models"`
	// RPM and TPM are requests and tokens per minute.
	RPM *int64 `json:"rpm"`
	TPM *int64 `json:"tpm"`
	// BudgetUSD caps spend per BudgetPeriod (day, month or total; default total).
	// Raw, so a malformed amount gets a 400 naming budget_usd (json.Number's own error
	// names no field); parseDollars reads it exactly.
	BudgetUSD    *json.RawMessage `json:"budget_usd"`
	BudgetPeriod string           `json:"budget_period"`
}

func (h *Auth) serveKeys(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	id, hasID := strings.CutPrefix(r.URL.Path, PathKeys+"/")
	switch {
	case !hasID && r.Method == http.MethodPost:
		h.createKey(w, r, ex)
	case !hasID && r.Method == http.MethodGet:
		ctx, cancel := detached(r)
		defer cancel()
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
		h.revokeKey(w, r, ex, id)
	case hasID:
		if r.Method != http.MethodDelete {
			methodNotAllowed(w, ex, http.MethodDelete)
			return
		}
		writeError(w, ex, noSuchKey(id))
	default:
		methodNotAllowed(w, ex, "GET, POST")
	}
}

func noSuchKey(id string) *providers.Error {
	return providers.Errorf(http.StatusNotFound, "not_found", "id", "no API key with id '%s'", id)
}

// revokeKey revokes a key and every key minted under it. The caller must hold every scope
// the key holds (so a keys:write-only key cannot revoke the owner), and the workspace's last
// owner key cannot go.
func (h *Auth) revokeKey(w http.ResponseWriter, r *http.Request, ex *Exchange, id string) {
	ctx, cancel := detached(r)
	defer cancel()
	keys, err := h.led.Store.ListKeys(ctx, ex.WorkspaceID)
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	var target *ledger.Key
	for i := range keys {
		if keys[i].ID == id {
			target = &keys[i]
		}
	}
	if target == nil {
		writeError(w, ex, noSuchKey(id))
		return
	}
	for _, s := range target.Scopes {
		if !ex.Key.Has(s) {
			writeError(w, ex, providers.Errorf(http.StatusForbidden, "insufficient_scope", "id",
				"cannot revoke key '%s': it holds the scope '%s', which the calling key does not", id, s))
			return
		}
	}
	if err := h.led.Store.RevokeKey(ctx, ex.WorkspaceID, id); err != nil {
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			writeError(w, ex, noSuchKey(id))
		case errors.Is(err, ledger.ErrLastOwnerKey):
			writeError(w, ex, providers.Errorf(http.StatusConflict, "last_owner_key", "id",
				"cannot revoke key '%s': the workspace would have no owner key left (a key with every scope and no expiry, not minted under this one). Create another owner key first.", id))
		default:
			writeError(w, ex, storeError(err))
		}
		return
	}
	// This node's cache forgets the key and everything minted under it at once; other nodes
	// hear of each through WatchRevocations.
	if after, err := h.led.Store.ListKeys(ctx, ex.WorkspaceID); err == nil {
		for _, k := range after {
			if k.RevokedAt != nil {
				h.led.Keys.Invalidate(k.Hash)
			}
		}
	} else {
		h.led.Keys.Invalidate(target.Hash)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "api_key", "deleted": true})
}

// decodeStrict reads a JSON object into v, refusing unknown fields and trailing data, with
// a 400 that names the offending field.
func decodeStrict(r *http.Request, limit int64, v any) *providers.Error {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return providers.Errorf(http.StatusBadRequest, "invalid_request_body", "", "could not read the request body")
	}
	if int64(len(body)) > limit {
		return providers.Errorf(http.StatusRequestEntityTooLarge, "request_too_large", "", "the request body is over %d bytes", limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			field = strings.Trim(field, `"`)
			return providers.Errorf(http.StatusBadRequest, "unknown_parameter", field, "Unrecognized request argument supplied: %s", field)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return providers.Errorf(http.StatusBadRequest, "invalid_type", te.Field, "'%s' must be a JSON %s, not %s", te.Field, jsonKind(te.Type.String()), te.Value)
		}
		return providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object: %v", err)
	}
	if dec.More() {
		return providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body must be one JSON object")
	}
	return nil
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "int"), strings.Contains(goType, "Number"):
		return "number"
	case strings.HasPrefix(goType, "[]"):
		return "array"
	case strings.Contains(goType, "string"), strings.Contains(goType, "Time"):
		return "string"
	}
	return "value"
}

func (h *Auth) createKey(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	var req createKeyRequest
	if perr := decodeStrict(r, 64<<10, &req); perr != nil {
		writeError(w, ex, perr)
		return
	}
	spec, perr := keySpecFrom(&req, ex, time.Now())
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	key, secret, err := h.led.Store.CreateKey(ctx, ex.WorkspaceID, spec)
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	out := toAPIKey(key)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
}

// keySpecFrom validates a create request against the calling key, which becomes the new
// key's parent unless it is an owner key (those mint root keys: see ledger.Key.IsRootOwner).
// The store checks the same rules again in its transaction; these checks give each mistake a
// precise message and parameter.
func keySpecFrom(req *createKeyRequest, ex *Exchange, now time.Time) (ledger.KeySpec, *providers.Error) {
	// Names and model patterns are stored, listed and exported: printable text only.
	if perr := providers.CheckIdentifier("name", req.Name); perr != nil {
		return ledger.KeySpec{}, perr
	}
	for _, m := range req.Models {
		if perr := providers.CheckIdentifier("models", m); perr != nil {
			return ledger.KeySpec{}, perr
		}
	}
	spec := ledger.KeySpec{Name: req.Name, Limits: ledger.KeyLimits{Models: req.Models, BudgetPeriod: req.BudgetPeriod}}
	if !ex.Key.IsRootOwner() {
		spec.ParentID = ex.KeyID
	}
	if len(req.Scopes) == 0 {
		req.Scopes = []string{string(ledger.ScopeInference)}
	}
	for _, s := range req.Scopes {
		sc := ledger.Scope(s)
		known := false
		for _, k := range ledger.AllScopes {
			known = known || k == sc
		}
		if !known {
			return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "scopes", "unknown scope '%s' (known: inference, usage:read, keys:write)", s)
		}
		if !ex.Key.Has(sc) { // a key can only hand out what it has
			return spec, providers.Errorf(http.StatusForbidden, "insufficient_scope", "scopes", "cannot grant scope '%s': the calling key does not have it", s)
		}
		spec.Scopes = append(spec.Scopes, sc)
	}
	switch {
	case req.ExpiresIn != nil && req.ExpiresAt != nil:
		return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "expires_in", "give expires_in or expires_at, not both")
	case req.ExpiresIn != nil:
		// Bounded before multiplying: an unchecked lifetime overflowed time.Duration into a key
		// that expired in a fraction of a second.
		maxSeconds := int64(ledger.MaxKeyLifetime / time.Second)
		if *req.ExpiresIn <= 0 || *req.ExpiresIn > maxSeconds {
			return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "expires_in", "expires_in must be between 1 and %d seconds (ten years)", maxSeconds)
		}
		t := now.Add(time.Duration(*req.ExpiresIn) * time.Second)
		spec.ExpiresAt = &t
	case req.ExpiresAt != nil:
		if !req.ExpiresAt.After(now) || req.ExpiresAt.After(now.Add(ledger.MaxKeyLifetime)) {
			return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "expires_at", "expires_at must be in the future and at most ten years ahead")
		}
		spec.ExpiresAt = req.ExpiresAt
	}
	if pe := ex.Key.ExpiresAt; pe != nil && spec.ExpiresAt != nil && spec.ExpiresAt.After(*pe) {
		param := "expires_at"
		if req.ExpiresIn != nil {
			param = "expires_in"
		}
		return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", param,
			"a key cannot outlive the key that creates it: the calling key expires at %s; ask for that or earlier (or leave the expiry out to inherit it)", pe.UTC().Format(time.RFC3339))
	}
	if perr := setRates(&spec.Limits.RPM, &spec.Limits.TPM, req.RPM, req.TPM); perr != nil {
		return spec, perr
	}
	if req.BudgetUSD != nil {
		m, err := parseDollars(string(*req.BudgetUSD))
		if err != nil || m <= 0 || m > ledger.MaxBudget {
			return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "budget_usd",
				"budget_usd must be a positive decimal number of dollars, at most %s, with up to six decimals", ledger.MaxBudget)
		}
		spec.Limits.BudgetMicros = m
	}
	switch req.BudgetPeriod {
	case "", ledger.PeriodDay, ledger.PeriodMonth, ledger.PeriodTotal:
	default:
		return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "budget_period", "budget_period must be day, month or total")
	}
	if req.BudgetPeriod != "" && req.BudgetUSD == nil {
		return spec, providers.Errorf(http.StatusBadRequest, "invalid_value", "budget_period", "budget_period needs budget_usd")
	}
	return spec, nil
}

// setRates range-checks the rpm and tpm a request gave and sets those it gave.
func setRates(rpm, tpm *int64, reqRPM, reqTPM *int64) *providers.Error {
	for name, v := range map[string]*int64{"rpm": reqRPM, "tpm": reqTPM} {
		if v != nil && (*v < 0 || *v > ledger.MaxRate) {
			return providers.Errorf(http.StatusBadRequest, "invalid_value", name, "%s must be between 0 and %d (0: no limit)", name, ledger.MaxRate)
		}
	}
	if reqRPM != nil {
		*rpm = *reqRPM
	}
	if reqTPM != nil {
		*tpm = *reqTPM
	}
	return nil
}

// parseDollars converts a JSON decimal of dollars to micro-dollars exactly (no floats).
func parseDollars(s string) (ledger.Micros, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || len(whole) > 12 || len(frac) > 6 || strings.HasPrefix(whole, "-") {
		return 0, fmt.Errorf("not a dollar amount: %q", s)
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil {
		return 0, err
	}
	f := uint64(0)
	if frac != "" {
		if f, err = strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 64); err != nil {
			return 0, err
		}
	}
	return ledger.Micros(w*1_000_000 + f), nil
}

// serveLimits reads (GET) or, for the owner, sets (POST {"rpm","tpm"}) the workspace's rate
// limits.
func (h *Auth) serveLimits(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	ctx, cancel := detached(r)
	defer cancel()
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		if !ex.Key.IsOwner() {
			writeError(w, ex, providers.Errorf(http.StatusForbidden, "insufficient_scope", "",
				"only the workspace owner (a key with every scope) sets the workspace's limits"))
			return
		}
		var req struct {
			RPM *int64 `json:"rpm"`
			TPM *int64 `json:"tpm"`
		}
		if perr := decodeStrict(r, 4096, &req); perr != nil {
			writeError(w, ex, perr)
			return
		}
		cur, err := h.led.Store.Workspace(ctx, ex.WorkspaceID)
		if err != nil {
			writeError(w, ex, storeError(err))
			return
		}
		l := cur.Limits
		if perr := setRates(&l.RPM, &l.TPM, req.RPM, req.TPM); perr != nil {
			writeError(w, ex, perr)
			return
		}
		if err := h.led.Store.SetWorkspaceLimits(ctx, ex.WorkspaceID, l); err != nil {
			writeError(w, ex, storeError(err))
			return
		}
		h.led.Keys.ForgetWorkspace(ex.WorkspaceID)
	default:
		methodNotAllowed(w, ex, "GET, POST")
		return
	}
	ws, err := h.led.Store.Workspace(ctx, ex.WorkspaceID)
	if err != nil {
		writeError(w, ex, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "workspace.limits", "workspace_id": ws.ID, "rpm": ws.Limits.RPM, "tpm": ws.Limits.TPM})
}

// storeError hides store internals from the client.
func storeError(err error) *providers.Error {
	if errors.Is(err, ledger.ErrInvalid) {
		return providers.Errorf(http.StatusBadRequest, "invalid_value", "", "%s", strings.TrimPrefix(err.Error(), "ledger: invalid argument: "))
	}
	if errors.Is(err, ledger.ErrNotFound) {
		return providers.Errorf(http.StatusNotFound, "not_found", "", "not found")
	}
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "the account store is unavailable; retry shortly")
	e.RetryAfter = 2 * time.Second
	e.Internal = err
	return e
}
