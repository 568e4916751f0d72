// Package bedrock is the adapter for AWS Bedrock's Converse and ConverseStream APIs (reference
// providers.md §4): OpenAI chat requests are translated into Converse requests, signed with
// SigV4 (service "bedrock"), and the answers — JSON, or binary event-stream frames — are
// translated back into chat.completion bodies and chunks.
package bedrock

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/openai"
	"github.com/badtheorylabs/btl-runtime/providers/sigv4"
)

// Type is the provider type name.
const Type = "bedrock"

// SigningName is the SigV4 service name: "bedrock", although the host is bedrock-runtime.
const SigningName = "bedrock"

func init() {
	providers.Register(Type, New, "region", "access_key_id", "secret_access_key", "session_token")
}

// maxBody bounds a non-stream answer held in memory.
const maxBody = 64 << 20

// Adapter calls one Bedrock runtime endpoint.
type Adapter struct {
	cfg      providers.Config
	client   *http.Client
	base     *url.URL
	signer   *sigv4.Signer
	timeouts providers.Timeouts
	build    BuildOptions
	now      func() time.Time
}

// New builds an adapter. region is required; credentials come from the options or the standard
// AWS environment variables; base_url defaults to https://bedrock-runtime.{region}.amazonaws.com.
func New(cfg providers.Config, client *http.Client) (providers.Adapter, error) {
	region := cfg.Options["region"]
	if region == "" {
		return nil, fmt.Errorf("provider %q: region is required for type bedrock", cfg.Name)
	}
	creds, err := sigv4.CredentialsFrom(cfg.Options, nil)
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", cfg.Name, err)
	}
	base := cfg.BaseURL
	if base == "" {
		base = "https://bedrock-runtime." + region + ".amazonaws.com"
	}
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider %q: base_url must be an http(s) URL", cfg.Name)
	}
	if client == nil {
		client = providers.NewHTTPClient(cfg.Timeouts)
	}
	return &Adapter{
		cfg: cfg, client: client, base: u, timeouts: cfg.Timeouts.WithDefaults(), now: time.Now,
		signer: &sigv4.Signer{Credentials: creds, Region: region, Service: SigningName, ContentSHA256: true},
	}, nil
}

func (a *Adapter) Name() string { return a.cfg.Name }
func (a *Adapter) Type() string { return Type }

// endpoint is base + /model/{id}/{op} with the id escaped as one segment.
func (a *Adapter) endpoint(model, op string) *url.URL {
	path, raw := sigv4.ModelPath(model, op)
	u := *a.base
	u.Path = a.base.Path + path
	u.RawPath = a.base.EscapedPath() + raw
	return &u
}

// Chat performs one upstream attempt.
func (a *Adapter) Chat(ctx context.Context, call *providers.Call) (*providers.Response, error) {
	chat, err := providers.ParseCanonical(call.Body)
	if err != nil {
		return nil, err
	}
	built, err := BuildRequest(ctx, chat, a.build)
	if err != nil {
		return nil, err
	}
	var maxTokens int64 // no inferenceConfig.maxTokens: the model's own maximum applies
	if ic := built.Request.InferenceConfig; ic != nil {
		maxTokens = ic.MaxTokens
	}
	if err := providers.Admit(call.Admit, providers.Bounds{MaxTokens: maxTokens, Choices: 1}); err != nil {
		return nil, err
	}
	body, err := json.Marshal(built.Request)
	if err != nil {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_request_body", "", "the request could not be translated for Bedrock")
	}
	op := "converse"
	if call.Stream {
		op = "converse-stream"
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.endpoint(call.UpstreamModel, op).String(), bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, configError(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "identity")
	if call.Stream {
		req.Header.Set("Accept", "application/vnd.amazon.eventstream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if err := a.signer.Sign(req, body); err != nil {
		cancel()
		return nil, configError(err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		cancel()
		return nil, openai.TransportError(ctx, err)
	}
	rid := resp.Header.Get("X-Amzn-Requestid")
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.UpstreamRequestID = rid
		return nil, e
	}
	id := completionID(rid)
	created := a.now().Unix()
	out := &providers.Response{Status: http.StatusOK, UpstreamRequestID: rid}
	if call.Stream {
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/vnd.amazon.eventstream") {
			cancel()
			resp.Body.Close()
			return nil, badResponse("the upstream did not answer with an event stream", nil)
		}
		out.Stream = newStream(resp.Body, cancel, a.timeouts.Idle, providers.NewChunkWriter(id, call.UpstreamModel, created), built.JSONTool)
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
	comp, err := TranslateResponse(raw, built.JSONTool)
	if err != nil {
		return nil, err
	}
	comp.ID, comp.Model, comp.Created = id, call.UpstreamModel, created
	out.Body, err = providers.MarshalCompletion(comp)
	if err != nil {
		return nil, badResponse("the upstream response could not be translated", err)
	}
	u := comp.Usage
	out.Usage = &u
	return out, nil
}

func completionID(requestID string) string {
	if requestID != "" {
		return "chatcmpl-" + requestID
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

// TranslateResponse turns a Converse answer into a canonical completion (without id, model
// and created). jsonTool is Built.JSONTool.
func TranslateResponse(raw []byte, jsonTool string) (*providers.Completion, error) {
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, badResponse("the upstream response was not valid JSON", err)
	}
	switch r.StopReason {
	case "malformed_model_output", "malformed_tool_use":
		return nil, badResponse("the upstream model produced malformed output", errors.New("stopReason "+r.StopReason))
	}
	c := &providers.Completion{FinishReason: providers.FinishFromBedrock(r.StopReason), Usage: r.Usage.Normal()}
	var text, reasoning strings.Builder
	for _, b := range r.Output.Message.Content {
		switch {
		case b.Text != nil:
			text.WriteString(*b.Text)
		case b.ToolUse != nil && jsonTool != "" && b.ToolUse.Name == jsonTool:
			text.Write(compactJSON(b.ToolUse.Input))
		case b.ToolUse != nil:
			c.ToolCalls = append(c.ToolCalls, providers.ToolCall{ID: b.ToolUse.ToolUseID, Type: "function",
				Name: b.ToolUse.Name, Arguments: string(compactJSON(b.ToolUse.Input))})
		case b.ReasoningContent != nil && b.ReasoningContent.ReasoningText != nil:
			rt := b.ReasoningContent.ReasoningText
			reasoning.WriteString(rt.Text)
			c.ThinkingBlocks = append(c.ThinkingBlocks, providers.ThinkingBlock{Type: "thinking", Thinking: rt.Text, Signature: rt.Signature})
		case b.ReasoningContent != nil && b.ReasoningContent.RedactedContent != nil:
			c.ThinkingBlocks = append(c.ThinkingBlocks, providers.ThinkingBlock{Type: "redacted_thinking",
				Data: encodeStd(b.ReasoningContent.RedactedContent)})
		}
	}
	c.Content, c.ReasoningContent = text.String(), reasoning.String()
	if jsonTool != "" && c.FinishReason == providers.FinishToolCalls && len(c.ToolCalls) == 0 {
		c.FinishReason = providers.FinishStop
	}
	return c, nil
}

func compactJSON(raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return []byte("{}")
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func configError(err error) *providers.Error {
	return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_misconfigured",
		Message: "the upstream provider is misconfigured", Class: providers.ClassConfig, Internal: err}
}

func badResponse(msg string, err error) *providers.Error {
	return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
		Message: msg, Class: providers.ClassRetryable, Internal: err}
}

// ErrorType extracts the exception name from x-amzn-ErrorType ("Name:http://…") or the body's
// __type field.
func ErrorType(h http.Header, raw []byte) string {
	t := h.Get("X-Amzn-Errortype")
	if t == "" {
		var b struct {
			Type string `json:"__type"`
		}
		_ = json.Unmarshal(raw, &b)
		t = b.Type
		if i := strings.LastIndexByte(t, '#'); i >= 0 {
			t = t[i+1:]
		}
	}
	if i := strings.IndexByte(t, ':'); i >= 0 {
		t = t[:i]
	}
	return t
}

// ParseError classifies a Bedrock error answer (reference providers.md §4.7, §9). The upstream
// message reaches the client only for validation errors (it describes the caller's request);
// signature and credential failures become a generic 502 that never echoes the upstream body.
func ParseError(status int, h http.Header, raw []byte) *providers.Error {
	var b struct {
		Message  string `json:"message"`
		Message2 string `json:"Message"`
	}
	_ = json.Unmarshal(raw, &b)
	msg := b.Message
	if msg == "" {
		msg = b.Message2
	}
	return classify(status, ErrorType(h, raw), msg, h, raw)
}

func classify(status int, typ, msg string, h http.Header, raw []byte) *providers.Error {
	e := &providers.Error{Internal: fmt.Errorf("bedrock %d %s: %s", status, typ, truncate(raw, 512))}
	if h != nil {
		e.RetryAfter = providers.ParseRetryAfter(h, time.Now())
	}
	lt := strings.ToLower(typ)
	switch {
	case lt == "signaturedoesnotmatch" || lt == "invalidsignatureexception" || lt == "incompletesignature" ||
		lt == "incompletesignatureexception" || lt == "missingauthenticationtokenexception":
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassConfig, "server_error", "upstream_signature_rejected"
		e.Message = "the upstream provider rejected the gateway's request signature"
	case lt == "unrecognizedclientexception" || lt == "accessdeniedexception" || lt == "expiredtokenexception" ||
		status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassFailover, "server_error", "upstream_auth_failed"
		e.Message = "the upstream provider rejected the gateway's credentials"
	case lt == "resourcenotfoundexception" || status == http.StatusNotFound:
		e.Status, e.Class, e.Type, e.Code = http.StatusNotFound, providers.ClassFailover, "invalid_request_error", "model_not_found"
		e.Message = "the model was not found at the upstream provider"
	case lt == "servicequotaexceededexception":
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassFailover, "server_error", "upstream_quota_exhausted"
		e.Message = "the upstream provider's quota is exhausted"
	case lt == "throttlingexception" || lt == "modelnotreadyexception" || status == http.StatusTooManyRequests:
		e.Status, e.Class, e.Type, e.Code = http.StatusTooManyRequests, providers.ClassRetryable, "rate_limit_error", "rate_limit_exceeded"
		e.Message = "the upstream provider is rate limiting requests; retry later"
	case lt == "validationexception" || status == http.StatusBadRequest:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadRequest, providers.ClassClient, "invalid_request_error", "invalid_request"
		e.Message = msg
		if e.Message == "" {
			e.Message = "the upstream provider rejected the request"
		}
	case lt == "modeltimeoutexception" || status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout:
		e.Status, e.Class, e.Type, e.Code = http.StatusGatewayTimeout, providers.ClassRetryable, "server_error", "upstream_timeout"
		e.Message = "the upstream provider timed out"
	case lt == "serviceunavailableexception" || status == http.StatusServiceUnavailable:
		e.Status, e.Class, e.Type, e.Code = http.StatusServiceUnavailable, providers.ClassRetryable, "server_error", "upstream_overloaded"
		e.Message = "the upstream provider is overloaded"
	case lt == "modelerrorexception" || lt == "modelstreamerrorexception" || lt == "internalserverexception" || status >= 500 || status == 424:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassRetryable, "server_error", "upstream_error"
		e.Message = "the upstream provider failed"
	default:
		e.Status, e.Class, e.Type, e.Code = http.StatusBadGateway, providers.ClassClient, "server_error", "upstream_error"
		e.Message = fmt.Sprintf("the upstream provider answered with status %d", status)
	}
	return e
}

// exceptionStatus is the HTTP status a stream exception member stands for.
var exceptionStatus = map[string]int{
	"internalServerException":     http.StatusInternalServerError,
	"modelStreamErrorException":   424,
	"serviceUnavailableException": http.StatusServiceUnavailable,
	"throttlingException":         http.StatusTooManyRequests,
	"validationException":         http.StatusBadRequest,
	"modelTimeoutException":       http.StatusRequestTimeout,
}

// StreamException classifies an exception frame of a ConverseStream.
func StreamException(exceptionType string, payload []byte) *providers.Error {
	status, ok := exceptionStatus[exceptionType]
	if !ok {
		status = http.StatusInternalServerError
	}
	var b struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(payload, &b)
	return classify(status, exceptionType, b.Message, nil, payload)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
