package providers

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
)

// Endpoints other than chat that the gateway routes to upstreams (Exchange.Endpoint; "" is
// chat). Each is also the path of the OpenAI API under its base URL.
const (
	EndpointEmbeddings  = "embeddings"
	EndpointCompletions = "completions"
	EndpointModerations = "moderations"
)

// Embedder is implemented by adapters that can serve OpenAI's /v1/embeddings: OpenAI-style
// upstreams pass the body through; Bedrock, Gemini and Vertex translate it. The answer is an
// OpenAI embeddings list ({"object":"list","data":[…],"model","usage"}).
type Embedder interface {
	Embed(ctx context.Context, call *EmbedCall) (*Response, error)
}

// EmbedCall is one upstream embeddings attempt.
type EmbedCall struct {
	Request *EmbeddingRequest
	// Body is the caller's request; pass-through adapters replace "model" themselves.
	Body          []byte
	UpstreamModel string
}

// Forwarder is implemented by OpenAI-style adapters: a JSON POST of body to another endpoint
// of the same API (legacy completions, moderations) with "model" set to upstreamModel.
type Forwarder interface {
	Forward(ctx context.Context, endpoint string, body []byte, upstreamModel string) (*Response, error)
}

// EmbeddingInput is one input of an embeddings request: text, or token ids.
type EmbeddingInput struct {
	Text   string
	Tokens []int64
	// IsTokens distinguishes an empty token list from text.
	IsTokens bool
}

// EmbeddingRequest is the typed view of an OpenAI embeddings request.
type EmbeddingRequest struct {
	Model  string
	Inputs []EmbeddingInput
	// EncodingFormat is "float" or "base64" (default float).
	EncodingFormat string
	// Dimensions is the requested vector size (0: the model's default).
	Dimensions int
}

// MaxEmbeddingInputs bounds the inputs of one request, as OpenAI does.
const MaxEmbeddingInputs = 2048

// ParseEmbeddingRequest validates an embeddings body. It returns the typed view and a chat
// view carrying only the body and model, which is what metering and routing read.
func ParseEmbeddingRequest(body []byte) (*EmbeddingRequest, *ChatRequest, *Error) {
	var raw struct {
		Model          *json.RawMessage `json:"model"`
		Input          json.RawMessage  `json:"input"`
		EncodingFormat *string          `json:"encoding_format"`
		Dimensions     *json.Number     `json:"dimensions"`
	}
	if !json.Valid(body) {
		return nil, nil, Errorf(http.StatusBadRequest, "invalid_json", "", "We could not parse the JSON body of your request.")
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, nil, Errorf(http.StatusBadRequest, "invalid_request_body", "", "the request body must be a JSON object")
	}
	// encoding/json matches keys case-insensitively, the upstream does not: "Input" must not
	// be what the gateway reads while the upstream reads "input".
	if perr := RejectCaseVariants(body, "", embeddingFields...); perr != nil {
		return nil, nil, perr
	}
	req := &EmbeddingRequest{EncodingFormat: "float"}
	if raw.Model == nil || json.Unmarshal(*raw.Model, &req.Model) != nil || req.Model == "" {
		return nil, nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "model", "you must provide a model parameter (a string)")
	}
	inputs, perr := parseEmbeddingInput(raw.Input)
	if perr != nil {
		return nil, nil, perr
	}
	req.Inputs = inputs
	if raw.EncodingFormat != nil {
		switch *raw.EncodingFormat {
		case "float", "base64":
			req.EncodingFormat = *raw.EncodingFormat
		default:
			return nil, nil, Errorf(http.StatusBadRequest, "invalid_value", "encoding_format",
				"encoding_format must be 'float' or 'base64', not %q", *raw.EncodingFormat)
		}
	}
	if raw.Dimensions != nil {
		d, err := strconv.Atoi(raw.Dimensions.String())
		if err != nil || d < 1 || d > 65536 {
			return nil, nil, Errorf(http.StatusBadRequest, "invalid_value", "dimensions", "dimensions must be a positive integer")
		}
		req.Dimensions = d
	}
	return req, &ChatRequest{Body: body, Model: req.Model}, nil
}

func parseEmbeddingInput(raw json.RawMessage) ([]EmbeddingInput, *Error) {
	bad := func(why string) *Error {
		return Errorf(http.StatusBadRequest, "invalid_value", "input", "input %s", why)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "input", "you must provide an input parameter")
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		if text == "" {
			return nil, bad("cannot be an empty string")
		}
		return []EmbeddingInput{{Text: text}}, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, bad("must be a string, an array of strings, an array of token ids or an array of token-id arrays")
	}
	if len(items) == 0 {
		return nil, bad("cannot be an empty array")
	}
	if len(items) > MaxEmbeddingInputs {
		return nil, bad("has more than " + strconv.Itoa(MaxEmbeddingInputs) + " items")
	}
	// One array of token ids is a single input.
	var ids []int64
	if json.Unmarshal(raw, &ids) == nil {
		return []EmbeddingInput{{Tokens: ids, IsTokens: true}}, nil
	}
	out := make([]EmbeddingInput, len(items))
	for i, it := range items {
		if json.Unmarshal(it, &out[i].Text) == nil {
			if out[i].Text == "" {
				return nil, bad("items cannot be empty strings")
			}
			continue
		}
		if json.Unmarshal(it, &out[i].Tokens) == nil && len(out[i].Tokens) > 0 {
			out[i].IsTokens = true
			continue
		}
		return nil, bad("items must all be strings or all be arrays of token ids")
	}
	return out, nil
}

// Texts returns the inputs as strings, or an error naming the provider when an input is token
// ids (only OpenAI-style upstreams take those).
func (r *EmbeddingRequest) Texts(provider string) ([]string, *Error) {
	out := make([]string, len(r.Inputs))
	for i, in := range r.Inputs {
		if in.IsTokens {
			return nil, Errorf(http.StatusBadRequest, "unsupported_value", "input",
				"token-id inputs can only be sent to OpenAI-style upstreams; %s takes text", provider)
		}
		out[i] = in.Text
	}
	return out, nil
}

// FitDimensions returns v at dims dimensions the way OpenAI's shortened embeddings are made:
// the leading dims values, L2-normalised again. dims ≥ len(v) or 0 leaves v as it is.
func FitDimensions(v []float32, dims int) []float32 {
	if dims <= 0 || dims >= len(v) {
		return v
	}
	v = v[:dims]
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if sum == 0 {
		return v
	}
	n := float32(1 / math.Sqrt(sum))
	out := make([]float32, dims)
	for i, x := range v {
		out[i] = x * n
	}
	return out
}

// EncodeEmbeddingBase64 is OpenAI's base64 encoding_format: the little-endian float32 bytes.
func EncodeEmbeddingBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// MarshalEmbeddings renders an OpenAI embeddings list from vectors, in the encoding the
// caller asked for, with usage.prompt_tokens.
func MarshalEmbeddings(model string, vectors [][]float32, encoding string, promptTokens int64) []byte {
	b := make([]byte, 0, 64+len(vectors)*(len(firstOr(vectors))*11+48))
	b = append(b, `{"object":"list","data":[`...)
	for i, v := range vectors {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		if encoding == "base64" {
			b = strconv.AppendQuote(b, EncodeEmbeddingBase64(v))
		} else {
			b = append(b, '[')
			for j, x := range v {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(x), 'g', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = strconv.AppendQuote(b, model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, promptTokens, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, promptTokens, 10)
	return append(b, "}}"...)
}

func firstOr(vs [][]float32) []float32 {
	if len(vs) == 0 {
		return nil
	}
	return vs[0]
}

// ParseCompletionRequest validates a legacy /v1/completions body: a model and a prompt.
// Streaming is refused: the gateway meters legacy completions from their usage object, which
// only the JSON answer carries reliably across OpenAI-compatible servers.
func ParseCompletionRequest(body []byte) (*ChatRequest, *Error) {
	var raw completionFields
	if !json.Valid(body) || json.Unmarshal(body, &raw) != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_json", "", "We could not parse the JSON body of your request.")
	}
	if perr := RejectCaseVariants(body, "", JSONFields[completionFields]()...); perr != nil {
		return nil, perr
	}
	if raw.Model == nil || *raw.Model == "" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "model", "you must provide a model parameter (a string)")
	}
	if raw.Prompt == nil {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "prompt", "you must provide a prompt parameter")
	}
	if raw.Stream != nil && *raw.Stream {
		return nil, Errorf(http.StatusBadRequest, "unsupported_value", "stream",
			"streaming legacy completions is not supported by this gateway; use /v1/chat/completions for streams")
	}
	req := &ChatRequest{Body: body, Model: *raw.Model}
	var perr *Error
	if req.MaxTokens, perr = optionalCount(raw.MaxTokens, "max_tokens", 0); perr != nil {
		return nil, perr
	}
	// The upstream generates best_of answers (billed) and returns n of them.
	n, perr := optionalCount(raw.N, "n", 1)
	if perr != nil {
		return nil, perr
	}
	bestOf, perr := optionalCount(raw.BestOf, "best_of", 1)
	if perr != nil {
		return nil, perr
	}
	if n != nil || bestOf != nil {
		choices := max(deref(n), deref(bestOf))
		req.N = &choices
	}
	return req, nil
}

// completionFields are the members of a legacy completions request the gateway reads.
type completionFields struct {
	Model     *string          `json:"model"`
	Prompt    *json.RawMessage `json:"prompt"`
	Stream    *bool            `json:"stream"`
	MaxTokens *json.Number     `json:"max_tokens"`
	N         *json.Number     `json:"n"`
	BestOf    *json.Number     `json:"best_of"`
}

var embeddingFields = []string{"model", "input", "encoding_format", "dimensions"}

// optionalCount reads an optional integer field of at least least (and at most 1<<20).
func optionalCount(v *json.Number, param string, least int64) (*int64, *Error) {
	if v == nil {
		return nil, nil
	}
	n, err := strconv.ParseInt(v.String(), 10, 64)
	if err != nil || n < least || n > 1<<20 {
		return nil, Errorf(http.StatusBadRequest, "invalid_value", param, "%s must be an integer from %d to %d", param, least, 1<<20)
	}
	return &n, nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// DefaultModerationModel is what /v1/moderations uses when the caller names no model, as
// OpenAI does.
const DefaultModerationModel = "omni-moderation-latest"

// ParseModerationRequest validates a /v1/moderations body: an input and an optional model.
// A missing model becomes DefaultModerationModel, in the body too, so every upstream is told
// the same model that is billed.
func ParseModerationRequest(body []byte) (*ChatRequest, *Error) {
	var raw struct {
		Model *string          `json:"model"`
		Input *json.RawMessage `json:"input"`
	}
	if !json.Valid(body) || json.Unmarshal(body, &raw) != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_json", "", "We could not parse the JSON body of your request.")
	}
	if perr := RejectCaseVariants(body, "", "model", "input"); perr != nil {
		return nil, perr
	}
	if raw.Input == nil || string(*raw.Input) == "null" {
		return nil, Errorf(http.StatusBadRequest, "missing_required_parameter", "input", "you must provide an input parameter")
	}
	model := DefaultModerationModel
	if raw.Model != nil && *raw.Model != "" {
		model = *raw.Model
	}
	return &ChatRequest{Body: body, Model: model}, nil
}
