package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
)

// Ingress: callers that speak the Messages API to the gateway (POST /v1/messages). The request
// is translated into an OpenAI chat body so it can route to any provider; the OpenAI-shaped
// answer is translated back. Conventions used for what OpenAI has no field for: cache_control
// stays on content parts, messages and tools (the OpenRouter convention the canonical model
// reads), signed thinking blocks travel as the assistant's thinking_blocks (LiteLLM's), and
// the output limit is sent as max_completion_tokens, which OpenAI requires for reasoning models.

// IngressToOpenAI translates a Messages request body into an OpenAI chat-completions body.
// stream reports whether the caller asked for a stream. Errors are 400s in OpenAI shape; use
// ErrorEnvelope to render them the Anthropic way.
func IngressToOpenAI(body []byte) (openaiBody []byte, stream bool, err *providers.Error) {
	var r Request
	var top map[string]json.RawMessage
	if jerr := json.Unmarshal(body, &top); jerr != nil || top == nil {
		return nil, false, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
	}
	// The chat path's rule: encoding/json would read a case variant of a field as the field
	// (and {"max_tokens":1,"MAX_TOKENS":100000} as the larger), Anthropic would not.
	for key := range top {
		if perr := providers.RejectCaseVariant(key, "", ingressFields...); perr != nil {
			return nil, false, perr
		}
	}
	if jerr := json.Unmarshal(body, &r); jerr != nil {
		var te *json.UnmarshalTypeError
		if errors.As(jerr, &te) {
			return nil, false, providers.Errorf(http.StatusBadRequest, "invalid_type", te.Field, "%s: invalid type", te.Field)
		}
		return nil, false, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	}
	if r.Model == "" {
		return nil, false, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", "model", "model: Field required")
	}
	if _, ok := top["max_tokens"]; !ok {
		return nil, false, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", "max_tokens", "max_tokens: Field required")
	}
	if perr := checkIngressNumbers(&r); perr != nil {
		return nil, false, perr
	}
	if len(r.Messages) == 0 {
		return nil, false, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "messages: Field required")
	}

	out := oaRequest{Model: r.Model, MaxCompletionTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, TopK: r.TopK,
		Stop: r.StopSequences, Stream: r.Stream, CacheControl: r.CacheControl}
	if r.Stream {
		out.StreamOptions = &oaStreamOptions{IncludeUsage: true}
	}
	if r.Metadata != nil && r.Metadata.UserID != "" {
		out.User = r.Metadata.UserID
	}
	if len(r.System) > 0 {
		var parts []oaPart
		for _, b := range r.System {
			if b.Type == "text" {
				parts = append(parts, oaPart{Type: "text", Text: b.Text, CacheControl: b.CacheControl})
			}
		}
		if len(parts) > 0 {
			out.Messages = append(out.Messages, oaMessage{Role: "system", Content: partsContent(parts)})
		}
	}
	for i, m := range r.Messages {
		msgs, perr := ingressMessage(m, i)
		if perr != nil {
			return nil, false, perr
		}
		out.Messages = append(out.Messages, msgs...)
	}
	for _, t := range r.Tools {
		if t.Type != "" && t.Type != "custom" {
			return nil, false, providers.Errorf(http.StatusBadRequest, "unsupported_parameter", "tools",
				"server tool %q is not supported through the gateway", t.Type)
		}
		fn := oaFunction{Name: t.Name, Description: t.Description, Parameters: t.InputSchema, Strict: t.Strict}
		out.Tools = append(out.Tools, oaTool{Type: "function", Function: fn, CacheControl: t.CacheControl})
	}
	if tc := r.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto":
			out.ToolChoice = json.RawMessage(`"auto"`)
		case "any":
			out.ToolChoice = json.RawMessage(`"required"`)
		case "none":
			out.ToolChoice = json.RawMessage(`"none"`)
		case "tool":
			raw, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}})
			out.ToolChoice = raw
		default:
			return nil, false, providers.Errorf(http.StatusBadRequest, "invalid_value", "tool_choice.type", "tool_choice.type must be auto, any, tool or none")
		}
		if tc.DisableParallelToolUse && len(r.Tools) > 0 {
			f := false
			out.ParallelToolCalls = &f
		}
	}
	if oc := r.OutputConfig; oc != nil && oc.Format != nil && oc.Format.Type == "json_schema" {
		strict := true
		out.ResponseFormat = &oaResponseFormat{Type: "json_schema", JSONSchema: &oaJSONSchema{Name: "output", Schema: oc.Format.Schema, Strict: &strict}}
	}
	if th := r.Thinking; th != nil && th.Type == "enabled" {
		switch {
		case th.BudgetTokens <= 2048:
			out.ReasoningEffort = "low"
		case th.BudgetTokens <= 8192:
			out.ReasoningEffort = "medium"
		default:
			out.ReasoningEffort = "high"
		}
	}
	raw, merr := json.Marshal(out)
	if merr != nil {
		return nil, false, providers.Errorf(http.StatusBadRequest, "invalid_value", "", "request could not be translated")
	}
	return raw, r.Stream, nil
}

// ingressFields are the top-level keys the ingress reads (Request's json tags).
var ingressFields = providers.JSONFields[Request]()

// checkIngressNumbers range-checks the numbers the ingress reads, as the chat path does.
func checkIngressNumbers(r *Request) *providers.Error {
	maxTokens := r.MaxTokens
	if perr := providers.CheckRange("max_tokens", &maxTokens, 1, providers.MaxOutputTokensLimit); perr != nil {
		return perr
	}
	if perr := providers.CheckRange("top_k", r.TopK, 0, 1<<31); perr != nil {
		return perr
	}
	if th := r.Thinking; th != nil && th.Type == "enabled" {
		budget := th.BudgetTokens
		if perr := providers.CheckRange("thinking.budget_tokens", &budget, 1, providers.MaxOutputTokensLimit); perr != nil {
			return perr
		}
	}
	return nil
}

// OpenAI request shapes the ingress emits.
type oaRequest struct {
	Model               string                  `json:"model"`
	Messages            []oaMessage             `json:"messages"`
	MaxCompletionTokens int64                   `json:"max_completion_tokens"`
	Temperature         *float64                `json:"temperature,omitempty"`
	TopP                *float64                `json:"top_p,omitempty"`
	TopK                *int64                  `json:"top_k,omitempty"`
	Stop                []string                `json:"stop,omitempty"`
	Stream              bool                    `json:"stream,omitempty"`
	StreamOptions       *oaStreamOptions        `json:"stream_options,omitempty"`
	User                string                  `json:"user,omitempty"`
	Tools               []oaTool                `json:"tools,omitempty"`
	ToolChoice          json.RawMessage         `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool                   `json:"parallel_tool_calls,omitempty"`
	ResponseFormat      *oaResponseFormat       `json:"response_format,omitempty"`
	ReasoningEffort     string                  `json:"reasoning_effort,omitempty"`
	CacheControl        *providers.CacheControl `json:"cache_control,omitempty"`
}

type oaStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type oaMessage struct {
	Role           string                    `json:"role"`
	Content        any                       `json:"content"`
	ToolCalls      []oaToolCall              `json:"tool_calls,omitempty"`
	ToolCallID     string                    `json:"tool_call_id,omitempty"`
	ThinkingBlocks []providers.ThinkingBlock `json:"thinking_blocks,omitempty"`
	CacheControl   *providers.CacheControl   `json:"cache_control,omitempty"`
}

type oaPart struct {
	Type         string                  `json:"type"`
	Text         string                  `json:"text,omitempty"`
	ImageURL     *oaImageURL             `json:"image_url,omitempty"`
	File         *oaFile                 `json:"file,omitempty"`
	CacheControl *providers.CacheControl `json:"cache_control,omitempty"`
}

type oaImageURL struct {
	URL string `json:"url"`
}

type oaFile struct {
	Filename string `json:"filename,omitempty"`
	FileData string `json:"file_data,omitempty"`
	FileID   string `json:"file_id,omitempty"`
}

type oaToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type oaTool struct {
	Type         string                  `json:"type"`
	Function     oaFunction              `json:"function"`
	CacheControl *providers.CacheControl `json:"cache_control,omitempty"`
}

type oaFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type oaResponseFormat struct {
	Type       string        `json:"type"`
	JSONSchema *oaJSONSchema `json:"json_schema,omitempty"`
}

type oaJSONSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict *bool           `json:"strict,omitempty"`
}

// partsContent is a plain string when the parts are one unmarked text, else the parts.
func partsContent(parts []oaPart) any {
	if len(parts) == 1 && parts[0].Type == "text" && parts[0].CacheControl == nil {
		return parts[0].Text
	}
	return parts
}

func ingressPart(b Block, param string) (oaPart, *providers.Error) {
	switch b.Type {
	case "text":
		return oaPart{Type: "text", Text: b.Text, CacheControl: b.CacheControl}, nil
	case "image", "document":
		if b.Source == nil {
			return oaPart{}, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", param+".source", "%s.source: Field required", param)
		}
		var url string
		switch b.Source.Type {
		case "base64":
			url = "data:" + b.Source.MediaType + ";base64," + b.Source.Data
		case "url":
			url = b.Source.URL
		default:
			return oaPart{}, providers.Errorf(http.StatusBadRequest, "unsupported_content", param+".source.type",
				"%s.source.type %q is not supported through the gateway", param, b.Source.Type)
		}
		if b.Type == "image" {
			return oaPart{Type: "image_url", ImageURL: &oaImageURL{URL: url}, CacheControl: b.CacheControl}, nil
		}
		if b.Source.Type != "base64" {
			return oaPart{}, providers.Errorf(http.StatusBadRequest, "unsupported_content", param+".source.type",
				"documents must be sent as base64 through the gateway")
		}
		return oaPart{Type: "file", File: &oaFile{Filename: "document.pdf", FileData: url}, CacheControl: b.CacheControl}, nil
	}
	return oaPart{}, providers.Errorf(http.StatusBadRequest, "unsupported_content", param+".type",
		"%s: block type %q is not supported here", param, b.Type)
}

// ingressMessage turns one Messages turn into OpenAI messages: a user turn's tool_result
// blocks become tool messages (first, in order), its other blocks one user message.
func ingressMessage(m MessageParam, i int) ([]oaMessage, *providers.Error) {
	param := "messages." + itoa(i)
	switch m.Role {
	case "user":
		var out []oaMessage
		var parts []oaPart
		for j, b := range m.Content {
			bp := param + ".content." + itoa(j)
			if b.Type == "tool_result" {
				var tparts []oaPart
				for k, c := range b.Content {
					p, err := ingressPart(c, bp+".content."+itoa(k))
					if err != nil {
						return nil, err
					}
					tparts = append(tparts, p)
				}
				var content any = ""
				if len(tparts) > 0 {
					content = partsContent(tparts)
				}
				if b.IsError {
					if s, ok := content.(string); ok {
						content = "Error: " + s
					}
				}
				out = append(out, oaMessage{Role: "tool", ToolCallID: b.ToolUseID, Content: content, CacheControl: b.CacheControl})
				continue
			}
			p, err := ingressPart(b, bp)
			if err != nil {
				return nil, err
			}
			parts = append(parts, p)
		}
		if len(parts) > 0 {
			out = append(out, oaMessage{Role: "user", Content: partsContent(parts)})
		}
		return out, nil
	case "assistant":
		msg := oaMessage{Role: "assistant"}
		var parts []oaPart
		for _, b := range m.Content {
			switch b.Type {
			case "text":
				parts = append(parts, oaPart{Type: "text", Text: b.Text, CacheControl: b.CacheControl})
			case "tool_use":
				tc := oaToolCall{ID: b.ID, Type: "function"}
				tc.Function.Name = b.Name
				args := "{}"
				if len(b.Input) > 0 {
					var buf bytes.Buffer
					if json.Compact(&buf, b.Input) == nil {
						args = buf.String()
					}
				}
				tc.Function.Arguments = args
				msg.ToolCalls = append(msg.ToolCalls, tc)
				if b.CacheControl != nil {
					msg.CacheControl = b.CacheControl
				}
			case "thinking":
				msg.ThinkingBlocks = append(msg.ThinkingBlocks, providers.ThinkingBlock{Type: "thinking", Thinking: b.Thinking, Signature: b.Signature})
			case "redacted_thinking":
				msg.ThinkingBlocks = append(msg.ThinkingBlocks, providers.ThinkingBlock{Type: "redacted_thinking", Data: b.Data})
			}
		}
		if len(parts) > 0 {
			msg.Content = partsContent(parts)
		}
		return []oaMessage{msg}, nil
	}
	return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", param+".role", "%s.role: Input should be 'user' or 'assistant'", param)
}

// openAI completion as the ingress reads it.
type oaCompletion struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content          *string                   `json:"content"`
			Refusal          *string                   `json:"refusal"`
			ReasoningContent string                    `json:"reasoning_content"`
			ThinkingBlocks   []providers.ThinkingBlock `json:"thinking_blocks"`
			ToolCalls        []oaToolCall              `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

// StopReasonFromFinish maps an OpenAI finish_reason to an Anthropic stop_reason.
func StopReasonFromFinish(finish string) string {
	switch finish {
	case providers.FinishLength:
		return "max_tokens"
	case providers.FinishToolCalls, "function_call":
		return "tool_use"
	case providers.FinishContentFilter:
		return "refusal"
	}
	return "end_turn"
}

// MessageID turns a completion id into a Messages id.
func MessageID(id string) string {
	id = strings.TrimPrefix(id, "chatcmpl-")
	if strings.HasPrefix(id, "msg_") {
		return id
	}
	return "msg_" + id
}

// CompletionToMessage translates an OpenAI chat.completion body into a Messages response.
// usage is the gateway's normal form; when zero, the completion's own usage is used.
func CompletionToMessage(openaiCompletion []byte, usage providers.Usage) ([]byte, error) {
	var c oaCompletion
	if err := json.Unmarshal(openaiCompletion, &c); err != nil {
		return nil, err
	}
	if len(c.Choices) == 0 {
		return nil, errors.New("completion has no choices")
	}
	if usage.IsZero() {
		usage, _ = providers.ParseOpenAIUsage(c.Usage)
	}
	ch := c.Choices[0]
	content := []Block{}
	for _, tb := range ch.Message.ThinkingBlocks {
		content = append(content, Block{Type: tb.Type, Thinking: tb.Thinking, Signature: tb.Signature, Data: tb.Data})
	}
	if len(ch.Message.ThinkingBlocks) == 0 && ch.Message.ReasoningContent != "" {
		content = append(content, Block{Type: "thinking", Thinking: ch.Message.ReasoningContent})
	}
	if ch.Message.Content != nil && *ch.Message.Content != "" {
		content = append(content, Block{Type: "text", Text: *ch.Message.Content})
	} else if ch.Message.Refusal != nil && *ch.Message.Refusal != "" {
		content = append(content, Block{Type: "text", Text: *ch.Message.Refusal})
	}
	for _, tc := range ch.Message.ToolCalls {
		in := json.RawMessage(tc.Function.Arguments)
		if !json.Valid(in) || len(bytes.TrimSpace(in)) == 0 || bytes.TrimSpace(in)[0] != '{' {
			in = json.RawMessage("{}")
		}
		content = append(content, Block{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: in})
	}
	stop := StopReasonFromFinish(ch.FinishReason)
	return json.Marshal(Message{ID: MessageID(c.ID), Type: "message", Role: "assistant", Model: c.Model,
		Content: content, StopReason: &stop, Usage: UsageFrom(usage)})
}

// IngressStream writes Anthropic SSE events for a stream of OpenAI chunks: message_start on
// the first chunk, one content block per run of text, thinking or tool call, message_delta
// with the stop reason and the full usage, message_stop. It is not safe for concurrent use.
type IngressStream struct {
	w       io.Writer
	buf     []byte
	started bool
	id      string
	model   string
	// open is the Anthropic index of the open block, -1 when none; openKind its type and
	// openTool the OpenAI tool-call index it carries.
	open     int
	openKind string
	openTool int
	next     int
	tools    map[int]int // OpenAI tool-call index → Anthropic block index
	finish   string
	usage    providers.Usage
	hasUsage bool
}

// NewIngressStream writes events to w (the caller sets the SSE headers and flushes).
func NewIngressStream(w io.Writer) *IngressStream {
	return &IngressStream{w: w, open: -1}
}

type oaChunk struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content          *string `json:"content"`
			ReasoningContent *string `json:"reasoning_content"`
			ToolCalls        []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

func (s *IngressStream) event(name string, v any) {
	payload, _ := json.Marshal(v)
	s.buf = sse.AppendEvent(s.buf, name, payload)
}

func (s *IngressStream) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.w.Write(s.buf)
	s.buf = s.buf[:0]
	return err
}

func (s *IngressStream) start() {
	if s.started {
		return
	}
	s.started = true
	zero := int64(0)
	s.event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": MessageID(s.id), "type": "message", "role": "assistant", "content": []any{}, "model": s.model,
		"stop_reason": nil, "stop_sequence": nil, "usage": Usage{InputTokens: &zero, OutputTokens: &zero},
	}})
}

func (s *IngressStream) closeBlock() {
	if s.open < 0 {
		return
	}
	s.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": s.open})
	s.open, s.openKind = -1, ""
}

func (s *IngressStream) openBlock(kind string, block map[string]any) int {
	s.closeBlock()
	idx := s.next
	s.next++
	s.open, s.openKind = idx, kind
	s.event("content_block_start", map[string]any{"type": "content_block_start", "index": idx, "content_block": block})
	return idx
}

// WriteChunk translates one chat.completion.chunk payload.
func (s *IngressStream) WriteChunk(openaiChunkPayload []byte) error {
	var c oaChunk
	if err := json.Unmarshal(openaiChunkPayload, &c); err != nil {
		return err
	}
	if !s.started {
		s.id, s.model = c.ID, c.Model
		s.start()
	}
	if len(c.Usage) > 0 && c.Usage[0] == '{' {
		if u, ok := providers.ParseOpenAIUsage(c.Usage); ok {
			s.usage, s.hasUsage = u, true
		}
	}
	for _, ch := range c.Choices {
		d := ch.Delta
		if d.ReasoningContent != nil && *d.ReasoningContent != "" {
			if s.openKind != "thinking" {
				s.openBlock("thinking", map[string]any{"type": "thinking", "thinking": ""})
			}
			s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": s.open,
				"delta": map[string]string{"type": "thinking_delta", "thinking": *d.ReasoningContent}})
		}
		if d.Content != nil && *d.Content != "" {
			if s.openKind != "text" {
				s.openBlock("text", map[string]any{"type": "text", "text": ""})
			}
			s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": s.open,
				"delta": map[string]string{"type": "text_delta", "text": *d.Content}})
		}
		for _, tc := range d.ToolCalls {
			idx, known := s.tools[tc.Index]
			if !known || tc.ID != "" && !(s.openKind == "tool_use" && s.openTool == tc.Index) {
				if s.tools == nil {
					s.tools = map[int]int{}
				}
				idx = s.openBlock("tool_use", map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Function.Name, "input": map[string]any{}})
				s.openTool = tc.Index
				s.tools[tc.Index] = idx
			}
			if tc.Function.Arguments != "" {
				s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": idx,
					"delta": map[string]string{"type": "input_json_delta", "partial_json": tc.Function.Arguments}})
			}
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			s.finish = *ch.FinishReason
		}
	}
	return s.flush()
}

// Close ends the stream. With err nil it closes the open block and writes message_delta
// (stop reason, usage — the argument, or the stream's own usage chunk when it is zero) and
// message_stop; with an error it writes an "event: error" in Anthropic's shape.
func (s *IngressStream) Close(usage providers.Usage, err error) error {
	s.start()
	if err != nil {
		var pe *providers.Error
		if !errors.As(err, &pe) {
			pe = &providers.Error{Status: http.StatusBadGateway, Message: "the upstream provider failed"}
		}
		s.event("error", errorEnvelope(pe))
		return s.flush()
	}
	s.closeBlock()
	if usage.IsZero() && s.hasUsage {
		usage = s.usage
	}
	s.event("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": StopReasonFromFinish(s.finish), "stop_sequence": nil},
		"usage": UsageFrom(usage)})
	s.event("message_stop", map[string]string{"type": "message_stop"})
	return s.flush()
}

// errorTypeForStatus is Anthropic's error type for an HTTP status.
func errorTypeForStatus(status int) string {
	switch status {
	case 400, 422:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 503, 529:
		return "overloaded_error"
	case 504:
		return "timeout_error"
	}
	return "api_error"
}

func errorEnvelope(e *providers.Error) map[string]any {
	return map[string]any{"type": "error", "error": map[string]string{"type": errorTypeForStatus(e.Status), "message": e.Message}}
}

// ErrorEnvelope renders a gateway error as Anthropic's error body
// ({"type":"error","error":{"type","message"}}) for the /v1/messages route.
func ErrorEnvelope(e *providers.Error) []byte {
	b, _ := json.Marshal(errorEnvelope(e))
	return b
}

// CountTokens answers /v1/messages/count_tokens without calling an upstream: count(model,
// text) tokens for the system text, message text, thinking, tool-use inputs, tool results
// and tool definitions, plus 1,600 tokens per image or document (Anthropic's estimate for a
// ~1.15-megapixel image), plus 3 per message. count is the caller's tokenizer; nil counts one
// token per four bytes. It validates like the Messages API (model and messages required) and
// is meant for budgeting, not billing.
func CountTokens(body []byte, count func(model, text string) int) (int64, *providers.Error) {
	var r Request
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	}
	if r.Model == "" {
		return 0, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", "model", "model: Field required")
	}
	if len(r.Messages) == 0 {
		return 0, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "messages: Field required")
	}
	if count == nil {
		count = func(_, text string) int { return (len(text) + 3) / 4 }
	}
	var text strings.Builder
	var fixed int64
	var walk func(bs Blocks)
	walk = func(bs Blocks) {
		for _, b := range bs {
			switch b.Type {
			case "image", "document":
				fixed += 1600
			default:
				text.WriteString(b.Text)
				text.WriteString(b.Thinking)
				text.Write(b.Input)
				text.WriteString(b.Name)
				walk(b.Content)
			}
		}
	}
	walk(r.System)
	for _, m := range r.Messages {
		walk(m.Content)
		fixed += 3
	}
	for _, t := range r.Tools {
		text.WriteString(t.Name)
		text.WriteString(t.Description)
		text.Write(t.InputSchema)
	}
	return int64(count(r.Model, text.String())) + fixed, nil
}
