// Package anthropic is the adapter for Anthropic's Messages API (reference providers.md §3):
// it translates the caller's OpenAI chat-completions request through the canonical model
// (providers.ParseCanonical) into a Messages request, and the answer — a message or its SSE
// stream — back into OpenAI's chat.completion and chat.completion.chunk shapes. Cache writes
// keep their 5m/1h split on Response.Usage.
//
// The same translation serves Claude on Vertex AI through NewVertexClaude, and ingress.go
// goes the other way for callers that speak the Messages API to the gateway.
package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/openai"
)

// Type is the provider type this package registers.
const Type = "anthropic"

// DefaultBaseURL is Anthropic's API root, without /v1 as its SDK names it.
const DefaultBaseURL = "https://api.anthropic.com"

// DefaultVersion is the anthropic-version header sent unless configured otherwise.
const DefaultVersion = "2023-06-01"

// VertexVersion is the anthropic_version body field Claude on Vertex requires.
const VertexVersion = "vertex-2023-10-16"

func init() {
	providers.Register(Type, New, "anthropic_beta", "anthropic_version", "default_max_tokens", "allow_private_image_urls")
}

// maxBody bounds a non-stream answer held in memory.
const maxBody = 64 << 20

// Adapter calls the Anthropic Messages API, or Claude on Vertex AI.
type Adapter struct {
	cfg      providers.Config
	client   *http.Client
	timeouts providers.Timeouts
	build    BuildOptions
	headers  http.Header

	// endpoint is the Messages URL for the first-party API.
	endpoint string
	// vertex is set for Claude on Vertex: the model goes in the URL, auth is a Bearer token.
	vertex *vertexConfig
}

type vertexConfig struct {
	token       func(ctx context.Context) (string, error)
	endpointFor func(model string, stream bool) string
}

// New builds a first-party Anthropic adapter. Options: anthropic_beta (comma-separated beta
// flags for the anthropic-beta header), anthropic_version (default 2023-06-01),
// default_max_tokens (sent when the caller gave no limit; default by model),
// allow_private_image_urls (accepted for symmetry with the image-inlining adapters; Anthropic
// fetches URL images itself, so the gateway never dereferences them here).
func New(cfg providers.Config, client *http.Client) (providers.Adapter, error) {
	a, err := newAdapter(cfg, client)
	if err != nil {
		return nil, err
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("provider %q: base_url must start with http:// or https://", cfg.Name)
	}
	if cfg.APIKey == "" {
		return nil, fmt.Errorf("provider %q: api_key is required for type anthropic", cfg.Name)
	}
	base = strings.TrimRight(base, "/")
	base = strings.TrimSuffix(base, "/v1") // tolerate the OpenAI habit of including /v1
	a.endpoint = base + "/v1/messages"
	a.headers.Set("X-Api-Key", cfg.APIKey)
	version := cfg.Options["anthropic_version"]
	if version == "" {
		version = DefaultVersion
	}
	a.headers.Set("Anthropic-Version", version)
	return a, nil
}

func newAdapter(cfg providers.Config, client *http.Client) (*Adapter, error) {
	if client == nil {
		client = providers.NewHTTPClient(cfg.Timeouts)
	}
	a := &Adapter{cfg: cfg, client: client, timeouts: cfg.Timeouts.WithDefaults(), headers: http.Header{}}
	if v := cfg.Options["default_max_tokens"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("provider %q: default_max_tokens must be a positive integer", cfg.Name)
		}
		a.build.DefaultMaxTokens = n
	}
	if v := cfg.Options["allow_private_image_urls"]; v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("provider %q: allow_private_image_urls must be true or false", cfg.Name)
		}
	}
	a.headers.Set("Content-Type", "application/json")
	a.headers.Set("Accept-Encoding", "identity")
	if v := strings.TrimSpace(cfg.Options["anthropic_beta"]); v != "" {
		a.headers.Set("Anthropic-Beta", v)
	}
	return a, nil
}

// NewVertexClaude builds an adapter for Claude models on Vertex AI, for the vertex provider
// type to delegate claude-* models to. The request is the Anthropic Messages body without
// "model" and with "anthropic_version":"vertex-2023-10-16"; the answer and its stream are
// Anthropic's, translated exactly as for the first-party API.
//
//   - tokenSource returns a Google OAuth2 access token (sent as "Authorization: Bearer").
//   - endpointFor returns the full URL for a model, e.g.
//     https://{loc}-aiplatform.googleapis.com/v1/projects/{p}/locations/{loc}/publishers/anthropic/models/{model}:rawPredict
//     and …:streamRawPredict when stream is true.
//
// cfg.Options may carry anthropic_beta (sent as the anthropic-beta header) and
// default_max_tokens. Type() reports cfg.Type (normally "vertex").
func NewVertexClaude(cfg providers.Config, client *http.Client, tokenSource func(ctx context.Context) (string, error),
	endpointFor func(model string, stream bool) string) providers.Adapter {
	opts := make(map[string]string, len(cfg.Options))
	for k, v := range cfg.Options {
		if k == "anthropic_beta" || k == "default_max_tokens" {
			opts[k] = v
		}
	}
	cfg.Options = opts
	a, err := newAdapter(cfg, client)
	if err != nil {
		// Only default_max_tokens can fail; fall back to the per-model default.
		delete(cfg.Options, "default_max_tokens")
		a, _ = newAdapter(cfg, client)
	}
	a.vertex = &vertexConfig{token: tokenSource, endpointFor: endpointFor}
	return a
}

func (a *Adapter) Name() string { return a.cfg.Name }
func (a *Adapter) Type() string { return a.cfg.Type }

// Body translates an OpenAI chat body into the Messages body for model: the first-party shape,
// or Vertex's (no model, anthropic_version in the body) when vertex is true. admit (may be
// nil) is told the request's bounds before it is encoded: its max_tokens includes the
// thinking budget a reasoning_effort adds.
func Body(openaiBody []byte, model string, stream, vertex bool, opts BuildOptions, admit func(providers.Bounds) error) ([]byte, error) {
	c, err := providers.ParseCanonical(openaiBody)
	if err != nil {
		return nil, err
	}
	c.Stream = stream
	r, err := BuildRequest(c, model, opts)
	if err != nil {
		return nil, err
	}
	if err := providers.Admit(admit, providers.Bounds{MaxTokens: r.MaxTokens, Choices: 1}); err != nil {
		return nil, err
	}
	if vertex {
		r.Model, r.AnthropicVersion = "", VertexVersion
	}
	return json.Marshal(r)
}

// Chat performs one upstream attempt.
func (a *Adapter) Chat(ctx context.Context, call *providers.Call) (*providers.Response, error) {
	body, err := Body(call.Body, call.UpstreamModel, call.Stream, a.vertex != nil, a.build, call.Admit)
	if err != nil {
		return nil, err
	}
	endpoint := a.endpoint
	if a.vertex != nil {
		endpoint = a.vertex.endpointFor(call.UpstreamModel, call.Stream)
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_misconfigured",
			Message: "the upstream provider is misconfigured", Class: providers.ClassConfig, Internal: err}
	}
	for k, v := range a.headers {
		req.Header[k] = v
	}
	if a.vertex != nil {
		tok, err := a.vertex.token(ctx)
		if err != nil {
			cancel()
			if pe, ok := err.(*providers.Error); ok {
				return nil, pe
			}
			return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_auth_failed",
				Message: "the gateway could not obtain upstream credentials", Class: providers.ClassFailover, Internal: err}
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if call.Stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		cancel()
		return nil, openai.TransportError(ctx, err)
	}
	out := &providers.Response{Status: resp.StatusCode, Header: keepHeaders(resp.Header), UpstreamRequestID: requestID(resp.Header)}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.UpstreamRequestID = out.UpstreamRequestID
		return nil, e
	}
	if call.Stream {
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			cancel()
			resp.Body.Close()
			return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
				Message: "the upstream did not answer with an event stream", Class: providers.ClassRetryable}
		}
		out.Status = http.StatusOK
		out.Stream = NewStream(resp.Body, cancel, a.timeouts.Idle, time.Now().Unix())
		return out, nil
	}
	defer cancel()
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, openai.TransportError(ctx, err)
	}
	if len(raw) > maxBody {
		return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_response_too_large",
			Message: "the upstream response was too large", Class: providers.ClassRetryable}
	}
	comp, err := ParseMessage(raw, time.Now().Unix())
	if err != nil {
		return nil, err
	}
	out.Status = http.StatusOK
	if out.Body, err = providers.MarshalCompletion(comp); err != nil {
		return nil, err
	}
	u := comp.Usage
	out.Usage = &u
	return out, nil
}

// requestID is Anthropic's request-id header (Vertex adds its own x-request-id).
func requestID(h http.Header) string {
	for _, k := range []string{"Request-Id", "X-Request-Id"} {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// keepHeaders passes Anthropic's rate-limit headers through.
func keepHeaders(h http.Header) http.Header {
	var out http.Header
	for k, v := range h {
		if strings.HasPrefix(k, "Anthropic-Ratelimit-") {
			if out == nil {
				out = http.Header{}
			}
			out[k] = v
		}
	}
	return out
}

// ParseMessage translates a Messages response body into a canonical completion. A body that
// does not decode is a retryable 502.
func ParseMessage(raw []byte, created int64) (*providers.Completion, error) {
	var m Message
	if err := json.Unmarshal(raw, &m); err != nil || m.Type != "message" {
		if err == nil {
			err = errNotObject
		}
		return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
			Message: "the upstream answered with a malformed message", Class: providers.ClassRetryable, Internal: err}
	}
	return messageToCompletion(&m, created), nil
}

func messageToCompletion(m *Message, created int64) *providers.Completion {
	c := &providers.Completion{ID: completionID(m.ID), Model: m.Model, Created: created, Usage: m.Usage.Normal()}
	var text, reasoning strings.Builder
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			args := "{}"
			if len(b.Input) > 0 {
				var buf bytes.Buffer
				if json.Compact(&buf, b.Input) == nil {
					args = buf.String()
				}
			}
			c.ToolCalls = append(c.ToolCalls, providers.ToolCall{ID: b.ID, Type: "function", Name: b.Name, Arguments: args})
		case "thinking":
			reasoning.WriteString(b.Thinking)
			c.ThinkingBlocks = append(c.ThinkingBlocks, providers.ThinkingBlock{Type: "thinking", Thinking: b.Thinking, Signature: b.Signature})
		case "redacted_thinking":
			c.ThinkingBlocks = append(c.ThinkingBlocks, providers.ThinkingBlock{Type: "redacted_thinking", Data: b.Data})
		}
	}
	c.Content, c.ReasoningContent = text.String(), reasoning.String()
	stop := ""
	if m.StopReason != nil {
		stop = *m.StopReason
	}
	c.FinishReason = providers.FinishFromAnthropic(stop)
	if stop == "refusal" && c.Content == "" {
		c.Refusal = "The model declined to answer."
	}
	return c
}

// completionID derives the OpenAI-style id from the message id.
func completionID(msgID string) string {
	if msgID == "" {
		return "chatcmpl-anthropic"
	}
	return "chatcmpl-" + msgID
}

// ParseError classifies an Anthropic error response (providers.md §3.5, §9). Upstream
// credential and quota failures surface as 502/503 — the gateway's problem, not the caller's —
// and never carry upstream text that could echo a key; 400-class messages pass through, since
// they explain what in the request was wrong.
func ParseError(status int, h http.Header, raw []byte) *providers.Error {
	var eb errorBody
	_ = json.Unmarshal(raw, &eb)
	msg, typ := eb.Error.Message, eb.Error.Type
	e := &providers.Error{Internal: fmt.Errorf("upstream %d: %s", status, truncate(raw, 512))}
	e.RetryAfter = providers.ParseRetryAfter(h, time.Now())
	spendLimit := eb.Error.Details != nil && eb.Error.Details.ErrorCode == "enforced_spend_limit_reached"
	switch {
	case status == 529 || typ == "overloaded_error":
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassRetryable, "server_error", "upstream_overloaded"
		e.Message = "the upstream provider is overloaded"
	case status == http.StatusUnauthorized || status == http.StatusForbidden || typ == "authentication_error" || typ == "permission_error":
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassFailover, "server_error", "upstream_auth_failed"
		e.Message = "the upstream provider rejected the gateway's credentials"
	case status == http.StatusPaymentRequired || typ == "billing_error" || spendLimit:
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassFailover, "server_error", "upstream_quota_exhausted"
		e.Message = "the upstream provider's quota is exhausted"
	case status == http.StatusRequestEntityTooLarge || typ == "request_too_large":
		e.Status, e.Class, e.Type, e.Code = http.StatusRequestEntityTooLarge, providers.ClassClient, "invalid_request_error", "request_too_large"
		e.Message = nonEmpty(msg, "the request is too large for the upstream provider")
	case status == http.StatusNotFound || typ == "not_found_error":
		e.Status, e.Class, e.Type, e.Code = http.StatusNotFound, providers.ClassFailover, "invalid_request_error", "model_not_found"
		e.Message = nonEmpty(msg, "the model was not found at the upstream provider")
	case status == http.StatusTooManyRequests || typ == "rate_limit_error":
		e.Status, e.Class, e.Type, e.Code = http.StatusTooManyRequests, providers.ClassRetryable, "rate_limit_error", "rate_limit_exceeded"
		e.Message = "the upstream provider is rate limiting requests; retry later"
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || typ == "invalid_request_error":
		e.Status, e.Class, e.Type = http.StatusBadRequest, providers.ClassClient, "invalid_request_error"
		e.Message = nonEmpty(msg, "the upstream provider rejected the request")
	case status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout || typ == "timeout_error":
		e.Status, e.Class, e.Type, e.Code = http.StatusGatewayTimeout, providers.ClassRetryable, "server_error", "upstream_timeout"
		e.Message = "the upstream provider timed out"
	case status == http.StatusServiceUnavailable:
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassRetryable, "server_error", "upstream_overloaded"
		e.Message = "the upstream provider is overloaded"
	case status >= 500 || status == http.StatusConflict || typ == "api_error":
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassRetryable, "server_error", "upstream_error"
		e.Message = "the upstream provider failed"
	default:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassClient, "server_error", "upstream_error"
		e.Message = fmt.Sprintf("the upstream provider answered with status %d", status)
	}
	return e
}

func nonEmpty(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
