package providers

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"reflect"
	"strconv"
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
	// ServiceTier is the processing tier asked for (OpenAI's service_tier); it changes the
	// price of the call.
	ServiceTier string `json:"service_tier"`
	TopLogprobs *int64 `json:"top_logprobs"`
	// Options a provider bills beyond text tokens, raw as sent (nil when absent): audio
	// output (modalities, audio), a fee per web search (web_search_options) and OpenRouter's
	// plugins. The meter refuses those the catalog cannot price (catalog.FindUnpricedOption).
	Modalities       json.RawMessage `json:"modalities"`
	Audio            json.RawMessage `json:"audio"`
	WebSearchOptions json.RawMessage `json:"web_search_options"`
	Plugins          json.RawMessage `json:"plugins"`

	// ProviderRefs are the image URLs and file ids in the messages that name storage on the
	// provider's side (gs://…, s3://…, file-…): the route refuses them unless the operator
	// allowed them for the workspace.
	ProviderRefs []string `json:"-"`
}

// Sane ranges for the numbers the gateway reads. Every bound is far above what any model
// accepts, so nothing legitimate is refused, and far below where reservation arithmetic
// could overflow (reservations saturate anyway: see catalog.MulSat).
const (
	// MaxOutputTokensLimit bounds every output cap: max_tokens, max_completion_tokens,
	// max_output_tokens, a thinking budget. 2^24 tokens is over 100 times the largest output
	// any model offers.
	MaxOutputTokensLimit = 1 << 24
	// MaxChoices bounds n, as OpenAI does.
	MaxChoices = 128
	// MaxTopLogprobs bounds top_logprobs, as OpenAI does.
	MaxTopLogprobs = 20
)

// floatRanges are the sampling parameters the adapters read (and clamp or translate), with
// OpenAI's ranges; top_k is not OpenAI's but several clients send it for Claude and Gemini.
var floatRanges = map[string][2]float64{
	"temperature":       {0, 2},
	"top_p":             {0, 1},
	"frequency_penalty": {-2, 2},
	"presence_penalty":  {-2, 2},
	"top_k":             {0, 1 << 31},
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
	if err := CheckRange("max_tokens", req.MaxTokens, 1, MaxOutputTokensLimit); err != nil {
		return nil, err
	}
	if err := CheckRange("max_completion_tokens", req.MaxCompletionTokens, 1, MaxOutputTokensLimit); err != nil {
		return nil, err
	}
	if err := CheckRange("n", req.N, 1, MaxChoices); err != nil {
		return nil, err
	}
	if err := CheckRange("top_logprobs", req.TopLogprobs, 0, MaxTopLogprobs); err != nil {
		return nil, err
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

// The common shapes of the scalar fields every request carries (a bare true or false, a
// small integer, {"include_usage":true}) are read without encoding/json, whose reflection was
// the parse's largest cost on a short request. Anything else (null, exponents, escapes,
// out-of-range numbers, wrong types) takes encoding/json, so the result and the errors are
// its own; FuzzParseChatRequest compares the two on every input.

// plainBool reads a bare JSON true or false.
func plainBool(raw []byte) (v, ok bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// setPlainInt sets *dst from an integer plainDigits reads, with an optional minus sign, as
// encoding/json would: into the value dst already points to, or a new one.
func setPlainInt(dst **int64, raw []byte) bool {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	var v int64
	if !plainDigits(digits, &v) {
		return false
	}
	if len(digits) < len(raw) {
		v = -v
	}
	if *dst == nil {
		*dst = new(int64)
	}
	**dst = v
	return true
}

// setPlainStreamOptions reads a stream_options object whose members all have unescaped keys
// and true, false or null values (case variants of its keys are already refused). As with
// encoding/json, a repeated stream_options is decoded over the earlier one and unknown members
// are ignored.
func (r *ChatRequest) setPlainStreamOptions(raw []byte) bool {
	usage, seen, plain := false, false, true
	err := EachTopLevel(raw, func(key []byte, v Span) bool {
		val := raw[v.Start:v.End]
		if bytes.IndexByte(key, '\\') >= 0 {
			plain = false
		} else if b, ok := plainBool(val); ok {
			if string(key) == `"include_usage"` {
				usage, seen = b, true
			}
		} else if string(val) != "null" {
			plain = false // a number, string, array or object: encoding/json's type check
		}
		return plain
	})
	if err != nil || !plain {
		return false
	}
	if r.StreamOptions == nil {
		r.StreamOptions = new(StreamOptions)
	}
	if seen {
		r.StreamOptions.IncludeUsage = usage
	}
	return true
}

// CheckRange is the 400 for an integer parameter outside [lo, hi]; nil when v is unset or in
// range.
func CheckRange(param string, v *int64, lo, hi int64) *Error {
	if v == nil || (*v >= lo && *v <= hi) {
		return nil
	}
	return Errorf(http.StatusBadRequest, "invalid_value", param, "%s must be between %d and %d, got %d", param, lo, hi, *v)
}

// Choices is how many answers the request asks for (n), at least 1.
func (r *ChatRequest) Choices() int64 {
	if r.N != nil && *r.N > 1 {
		return *r.N
	}
	return 1
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
	case "modalities":
		r.Modalities = raw
		return nil
	case "audio":
		r.Audio = raw
		return nil
	case "web_search_options":
		r.WebSearchOptions = raw
		return nil
	case "plugins":
		r.Plugins = raw
		return nil
	case "stream":
		if b, ok := plainBool(raw); ok {
			r.Stream = b
			return nil
		}
		dst = &r.Stream
	case "max_tokens":
		if setPlainInt(&r.MaxTokens, raw) {
			return nil
		}
		dst = &r.MaxTokens
	case "max_completion_tokens":
		if setPlainInt(&r.MaxCompletionTokens, raw) {
			return nil
		}
		dst = &r.MaxCompletionTokens
	case "n":
		if setPlainInt(&r.N, raw) {
			return nil
		}
		dst = &r.N
	case "prompt_cache_key":
		dst = &r.PromptCacheKey
	case "service_tier":
		dst = &r.ServiceTier
	case "top_logprobs":
		dst = &r.TopLogprobs
	case "stream_options":
		if err := RejectCaseVariants(raw, "stream_options.", "include_usage", "include_obfuscation"); err != nil {
			return err
		}
		if r.setPlainStreamOptions(raw) {
			return nil
		}
		dst = &r.StreamOptions
	default:
		if rg, ok := floatRanges[key]; ok {
			return checkFloat(key, raw, rg)
		}
		if readFieldSet[key] {
			return nil // an exact field the adapters read: no variant to look for
		}
		return RejectCaseVariant(key, "", readFields...)
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

// readFields are the top-level keys the gateway reads from a chat body: the view's, and those
// the adapters translate (providers.ParseCanonical). A case variant of any of them is a 400.
var readFields = []string{"model", "messages", "stream", "stream_options", "max_tokens",
	"max_completion_tokens", "n", "tools", "response_format", "prompt_cache_key", "service_tier",
	"top_logprobs", "temperature", "top_p", "top_k", "frequency_penalty", "presence_penalty",
	"stop", "seed", "user", "metadata", "reasoning_effort", "cache_control", "tool_choice",
	"parallel_tool_calls", "logprobs", "modalities", "audio", "web_search_options", "plugins"}

var readFieldSet = func() map[string]bool {
	m := make(map[string]bool, len(readFields))
	for _, f := range readFields {
		m[f] = true
	}
	return m
}()

// checkFloat validates a sampling parameter: a JSON number (or null) within its range.
func checkFloat(key string, raw []byte, rg [2]float64) *Error {
	if string(raw) == "null" {
		return nil
	}
	v, ok := jsonNumber(raw)
	if !ok {
		return Errorf(http.StatusBadRequest, "invalid_type", key, "invalid type for '%s': expected a number", key)
	}
	if v < rg[0] || v > rg[1] {
		return Errorf(http.StatusBadRequest, "invalid_value", key, "%s must be between %g and %g", key, rg[0], rg[1])
	}
	return nil
}

// jsonNumber reads a JSON number. Short decimals (the usual 0.7) are read exactly without
// allocating: an integer mantissa below 2^53 divided by an exact power of ten rounds
// correctly; anything else takes strconv.
func jsonNumber(raw []byte) (float64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	var mant int64
	digits, scale, i := 0, 0, 0
	neg := raw[0] == '-'
	if neg {
		i++
	}
	for ; i < len(raw) && raw[i] >= '0' && raw[i] <= '9'; i++ {
		mant, digits = mant*10+int64(raw[i]-'0'), digits+1
	}
	if i < len(raw) && raw[i] == '.' {
		for i++; i < len(raw) && raw[i] >= '0' && raw[i] <= '9'; i++ {
			mant, digits, scale = mant*10+int64(raw[i]-'0'), digits+1, scale+1
		}
	}
	if i == len(raw) && digits > 0 && digits <= 15 && scale <= 22 {
		v := float64(mant) / math.Pow10(scale)
		if neg {
			v = -v
		}
		return v, true
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	return v, err == nil || errors.Is(err, strconv.ErrRange)
}

// RejectCaseVariant is the 400 for key when it is a case variant of one of fields (and not
// the field itself). encoding/json matches keys case-insensitively and providers do not, so a
// body carrying {"max_output_tokens":100000,"MAX_OUTPUT_TOKENS":1} would be read by the
// gateway as one thing and by the upstream as another. OpenAI rejects any unrecognized
// argument the same way.
func RejectCaseVariant(key, prefix string, fields ...string) *Error {
	for _, f := range fields {
		if key != f && strings.EqualFold(key, f) {
			return Errorf(http.StatusBadRequest, "unknown_parameter", prefix+key, "Unrecognized request argument supplied: %s%s", prefix, key)
		}
	}
	return nil
}

// JSONFields lists the top-level keys a struct type decodes (its json tags), the fields list
// for RejectCaseVariant of a body decoded into T.
func JSONFields[T any]() []string {
	t := reflect.TypeFor[T]()
	out := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// RejectCaseVariants applies the case-variant rule to the members of the JSON object obj
// (anything else passes: type errors are the decoder's to report). prefix names obj in the
// error's param ("stream_options.").
func RejectCaseVariants(obj []byte, prefix string, fields ...string) *Error {
	var bad *Error
	if len(obj) == 0 || obj[0] != '{' {
		return nil
	}
	_ = EachTopLevel(obj, func(quoted []byte, _ Span) bool {
		key := string(quoted[1 : len(quoted)-1])
		if bytes.IndexByte(quoted, '\\') >= 0 && json.Unmarshal(quoted, &key) != nil {
			return true
		}
		bad = RejectCaseVariant(key, prefix, fields...)
		return bad == nil
	})
	return bad
}
