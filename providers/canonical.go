package providers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// The canonical chat model: an OpenAI chat-completions request decoded fully into typed
// structs, for adapters whose upstream speaks another wire format (Anthropic, Bedrock, Gemini).
// The OpenAI adapter does not use it: it forwards bytes. ParseCanonical never mutates its input
// and keeps everything an adapter might need to translate faithfully: opaque reasoning blocks,
// cache_control markers, strict flags, raw JSON schemas byte for byte (key order preserved so
// provider prompt caches keep hitting).

// Message roles as OpenAI names them.
const (
	RoleSystem    = "system"
	RoleDeveloper = "developer"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Content part types.
const (
	PartText       = "text"
	PartImageURL   = "image_url"
	PartInputAudio = "input_audio"
	PartFile       = "file"
)

// Chat is a decoded chat-completions request.
type Chat struct {
	Model    string
	Messages []Message
	Tools    []Tool
	// ToolChoice is nil when the caller sent none (provider default, usually auto).
	ToolChoice *ToolChoice
	// ParallelToolCalls is nil when unset.
	ParallelToolCalls *bool
	// ResponseFormat is nil when unset or {"type":"text"}.
	ResponseFormat *ResponseFormat
	// MaxTokens is max_completion_tokens ?? max_tokens, 0 when neither was given.
	MaxTokens        int64
	Temperature      *float64
	TopP             *float64
	TopK             *int64 // not OpenAI, but several clients send it for Claude/Gemini
	FrequencyPenalty *float64
	PresencePenalty  *float64
	Stop             []string
	Seed             *int64
	// N is the number of choices asked for; 1 when unset.
	N        int64
	User     string
	Metadata map[string]string
	Stream   bool
	// IncludeUsage is stream_options.include_usage: whether the client wants the usage chunk.
	IncludeUsage bool
	// ReasoningEffort is reasoning_effort (minimal|low|medium|high), "" when unset.
	ReasoningEffort string
	// CacheControl is a top-level cache_control (Anthropic's automatic caching), rarely set.
	CacheControl *CacheControl
}

// CacheControl is an Anthropic-style prompt-cache breakpoint that a caller put on a content
// part, a message or a tool (the OpenRouter/LiteLLM convention). TTL is "" (5m), "5m" or "1h".
type CacheControl struct {
	Type string `json:"type"`
	TTL  string `json:"ttl,omitempty"`
}

// Message is one chat message. String content is decoded as a single text part, so adapters
// handle one shape; null content yields no parts.
type Message struct {
	Role    string
	Name    string
	Content []Part
	// CacheControl set on the message itself applies to its last content part.
	CacheControl *CacheControl

	// Assistant fields.
	ToolCalls []ToolCall
	Refusal   string
	Reasoning *Reasoning

	// Tool message field.
	ToolCallID string
}

// Part is one content part.
type Part struct {
	Type string
	Text string
	// Image is set for image_url parts.
	Image *Image
	// Raw is the part as the caller wrote it, kept for types without typed fields
	// (input_audio, file) so an adapter can translate or reject them.
	Raw          json.RawMessage
	CacheControl *CacheControl
}

// Image is an image_url part: a data: URL or an http(s) URL.
type Image struct {
	URL    string
	Detail string // auto|low|high, "" when unset
}

// Inline splits a data: URL into its media type and base64 payload. ok is false for other
// URLs and for data URLs that are not base64.
func (im *Image) Inline() (mediaType, b64 string, ok bool) {
	return ParseDataURL(im.URL)
}

// ParseDataURL splits "data:<media>;base64,<payload>". ok is false for anything else.
func ParseDataURL(u string) (mediaType, b64 string, ok bool) {
	rest, found := strings.CutPrefix(u, "data:")
	if !found {
		return "", "", false
	}
	meta, payload, found := strings.Cut(rest, ",")
	if !found {
		return "", "", false
	}
	params := strings.Split(meta, ";")
	if params[len(params)-1] != "base64" {
		return "", "", false
	}
	mediaType = params[0]
	if mediaType == "" {
		mediaType = "text/plain"
	}
	return strings.ToLower(mediaType), payload, true
}

// ToolCall is one function call made by the assistant. Arguments is the JSON-encoded string
// OpenAI uses; Extra is the call's extra_content (Gemini's thought signature travels there).
type ToolCall struct {
	ID        string
	Type      string
	Name      string
	Arguments string
	Extra     json.RawMessage
}

// Reasoning is what a previous assistant turn carried of the model's thinking, in the
// conventions clients use to echo it back: DeepSeek/OpenRouter's reasoning_content, LiteLLM's
// thinking_blocks (Anthropic thinking with signatures) and OpenRouter's reasoning_details. All
// are kept opaque: a provider needs the signed blocks byte for byte.
type Reasoning struct {
	Content string
	Blocks  []ThinkingBlock
	// Details is OpenRouter's reasoning_details array as sent.
	Details json.RawMessage
}

// ThinkingBlock is an Anthropic thinking or redacted_thinking block.
type ThinkingBlock struct {
	Type      string `json:"type"` // thinking | redacted_thinking
	Thinking  string `json:"thinking,omitempty"`
	Signature string `json:"signature,omitempty"`
	Data      string `json:"data,omitempty"`
}

// Tool is a function tool definition.
type Tool struct {
	Type        string
	Name        string
	Description string
	// Parameters is the JSON schema as sent (nil when omitted).
	Parameters   json.RawMessage
	Strict       *bool
	CacheControl *CacheControl
}

// Tool choice modes.
const (
	ToolChoiceAuto     = "auto"
	ToolChoiceNone     = "none"
	ToolChoiceRequired = "required"
	ToolChoiceFunction = "function" // a named function: Name is set
)

// ToolChoice is the caller's tool_choice.
type ToolChoice struct {
	Mode string
	Name string
}

// Response format types.
const (
	FormatJSONObject = "json_object"
	FormatJSONSchema = "json_schema"
)

// ResponseFormat is response_format json_object or json_schema.
type ResponseFormat struct {
	Type        string
	Name        string
	Description string
	Schema      json.RawMessage
	Strict      *bool
}

// wire types: the JSON shapes, with polymorphic fields left raw.

type wireChat struct {
	Model               string            `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	Tools               []json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls   *bool             `json:"parallel_tool_calls"`
	ResponseFormat      json.RawMessage   `json:"response_format"`
	MaxTokens           *int64            `json:"max_tokens"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	Temperature         *float64          `json:"temperature"`
	TopP                *float64          `json:"top_p"`
	TopK                *int64            `json:"top_k"`
	FrequencyPenalty    *float64          `json:"frequency_penalty"`
	PresencePenalty     *float64          `json:"presence_penalty"`
	Stop                json.RawMessage   `json:"stop"`
	Seed                *int64            `json:"seed"`
	N                   *int64            `json:"n"`
	User                string            `json:"user"`
	Metadata            map[string]string `json:"metadata"`
	Stream              bool              `json:"stream"`
	StreamOptions       *StreamOptions    `json:"stream_options"`
	ReasoningEffort     string            `json:"reasoning_effort"`
	CacheControl        *CacheControl     `json:"cache_control"`
}

type wireMessage struct {
	Role             string          `json:"role"`
	Name             string          `json:"name"`
	Content          json.RawMessage `json:"content"`
	CacheControl     *CacheControl   `json:"cache_control"`
	ToolCalls        []wireToolCall  `json:"tool_calls"`
	Refusal          *string         `json:"refusal"`
	ToolCallID       string          `json:"tool_call_id"`
	ReasoningContent *string         `json:"reasoning_content"`
	Reasoning        *string         `json:"reasoning"`
	ThinkingBlocks   []ThinkingBlock `json:"thinking_blocks"`
	ReasoningDetails json.RawMessage `json:"reasoning_details"`
	FunctionCall     *wireFunction   `json:"function_call"`
}

type wireToolCall struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Function     wireFunction    `json:"function"`
	ExtraContent json.RawMessage `json:"extra_content"`
}

type wireFunction struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

type wirePart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL *struct {
		URL    string `json:"url"`
		Detail string `json:"detail"`
	} `json:"image_url"`
	CacheControl *CacheControl `json:"cache_control"`
}

type wireTool struct {
	Type     string `json:"type"`
	Function *struct {
		Name         string          `json:"name"`
		Description  string          `json:"description"`
		Parameters   json.RawMessage `json:"parameters"`
		Strict       *bool           `json:"strict"`
		CacheControl *CacheControl   `json:"cache_control"`
	} `json:"function"`
	CacheControl *CacheControl `json:"cache_control"`
}

// ParseCanonical decodes an OpenAI chat-completions body. Every failure is a 400 *Error naming
// the offending parameter.
func ParseCanonical(body []byte) (*Chat, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, Errorf(http.StatusBadRequest, "invalid_request_body", "", "request body must be a JSON object")
	}
	var w wireChat
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, jsonError(err)
	}
	c := &Chat{
		Model: w.Model, ParallelToolCalls: w.ParallelToolCalls, Temperature: w.Temperature, TopP: w.TopP,
		TopK: w.TopK, FrequencyPenalty: w.FrequencyPenalty, PresencePenalty: w.PresencePenalty, Seed: w.Seed,
		N: 1, User: w.User, Metadata: w.Metadata, Stream: w.Stream, ReasoningEffort: w.ReasoningEffort,
		CacheControl: w.CacheControl,
	}
	if w.StreamOptions != nil {
		c.IncludeUsage = w.StreamOptions.IncludeUsage
	}
	if w.N != nil {
		if *w.N < 1 || *w.N > 128 {
			return nil, Errorf(http.StatusBadRequest, "invalid_value", "n", "n must be between 1 and 128")
		}
		c.N = *w.N
	}
	switch {
	case w.MaxCompletionTokens != nil:
		c.MaxTokens = *w.MaxCompletionTokens
	case w.MaxTokens != nil:
		c.MaxTokens = *w.MaxTokens
	}
	if (w.MaxCompletionTokens != nil || w.MaxTokens != nil) && c.MaxTokens < 1 {
		return nil, Errorf(http.StatusBadRequest, "invalid_value", "max_tokens", "max_tokens must be at least 1")
	}
	if len(w.Messages) == 0 {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "'messages' must be a non-empty array")
	}
	c.Messages = make([]Message, 0, len(w.Messages))
	for i, raw := range w.Messages {
		m, err := parseMessage(raw, i)
		if err != nil {
			return nil, err
		}
		c.Messages = append(c.Messages, m)
	}
	for i, raw := range w.Tools {
		t, err := parseTool(raw, i)
		if err != nil {
			return nil, err
		}
		c.Tools = append(c.Tools, t)
	}
	var err error
	if c.ToolChoice, err = parseToolChoice(w.ToolChoice); err != nil {
		return nil, err
	}
	if c.ResponseFormat, err = parseResponseFormat(w.ResponseFormat); err != nil {
		return nil, err
	}
	if c.Stop, err = parseStop(w.Stop); err != nil {
		return nil, err
	}
	return c, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func parseMessage(raw json.RawMessage, i int) (Message, error) {
	param := fmt.Sprintf("messages[%d]", i)
	var w wireMessage
	if err := json.Unmarshal(raw, &w); err != nil {
		if je := jsonError(err); je.Param != "" {
			je.Param = param + "." + je.Param
			return Message{}, je
		}
		return Message{}, Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a message object", param)
	}
	m := Message{Role: w.Role, Name: w.Name, CacheControl: w.CacheControl, ToolCallID: w.ToolCallID}
	switch w.Role {
	case RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool:
	case "function":
		// Deprecated OpenAI function result: treat as a tool result named by the function.
		m.Role, m.ToolCallID = RoleTool, w.Name
	case "":
		return Message{}, Errorf(http.StatusBadRequest, "missing_required_parameter", param+".role", "%s.role is required", param)
	default:
		return Message{}, Errorf(http.StatusBadRequest, "invalid_value", param+".role",
			"invalid value for %s.role: %q (expected system, developer, user, assistant or tool)", param, w.Role)
	}
	parts, err := parseContent(w.Content, param+".content")
	if err != nil {
		return Message{}, err
	}
	m.Content = parts
	if w.Refusal != nil {
		m.Refusal = *w.Refusal
	}
	for j, tc := range w.ToolCalls {
		tp := fmt.Sprintf("%s.tool_calls[%d]", param, j)
		args, err := argumentString(tc.Function.Arguments, tp+".function.arguments")
		if err != nil {
			return Message{}, err
		}
		typ := tc.Type
		if typ == "" {
			typ = "function"
		}
		if tc.Function.Name == "" {
			return Message{}, Errorf(http.StatusBadRequest, "missing_required_parameter", tp+".function.name", "%s.function.name is required", tp)
		}
		m.ToolCalls = append(m.ToolCalls, ToolCall{ID: tc.ID, Type: typ, Name: tc.Function.Name, Arguments: args, Extra: tc.ExtraContent})
	}
	if w.FunctionCall != nil && len(m.ToolCalls) == 0 {
		args, err := argumentString(w.FunctionCall.Arguments, param+".function_call.arguments")
		if err != nil {
			return Message{}, err
		}
		m.ToolCalls = []ToolCall{{ID: w.FunctionCall.Name, Type: "function", Name: w.FunctionCall.Name, Arguments: args}}
	}
	if w.ReasoningContent != nil || w.Reasoning != nil || len(w.ThinkingBlocks) > 0 || !isNull(w.ReasoningDetails) {
		r := &Reasoning{Blocks: w.ThinkingBlocks}
		if w.ReasoningContent != nil {
			r.Content = *w.ReasoningContent
		} else if w.Reasoning != nil {
			r.Content = *w.Reasoning
		}
		if !isNull(w.ReasoningDetails) {
			r.Details = w.ReasoningDetails
		}
		m.Reasoning = r
	}
	if m.Role == RoleTool && m.ToolCallID == "" {
		return Message{}, Errorf(http.StatusBadRequest, "missing_required_parameter", param+".tool_call_id", "%s.tool_call_id is required for tool messages", param)
	}
	return m, nil
}

// argumentString accepts the arguments as OpenAI sends them (a JSON-encoded string) and, as a
// courtesy, an object, which it keeps as its JSON text.
func argumentString(raw json.RawMessage, param string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a string", param)
		}
		return s, nil
	case '{':
		return string(raw), nil
	}
	return "", Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a JSON-encoded string", param)
}

func parseContent(raw json.RawMessage, param string) ([]Part, error) {
	if isNull(raw) {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a string or an array of parts", param)
		}
		return []Part{{Type: PartText, Text: s}}, nil
	case '[':
	default:
		return nil, Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a string or an array of parts", param)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(raw, &raws); err != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a string or an array of parts", param)
	}
	parts := make([]Part, 0, len(raws))
	for j, pr := range raws {
		pp := fmt.Sprintf("%s[%d]", param, j)
		if len(pr) == 0 || pr[0] == '"' {
			// Some clients send an array of strings.
			var s string
			if json.Unmarshal(pr, &s) != nil {
				return nil, Errorf(http.StatusBadRequest, "invalid_type", pp, "%s must be a content part object", pp)
			}
			parts = append(parts, Part{Type: PartText, Text: s})
			continue
		}
		var wp wirePart
		if err := json.Unmarshal(pr, &wp); err != nil {
			return nil, Errorf(http.StatusBadRequest, "invalid_type", pp, "%s must be a content part object", pp)
		}
		p := Part{Type: wp.Type, CacheControl: wp.CacheControl}
		switch wp.Type {
		case PartText, "input_text", "output_text":
			p.Type, p.Text = PartText, wp.Text
		case PartImageURL:
			if wp.ImageURL == nil || wp.ImageURL.URL == "" {
				return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", pp+".image_url.url", "%s.image_url.url is required", pp)
			}
			p.Image = &Image{URL: wp.ImageURL.URL, Detail: wp.ImageURL.Detail}
		case "":
			return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", pp+".type", "%s.type is required", pp)
		default:
			p.Raw = pr
		}
		parts = append(parts, p)
	}
	return parts, nil
}

func parseTool(raw json.RawMessage, i int) (Tool, error) {
	param := fmt.Sprintf("tools[%d]", i)
	var w wireTool
	if err := json.Unmarshal(raw, &w); err != nil {
		return Tool{}, Errorf(http.StatusBadRequest, "invalid_type", param, "%s must be a tool object", param)
	}
	if w.Type != "" && w.Type != "function" {
		return Tool{}, Errorf(http.StatusBadRequest, "invalid_value", param+".type", "unsupported tool type %q: only function tools are supported", w.Type)
	}
	if w.Function == nil || w.Function.Name == "" {
		return Tool{}, Errorf(http.StatusBadRequest, "missing_required_parameter", param+".function.name", "%s.function.name is required", param)
	}
	t := Tool{Type: "function", Name: w.Function.Name, Description: w.Function.Description, Strict: w.Function.Strict, CacheControl: w.CacheControl}
	if !isNull(w.Function.Parameters) {
		if w.Function.Parameters[0] != '{' {
			return Tool{}, Errorf(http.StatusBadRequest, "invalid_type", param+".function.parameters", "%s.function.parameters must be a JSON schema object", param)
		}
		t.Parameters = w.Function.Parameters
	}
	if t.CacheControl == nil {
		t.CacheControl = w.Function.CacheControl
	}
	return t, nil
}

func parseToolChoice(raw json.RawMessage) (*ToolChoice, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		switch s {
		case ToolChoiceAuto, ToolChoiceNone, ToolChoiceRequired:
			return &ToolChoice{Mode: s}, nil
		}
		return nil, Errorf(http.StatusBadRequest, "invalid_value", "tool_choice", "invalid tool_choice %q (expected none, auto, required or a function)", s)
	}
	var w struct {
		Type     string `json:"type"`
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", "tool_choice", "tool_choice must be a string or an object")
	}
	name := w.Name
	if w.Function != nil && w.Function.Name != "" {
		name = w.Function.Name
	}
	switch {
	case (w.Type == "function" || w.Type == "") && name != "":
		return &ToolChoice{Mode: ToolChoiceFunction, Name: name}, nil
	case w.Type == ToolChoiceAuto || w.Type == ToolChoiceNone || w.Type == ToolChoiceRequired:
		return &ToolChoice{Mode: w.Type}, nil
	case w.Type == "allowed_tools":
		// The subset is not expressible everywhere; keep the mode it asks for.
		var at struct {
			AllowedTools struct {
				Mode string `json:"mode"`
			} `json:"allowed_tools"`
		}
		_ = json.Unmarshal(raw, &at)
		if at.AllowedTools.Mode == ToolChoiceRequired {
			return &ToolChoice{Mode: ToolChoiceRequired}, nil
		}
		return &ToolChoice{Mode: ToolChoiceAuto}, nil
	}
	return nil, Errorf(http.StatusBadRequest, "invalid_value", "tool_choice", "tool_choice object must name a function")
}

func parseResponseFormat(raw json.RawMessage) (*ResponseFormat, error) {
	if isNull(raw) {
		return nil, nil
	}
	var w struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Strict      *bool           `json:"strict"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", "response_format", "response_format must be an object")
	}
	switch w.Type {
	case "text":
		return nil, nil
	case FormatJSONObject:
		return &ResponseFormat{Type: FormatJSONObject}, nil
	case FormatJSONSchema:
		if w.JSONSchema == nil {
			return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "response_format.json_schema", "response_format.json_schema is required for type json_schema")
		}
		rf := &ResponseFormat{Type: FormatJSONSchema, Name: w.JSONSchema.Name, Description: w.JSONSchema.Description, Strict: w.JSONSchema.Strict}
		if !isNull(w.JSONSchema.Schema) {
			if w.JSONSchema.Schema[0] != '{' {
				return nil, Errorf(http.StatusBadRequest, "invalid_type", "response_format.json_schema.schema", "response_format.json_schema.schema must be an object")
			}
			rf.Schema = w.JSONSchema.Schema
		}
		return rf, nil
	}
	return nil, Errorf(http.StatusBadRequest, "invalid_value", "response_format.type", "invalid response_format.type %q (expected text, json_object or json_schema)", w.Type)
}

func parseStop(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, Errorf(http.StatusBadRequest, "invalid_type", "stop", "stop must be a string or an array of strings")
		}
		if s == "" {
			return nil, nil
		}
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", "stop", "stop must be a string or an array of strings")
	}
	return list, nil
}

// Text concatenates the text parts of the message.
func (m *Message) Text() string {
	if len(m.Content) == 1 {
		return m.Content[0].Text
	}
	var b strings.Builder
	for _, p := range m.Content {
		if p.Type == PartText {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// IsSystem reports whether the message is a system or developer instruction.
func (m *Message) IsSystem() bool { return m.Role == RoleSystem || m.Role == RoleDeveloper }

// SplitSystem separates system/developer messages (at any position, in order) from the
// conversation, as Anthropic, Bedrock and Gemini want them. A message-level cache_control is
// moved onto the message's last system part.
func (c *Chat) SplitSystem() (system []Part, rest []Message) {
	for _, m := range c.Messages {
		if !m.IsSystem() {
			rest = append(rest, m)
			continue
		}
		start := len(system)
		for _, p := range m.Content {
			if p.Type == PartText {
				system = append(system, p)
			}
		}
		if m.CacheControl != nil && len(system) > start && system[len(system)-1].CacheControl == nil {
			system[len(system)-1].CacheControl = m.CacheControl
		}
	}
	return system, rest
}

// DecodeBase64 decodes standard or URL-safe base64, padded or not.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}
