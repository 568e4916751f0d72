// Package openai is the adapter for OpenAI's chat-completions wire format, which OpenAI,
// OpenRouter and every OpenAI-compatible server (vLLM, Ollama, Groq, Together …) speak. The
// request body passes through as bytes: only "model" and, for streams, stream_options are
// rewritten, so fields the gateway does not know reach the upstream unchanged.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Types served by this adapter.
const (
	TypeOpenAI     = "openai"
	TypeOpenRouter = "openrouter"
	TypeCompatible = "openai_compatible"
	TypeSimulated  = "simulated"
)

// Default base URLs, as each provider's own SDK names them.
var defaultBaseURL = map[string]string{
	TypeOpenAI:     "https://api.openai.com/v1",
	TypeOpenRouter: "https://openrouter.ai/api/v1",
}

func init() {
	for _, t := range []string{TypeOpenAI, TypeOpenRouter, TypeCompatible} {
		providers.Register(t, New, "organization", "project", "http_referer", "x_title")
	}
	// A simulated provider may also speak another wire format of the simulator ("format
	// anthropic"); the btl app resolves that option before an adapter is built.
	providers.Register(TypeSimulated, New, "organization", "project", "http_referer", "x_title", "format")
}

// maxBody bounds a non-stream answer held in memory; a chat completion is far smaller.
const maxBody = 64 << 20

// Adapter calls one OpenAI-style upstream.
type Adapter struct {
	cfg      providers.Config
	client   *http.Client
	endpoint string
	// base is the API root (…/v1) that other endpoints hang off.
	base     string
	headers  http.Header
	keys     *providers.KeyPool
	timeouts providers.Timeouts
}

// New builds an adapter. base_url must include the API version path (…/v1).
func New(cfg providers.Config, client *http.Client) (providers.Adapter, error) {
	base := cfg.BaseURL
	if base == "" {
		base = defaultBaseURL[cfg.Type]
	}
	if base == "" {
		return nil, fmt.Errorf("provider %q: base_url is required for type %s", cfg.Name, cfg.Type)
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("provider %q: base_url must start with http:// or https://", cfg.Name)
	}
	if cfg.Type == TypeOpenAI && cfg.APIKey == "" && len(cfg.APIKeys) == 0 {
		return nil, fmt.Errorf("provider %q: api_key is required for type openai", cfg.Name)
	}
	a := &Adapter{
		cfg:      cfg,
		client:   client,
		endpoint: strings.TrimRight(base, "/") + "/chat/completions",
		base:     strings.TrimRight(base, "/"),
		headers:  http.Header{},
		timeouts: cfg.Timeouts.WithDefaults(),
	}
	a.headers.Set("Content-Type", "application/json")
	a.headers.Set("Accept-Encoding", "identity")
	var keys []string
	if cfg.APIKey != "" {
		keys = append(keys, cfg.APIKey)
	}
	keys = append(keys, cfg.APIKeys...)
	if len(keys) > 0 {
		a.keys = providers.NewKeyPool(keys, cfg.KeyWeights)
	}
	if cfg.Type == TypeOpenRouter {
		// OpenRouter attributes traffic to an app by these headers; both are optional.
		if v := cfg.Options["http_referer"]; v != "" {
			a.headers.Set("HTTP-Referer", v)
		}
		if v := cfg.Options["x_title"]; v != "" {
			a.headers.Set("X-Title", v)
		}
	}
	for _, k := range []string{"organization", "project"} {
		if v := cfg.Options[k]; v != "" {
			a.headers.Set("OpenAI-"+strings.ToUpper(k[:1])+k[1:], v)
		}
	}
	return a, nil
}

func (a *Adapter) Name() string { return a.cfg.Name }

// BaseURL identifies the upstream (routing keys health by it).
func (a *Adapter) BaseURL() string { return a.endpoint }
func (a *Adapter) Type() string    { return a.cfg.Type }

var includeUsage = []byte(`{"include_usage":true}`)

// prepareBody rewrites model and, for streams, makes sure the upstream reports usage.
func prepareBody(call *providers.Call) ([]byte, error) {
	model, err := json.Marshal(call.UpstreamModel)
	if err != nil {
		return nil, err
	}
	body, err := providers.SetTopLevel(call.Body, "model", model)
	if err != nil {
		return nil, err
	}
	if !call.Stream {
		return body, nil
	}
	so := call.Request.StreamOptions
	switch {
	case so == nil:
		return providers.SetTopLevel(body, "stream_options", includeUsage)
	case !so.IncludeUsage:
		// Keep the caller's other stream options; only turn usage on.
		span, ok, err := providers.FindTopLevel(body, "stream_options")
		if err != nil || !ok {
			return body, err
		}
		var opts map[string]json.RawMessage
		if err := json.Unmarshal(body[span.Start:span.End], &opts); err != nil || opts == nil {
			return providers.Replace(body, span, includeUsage), nil
		}
		opts["include_usage"] = json.RawMessage("true")
		raw, _ := json.Marshal(opts)
		return providers.Replace(body, span, raw), nil
	}
	return body, nil
}

// roundTrip posts body to url with the provider's headers and a key from the pool (kept for
// the conversation when affinity is set), and learns from the answer's rate-limit headers. It
// returns the response for a 2xx status; any other status, or a failed round trip, comes back
// as a classified error. cancel ends the call: the caller owns it (a stream hands it on).
func (a *Adapter) roundTrip(ctx context.Context, url string, body []byte, stream bool, affinity uint64) (*http.Response, context.CancelFunc, *providers.Error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_misconfigured",
			Message: "the upstream provider is misconfigured", Class: providers.ClassConfig, Internal: err}
	}
	for k, v := range a.headers {
		req.Header[k] = v
	}
	keyIdx := -1
	if a.keys != nil {
		if affinity == 0 {
			affinity = rand.Uint64()
		}
		var secret string
		keyIdx, secret = a.keys.Pick(affinity)
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, TransportError(ctx, err)
	}
	if a.keys != nil {
		a.keys.Observe(keyIdx, resp.StatusCode, resp.Header)
	}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.UpstreamRequestID = requestID(resp.Header)
		return nil, nil, e
	}
	return resp, cancel, nil
}

// Chat performs one upstream attempt.
func (a *Adapter) Chat(ctx context.Context, call *providers.Call) (*providers.Response, error) {
	body, err := prepareBody(call)
	if err != nil {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	}
	// The body passes through: its own cap, n and service_tier are what the upstream reads.
	if err := providers.Admit(call.Admit, providers.ChatBounds(body)); err != nil {
		return nil, err
	}
	resp, cancel, perr := a.roundTrip(ctx, a.endpoint, body, call.Stream, call.Affinity)
	if perr != nil {
		return nil, perr
	}
	out := &providers.Response{Status: resp.StatusCode, Header: keepHeaders(resp.Header), UpstreamRequestID: requestID(resp.Header)}
	if call.Stream && isEventStream(resp.Header) {
		out.Stream = newStream(resp.Body, cancel, a.timeouts.Idle)
		return out, nil
	}
	raw, perr := readAnswer(ctx, resp, cancel)
	if perr != nil {
		return nil, perr
	}
	if call.Stream {
		// Asked for a stream, got JSON: an OpenAI-compatible server that ignores "stream".
		return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
			Message: "the upstream did not answer with an event stream", Class: providers.ClassRetryable}
	}
	out.Body = raw
	return out, nil
}

// Embed passes an embeddings request through: encoding_format, dimensions and batched inputs
// reach the upstream as the caller wrote them.
func (a *Adapter) Embed(ctx context.Context, call *providers.EmbedCall) (*providers.Response, error) {
	return a.Forward(ctx, providers.EndpointEmbeddings, call.Body, call.UpstreamModel)
}

// Forward posts body to another endpoint of the same API (embeddings, completions,
// moderations) with model replaced, and returns the JSON answer.
func (a *Adapter) Forward(ctx context.Context, endpoint string, body []byte, upstreamModel string) (*providers.Response, error) {
	model, err := json.Marshal(upstreamModel)
	if err != nil {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", "model", "invalid model name")
	}
	if body, err = providers.SetTopLevel(body, "model", model); err != nil {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	}
	resp, cancel, perr := a.roundTrip(ctx, a.base+"/"+endpoint, body, false, 0)
	if perr != nil {
		return nil, perr
	}
	raw, perr := readAnswer(ctx, resp, cancel)
	if perr != nil {
		return nil, perr
	}
	return &providers.Response{Status: resp.StatusCode, Header: keepHeaders(resp.Header), Body: raw, UpstreamRequestID: requestID(resp.Header)}, nil
}

// readAnswer reads a whole JSON answer (bounded by maxBody) and ends the call.
func readAnswer(ctx context.Context, resp *http.Response, cancel context.CancelFunc) ([]byte, *providers.Error) {
	defer cancel()
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, TransportError(ctx, err)
	}
	if len(raw) > maxBody {
		return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_response_too_large",
			Message: "the upstream response was too large", Class: providers.ClassRetryable}
	}
	return raw, nil
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}

// requestID finds the upstream's own id for the call (OpenAI, OpenRouter, vLLM spellings).
func requestID(h http.Header) string {
	for _, k := range []string{"X-Request-Id", "X-Generation-Id", "Request-Id"} {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// keepHeaders selects the upstream headers worth showing the client: rate-limit state.
func keepHeaders(h http.Header) http.Header {
	var out http.Header
	for k, v := range h {
		if strings.HasPrefix(k, "X-Ratelimit-") {
			if out == nil {
				out = http.Header{}
			}
			out[k] = v
		}
	}
	return out
}

// TransportError maps a failed round trip (no HTTP response) to a gateway error: 504 for
// timeouts, 499-like cancellation passes the context error through, 502 otherwise.
func TransportError(ctx context.Context, err error) *providers.Error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return &providers.Error{Status: 499, Type: "server_error", Code: "client_closed_request",
			Message: "the client closed the request", Class: providers.ClassClient, Internal: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return &providers.Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_timeout",
			Message: "the upstream provider timed out", Class: providers.ClassRetryable, Internal: err}
	}
	return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_unreachable",
		Message: "the upstream provider could not be reached", Class: providers.ClassRetryable, Internal: err}
}

// upstreamError is the union of the error bodies OpenAI-style servers send: OpenAI's envelope,
// OpenRouter's numeric code, and vLLM's flat {"object":"error"} form.
type upstreamError struct {
	Error *struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
	Object  string `json:"object"`
	Message string `json:"message"`
}

// ParseError classifies an upstream error response (reference providers.md §9) and maps it to
// the status the client should see. Upstream credential and quota failures are the gateway's
// problem, not the caller's, so they surface as 502/503 rather than 401/402.
func ParseError(status int, h http.Header, raw []byte) *providers.Error {
	var ue upstreamError
	_ = json.Unmarshal(raw, &ue)
	msg, typ, code := "", "", ""
	if ue.Error != nil {
		msg, typ = ue.Error.Message, ue.Error.Type
		code = strings.Trim(string(ue.Error.Code), `"`)
		if code == "null" {
			code = ""
		}
	} else if ue.Object == "error" {
		msg = ue.Message
	}
	e := &providers.Error{Internal: fmt.Errorf("upstream %d: %s", status, truncate(raw, 512))}
	e.RetryAfter = providers.ParseRetryAfter(h, time.Now())
	quota := code == "insufficient_quota" || typ == "insufficient_quota"
	switch {
	case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusUnprocessableEntity:
		e.Status, e.Class = status, providers.ClassClient
		e.Type, e.Code = "invalid_request_error", code
		e.Message = nonEmpty(msg, "the upstream provider rejected the request")
		if ue.Error != nil {
			e.Param = strings.Trim(string(ue.Error.Param), `"`)
			if e.Param == "null" {
				e.Param = ""
			}
		}
		if _, err := strconv.Atoi(e.Code); err == nil {
			e.Code = "" // OpenRouter's numeric code repeats the status
		}
	case status == http.StatusNotFound:
		e.Status, e.Class, e.Type, e.Code = http.StatusNotFound, providers.ClassFailover, "invalid_request_error", "model_not_found"
		e.Message = nonEmpty(msg, "the model was not found at the upstream provider")
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassFailover, "server_error", "upstream_auth_failed"
		e.Message = "the upstream provider rejected the gateway's credentials"
	case status == http.StatusPaymentRequired || (status == http.StatusTooManyRequests && quota):
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassFailover, "server_error", "upstream_quota_exhausted"
		e.Message = "the upstream provider's quota is exhausted"
	case status == http.StatusTooManyRequests:
		e.Status, e.Class, e.Type, e.Code = http.StatusTooManyRequests, providers.ClassRetryable, "rate_limit_error", "rate_limit_exceeded"
		e.Message = "the upstream provider is rate limiting requests; retry later"
	case status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout:
		e.Status, e.Class, e.Type, e.Code = http.StatusGatewayTimeout, providers.ClassRetryable, "server_error", "upstream_timeout"
		e.Message = "the upstream provider timed out"
	case status == http.StatusServiceUnavailable || status == 529:
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassRetryable, "server_error", "upstream_overloaded"
		e.Message = "the upstream provider is overloaded"
	case status >= 500 || status == http.StatusConflict:
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

// Interface guards
var (
	_ providers.Embedder  = (*Adapter)(nil)
	_ providers.Forwarder = (*Adapter)(nil)
)
