// Package gemini is the adapter for Google's Gemini API (type "gemini", API key) and Gemini on
// Vertex AI (type "vertex", service-account OAuth2): OpenAI chat requests are translated into
// generateContent requests and the answers — JSON, or SSE chunks of whole
// GenerateContentResponse objects — back into chat.completion bodies and chunks (reference
// providers.md §5). On Vertex, claude-* models are served by the Anthropic adapter through
// Vertex's rawPredict endpoints with the same token source.
package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/anthropic"
	"github.com/badtheorylabs/btl-runtime/providers/googleauth"
	"github.com/badtheorylabs/btl-runtime/providers/openai"
)

// Provider types served by this package.
const (
	TypeGemini = "gemini"
	TypeVertex = "vertex"
)

// DefaultGeminiBaseURL is the Gemini API root.
const DefaultGeminiBaseURL = "https://generativelanguage.googleapis.com"

func init() {
	providers.Register(TypeGemini, New)
	providers.Register(TypeVertex, New, "project", "location", "credentials_file", "anthropic_beta", "default_max_tokens")
}

const maxBody = 64 << 20

// Adapter calls the Gemini API or Vertex AI.
type Adapter struct {
	cfg      providers.Config
	client   *http.Client
	timeouts providers.Timeouts
	build    BuildOptions
	now      func() time.Time

	base   string // scheme://host[/path], no trailing slash
	apiKey string // gemini
	// Vertex only.
	project, location string
	tokens            *googleauth.Source
	claude            providers.Adapter
}

// VertexHost is the Vertex AI host of a location ("global" has no regional prefix).
func VertexHost(location string) string {
	if location == "global" {
		return "aiplatform.googleapis.com"
	}
	return location + "-aiplatform.googleapis.com"
}

// New builds a gemini or vertex adapter.
//
// gemini: api_key is required; base_url defaults to https://generativelanguage.googleapis.com.
// vertex: project and credentials_file (a service-account JSON key) are required; location
// defaults to us-central1; base_url defaults to https://{location}-aiplatform.googleapis.com.
// The key's token_uri decides where tokens are fetched.
func New(cfg providers.Config, client *http.Client) (providers.Adapter, error) {
	if client == nil {
		client = providers.NewHTTPClient(cfg.Timeouts)
	}
	a := &Adapter{cfg: cfg, client: client, timeouts: cfg.Timeouts.WithDefaults(), now: time.Now}
	base := cfg.BaseURL
	switch cfg.Type {
	case TypeGemini:
		if cfg.APIKey == "" {
			return nil, fmt.Errorf("provider %q: api_key is required for type gemini", cfg.Name)
		}
		a.apiKey = cfg.APIKey
		if base == "" {
			base = DefaultGeminiBaseURL
		}
	case TypeVertex:
		a.project, a.location = cfg.Options["project"], cfg.Options["location"]
		if a.location == "" {
			a.location = "us-central1"
		}
		if a.project == "" {
			return nil, fmt.Errorf("provider %q: project is required for type vertex", cfg.Name)
		}
		file := cfg.Options["credentials_file"]
		if file == "" {
			return nil, fmt.Errorf("provider %q: credentials_file is required for type vertex", cfg.Name)
		}
		sa, err := googleauth.ReadServiceAccount(file)
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", cfg.Name, err)
		}
		a.tokens, err = googleauth.NewSource(sa, googleauth.Options{Client: client})
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", cfg.Name, err)
		}
		if base == "" {
			base = "https://" + VertexHost(a.location)
		}
	default:
		return nil, fmt.Errorf("provider %q: type %q is not served by the gemini adapter", cfg.Name, cfg.Type)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider %q: base_url must be an http(s) URL", cfg.Name)
	}
	a.base = strings.TrimRight(base, "/")
	if cfg.Type == TypeVertex {
		a.claude = anthropic.NewVertexClaude(cfg, client, a.token, a.claudeEndpoint)
	}
	return a, nil
}

func (a *Adapter) Name() string { return a.cfg.Name }
func (a *Adapter) Type() string { return a.cfg.Type }

// Endpoint is the generateContent URL of a model.
func (a *Adapter) Endpoint(model string, stream bool) string {
	verb := ":generateContent"
	if stream {
		verb = ":streamGenerateContent?alt=sse"
	}
	m := url.PathEscape(model)
	if a.cfg.Type == TypeVertex {
		return a.base + "/v1/projects/" + url.PathEscape(a.project) + "/locations/" + url.PathEscape(a.location) +
			"/publishers/google/models/" + m + verb
	}
	return a.base + "/v1beta/models/" + m + verb
}

func (a *Adapter) claudeEndpoint(model string, stream bool) string {
	verb := ":rawPredict"
	if stream {
		verb = ":streamRawPredict"
	}
	return a.base + "/v1/projects/" + url.PathEscape(a.project) + "/locations/" + url.PathEscape(a.location) +
		"/publishers/anthropic/models/" + url.PathEscape(model) + verb
}

// token returns a Vertex access token, with failures classified for the router.
func (a *Adapter) token(ctx context.Context) (string, error) {
	tok, err := a.tokens.Token(ctx)
	if err == nil {
		return tok, nil
	}
	if ctx.Err() != nil {
		return "", openai.TransportError(ctx, ctx.Err())
	}
	e := &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_auth_failed",
		Message: "the gateway could not obtain credentials for the upstream provider", Class: providers.ClassConfig, Internal: err}
	var te *googleauth.TokenError
	if errors.As(err, &te) && te.Temporary() {
		e.Class = providers.ClassRetryable
	}
	return "", e
}

// IsClaude reports whether a Vertex model is a Claude model served through rawPredict.
func IsClaude(model string) bool { return strings.HasPrefix(strings.ToLower(model), "claude-") }

// Chat performs one upstream attempt.
func (a *Adapter) Chat(ctx context.Context, call *providers.Call) (*providers.Response, error) {
	if a.claude != nil && IsClaude(call.UpstreamModel) {
		return a.claude.Chat(ctx, call)
	}
	chat, err := providers.ParseCanonical(call.Body)
	if err != nil {
		return nil, err
	}
	greq, err := BuildRequest(ctx, chat, a.build)
	if err != nil {
		return nil, err
	}
	b := providers.Bounds{Choices: 1} // no maxOutputTokens: the model's own maximum applies
	if g := greq.GenerationConfig; g != nil {
		b.MaxTokens, b.Choices = g.MaxOutputTokens, max(g.CandidateCount, 1)
	}
	if err := providers.Admit(call.Admit, b); err != nil {
		return nil, err
	}
	body, err := json.Marshal(greq)
	if err != nil {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_request_body", "", "the request could not be translated for Gemini")
	}
	resp, cancel, err := a.send(ctx, call, body)
	if err != nil {
		return nil, err
	}
	// A Vertex 401 usually means the cached token was revoked or expired early: refresh once.
	if resp.StatusCode == http.StatusUnauthorized && a.tokens != nil {
		resp.Body.Close()
		cancel()
		a.tokens.Invalidate()
		if resp, cancel, err = a.send(ctx, call, body); err != nil {
			return nil, err
		}
	}
	rid := resp.Header.Get("X-Request-Id")
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.UpstreamRequestID = rid
		return nil, e
	}
	created := a.now().Unix()
	out := &providers.Response{Status: http.StatusOK, UpstreamRequestID: rid}
	if call.Stream {
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			cancel()
			resp.Body.Close()
			return nil, badResponse("the upstream did not answer with an event stream", nil)
		}
		out.Stream = newStream(resp.Body, cancel, a.timeouts.Idle, call.UpstreamModel, created)
		return out, nil
	}
	defer cancel()
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, openai.TransportError(ctx, err)
	}
	if len(raw) > maxBody {
		return nil, badResponse("the upstream response was too large", nil)
	}
	comp, err := TranslateResponse(raw)
	if err != nil {
		return nil, err
	}
	comp.Model, comp.Created = call.UpstreamModel, created
	out.Body, err = providers.MarshalCompletion(comp)
	if err != nil {
		return nil, badResponse("the upstream response could not be translated", err)
	}
	u := comp.Usage
	out.Usage = &u
	return out, nil
}

func (a *Adapter) send(ctx context.Context, call *providers.Call, body []byte) (*http.Response, context.CancelFunc, error) {
	return a.post(ctx, a.Endpoint(call.UpstreamModel, call.Stream), body)
}

// post sends body to url with the provider's credentials (API key, or a Vertex token).
func (a *Adapter) post(ctx context.Context, url string, body []byte) (*http.Response, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_misconfigured",
			Message: "the upstream provider is misconfigured", Class: providers.ClassConfig, Internal: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "identity")
	if a.tokens != nil {
		tok, err := a.token(ctx)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	} else {
		req.Header.Set("X-Goog-Api-Key", a.apiKey)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, openai.TransportError(ctx, err)
	}
	return resp, cancel, nil
}

// TranslateResponse turns a GenerateContentResponse into a canonical completion (without
// model and created).
func TranslateResponse(raw []byte) (*providers.Completion, error) {
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, badResponse("the upstream response was not valid JSON", err)
	}
	c := &providers.Completion{ID: responseID(r.ResponseID), Usage: r.UsageMetadata.Normal()}
	if len(r.Candidates) == 0 {
		// A blocked prompt is HTTP 200 with no candidates.
		c.FinishReason = providers.FinishStop
		if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
			c.FinishReason = providers.FinishContentFilter
		}
		return c, nil
	}
	cand := r.Candidates[0]
	if malformed(cand.FinishReason) {
		return nil, badResponse("the upstream model produced a malformed function call", errors.New("finishReason "+cand.FinishReason))
	}
	var text, reasoning strings.Builder
	calls := 0
	for _, p := range cand.Content.Parts {
		switch {
		case p.FunctionCall != nil:
			args := compactJSON(p.FunctionCall.Args)
			c.ToolCalls = append(c.ToolCalls, providers.ToolCall{ID: CallID(p.FunctionCall.Name, calls, args, p.ThoughtSignature),
				Type: "function", Name: p.FunctionCall.Name, Arguments: string(args), Extra: Extra(p.ThoughtSignature)})
			calls++
		case p.Thought:
			reasoning.WriteString(p.Text)
		default:
			text.WriteString(p.Text)
		}
	}
	c.Content, c.ReasoningContent = text.String(), reasoning.String()
	c.FinishReason = providers.FinishFromGemini(cand.FinishReason, calls > 0)
	return c, nil
}

func malformed(reason string) bool {
	return reason == "MALFORMED_FUNCTION_CALL" || reason == "UNEXPECTED_TOOL_CALL" || reason == "TOO_MANY_TOOL_CALLS"
}

func responseID(id string) string {
	if id == "" {
		var b [8]byte
		_, _ = io.ReadFull(randReader, b[:])
		return fmt.Sprintf("chatcmpl-%x", b)
	}
	return "chatcmpl-" + id
}

func compactJSON(raw json.RawMessage) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return []byte("{}")
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func badResponse(msg string, err error) *providers.Error {
	return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
		Message: msg, Class: providers.ClassRetryable, Internal: err}
}

// Status is a google.rpc.Status error body.
type Status struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Status  string            `json:"status"`
	Details []json.RawMessage `json:"details"`
}

// ParseError classifies a google.rpc.Status error (reference providers.md §5.6, §9). Only
// INVALID_ARGUMENT / FAILED_PRECONDITION messages reach the client: they describe its request.
func ParseError(status int, h http.Header, raw []byte) *providers.Error {
	var env struct {
		Error Status `json:"error"`
	}
	_ = json.Unmarshal(raw, &env)
	// Some proxies send a bare array of one status.
	if env.Error.Status == "" && len(raw) > 0 && raw[0] == '[' {
		var arr []struct {
			Error Status `json:"error"`
		}
		if json.Unmarshal(raw, &arr) == nil && len(arr) > 0 {
			env.Error = arr[0].Error
		}
	}
	return classify(status, env.Error, h, raw)
}

func classify(status int, st Status, h http.Header, raw []byte) *providers.Error {
	e := &providers.Error{Internal: fmt.Errorf("google %d %s: %s", status, st.Status, truncate(raw, 512))}
	retryDelay, perDay, badKey := details(st.Details)
	e.RetryAfter = retryDelay
	if e.RetryAfter == 0 && h != nil {
		e.RetryAfter = providers.ParseRetryAfter(h, time.Now())
	}
	code := st.Status
	if code == "" {
		code = statusName[status]
	}
	if badKey {
		// Google answers a bad API key with 400 INVALID_ARGUMENT: the gateway's fault, not the caller's.
		code = "UNAUTHENTICATED"
	}
	switch code {
	case "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE":
		e.Status, e.Class, e.Type, e.Code = http.StatusBadRequest, providers.ClassClient, "invalid_request_error", "invalid_request"
		e.Message = st.Message
		if e.Message == "" {
			e.Message = "the upstream provider rejected the request"
		}
	case "UNAUTHENTICATED", "PERMISSION_DENIED":
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassFailover, "server_error", "upstream_auth_failed"
		e.Message = "the upstream provider rejected the gateway's credentials"
		e.RetryAfter = 0
	case "NOT_FOUND":
		e.Status, e.Class, e.Type, e.Code = http.StatusNotFound, providers.ClassFailover, "invalid_request_error", "model_not_found"
		e.Message = "the model was not found at the upstream provider"
	case "RESOURCE_EXHAUSTED":
		if perDay {
			e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassFailover, "server_error", "upstream_quota_exhausted"
			e.Message = "the upstream provider's daily quota is exhausted"
		} else {
			e.Status, e.Class, e.Type, e.Code = http.StatusTooManyRequests, providers.ClassRetryable, "rate_limit_error", "rate_limit_exceeded"
			e.Message = "the upstream provider is rate limiting requests; retry later"
		}
	case "UNAVAILABLE":
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassRetryable, "server_error", "upstream_overloaded"
		e.Message = "the upstream provider is overloaded"
	case "DEADLINE_EXCEEDED":
		e.Status, e.Class, e.Type, e.Code = http.StatusGatewayTimeout, providers.ClassRetryable, "server_error", "upstream_timeout"
		e.Message = "the upstream provider timed out"
	case "INTERNAL", "UNKNOWN", "ABORTED", "DATA_LOSS":
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassRetryable, "server_error", "upstream_error"
		e.Message = "the upstream provider failed"
	default:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassClient, "server_error", "upstream_error"
		e.Message = fmt.Sprintf("the upstream provider answered with status %d", status)
		if status >= 500 {
			e.Class = providers.ClassRetryable
		}
	}
	return e
}

var statusName = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}

// details reads RetryInfo.retryDelay, whether a QuotaFailure names a per-day quota, and whether
// an ErrorInfo says the API key is invalid.
func details(ds []json.RawMessage) (delay time.Duration, perDay, badKey bool) {
	for _, raw := range ds {
		var d struct {
			Type       string `json:"@type"`
			RetryDelay string `json:"retryDelay"`
			Reason     string `json:"reason"`
			Violations []struct {
				QuotaID string `json:"quotaId"`
			} `json:"violations"`
		}
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		switch {
		case strings.HasSuffix(d.Type, "google.rpc.RetryInfo"):
			if v, err := time.ParseDuration(d.RetryDelay); err == nil && v > 0 {
				delay = v
			}
		case strings.HasSuffix(d.Type, "google.rpc.ErrorInfo"):
			badKey = badKey || d.Reason == "API_KEY_INVALID" || d.Reason == "API_KEY_EXPIRED"
		case strings.HasSuffix(d.Type, "google.rpc.QuotaFailure"):
			for _, v := range d.Violations {
				if strings.Contains(v.QuotaID, "PerDay") {
					perDay = true
				}
			}
		}
	}
	return delay, perDay, badKey
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
