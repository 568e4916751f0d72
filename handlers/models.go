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
	// A key with a model allow-list sees only the models it may call.
	for _, s := range routes.Slugs() {
		if keyAdmits(&ex.Key, s.Name, s.Candidates) {
			data = append(data, modelEntry{ID: s.Name, Object: "model", Created: startedAt, OwnedBy: "btl"})
		}
	}
	for _, m := range routes.PinnedModels() {
		if restricted(&ex.Key) {
			if targets, err := routes.Resolve(m); err != nil || !keyAdmits(&ex.Key, m, targets) {
				continue
			}
		}
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
	Name         string       `json:"name"`
	Type         string       `json:"type"`
	Models       []string     `json:"models"`
	Capabilities capabilities `json:"capabilities"`
	// Health is the circuit breaker's state over the provider's targets: closed (healthy),
	// open (failing; traffic goes elsewhere) or half_open (probing).
	Health string `json:"health"`
}

// capabilities are what the gateway can use through a wire format.
type capabilities struct {
	Streaming     bool   `json:"streaming"`
	Tools         bool   `json:"tools"`
	Vision        bool   `json:"vision"`
	JSONSchema    bool   `json:"json_schema"`
	PromptCaching string `json:"prompt_caching"`
}

// capabilitiesByType: prompt caching is "automatic" (the provider caches prefixes itself),
// "explicit" (markers in the request), "implicit" (Gemini's automatic caching) or "unknown"
// for servers whose behaviour depends on the deployment.
var capabilitiesByType = map[string]capabilities{
	"openai":            {true, true, true, true, "automatic"},
	"openrouter":        {true, true, true, true, "explicit"},
	"openai_compatible": {true, true, true, true, "unknown"},
	"simulated":         {true, true, true, true, "automatic"},
	"anthropic":         {true, true, true, true, "explicit"},
	"bedrock":           {true, true, true, true, "explicit"},
	"vertex":            {true, true, true, true, "implicit"},
	"gemini":            {true, true, true, true, "implicit"},
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
		caps, ok := capabilitiesByType[a.Type()]
		if !ok {
			caps = capabilities{Streaming: true, PromptCaching: "unknown"}
		}
		data = append(data, providerEntry{Name: a.Name(), Type: a.Type(), Models: models, Capabilities: caps, Health: routes.HealthOf(a.Name())})
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
