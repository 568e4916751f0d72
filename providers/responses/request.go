// Package responses translates OpenAI's Responses API (POST /v1/responses) to and from the
// chat-completions shape the rest of the gateway speaks (reference providers.md §2.4): a
// Responses request becomes a chat body, a chat.completion becomes a Response object, and a
// stream of chat.completion.chunk payloads becomes the Responses event ladder. It imports no
// Caddy and holds no state beyond one request, so it is table-tested and fuzzed on its own.
package responses

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Request is the gateway's view of a Responses API body. Polymorphic fields stay raw; Raw is
// the body as the caller wrote it (for a faithful pass-through to OpenAI).
type Request struct {
	Raw []byte `json:"-"`

	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       json.RawMessage `json:"instructions"`
	PreviousResponseID string          `json:"previous_response_id"`
	Store              *bool           `json:"store"`
	MaxOutputTokens    *int64          `json:"max_output_tokens"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	ParallelToolCalls  *bool           `json:"parallel_tool_calls"`
	Text               json.RawMessage `json:"text"`
	Reasoning          json.RawMessage `json:"reasoning"`
	Temperature        *float64        `json:"temperature"`
	TopP               *float64        `json:"top_p"`
	Metadata           json.RawMessage `json:"metadata"`
	User               string          `json:"user"`
	SafetyIdentifier   string          `json:"safety_identifier"`
	PromptCacheKey     string          `json:"prompt_cache_key"`
	Stream             bool            `json:"stream"`
	Background         bool            `json:"background"`
	Conversation       json.RawMessage `json:"conversation"`
	// ServiceTier is the processing tier asked for; it changes the price of the call.
	ServiceTier string `json:"service_tier"`
	TopLogprobs *int64 `json:"top_logprobs"`
}

// requestFields are the top-level keys Request reads (its json tags).
var requestFields = providers.JSONFields[Request]()

// Stores reports whether the response is to be stored (OpenAI's default is true).
func (r *Request) Stores() bool { return r.Store == nil || *r.Store }

func badParam(code, param, format string, args ...any) *providers.Error {
	return providers.Errorf(http.StatusBadRequest, code, param, format, args...)
}

// Parse validates a Responses body. Every failure is a 400 *providers.Error naming the
// parameter, never a panic.
func Parse(body []byte) (*Request, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, badParam("invalid_request_body", "", "request body must be a JSON object")
	}
	r := &Request{Raw: body}
	// encoding/json matches keys case-insensitively; OpenAI does not. A pass-through body
	// with MAX_OUTPUT_TOKENS would be reserved for by one value and served by another.
	if perr := providers.RejectCaseVariants(bytes.TrimSpace(body), "", requestFields...); perr != nil {
		return nil, perr
	}
	if err := json.Unmarshal(body, r); err != nil {
		// Reuse the chat parser's wording for JSON errors.
		if _, perr := providers.ParseChatRequest(body); perr != nil {
			if pe, ok := perr.(*providers.Error); ok && pe.Code != "missing_required_parameter" {
				return nil, pe
			}
		}
		return nil, badParam("invalid_json", "", "request body is not valid JSON: %s", err.Error())
	}
	if r.Model == "" {
		return nil, badParam("missing_required_parameter", "model", "you must provide a model parameter")
	}
	if isNull(r.Input) && r.PreviousResponseID == "" {
		return nil, badParam("missing_required_parameter", "input", "you must provide an 'input' parameter")
	}
	if perr := providers.CheckRange("max_output_tokens", r.MaxOutputTokens, 1, providers.MaxOutputTokensLimit); perr != nil {
		return nil, perr
	}
	if perr := providers.CheckRange("top_logprobs", r.TopLogprobs, 0, providers.MaxTopLogprobs); perr != nil {
		return nil, perr
	}
	if !isNull(r.Reasoning) {
		if perr := providers.RejectCaseVariants(r.Reasoning, "reasoning.", "effort", "summary", "generate_summary"); perr != nil {
			return nil, perr
		}
	}
	if r.Background {
		return nil, badParam("unsupported_parameter", "background", "background responses are not supported by this gateway")
	}
	if !isNull(r.Conversation) {
		return nil, badParam("unsupported_parameter", "conversation", "conversations are not supported by this gateway; use previous_response_id")
	}
	if !isNull(r.Instructions) && r.Instructions[0] != '"' {
		return nil, badParam("invalid_type", "instructions", "instructions must be a string")
	}
	if !isNull(r.Tools) && r.Tools[0] != '[' {
		return nil, badParam("invalid_type", "tools", "invalid type for 'tools': expected an array")
	}
	return r, nil
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// InputItems normalises input into a list of items: a string is one user message. Each item
// must be an object; its type is checked when it is translated.
func InputItems(input json.RawMessage) ([]json.RawMessage, error) {
	if isNull(input) {
		return nil, nil
	}
	switch input[0] {
	case '"':
		var s string
		if err := json.Unmarshal(input, &s); err != nil {
			return nil, badParam("invalid_type", "input", "input must be a string or an array of items")
		}
		item, _ := json.Marshal(messageItem{Type: "message", Role: providers.RoleUser,
			Content: []inputPart{{Type: "input_text", Text: s}}})
		return []json.RawMessage{item}, nil
	case '[':
	default:
		return nil, badParam("invalid_type", "input", "input must be a string or an array of items")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(input, &items); err != nil {
		return nil, badParam("invalid_type", "input", "input must be a string or an array of items")
	}
	for i, it := range items {
		if len(it) == 0 || it[0] != '{' {
			return nil, badParam("invalid_type", fmt.Sprintf("input[%d]", i), "input[%d] must be an item object", i)
		}
	}
	return items, nil
}

type messageItem struct {
	Type    string      `json:"type"`
	Role    string      `json:"role"`
	Content []inputPart `json:"content"`
}

type inputPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// item is the union of the input item shapes the translation understands.
type item struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

type part struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`
	Refusal  string          `json:"refusal"`
	ImageURL json.RawMessage `json:"image_url"`
	FileID   string          `json:"file_id"`
	Detail   string          `json:"detail"`
}

// Chat-side shapes.

type chatMessage struct {
	Role       string         `json:"role"`
	Content    any            `json:"content"`
	Refusal    string         `json:"refusal,omitempty"`
	ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

type chatPart struct {
	Type     string        `json:"type"`
	Text     string        `json:"text,omitempty"`
	ImageURL *chatImageURL `json:"image_url,omitempty"`
}

type chatImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

type chatToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function chatFunction `json:"function"`
}

type chatFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type chatStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatBody struct {
	Model               string             `json:"model"`
	Messages            []chatMessage      `json:"messages"`
	Tools               []json.RawMessage  `json:"tools,omitempty"`
	ToolChoice          json.RawMessage    `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool              `json:"parallel_tool_calls,omitempty"`
	ResponseFormat      json.RawMessage    `json:"response_format,omitempty"`
	MaxCompletionTokens *int64             `json:"max_completion_tokens,omitempty"`
	Temperature         *float64           `json:"temperature,omitempty"`
	TopP                *float64           `json:"top_p,omitempty"`
	ReasoningEffort     string             `json:"reasoning_effort,omitempty"`
	User                string             `json:"user,omitempty"`
	PromptCacheKey      string             `json:"prompt_cache_key,omitempty"`
	Stream              bool               `json:"stream,omitempty"`
	StreamOptions       *chatStreamOptions `json:"stream_options,omitempty"`
	ServiceTier         string             `json:"service_tier,omitempty"`
}

// ChatBody translates the request into a chat-completions body. history is the conversation
// inherited through previous_response_id (stored inputs and outputs, already validated when
// they were stored; errors in it name previous_response_id), items the request's own input.
// A stream always asks for the usage chunk, which the Responses events need.
func (r *Request) ChatBody(history, items []json.RawMessage) ([]byte, error) {
	cb := chatBody{
		Model: r.Model, ParallelToolCalls: r.ParallelToolCalls, MaxCompletionTokens: r.MaxOutputTokens,
		Temperature: r.Temperature, TopP: r.TopP, User: r.User, PromptCacheKey: r.PromptCacheKey, Stream: r.Stream,
		ServiceTier: r.ServiceTier,
	}
	if cb.User == "" {
		cb.User = r.SafetyIdentifier
	}
	if r.Stream {
		cb.StreamOptions = &chatStreamOptions{IncludeUsage: true}
	}
	if !isNull(r.Instructions) {
		var s string
		_ = json.Unmarshal(r.Instructions, &s)
		if s != "" {
			cb.Messages = append(cb.Messages, chatMessage{Role: providers.RoleSystem, Content: s})
		}
	}
	var err error
	if cb.Messages, err = appendItems(cb.Messages, history, "previous_response_id"); err != nil {
		return nil, err
	}
	if cb.Messages, err = appendItems(cb.Messages, items, "input"); err != nil {
		return nil, err
	}
	if len(cb.Messages) == 0 {
		return nil, badParam("missing_required_parameter", "input", "the input has no messages")
	}
	if cb.Tools, err = chatTools(r.Tools); err != nil {
		return nil, err
	}
	if cb.ToolChoice, err = chatToolChoice(r.ToolChoice); err != nil {
		return nil, err
	}
	if cb.ResponseFormat, err = chatResponseFormat(r.Text); err != nil {
		return nil, err
	}
	if !isNull(r.Reasoning) {
		var rs struct {
			Effort *string `json:"effort"`
		}
		if json.Unmarshal(r.Reasoning, &rs) != nil {
			return nil, badParam("invalid_type", "reasoning", "reasoning must be an object")
		}
		if rs.Effort != nil {
			cb.ReasoningEffort = *rs.Effort
		}
	}
	return json.Marshal(cb)
}

// appendItems translates items in order. Consecutive function_call items (and a function_call
// right after an assistant message) become one assistant message with tool_calls; reasoning
// items are dropped whole, since another provider cannot verify them.
func appendItems(msgs []chatMessage, items []json.RawMessage, param string) ([]chatMessage, error) {
	for i, raw := range items {
		p := fmt.Sprintf("%s[%d]", param, i)
		if param == "previous_response_id" {
			p = param
		}
		var it item
		if err := json.Unmarshal(raw, &it); err != nil {
			return nil, badParam("invalid_type", p, "%s is not a valid input item", p)
		}
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		switch typ {
		case "message":
			m, err := chatMessageOf(&it, p)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
		case "function_call":
			if it.CallID == "" {
				return nil, badParam("missing_required_parameter", p+".call_id", "%s.call_id is required", p)
			}
			if it.Name == "" {
				return nil, badParam("missing_required_parameter", p+".name", "%s.name is required", p)
			}
			args, err := stringOrJSON(it.Arguments, p+".arguments")
			if err != nil {
				return nil, err
			}
			tc := chatToolCall{ID: it.CallID, Type: "function", Function: chatFunction{Name: it.Name, Arguments: args}}
			if n := len(msgs); n > 0 && msgs[n-1].Role == providers.RoleAssistant {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, tc)
			} else {
				msgs = append(msgs, chatMessage{Role: providers.RoleAssistant, ToolCalls: []chatToolCall{tc}})
			}
		case "function_call_output":
			if it.CallID == "" {
				return nil, badParam("missing_required_parameter", p+".call_id", "%s.call_id is required", p)
			}
			out, err := outputText(it.Output, p+".output")
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, chatMessage{Role: providers.RoleTool, ToolCallID: it.CallID, Content: out})
		case "reasoning":
			// Dropped whole: signed reasoning only means something to the provider that made it.
		case "":
			return nil, badParam("missing_required_parameter", p+".type", "%s.type is required", p)
		case "item_reference":
			return nil, badParam("unsupported_value", p+".type", "item references are not supported by this gateway; send the item itself or use previous_response_id")
		default:
			return nil, badParam("invalid_value", p+".type",
				"unsupported input item type %q (supported: message, function_call, function_call_output, reasoning)", typ)
		}
	}
	return msgs, nil
}

func chatMessageOf(it *item, p string) (chatMessage, error) {
	m := chatMessage{Role: it.Role}
	switch it.Role {
	case providers.RoleUser, providers.RoleAssistant, providers.RoleSystem, providers.RoleDeveloper:
	case "":
		return m, badParam("missing_required_parameter", p+".role", "%s.role is required", p)
	default:
		return m, badParam("invalid_value", p+".role", "invalid value for %s.role: %q (expected user, assistant, system or developer)", p, it.Role)
	}
	if isNull(it.Content) {
		return m, badParam("missing_required_parameter", p+".content", "%s.content is required", p)
	}
	if it.Content[0] == '"' {
		var s string
		if json.Unmarshal(it.Content, &s) != nil {
			return m, badParam("invalid_type", p+".content", "%s.content must be a string or an array of parts", p)
		}
		m.Content = s
		return m, nil
	}
	var parts []part
	if it.Content[0] != '[' || json.Unmarshal(it.Content, &parts) != nil {
		return m, badParam("invalid_type", p+".content", "%s.content must be a string or an array of parts", p)
	}
	var out []chatPart
	textOnly := true
	for j, pt := range parts {
		pp := fmt.Sprintf("%s.content[%d]", p, j)
		switch pt.Type {
		case "input_text", "output_text", "text":
			out = append(out, chatPart{Type: "text", Text: pt.Text})
		case "refusal":
			m.Refusal += pt.Refusal
		case "input_image":
			if it.Role != providers.RoleUser {
				return m, badParam("invalid_value", pp+".type", "%s: images are only allowed in user messages", pp)
			}
			url, err := imageURL(pt, pp)
			if err != nil {
				return m, err
			}
			out = append(out, chatPart{Type: "image_url", ImageURL: &chatImageURL{URL: url, Detail: pt.Detail}})
			textOnly = false
		case "":
			return m, badParam("missing_required_parameter", pp+".type", "%s.type is required", pp)
		case "input_file", "input_audio":
			return m, badParam("unsupported_value", pp+".type", "%s: content type %q is not supported by this gateway", pp, pt.Type)
		default:
			return m, badParam("invalid_value", pp+".type", "%s: unknown content type %q", pp, pt.Type)
		}
	}
	// System, developer and assistant messages carry plain text everywhere; keep user parts.
	if textOnly && (it.Role != providers.RoleUser || len(out) == 1) {
		var b strings.Builder
		for _, cp := range out {
			b.WriteString(cp.Text)
		}
		if b.Len() > 0 || m.Refusal == "" {
			m.Content = b.String()
		}
		return m, nil
	}
	m.Content = out
	return m, nil
}

func imageURL(pt part, pp string) (string, error) {
	if pt.FileID != "" {
		return "", badParam("unsupported_value", pp+".file_id", "%s: file ids are not supported by this gateway; send image_url (an https or data: URL)", pp)
	}
	if isNull(pt.ImageURL) {
		return "", badParam("missing_required_parameter", pp+".image_url", "%s.image_url is required", pp)
	}
	var s string
	if pt.ImageURL[0] == '"' && json.Unmarshal(pt.ImageURL, &s) == nil && s != "" {
		return s, nil
	}
	var obj struct {
		URL string `json:"url"`
	}
	if json.Unmarshal(pt.ImageURL, &obj) == nil && obj.URL != "" {
		return obj.URL, nil
	}
	return "", badParam("invalid_type", pp+".image_url", "%s.image_url must be a URL string", pp)
}

// stringOrJSON accepts a JSON-encoded string (OpenAI's form) or, as a courtesy, an object.
func stringOrJSON(raw json.RawMessage, param string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", badParam("invalid_type", param, "%s must be a string", param)
		}
		return s, nil
	}
	if raw[0] == '{' {
		return string(raw), nil
	}
	return "", badParam("invalid_type", param, "%s must be a JSON-encoded string", param)
}

// outputText is a function_call_output's output: a string, or parts whose text is joined.
func outputText(raw json.RawMessage, param string) (string, error) {
	if isNull(raw) {
		return "", badParam("missing_required_parameter", param, "%s is required", param)
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", badParam("invalid_type", param, "%s must be a string", param)
		}
		return s, nil
	}
	var parts []part
	if raw[0] != '[' || json.Unmarshal(raw, &parts) != nil {
		return "", badParam("invalid_type", param, "%s must be a string or an array of parts", param)
	}
	var b strings.Builder
	for j, pt := range parts {
		switch pt.Type {
		case "input_text", "output_text", "text":
			b.WriteString(pt.Text)
		default:
			return "", badParam("unsupported_value", fmt.Sprintf("%s[%d].type", param, j), "only text is supported in function call outputs")
		}
	}
	return b.String(), nil
}

type flatTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type nestedTool struct {
	Type     string       `json:"type"`
	Function nestedToolFn `json:"function"`
}

type nestedToolFn struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// chatTools nests the flat function tools; hosted tools cannot be served by translation.
func chatTools(raw json.RawMessage) ([]json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	var tools []json.RawMessage
	if json.Unmarshal(raw, &tools) != nil {
		return nil, badParam("invalid_type", "tools", "invalid type for 'tools': expected an array")
	}
	out := make([]json.RawMessage, 0, len(tools))
	for i, t := range tools {
		p := fmt.Sprintf("tools[%d]", i)
		var ft flatTool
		if len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &ft) != nil {
			return nil, badParam("invalid_type", p, "%s must be a tool object", p)
		}
		if ft.Type != "function" {
			// Hosted tools (web_search, file_search, code_interpreter, image_generation …)
			// carry provider fees per call that the gateway's catalog does not price.
			return nil, badParam("invalid_value", p+".type", "unsupported tool type %q: only function tools are supported by this gateway; "+
				"hosted tools carry provider fees that are not priced here, and nothing is served unbilled", ft.Type)
		}
		if ft.Name == "" {
			return nil, badParam("missing_required_parameter", p+".name", "%s.name is required", p)
		}
		if isNull(ft.Parameters) {
			ft.Parameters = nil
		} else if ft.Parameters[0] != '{' {
			return nil, badParam("invalid_type", p+".parameters", "%s.parameters must be a JSON schema object", p)
		}
		b, _ := json.Marshal(nestedTool{Type: "function", Function: ft.nested()})
		out = append(out, b)
	}
	return out, nil
}

func (ft flatTool) nested() nestedToolFn {
	return nestedToolFn{Name: ft.Name, Description: ft.Description, Parameters: ft.Parameters, Strict: ft.Strict}
}

func chatToolChoice(raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		switch s {
		case "auto", "none", "required":
			return raw, nil
		}
		return nil, badParam("invalid_value", "tool_choice", "invalid tool_choice %q (expected none, auto, required or a function)", s)
	}
	var tc struct {
		Type string `json:"type"`
		Name string `json:"name"`
		Mode string `json:"mode"`
	}
	if json.Unmarshal(raw, &tc) != nil {
		return nil, badParam("invalid_type", "tool_choice", "tool_choice must be a string or an object")
	}
	switch tc.Type {
	case "function":
		if tc.Name == "" {
			return nil, badParam("missing_required_parameter", "tool_choice.name", "tool_choice.name is required")
		}
		return json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}})
	case "allowed_tools":
		if tc.Mode == "required" {
			return json.RawMessage(`"required"`), nil
		}
		return json.RawMessage(`"auto"`), nil
	}
	return nil, badParam("invalid_value", "tool_choice.type", "unsupported tool_choice type %q: only function tools are supported on this model", tc.Type)
}

type textConfig struct {
	Format *struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"format"`
}

type chatJSONSchema struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// chatResponseFormat turns the flat text.format into chat's nested response_format.
func chatResponseFormat(raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	var tc textConfig
	if raw[0] != '{' || json.Unmarshal(raw, &tc) != nil {
		return nil, badParam("invalid_type", "text", "text must be an object")
	}
	if tc.Format == nil {
		return nil, nil
	}
	f := tc.Format
	switch f.Type {
	case "text", "":
		return nil, nil
	case "json_object":
		return json.RawMessage(`{"type":"json_object"}`), nil
	case "json_schema":
		if isNull(f.Schema) || f.Schema[0] != '{' {
			return nil, badParam("missing_required_parameter", "text.format.schema", "text.format.schema must be a JSON schema object")
		}
		name := f.Name
		if name == "" {
			return nil, badParam("missing_required_parameter", "text.format.name", "text.format.name is required")
		}
		return json.Marshal(struct {
			Type       string         `json:"type"`
			JSONSchema chatJSONSchema `json:"json_schema"`
		}{"json_schema", chatJSONSchema{Name: name, Description: f.Description, Schema: f.Schema, Strict: f.Strict}})
	}
	return nil, badParam("invalid_value", "text.format.type", "invalid text.format.type %q (expected text, json_object or json_schema)", f.Type)
}
