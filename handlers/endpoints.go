package handlers

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// The OpenAI endpoints besides chat that the gateway routes: embeddings (every provider with
// an embeddings API), legacy completions and moderations (OpenAI-style providers). Each takes
// the chat pipeline — auth, credit reservation, routing with failover before the first byte,
// pricing and the ledger row — with its own request parser and upstream call.
const (
	PathEmbeddings  = "/v1/embeddings"
	PathCompletions = "/v1/completions"
	PathModerations = "/v1/moderations"
)

// endpointOf maps a path to its providers.Endpoint* name ("" for the chat paths and others).
func endpointOf(path string) string {
	switch path {
	case PathEmbeddings:
		return providers.EndpointEmbeddings
	case PathCompletions:
		return providers.EndpointCompletions
	case PathModerations:
		return providers.EndpointModerations
	}
	return ""
}

// loadEndpointRequest reads and validates the body of a non-chat endpoint. The chat view it
// returns carries the model, the body and any output cap: what metering and routing read.
func (ex *Exchange) loadEndpointRequest(r *http.Request, maxBody int64) (*providers.ChatRequest, *providers.Error) {
	body, perr := readBody(r, maxBody)
	if perr != nil {
		return nil, perr
	}
	switch ex.Endpoint {
	case providers.EndpointEmbeddings:
		emb, req, perr := providers.ParseEmbeddingRequest(body)
		if perr != nil {
			return nil, perr
		}
		ex.Embedding = emb
		return req, nil
	case providers.EndpointCompletions:
		return providers.ParseCompletionRequest(body)
	default:
		return providers.ParseModerationRequest(body)
	}
}

// attemptEndpoint makes one upstream call for a non-chat endpoint. Nothing is written before
// the whole answer is in, so every failure may still be retried or fail over.
func (h *Route) attemptEndpoint(ctx context.Context, w http.ResponseWriter, ex *Exchange, tg routing.Target) (bool, *providers.Error) {
	body := ex.OutboundBody()
	// The meter's last word before the call: the reservation must cover what is sent.
	b := providers.Bounds{MaxTokens: ex.Request.OutputCap(), Choices: 1}
	if n := ex.Request.N; n != nil {
		b.Choices = *n
	}
	if err := providers.Admit(ex.admitFor(tg), b); err != nil {
		return false, asProviderError(err)
	}
	var resp *providers.Response
	var err error
	switch ex.Endpoint {
	case providers.EndpointEmbeddings:
		// Routing only offers targets whose provider implements the interface.
		resp, err = tg.Provider.(providers.Embedder).Embed(ctx, &providers.EmbedCall{Request: ex.Embedding, Body: body, UpstreamModel: tg.Model})
	default:
		resp, err = tg.Provider.(providers.Forwarder).Forward(ctx, ex.Endpoint, body, tg.Model)
	}
	if err != nil {
		return false, asProviderError(err)
	}
	if _, hasUsage, _ := providers.FindTopLevel(resp.Body, "usage"); !hasUsage && resp.Usage == nil {
		// Moderations report no usage (OpenAI does not bill them): record the input size so
		// the row says what was sent; the catalog prices moderation models at zero.
		u := providers.Usage{InputUncached: calibratedPrompt(ex.WorkspaceID, tg.Model, len(body))}
		resp.Usage = &u
		ex.UsageEstimated = true
	}
	h.writeCompletion(w, ex, resp)
	return true, nil
}

// serveModel answers GET /v1/models/{id} for any model the gateway can route: a public slug,
// a pinned "<provider>/<model>", or a bare id a provider declares. Frameworks call it at
// start-up to check a model exists, so it is answered locally, whatever the providers.
func (h *Route) serveModel(w http.ResponseWriter, r *http.Request) {
	ex := ExchangeFrom(r)
	if r.Method != http.MethodGet {
		methodNotAllowed(w, ex, http.MethodGet)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, PathModels+"/")
	if raw := r.URL.RawPath; raw != "" {
		// A pinned id such as openai/gpt-4o-mini may arrive with its slash escaped.
		if u, err := url.PathUnescape(strings.TrimPrefix(raw, PathModels+"/")); err == nil {
			id = u
		}
	}
	owner := "btl"
	if i := strings.IndexByte(id, '/'); i > 0 {
		owner = id[:i]
	}
	// A key with a model allow-list sees only the models it may call, as in the list.
	if targets, perr := h.rt.Routes().Resolve(id); perr != nil || id == "" || !keyAdmits(&ex.Key, id, targets) {
		writeError(w, ex, providers.Errorf(http.StatusNotFound, "model_not_found", "model",
			"The model '%s' does not exist or you do not have access to it.", id))
		return
	}
	writeJSON(w, http.StatusOK, modelEntry{ID: id, Object: "model", Created: startedAt, OwnedBy: owner})
}
