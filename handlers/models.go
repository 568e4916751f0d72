package handlers

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// modelEntry is one entry of OpenAI's model list.
type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// startedAt stands in for a model's creation time: slugs have none of their own.
var startedAt = time.Now().Unix()

func (h *Route) serveModels(w http.ResponseWriter, r *http.Request) error {
	ex := ExchangeFrom(r)
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return nil
	}
	routes := h.rt.Routes()
	data := []modelEntry{}
	for _, s := range routes.Slugs() {
		data = append(data, modelEntry{ID: s.Name, Object: "model", Created: startedAt, OwnedBy: "btl"})
	}
	for _, m := range routes.PinnedModels() {
		owner := m[:indexSlash(m)]
		data = append(data, modelEntry{ID: m, Object: "model", Created: startedAt, OwnedBy: owner})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
	return nil
}

func indexSlash(s string) int {
	for i := range len(s) {
		if s[i] == '/' {
			return i
		}
	}
	return len(s)
}

type providerEntry struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Models []string `json:"models"`
}

// serveProviders lists the configured providers: names, wire types and models. It never shows
// base URLs' credentials or keys.
func (h *Route) serveProviders(w http.ResponseWriter, r *http.Request) error {
	ex := ExchangeFrom(r)
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return nil
	}
	routes := h.rt.Routes()
	data := []providerEntry{}
	for _, a := range routes.Providers() {
		models := routes.ProviderModels(a.Name())
		if models == nil {
			models = []string{}
		}
		data = append(data, providerEntry{Name: a.Name(), Type: a.Type(), Models: models})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		providers.WriteError(w, providers.Errorf(http.StatusInternalServerError, "internal_error", "", "could not encode the response"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
