package providers

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"
)

// ChatRequest is the gateway's view of an OpenAI chat-completions body: the fields it needs to
// validate, route, price and meter. Everything else stays in Body as the caller wrote it.
type ChatRequest struct {
	Body []byte `json:"-"`

	Model string `json:"model"`
	// Messages and Tools stay raw: the gateway only checks their shape, and decoding every
	// message on the hot path would cost more than everything else the request needs.
	Messages json.RawMessage `json:"messages"`
	// MessagesAt is where Messages starts in Body.
	MessagesAt          int             `json:"-"`
	Stream              bool            `json:"stream"`
	StreamOptions       *StreamOptions  `json:"stream_options"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	N                   *int64          `json:"n"`
	Tools               json.RawMessage `json:"tools"`
	ResponseFormat      json.RawMessage `json:"response_format"`
	PromptCacheKey      string          `json:"prompt_cache_key"`

	// ProviderRefs are the image URLs and file ids in the messages that name storage on the
	// provider's side (gs://…, s3://…, file-…): the route refuses them unless the operator
	// allowed them for the workspace.
	ProviderRefs []string `json:"-"`
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
//
// The body is validated by a fast scanner and only the view's fields are decoded, from their
// own spans: decoding the whole body with encoding/json cost 4.5 ms on a 100k-token
// conversation, more than everything else the gateway does to it. Messages, Tools and
// ResponseFormat alias the body.
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, Errorf(http.StatusBadRequest, "invalid_request_body", "", "request body is empty; expected a JSON object")
	}
	if trimmed[0] != '{' {
		return nil, Errorf(http.StatusBadRequest, "invalid_request_body", "", "request body must be a JSON object")
	}
	if !validJSON(body) {
		return nil, syntaxError(body)
	}
	req := &ChatRequest{Body: body}
	var bad *Error
	_ = EachTopLevel(body, func(quoted []byte, v Span) bool {
		key := string(quoted[1 : len(quoted)-1])
		if bytes.IndexByte(quoted, '\\') >= 0 && json.Unmarshal(quoted, &key) != nil {
			return true
		}
		bad = req.setField(key, body[v.Start:v.End:v.End], v.Start)
		return bad == nil
	})
	if bad != nil {
		return nil, bad
	}
	if req.Model == "" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "model", "you must provide a model parameter")
	}
	if err := CheckIdentifier("model", req.Model); err != nil {
		return nil, err
	}
	if len(req.Messages) == 0 || string(req.Messages) == "null" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "you must provide a 'messages' parameter")
	}
	if req.Messages[0] != '[' {
		return nil, Errorf(http.StatusBadRequest, "invalid_type", "messages", "invalid type for 'messages': expected an array")
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
	n, refs, bad := checkMessages(req.Messages)
	if bad != nil {
		return nil, bad
	}
	if n == 0 {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "messages", "'messages' must be a non-empty array")
	}
	req.ProviderRefs = refs
	return req, nil
}

// setField decodes one top-level member into the view. As with encoding/json, a repeated key
// is decoded again over the earlier value. A case variant of a field the view reads is
// rejected: encoding/json would match it case-insensitively, providers do not, and
// {"max_tokens":100000,"Max_Tokens":1} must not be read here as a cap of 1 and upstream as
// 100000. OpenAI rejects any unrecognized argument the same way.
func (r *ChatRequest) setField(key string, raw []byte, at int) *Error {
	var dst any
	switch key {
	case "model":
		// The common case, a plain string, needs no decoding; escapes and invalid UTF-8
		// (which encoding/json replaces with U+FFFD) take the decoder.
		if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
			r.Model = string(raw[1 : len(raw)-1])
			return nil
		}
		dst = &r.Model
	case "messages":
		r.Messages = raw
		r.MessagesAt = at
		return nil
	case "tools":
		r.Tools = raw
		return nil
	case "response_format":
		r.ResponseFormat = raw
		return nil
	case "stream":
		dst = &r.Stream
	case "stream_options":
		dst = &r.StreamOptions
	case "max_tokens":
		dst = &r.MaxTokens
	case "max_completion_tokens":
		dst = &r.MaxCompletionTokens
	case "n":
		dst = &r.N
	case "prompt_cache_key":
		dst = &r.PromptCacheKey
	default:
		for _, f := range viewFields {
			if strings.EqualFold(key, f) {
				return Errorf(http.StatusBadRequest, "unknown_parameter", key, "Unrecognized request argument supplied: %s", key)
			}
		}
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			param := key
			if te.Field != "" {
				param += "." + te.Field
			}
			return Errorf(http.StatusBadRequest, "invalid_type", param, "invalid type for '%s': expected %s, got %s", param, jsonKind(te.Type), te.Value)
		}
		return jsonError(err)
	}
	return nil
}

// syntaxError describes why body is not JSON. Only bad requests pay for encoding/json's
// precise message.
func syntaxError(body []byte) *Error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return jsonError(err)
	}
	return Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
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

// viewFields are the keys ChatRequest reads.
var viewFields = []string{"model", "messages", "stream", "stream_options", "max_tokens",
	"max_completion_tokens", "n", "tools", "response_format", "prompt_cache_key"}
