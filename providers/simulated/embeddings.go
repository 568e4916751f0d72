package simulated

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Embeddings, legacy completions and moderations, in each provider's wire format: OpenAI's
// /v1/embeddings, /v1/completions and /v1/moderations; Bedrock's InvokeModel for Titan and
// Cohere embedding models; Gemini's batchEmbedContents and Vertex's predict. Vectors are
// deterministic: a function of the model and the text alone, unit length, and a shortened
// vector (dimensions) is the full one's prefix normalised again, as OpenAI's are.

// nativeDimensions is each embedding model's full vector size.
func nativeDimensions(model string) (int, bool) {
	m := strings.ToLower(model)
	switch {
	case strings.Contains(m, "text-embedding-3-large"), strings.Contains(m, "gemini-embedding"):
		return 3072, true
	case strings.Contains(m, "text-embedding-3-small"), strings.Contains(m, "ada-002"), strings.Contains(m, "titan-embed-text-v1"):
		return 1536, true
	case strings.Contains(m, "titan-embed-text-v2"), strings.Contains(m, "embed-english"), strings.Contains(m, "embed-multilingual"):
		return 1024, true
	case strings.Contains(m, "embed"):
		return 768, true
	}
	return 0, false
}

// EmbeddingVector is the simulator's embedding of text by model at dims dimensions (0: the
// model's native size). Tests use it to check what a gateway returned.
func EmbeddingVector(model, text string, dims int) []float32 {
	n, ok := nativeDimensions(model)
	if !ok {
		n = 768
	}
	h := fnv.New64a()
	h.Write([]byte(model))
	h.Write([]byte{0})
	h.Write([]byte(text))
	state := h.Sum64()
	v := make([]float32, n)
	var sum float64
	for i := range v {
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		x := float64(z>>11)/float64(1<<53)*2 - 1
		v[i] = float32(x)
		sum += x * x
	}
	norm := float32(1 / math.Sqrt(sum))
	for i := range v {
		v[i] *= norm
	}
	return providers.FitDimensions(v, dims)
}

func tokensOfIDs(ids []int64) int64 { return int64(max(len(ids), 1)) }

func (s *Server) openAIEmbeddings(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	body, ok := s.readOpenAIBody(w, r)
	if !ok {
		return
	}
	req, _, perr := providers.ParseEmbeddingRequest(body)
	if perr != nil {
		s.reject(w, perr)
		return
	}
	native, ok := nativeDimensions(req.Model)
	if !ok {
		s.reject(w, &providers.Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("The model `%s` does not exist or does not support embeddings.", req.Model)})
		return
	}
	if req.Dimensions > 0 && (strings.Contains(req.Model, "ada-002") || req.Dimensions > native) {
		s.reject(w, badRequest("invalid_value", "dimensions", "This model does not support specifying dimensions of %d.", req.Dimensions))
		return
	}
	vectors := make([][]float32, len(req.Inputs))
	var tokens int64
	for i, in := range req.Inputs {
		text := in.Text
		if in.IsTokens {
			text = fmt.Sprint(in.Tokens)
			tokens += tokensOfIDs(in.Tokens)
		} else {
			tokens += int64(tokensOf(len(in.Text)))
		}
		vectors[i] = EmbeddingVector(req.Model, text, req.Dimensions)
	}
	s.setCommonHeaders(w.Header(), int(tokens))
	writeRaw(w, providers.MarshalEmbeddings(req.Model, vectors, req.EncodingFormat, tokens))
}

// readOpenAIBody reads a request body for the OpenAI-style endpoints, checking the bearer key
// when the simulator requires one.
func (s *Server) readOpenAIBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if s.opts.RequireKey && bearer(r) == "" {
		s.reject(w, &providers.Error{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
			Message: "You didn't provide an API key."})
		return nil, false
	}
	buf, err := readBody(r, s.opts.MaxBodyBytes)
	if err != nil {
		s.reject(w, &providers.Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Message: "request body too large"})
		return nil, false
	}
	body := bytes.Clone(buf.Bytes())
	putBody(buf)
	return body, true
}

func (s *Server) reject(w http.ResponseWriter, e *providers.Error) {
	s.stats.rejected.Add(1)
	s.setCommonHeaders(w.Header(), 0)
	providers.WriteError(w, e)
}

func writeRaw(w http.ResponseWriter, body []byte) {
	w.Header()["Content-Type"] = hvJSON
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// legacyCompletion answers /v1/completions: a deterministic text per prompt, cut at
// max_tokens (default 16, as OpenAI's) with finish_reason "length".
func (s *Server) legacyCompletion(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	body, ok := s.readOpenAIBody(w, r)
	if !ok {
		return
	}
	var req struct {
		Model     string          `json:"model"`
		Prompt    json.RawMessage `json:"prompt"`
		MaxTokens *int            `json:"max_tokens"`
		Stream    bool            `json:"stream"`
	}
	if json.Unmarshal(body, &req) != nil || req.Model == "" || len(req.Prompt) == 0 {
		s.reject(w, badRequest("invalid_request_body", "", "model and prompt are required"))
		return
	}
	if req.Stream {
		s.reject(w, badRequest("unsupported_value", "stream", "the simulator does not stream legacy completions"))
		return
	}
	var prompts []string
	var one string
	if json.Unmarshal(req.Prompt, &one) == nil {
		prompts = []string{one}
	} else if json.Unmarshal(req.Prompt, &prompts) != nil || len(prompts) == 0 {
		s.reject(w, badRequest("invalid_value", "prompt", "prompt must be a string or an array of strings"))
		return
	}
	maxTokens := 16
	if req.MaxTokens != nil {
		maxTokens = *req.MaxTokens
	}
	var prompt, completion int
	out := []byte(`{"id":"cmpl-sim-`)
	out = strconv.AppendUint(out, s.seq.Add(1), 10)
	out = append(out, `","object":"text_completion","created":`...)
	out = strconv.AppendInt(out, s.opts.Now().Unix(), 10)
	out = append(out, `,"model":`...)
	out = appendJSONString(out, req.Model)
	out = append(out, `,"choices":[`...)
	for i, p := range prompts {
		prompt += tokensOf(len(p))
		h := fnv.New64a()
		h.Write([]byte(req.Model + "\x00" + p))
		text := string(appendSentence([]byte(" "), h.Sum64()))
		finish := "stop"
		if tokensOf(len(text)) > maxTokens {
			text, finish = text[:min(len(text), maxTokens*4)], "length"
		}
		completion += tokensOf(len(text))
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"text":`...)
		out = appendJSONString(out, text)
		out = append(out, `,"index":`...)
		out = strconv.AppendInt(out, int64(i), 10)
		out = append(out, `,"logprobs":null,"finish_reason":"`...)
		out = append(out, finish...)
		out = append(out, `"}`...)
	}
	out = append(out, `],"usage":{"prompt_tokens":`...)
	out = strconv.AppendInt(out, int64(prompt), 10)
	out = append(out, `,"completion_tokens":`...)
	out = strconv.AppendInt(out, int64(completion), 10)
	out = append(out, `,"total_tokens":`...)
	out = strconv.AppendInt(out, int64(prompt+completion), 10)
	out = append(out, "}}"...)
	s.setCommonHeaders(w.Header(), prompt)
	writeRaw(w, out)
}

// moderationCategories are OpenAI's moderation categories.
var moderationCategories = []string{"harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
	"illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors",
	"violence", "violence/graphic"}

// moderation answers /v1/moderations. An input is flagged for violence when it contains the
// word "kill" — deterministic, so tests can expect both outcomes. It reports no usage, as
// OpenAI's endpoint does not.
func (s *Server) moderation(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	body, ok := s.readOpenAIBody(w, r)
	if !ok {
		return
	}
	var req struct {
		Model string          `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if json.Unmarshal(body, &req) != nil || len(req.Input) == 0 {
		s.reject(w, badRequest("invalid_request_body", "", "input is required"))
		return
	}
	if req.Model == "" {
		req.Model = "omni-moderation-latest"
	}
	var texts []string
	var one string
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	switch {
	case json.Unmarshal(req.Input, &one) == nil:
		texts = []string{one}
	case json.Unmarshal(req.Input, &texts) == nil:
	case json.Unmarshal(req.Input, &parts) == nil:
		for _, p := range parts {
			texts = append(texts, p.Text)
		}
	default:
		s.reject(w, badRequest("invalid_value", "input", "input must be a string, an array of strings or an array of content parts"))
		return
	}
	type result struct {
		Flagged        bool               `json:"flagged"`
		Categories     map[string]bool    `json:"categories"`
		CategoryScores map[string]float64 `json:"category_scores"`
	}
	out := struct {
		ID      string   `json:"id"`
		Model   string   `json:"model"`
		Results []result `json:"results"`
	}{ID: "modr-sim-" + strconv.FormatUint(s.seq.Add(1), 10), Model: req.Model}
	for _, t := range texts {
		violent := containsWord([]byte(strings.ToLower(t)), "kill")
		res := result{Flagged: violent, Categories: map[string]bool{}, CategoryScores: map[string]float64{}}
		for _, c := range moderationCategories {
			res.Categories[c] = violent && c == "violence"
			res.CategoryScores[c] = 0.0001
		}
		if violent {
			res.CategoryScores["violence"] = 0.97
		}
		out.Results = append(out.Results, res)
	}
	raw, _ := json.Marshal(out)
	s.setCommonHeaders(w.Header(), 0)
	writeRaw(w, raw)
}

// bedrockInvoke answers InvokeModel for Titan and Cohere embedding models.
func (s *Server) bedrockInvoke(w http.ResponseWriter, r *http.Request, model string) {
	s.stats.requests.Add(1)
	body, ok := s.readBedrockBody(w, r)
	if !ok {
		return
	}
	s.recordBedrock(model, false, body, 0)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	switch {
	case strings.Contains(model, "titan-embed-text"):
		var req struct {
			InputText      *string  `json:"inputText"`
			Dimensions     int      `json:"dimensions"`
			Normalize      *bool    `json:"normalize"`
			EmbeddingTypes []string `json:"embeddingTypes"`
		}
		if err := dec.Decode(&req); err != nil || req.InputText == nil || *req.InputText == "" {
			writeBedrockError(w, bedrockBad("Malformed input request: inputText is required, please reformat your input and try again."))
			return
		}
		v2 := strings.Contains(model, "titan-embed-text-v2")
		if req.Dimensions != 0 && (!v2 || (req.Dimensions != 256 && req.Dimensions != 512 && req.Dimensions != 1024)) {
			writeBedrockError(w, bedrockBad("Malformed input request: dimensions must be one of 256, 512, 1024"))
			return
		}
		n := tokensOf(len(*req.InputText))
		raw, _ := json.Marshal(map[string]any{"embedding": EmbeddingVector(model, *req.InputText, req.Dimensions), "inputTextTokenCount": n})
		w.Header().Set("X-Amzn-Bedrock-Input-Token-Count", strconv.Itoa(n))
		writeRaw(w, raw)
	case strings.Contains(model, "cohere.embed"):
		var req struct {
			Texts          []string `json:"texts"`
			InputType      string   `json:"input_type"`
			Truncate       string   `json:"truncate"`
			EmbeddingTypes []string `json:"embedding_types"`
		}
		if err := dec.Decode(&req); err != nil || len(req.Texts) == 0 || len(req.Texts) > 96 || req.InputType == "" {
			writeBedrockError(w, bedrockBad("Malformed input request: texts (1 to 96) and input_type are required"))
			return
		}
		vectors := make([][]float32, len(req.Texts))
		n := 0
		for i, t := range req.Texts {
			vectors[i] = EmbeddingVector(model, t, 0)
			n += tokensOf(len(t))
		}
		raw, _ := json.Marshal(map[string]any{"id": "sim-embed", "embeddings": vectors, "texts": req.Texts, "response_type": "embeddings_floats"})
		w.Header().Set("X-Amzn-Bedrock-Input-Token-Count", strconv.Itoa(n))
		writeRaw(w, raw)
	default:
		writeBedrockError(w, bedrockBad("The simulator serves InvokeModel only for Titan and Cohere embedding models, not %s", model))
	}
}

// googleEmbed answers Gemini's batchEmbedContents and Vertex's predict.
func (s *Server) googleEmbed(w http.ResponseWriter, r *http.Request, model string, vertex bool) {
	s.stats.requests.Add(1)
	w.Header().Set("X-Request-Id", fmt.Sprintf("sim-%08d-gemini", s.seq.Add(1)))
	if _, ok := s.googleAuthorized(w, r, vertex, s.opts.Now()); !ok {
		return
	}
	body, ok := s.readGoogleBody(w, r, vertex)
	if !ok {
		return
	}
	if _, ok := nativeDimensions(model); !ok {
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "models/"+model+" is not found for embeddings")
		return
	}
	if vertex {
		var req struct {
			Instances []struct {
				Content string `json:"content"`
			} `json:"instances"`
			Parameters struct {
				OutputDimensionality int `json:"outputDimensionality"`
			} `json:"parameters"`
		}
		if json.Unmarshal(body, &req) != nil || len(req.Instances) == 0 {
			writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "instances are required")
			return
		}
		type stats struct {
			TokenCount int  `json:"token_count"`
			Truncated  bool `json:"truncated"`
		}
		type emb struct {
			Values     []float32 `json:"values"`
			Statistics stats     `json:"statistics"`
		}
		preds := make([]map[string]emb, len(req.Instances))
		for i, in := range req.Instances {
			preds[i] = map[string]emb{"embeddings": {Values: EmbeddingVector(model, in.Content, req.Parameters.OutputDimensionality),
				Statistics: stats{TokenCount: tokensOf(len(in.Content))}}}
		}
		raw, _ := json.Marshal(map[string]any{"predictions": preds})
		writeRaw(w, raw)
		return
	}
	var req struct {
		Requests []struct {
			Model   string `json:"model"`
			Content struct {
				Parts []struct {
					Text string `json:"text"`
				} `json:"parts"`
			} `json:"content"`
			OutputDimensionality int `json:"outputDimensionality"`
		} `json:"requests"`
	}
	if json.Unmarshal(body, &req) != nil || len(req.Requests) == 0 {
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "requests are required")
		return
	}
	type values struct {
		Values []float32 `json:"values"`
	}
	out := make([]values, len(req.Requests))
	for i, rq := range req.Requests {
		if rq.Model != "models/"+model {
			writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "requests["+strconv.Itoa(i)+"].model must be models/"+model)
			return
		}
		var text strings.Builder
		for _, p := range rq.Content.Parts {
			text.WriteString(p.Text)
		}
		out[i].Values = EmbeddingVector(model, text.String(), rq.OutputDimensionality)
	}
	raw, _ := json.Marshal(map[string]any{"embeddings": out})
	writeRaw(w, raw)
}
