package providers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
)

// ChatRequest is the gateway's view of an OpenAI chat-completions body: the fields it needs to
// validate, route, price and meter. Everything else stays in Body as the caller wrote it.
type ChatRequest struct {
	Body []byte `json:"-"`

	Model string `json:"model"`
	// Messages and Tools stay raw: the gateway only checks their shape, and decoding every
	// message on the hot path would cost more than everything else the request needs.
	Messages            json.RawMessage `json:"messages"`
	Stream              bool            `json:"stream"`
	StreamOptions       *StreamOptions  `json:"stream_options"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	N                   *int64          `json:"n"`
	Tools               json.RawMessage `json:"tools"`
	ResponseFormat      json.RawMessage `json:"response_format"`
	PromptCacheKey      string          `json:"prompt_cache_key"`
}

// StreamOptions is OpenAI's stream_options object.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// OutputCap is the caller's output limit, or 0 when none was given.
func (r *ChatRequest) OutputCap() int64 {
	if r.MaxCompletionTokens != nil {
		return *r.MaxCompletionTokens
	}
	if r.MaxTokens != nil {
		return *r.MaxTokens
	}
	return 0
}

// WantsUsage reports whether the client asked to see the usage chunk of a stream.
func (r *ChatRequest) WantsUsage() bool {
	return r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// ParseChatRequest validates a chat-completions body and returns the typed view. Every failure
// is a 400 *Error naming the offending parameter, never a panic.
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, Errorf(http.StatusBadRequest, "invalid_request_body", "", "request body is empty; expected a JSON object")
	}
	if trimmed[0] != '{' {
		return nil, Errorf(http.StatusBadRequest, "invalid_request_body", "", "request body must be a JSON object")
	}
	req := &ChatRequest{Body: body}
	if err := json.Unmarshal(body, req); err != nil {
		return nil, jsonError(err)
	}
	if e := rejectCaseVariants(body); e != nil {
		return nil, e
	}
	if req.Model == "" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "model", "you must provide a model parameter")
	}
	if len(req.Messages) == 0 || string(req.Messages) == "null" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "you must provide a 'messages' parameter")
	}
	if req.Messages[0] != '[' {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", "messages", "invalid type for 'messages': expected an array")
	}
	n := 0
	if err := EachElement(req.Messages, func(i int, v []byte) bool {
		n++
		return v[0] == '{'
	}); err != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", fmt.Sprintf("messages[%d]", n-1), "messages[%d] must be an object", n-1)
	}
	if n == 0 {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "'messages' must be a non-empty array")
	}
	if len(req.Tools) > 0 && string(req.Tools) != "null" && req.Tools[0] != '[' {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", "tools", "invalid type for 'tools': expected an array")
	}
	if v := req.OutputCap(); v < 0 || (req.MaxCompletionTokens != nil && *req.MaxCompletionTokens < 1) || (req.MaxTokens != nil && *req.MaxTokens < 1) {
		return nil, Errorf(http.StatusBadRequest, "invalid_value", "max_tokens", "max_tokens must be at least 1")
	}
	if req.N != nil && (*req.N < 1 || *req.N > 128) {
		return nil, Errorf(http.StatusBadRequest, "invalid_value", "n", "n must be between 1 and 128")
	}
	return req, nil
}

func jsonError(err error) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		param := te.Field
		return Errorf(http.StatusBadRequest, "invalid_type", param, "invalid type for '%s': expected %s, got %s", param, jsonKind(te.Type), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON (at byte %d): %s", se.Offset, se.Error())
	}
	return Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON: %s", err.Error())
}

// jsonKind names a Go type the way an API user thinks of JSON.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Name() == "RawMessage" {
			return "a JSON value"
		}
		return "an array"
	default:
		return "an object"
	}
}

// viewFields are the keys ChatRequest reads. encoding/json matches keys case-insensitively,
// but providers do not: {"max_tokens":100000,"Max_Tokens":1} would be read here as a cap of 1
// and upstream as 100000. A case variant of one of these keys is rejected, as OpenAI rejects
// any unrecognized argument, so the gateway and the upstream always read the same request.
var viewFields = []string{"model", "messages", "stream", "stream_options", "max_tokens",
	"max_completion_tokens", "n", "tools", "response_format", "prompt_cache_key"}

func rejectCaseVariants(body []byte) *Error {
	var bad *Error
	_ = EachTopLevelKey(body, func(quoted []byte) {
		if bad != nil || len(quoted) < 2 {
			return
		}
		key := string(quoted[1 : len(quoted)-1])
		if bytes.IndexByte(quoted, '\\') >= 0 {
			if json.Unmarshal(quoted, &key) != nil {
				return
			}
		}
		for _, f := range viewFields {
			if key != f && strings.EqualFold(key, f) {
				bad = Errorf(http.StatusBadRequest, "unknown_parameter", key, "Unrecognized request argument supplied: %s", key)
				return
			}
		}
	})
	return bad
}
