package simulated

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// wireRequest is the part of a chat-completions body the simulator reads.
type wireRequest struct {
	Model               *string             `json:"model"`
	Messages            []wireMessage       `json:"messages"`
	Stream              *bool               `json:"stream"`
	StreamOptions       *wireStreamOptions  `json:"stream_options"`
	MaxTokens           *int64              `json:"max_tokens"`
	MaxCompletionTokens *int64              `json:"max_completion_tokens"`
	N                   *int64              `json:"n"`
	Temperature         *float64            `json:"temperature"`
	Tools               json.RawMessage     `json:"tools"`
	ToolChoice          json.RawMessage     `json:"tool_choice"`
	ParallelToolCalls   *bool               `json:"parallel_tool_calls"`
	ResponseFormat      *wireResponseFormat `json:"response_format"`
	PromptCacheKey      *string             `json:"prompt_cache_key"`
}

type wireStreamOptions struct {
	IncludeUsage       bool  `json:"include_usage"`
	IncludeObfuscation *bool `json:"include_obfuscation"`
}

type wireResponseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
	} `json:"json_schema"`
}

type wireMessage struct {
	Role       *string         `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []wireToolCall  `json:"tool_calls"`
	ToolCallID *string         `json:"tool_call_id"`
}

type wireToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type wirePart struct {
	Type     string  `json:"type"`
	Text     *string `json:"text"`
	Refusal  string  `json:"refusal"`
	ImageURL *struct {
		URL string `json:"url"`
	} `json:"image_url"`
	InputAudio json.RawMessage `json:"input_audio"`
	File       json.RawMessage `json:"file"`
}

type wireTool struct {
	Type     string `json:"type"`
	Function *struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// parsed is the validated request plus its canonical prompt serialization.
type parsed struct {
	model      string
	stream     bool
	usageChunk bool // stream_options.include_usage
	obfuscate  bool
	outputCap  int64 // 0: none
	choices    int   // n: answers generated, each billed (1 when absent)
	tools      []wireTool
	toolChoice string // "", "none", "auto", "required", or "function"
	namedTool  string
	parallel   bool
	format     string // "", "text", "json_object", "json_schema"
	schema     json.RawMessage

	cacheKey string // prompt_cache_key
	// sampled: temperature absent, null or above 0; draw is this call's sample under
	// Options.Sampling (0: the deterministic answer).
	sampled bool
	draw    uint64

	lastRole   string
	lastUser   []byte // text of the last user message (may alias st.canon)
	prompt     []byte // the whole prompt's text (the canonical serialization), for recall
	lastTool   []byte // content of the last message when it is a tool result
	promptToks int
}

// reqState is per-request scratch memory, pooled.
type reqState struct {
	canon     []byte
	msgStarts []int
	bounds    []bound
	out       []byte
	text      []byte // extracted text of the last user message when not a plain string
	tool      []byte
	answer    []byte
}

const imagePlaceholderBytes = 85 * 4

var validRoles = [...]string{"system", "developer", "user", "assistant", "tool"}

func invalidJSON() *providers.Error {
	return &providers.Error{Status: http.StatusBadRequest, Type: "invalid_request_error",
		Message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"}
}

func badRequest(code, param, format string, args ...any) *providers.Error {
	return &providers.Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Param: param,
		Message: fmt.Sprintf(format, args...)}
}

func missingParam(param string) *providers.Error {
	return badRequest("missing_required_parameter", param, "Missing required parameter: '%s'.", param)
}

// parse decodes and validates body like the OpenAI API and fills st.canon.
func parse(body []byte, st *reqState, p *parsed) *providers.Error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return invalidJSON()
	}
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return decodeError(body, err)
	}
	if w.Model == nil || *w.Model == "" {
		return &providers.Error{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Message: "you must provide a model parameter"}
	}
	p.model = *w.Model
	if w.PromptCacheKey != nil {
		p.cacheKey = *w.PromptCacheKey
	}
	if w.Messages == nil {
		return missingParam("messages")
	}
	if len(w.Messages) == 0 {
		return badRequest("empty_array", "messages", "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	p.stream = w.Stream != nil && *w.Stream
	if w.StreamOptions != nil {
		if !p.stream {
			return badRequest("", "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		p.usageChunk = w.StreamOptions.IncludeUsage
		p.obfuscate = w.StreamOptions.IncludeObfuscation == nil || *w.StreamOptions.IncludeObfuscation
	} else {
		p.obfuscate = true
	}
	for _, c := range [...]struct {
		v    *int64
		name string
	}{{w.MaxTokens, "max_tokens"}, {w.MaxCompletionTokens, "max_completion_tokens"}} {
		if c.v != nil && *c.v < 1 {
			return badRequest("integer_below_min_value", c.name, "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", c.name, *c.v)
		}
	}
	p.choices = 1
	if w.N != nil {
		p.choices = int(*w.N)
	}
	if w.MaxCompletionTokens != nil {
		p.outputCap = *w.MaxCompletionTokens
	} else if w.MaxTokens != nil {
		p.outputCap = *w.MaxTokens
	}
	p.sampled = w.Temperature == nil || *w.Temperature != 0
	if w.N != nil && (*w.N < 1 || *w.N > 128) {
		return badRequest("integer_out_of_range", "n", "Invalid 'n': integer out of range. Expected a value between 1 and 128, but got %d instead.", *w.N)
	}
	if err := parseTools(&w, p); err != nil {
		return err
	}
	if rf := w.ResponseFormat; rf != nil {
		switch rf.Type {
		case "text", "json_object":
		case "json_schema":
			if rf.JSONSchema == nil {
				return missingParam("response_format.json_schema")
			}
			p.schema = rf.JSONSchema.Schema
		default:
			return badRequest("invalid_value", "response_format.type", "Invalid value: '%s'. Supported values are: 'text', 'json_object', and 'json_schema'.", rf.Type)
		}
		p.format = rf.Type
	}

	// Canonical prompt: tools first, then each message.
	canon := st.canon[:0]
	if len(w.Tools) > 0 && !isNull(w.Tools) {
		canon = append(canon, w.Tools...)
	}
	starts := st.msgStarts[:0]
	var (
		pendingIdx  = -1 // index of the assistant message whose tool calls await results
		pendingIDs  []string
		answered    []bool
		lastUserMsg = -1
		lastUserA   int
		lastUserB   int
		lastUserRaw json.RawMessage
		lastUserTxt bool // canon[lastUserA:lastUserB] is exactly the text
	)
	for i := range w.Messages {
		m := &w.Messages[i]
		if m.Role == nil {
			return missingParam(fmt.Sprintf("messages[%d].role", i))
		}
		role := *m.Role
		ok := false
		for _, r := range validRoles {
			if r == role {
				ok = true
				break
			}
		}
		if !ok {
			return badRequest("invalid_value", fmt.Sprintf("messages[%d].role", i), "Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", role)
		}
		// Tool-call pairing, as OpenAI enforces it.
		if role == "tool" {
			if pendingIdx < 0 {
				return badRequest("", fmt.Sprintf("messages.[%d].role", i), "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.")
			}
			if m.ToolCallID == nil {
				return missingParam(fmt.Sprintf("messages[%d].tool_call_id", i))
			}
			found := false
			for j, id := range pendingIDs {
				if id == *m.ToolCallID && !answered[j] {
					answered[j], found = true, true
					break
				}
			}
			if !found {
				return badRequest("", fmt.Sprintf("messages.[%d].tool_call_id", i), "Invalid parameter: 'tool_call_id' of '%s' not found in 'tool_calls' of previous message.", *m.ToolCallID)
			}
		} else {
			if err := unanswered(pendingIdx, pendingIDs, answered); err != nil {
				return err
			}
			pendingIdx, pendingIDs, answered = -1, pendingIDs[:0], answered[:0]
			if role == "assistant" && len(m.ToolCalls) > 0 {
				pendingIdx = i
				for _, tc := range m.ToolCalls {
					pendingIDs = append(pendingIDs, tc.ID)
					answered = append(answered, false)
				}
			}
		}
		if role != "assistant" && (len(m.Content) == 0 || isNull(m.Content)) {
			return missingParam(fmt.Sprintf("messages[%d].content", i))
		}

		starts = append(starts, len(canon))
		canon = append(canon, role...)
		canon = append(canon, '\n')
		a := len(canon)
		var plain bool
		var err *providers.Error
		canon, plain, err = appendContent(canon, m.Content, i)
		if err != nil {
			return err
		}
		b := len(canon)
		for _, tc := range m.ToolCalls {
			canon = append(canon, tc.Function.Name...)
			canon = append(canon, '\n')
			canon = append(canon, tc.Function.Arguments...)
			canon = append(canon, '\n')
		}
		canon = append(canon, '\n')
		if role == "user" {
			lastUserMsg, lastUserA, lastUserB, lastUserRaw, lastUserTxt = i, a, b, m.Content, plain
		}
		if i == len(w.Messages)-1 {
			p.lastRole = role
			if role == "tool" {
				st.tool = append(st.tool[:0], canon[a:b]...)
				p.lastTool = st.tool
			}
		}
	}
	if err := unanswered(pendingIdx, pendingIDs, answered); err != nil {
		return err
	}
	st.canon, st.msgStarts = canon, starts
	p.prompt = canon
	if lastUserMsg >= 0 {
		if lastUserTxt {
			p.lastUser = canon[lastUserA:lastUserB]
		} else {
			st.text = appendText(st.text[:0], lastUserRaw)
			p.lastUser = st.text
		}
	}
	p.promptToks = (len(canon)+3)/4 + 3*len(w.Messages)
	return nil
}

func unanswered(idx int, ids []string, answered []bool) *providers.Error {
	if idx < 0 {
		return nil
	}
	var missing []string
	for j, ok := range answered {
		if !ok {
			missing = append(missing, ids[j])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return badRequest("", fmt.Sprintf("messages.[%d].role", idx), "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: %s", strings.Join(missing, ", "))
}

func parseTools(w *wireRequest, p *parsed) *providers.Error {
	if len(w.Tools) > 0 && !isNull(w.Tools) {
		if w.Tools[0] != '[' {
			return badRequest("invalid_type", "tools", "Invalid type for 'tools': expected an array of objects, but got %s instead.", jsonKind(w.Tools))
		}
		if err := json.Unmarshal(w.Tools, &p.tools); err != nil {
			return badRequest("invalid_type", "tools", "Invalid type for 'tools': expected an array of objects.")
		}
		for i, t := range p.tools {
			if t.Type == "function" && (t.Function == nil || t.Function.Name == "") {
				return missingParam(fmt.Sprintf("tools[%d].function.name", i))
			}
		}
	}
	p.parallel = w.ParallelToolCalls == nil || *w.ParallelToolCalls
	tc := w.ToolChoice
	if len(tc) == 0 || isNull(tc) {
		return nil
	}
	if len(p.tools) == 0 {
		return badRequest("", "tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
	}
	switch tc[0] {
	case '"':
		var s string
		_ = json.Unmarshal(tc, &s)
		switch s {
		case "none", "auto", "required":
			p.toolChoice = s
		default:
			return badRequest("invalid_value", "tool_choice", "Invalid value: '%s'. Supported values are: 'none', 'auto', and 'required'.", s)
		}
	case '{':
		var o struct {
			Type     string `json:"type"`
			Function *struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(tc, &o); err != nil {
			return badRequest("invalid_type", "tool_choice", "Invalid type for 'tool_choice'.")
		}
		switch {
		case o.Type == "function" && o.Function != nil && o.Function.Name != "":
			found := false
			for _, t := range p.tools {
				if t.Function != nil && t.Function.Name == o.Function.Name {
					found = true
				}
			}
			if !found {
				return badRequest("invalid_value", "tool_choice", "Invalid value for 'tool_choice': function '%s' not found in 'tools'.", o.Function.Name)
			}
			p.toolChoice, p.namedTool = "function", o.Function.Name
		case o.Type == "function":
			return missingParam("tool_choice.function.name")
		default:
			p.toolChoice = "auto" // allowed_tools and friends: behave like auto
		}
	default:
		return badRequest("invalid_type", "tool_choice", "Invalid type for 'tool_choice': expected a string or an object.")
	}
	return nil
}

// appendContent appends the canonical text of a content value. plain reports that exactly
// the text was appended (string content, or text-only parts).
func appendContent(dst []byte, raw json.RawMessage, msg int) ([]byte, bool, *providers.Error) {
	if len(raw) == 0 || isNull(raw) {
		return dst, true, nil
	}
	switch raw[0] {
	case '"':
		if bytes.IndexByte(raw, '\\') < 0 {
			return append(dst, raw[1:len(raw)-1]...), true, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return dst, false, invalidJSON()
		}
		return append(dst, s...), true, nil
	case '[':
		var parts []wirePart
		if err := json.Unmarshal(raw, &parts); err != nil {
			return dst, false, badRequest("invalid_type", fmt.Sprintf("messages[%d].content", msg), "Invalid type for 'messages[%d].content': expected one of a string or array of objects.", msg)
		}
		plain := true
		for j, pt := range parts {
			param := fmt.Sprintf("messages[%d].content[%d]", msg, j)
			switch pt.Type {
			case "text":
				if pt.Text == nil {
					return dst, false, missingParam(param + ".text")
				}
				dst = append(dst, *pt.Text...)
			case "refusal":
				dst = append(dst, pt.Refusal...)
			case "image_url":
				if pt.ImageURL == nil || pt.ImageURL.URL == "" {
					return dst, false, missingParam(param + ".image_url")
				}
				dst = appendPlaceholder(dst, "image", fnvString(fnvOffset, pt.ImageURL.URL))
				plain = false
			case "input_audio":
				dst = appendPlaceholder(dst, "audio", fnvBytes(fnvOffset, pt.InputAudio))
				plain = false
			case "file":
				dst = appendPlaceholder(dst, "file", fnvBytes(fnvOffset, pt.File))
				plain = false
			case "":
				return dst, false, missingParam(param + ".type")
			default:
				return dst, false, badRequest("invalid_value", param+".type", "Invalid value: '%s'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'.", pt.Type)
			}
		}
		return dst, plain, nil
	default:
		return dst, false, badRequest("invalid_type", fmt.Sprintf("messages[%d].content", msg), "Invalid type for 'messages[%d].content': expected one of a string or array of objects, but got %s instead.", msg, jsonKind(raw))
	}
}

// appendText appends only the text of a content value (no placeholders).
func appendText(dst []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return dst
	}
	if raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		return append(dst, s...)
	}
	var parts []wirePart
	_ = json.Unmarshal(raw, &parts)
	for _, pt := range parts {
		if pt.Type == "text" && pt.Text != nil {
			dst = append(dst, *pt.Text...)
		}
	}
	return dst
}

// appendPlaceholder appends exactly imagePlaceholderBytes bytes standing for a non-text part;
// the content hash keeps different images from sharing a cached prefix.
func appendPlaceholder(dst []byte, kind string, h uint64) []byte {
	start := len(dst)
	dst = append(dst, '<')
	dst = append(dst, kind...)
	dst = append(dst, ':')
	dst = appendHex(dst, h)
	dst = append(dst, '>')
	for len(dst)-start < imagePlaceholderBytes {
		dst = append(dst, '.')
	}
	return dst
}

func isNull(raw []byte) bool { return len(raw) == 4 && string(raw) == "null" }

func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// decodeError maps an encoding/json failure to OpenAI's 400 wording.
func decodeError(body []byte, err error) *providers.Error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return invalidJSON()
	}
	field := te.Field
	if field == "messages" || strings.HasPrefix(field, "messages.") {
		// Locate the offending message for a precise param.
		var top struct {
			Messages []json.RawMessage `json:"messages"`
		}
		if json.Unmarshal(body, &top) == nil {
			for i, m := range top.Messages {
				if len(m) == 0 || m[0] != '{' {
					return badRequest("invalid_type", fmt.Sprintf("messages[%d]", i), "Invalid type for 'messages[%d]': expected an object, but got %s instead.", i, jsonKind(m))
				}
				var wm wireMessage
				if e := json.Unmarshal(m, &wm); e != nil {
					var te2 *json.UnmarshalTypeError
					if errors.As(e, &te2) && te2.Field != "" {
						param := fmt.Sprintf("messages[%d].%s", i, te2.Field)
						return badRequest("invalid_type", param, "Invalid type for '%s': expected %s, but got %s instead.", param, expectKind(te2), te2.Value)
					}
				}
			}
		} else {
			return badRequest("invalid_type", "messages", "Invalid type for 'messages': expected an array, but got %s instead.", te.Value)
		}
	}
	return badRequest("invalid_type", field, "Invalid type for '%s': expected %s, but got %s instead.", field, expectKind(te), te.Value)
}

func expectKind(te *json.UnmarshalTypeError) string {
	t := te.Type
	for t != nil && t.Kind().String() == "ptr" {
		t = t.Elem()
	}
	if t == nil {
		return "a value"
	}
	switch t.Kind().String() {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "slice", "array":
		return "an array"
	default:
		return "an object"
	}
}
