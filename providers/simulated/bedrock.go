package simulated

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/eventstream"
	"github.com/badtheorylabs/btl-runtime/providers/sigv4"
)

// AWS Bedrock Converse simulation (reference providers.md §4, tokenopt.md §1.3).
//
// Routes: POST /model/{modelId}/converse and /model/{modelId}/converse-stream, the id escaped
// as one path segment. Every request must carry a valid SigV4 signature (service "bedrock")
// made with the credentials given to SetAWSCredentials; a mismatch is 403 with
// x-amzn-ErrorType InvalidSignatureException, an unknown key id 403
// UnrecognizedClientException, as AWS answers.
//
// Validation follows the Converse API and is strict where adapter bugs would show: unknown
// top-level fields, roles other than user/assistant, a first message that is not the user's,
// two consecutive turns of the same role, blank text blocks, toolUse/toolResult blocks without
// a toolConfig, temperature outside 0–1 and cachePoint types other than "default" are 400
// ValidationException.
//
// Usage follows Bedrock's caching semantics: each cachePoint marks the prompt prefix up to the
// end of the message (or system prompt, or tool list) it sits in; prefixes under 1024 tokens
// are not cached. Per access key, the longest stored prefix is cacheReadInputTokens, the
// tokens from there to the last cachePoint are cacheWriteInputTokens, and inputTokens is the
// rest — it excludes cached tokens.
//
// Streams are binary event-stream frames written in pseudo-random small pieces (1–61 bytes)
// so that decoders see frames split everywhere; metadata (usage) follows messageStop. Text
// blocks have no contentBlockStart. Directives work as for chat completions;
// stream_error_after=N sends an exception frame after N deltas, of the type named by code=
// (default modelStreamErrorException).

// BedrockRequest is what the simulator last received on a Bedrock route.
type BedrockRequest struct {
	Model  string
	Stream bool
	Body   []byte
	// CachePoints counts the cachePoint blocks (system, messages and tools).
	CachePoints int
}

type bedrockState struct {
	mu     sync.Mutex
	region string
	keys   map[string][2]string // access key id → secret, session token
	last   *BedrockRequest
}

// SetAWSCredentials adds an access key the Bedrock routes accept and sets the region signatures
// must be scoped to. sessionToken may be "".
func (s *Server) SetAWSCredentials(region, accessKeyID, secret, sessionToken string) {
	s.bedrock.mu.Lock()
	defer s.bedrock.mu.Unlock()
	if s.bedrock.keys == nil {
		s.bedrock.keys = map[string][2]string{}
	}
	s.bedrock.region = region
	s.bedrock.keys[accessKeyID] = [2]string{secret, sessionToken}
}

// LastBedrockRequest returns the last request received on a Bedrock route.
func (s *Server) LastBedrockRequest() (BedrockRequest, bool) {
	s.bedrock.mu.Lock()
	defer s.bedrock.mu.Unlock()
	if s.bedrock.last == nil {
		return BedrockRequest{}, false
	}
	return *s.bedrock.last, true
}

func (b *bedrockState) reset() {
	b.mu.Lock()
	b.last = nil
	b.mu.Unlock()
}

// serveBedrock answers the Bedrock routes; it reports false for other paths.
func (s *Server) serveBedrock(w http.ResponseWriter, r *http.Request) bool {
	segs := strings.Split(r.URL.EscapedPath(), "/")
	if len(segs) != 4 || segs[0] != "" || segs[1] != "model" || (segs[3] != "converse" && segs[3] != "converse-stream" && segs[3] != "invoke") {
		return false
	}
	model, err := url.PathUnescape(segs[2])
	if err != nil || model == "" {
		return false
	}
	if r.Method != http.MethodPost {
		s.notAllowed(w, r)
		return true
	}
	if segs[3] == "invoke" {
		s.bedrockInvoke(w, r, model)
		return true
	}
	s.bedrockConverse(w, r, model, segs[3] == "converse-stream")
	return true
}

// bedrockAuthorized verifies the request's SigV4 signature over the exact bytes received,
// answering Bedrock's error when it fails.
func (s *Server) bedrockAuthorized(w http.ResponseWriter, r *http.Request, body []byte) bool {
	// Authentication: SigV4 over the exact bytes received.
	s.bedrock.mu.Lock()
	v := &sigv4.Verifier{Region: s.bedrock.region, Service: "bedrock", Now: s.opts.Now, Secret: func(id string) (string, string, bool) {
		k, ok := s.bedrock.keys[id]
		return k[0], k[1], ok
	}}
	err := v.Verify(r, body)
	s.bedrock.mu.Unlock()
	if err != nil {
		s.stats.rejected.Add(1)
		code, msg := "InvalidSignatureException", err.Error()
		var ve *sigv4.VerifyError
		if errors.As(err, &ve) {
			code, msg = ve.Code, ve.Msg
		}
		status := http.StatusForbidden
		if code == "IncompleteSignatureException" {
			status = http.StatusBadRequest
		}
		writeBedrockError(w, &bedrockError{status: status, typ: code, msg: msg})
		return false
	}
	return true
}

type bedrockError struct {
	status int
	typ    string
	msg    string
}

func writeBedrockError(w http.ResponseWriter, e *bedrockError) {
	h := w.Header()
	h.Set("X-Amzn-Errortype", e.typ+":http://internal.amazon.com/coral/com.amazon.bedrock/")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	b, _ := json.Marshal(map[string]string{"message": e.msg})
	_, _ = w.Write(b)
}

func bedrockBad(format string, args ...any) *bedrockError {
	return &bedrockError{status: http.StatusBadRequest, typ: "ValidationException", msg: fmt.Sprintf(format, args...)}
}

// Wire shapes as the simulator decodes them.
type (
	brWire struct {
		Messages                          []brMsg         `json:"messages"`
		System                            []brBlock       `json:"system"`
		InferenceConfig                   *brInference    `json:"inferenceConfig"`
		ToolConfig                        *brToolConfig   `json:"toolConfig"`
		AdditionalModelRequestFields      json.RawMessage `json:"additionalModelRequestFields"`
		AdditionalModelResponseFieldPaths json.RawMessage `json:"additionalModelResponseFieldPaths"`
		OutputConfig                      *struct {
			TextFormat struct {
				Type      string `json:"type"`
				Structure struct {
					JSONSchema struct {
						Name   string `json:"name"`
						Schema string `json:"schema"`
					} `json:"jsonSchema"`
				} `json:"structure"`
			} `json:"textFormat"`
		} `json:"outputConfig"`
		GuardrailConfig   json.RawMessage   `json:"guardrailConfig"`
		PerformanceConfig json.RawMessage   `json:"performanceConfig"`
		RequestMetadata   map[string]string `json:"requestMetadata"`
		ServiceTier       json.RawMessage   `json:"serviceTier"`
		PromptVariables   json.RawMessage   `json:"promptVariables"`
	}
	brMsg struct {
		Role    string    `json:"role"`
		Content []brBlock `json:"content"`
	}
	brBlock struct {
		Text  *string `json:"text"`
		Image *struct {
			Format string `json:"format"`
			Source struct {
				Bytes []byte `json:"bytes"`
			} `json:"source"`
		} `json:"image"`
		ToolUse *struct {
			ToolUseID string          `json:"toolUseId"`
			Name      string          `json:"name"`
			Input     json.RawMessage `json:"input"`
		} `json:"toolUse"`
		ToolResult *struct {
			ToolUseID string    `json:"toolUseId"`
			Content   []brBlock `json:"content"`
			Status    string    `json:"status"`
		} `json:"toolResult"`
		JSON             json.RawMessage `json:"json"`
		ReasoningContent json.RawMessage `json:"reasoningContent"`
		CachePoint       *struct {
			Type string `json:"type"`
			TTL  string `json:"ttl"`
		} `json:"cachePoint"`
	}
	brInference struct {
		MaxTokens     *int64   `json:"maxTokens"`
		Temperature   *float64 `json:"temperature"`
		TopP          *float64 `json:"topP"`
		StopSequences []string `json:"stopSequences"`
	}
	brToolConfig struct {
		Tools []struct {
			ToolSpec *struct {
				Name        string `json:"name"`
				Description string `json:"description"`
				InputSchema struct {
					JSON json.RawMessage `json:"json"`
				} `json:"inputSchema"`
			} `json:"toolSpec"`
			CachePoint *struct {
				Type string `json:"type"`
			} `json:"cachePoint"`
		} `json:"tools"`
		ToolChoice *struct {
			Auto *struct{} `json:"auto"`
			Any  *struct{} `json:"any"`
			Tool *struct {
				Name string `json:"name"`
			} `json:"tool"`
		} `json:"toolChoice"`
	}
)

// OpenAI-shaped messages the Bedrock and Gemini requests are mapped onto, so the chat
// simulation's validation, token counting and generators apply unchanged.
type (
	oaMsg struct {
		Role       string   `json:"role"`
		Content    any      `json:"content,omitempty"`
		ToolCalls  []oaCall `json:"tool_calls,omitempty"`
		ToolCallID string   `json:"tool_call_id,omitempty"`
		parts      []oaPart // content parts, copied into Content by finish
	}
	oaPart struct {
		Type     string `json:"type"`
		Text     string `json:"text,omitempty"`
		ImageURL *struct {
			URL string `json:"url"`
		} `json:"image_url,omitempty"`
	}
	oaCall struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	oaReq struct {
		Model          string          `json:"model"`
		Messages       []*oaMsg        `json:"messages"`
		Tools          []oaTool        `json:"tools,omitempty"`
		ToolChoice     any             `json:"tool_choice,omitempty"`
		MaxTokens      *int64          `json:"max_tokens,omitempty"`
		ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	}
	oaTool struct {
		Type     string `json:"type"`
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description,omitempty"`
			Parameters  json.RawMessage `json:"parameters,omitempty"`
		} `json:"function"`
	}
)

func (m *oaMsg) addText(t string) { m.parts = append(m.parts, oaPart{Type: "text", Text: t}) }

func (m *oaMsg) addImage(mediaType string, data []byte) {
	p := oaPart{Type: "image_url", ImageURL: &struct {
		URL string `json:"url"`
	}{URL: "data:" + mediaType + ";base64," + base64.StdEncoding.EncodeToString(data)}}
	m.parts = append(m.parts, p)
}

// finish fixes the JSON content of the message from its parts.
func (m *oaMsg) finish() {
	if len(m.parts) > 0 {
		m.Content = m.parts
	} else if m.Role != "assistant" {
		m.Content = ""
	}
}

// readBedrockBody stamps the request id, reads the body and checks its SigV4 signature,
// answering Bedrock's error when any of it fails.
func (s *Server) readBedrockBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	w.Header().Set("X-Amzn-Requestid", fmt.Sprintf("sim-%08d-bedrock", s.seq.Add(1)))
	buf, err := readBody(r, s.opts.MaxBodyBytes)
	if err != nil {
		s.stats.rejected.Add(1)
		if errors.Is(err, errTooLarge) {
			writeBedrockError(w, &bedrockError{http.StatusRequestEntityTooLarge, "ValidationException", "Input is too long."})
			return nil, false
		}
		writeBedrockError(w, bedrockBad("could not read the request body"))
		return nil, false
	}
	body := bytes.Clone(buf.Bytes())
	putBody(buf)
	return body, s.bedrockAuthorized(w, r, body)
}

func (s *Server) bedrockConverse(w http.ResponseWriter, r *http.Request, model string, stream bool) {
	s.stats.requests.Add(1)
	h := w.Header()
	body, ok := s.readBedrockBody(w, r)
	if !ok {
		return
	}
	key := strings.SplitN(strings.TrimPrefix(r.Header.Get("Authorization"), sigv4.Algorithm+" Credential="), "/", 2)[0]

	var wire brWire
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		s.recordBedrock(model, stream, body, 0)
		s.stats.rejected.Add(1)
		writeBedrockError(w, bedrockBad("Malformed input request: %v, please reformat your input and try again.", err))
		return
	}
	oa, ends, toolsEnd, points, e := bedrockToOpenAI(&wire, model)
	s.recordBedrock(model, stream, body, points)
	if e != nil {
		s.stats.rejected.Add(1)
		writeBedrockError(w, e)
		return
	}
	oaBody, _ := json.Marshal(oa)
	st := statePool.Get().(*reqState)
	defer putState(st)
	var p parsed
	if perr := parse(oaBody, st, &p); perr != nil {
		s.stats.rejected.Add(1)
		writeBedrockError(w, bedrockBad("%s", perr.Message))
		return
	}
	if stream {
		s.stats.streams.Add(1)
	}
	var d directives
	parseDirectives(p.lastUser, &d)
	s.drawFault(&d)
	ctx := r.Context()
	if !sleepCtx(ctx, s.opts.Latency+d.ttfb) {
		return
	}
	if d.status != 0 {
		s.bedrockFault(w, &d)
		return
	}

	// Usage under Bedrock's cachePoint rules.
	var bs []bound
	addBound := func(end, msgs int) {
		toks := (end+3)/4 + 3*msgs
		if toks < cacheMinTokens || end == 0 {
			return
		}
		if n := len(bs); n > 0 && bs[n-1].tokens >= toks {
			return
		}
		bs = append(bs, bound{tokens: toks, hash: mix64(fnvBytes(fnvOffset^0xbed, st.canon[:end]))})
	}
	if toolsEnd && len(st.msgStarts) > 0 {
		addBound(st.msgStarts[0], 0)
	}
	for i, end := range ends {
		if !end {
			continue
		}
		e := len(st.canon)
		if i+1 < len(st.msgStarts) {
			e = st.msgStarts[i+1]
		}
		addBound(e, i+1)
	}
	now := s.cacheNow()
	read := s.cache.lookupStore(bs, mix64(fnvString(fnvOffset^0xbed, key)), now.UnixNano(), int64(5*time.Minute))
	write := 0
	if n := len(bs); n > 0 && bs[n-1].tokens > read {
		write = bs[n-1].tokens - read
	}
	total := p.promptToks
	reqHash := mix64(fnvString(fnvBytes(fnvOffset^uint64(s.opts.Seed), st.canon), model))
	res := s.generate(&p, &d, st, reqHash)
	stop := map[string]string{"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[res.finish]
	if res.content != nil && wire.InferenceConfig != nil {
		for _, seq := range wire.InferenceConfig.StopSequences {
			if i := bytes.Index(res.content, []byte(seq)); seq != "" && i >= 0 {
				res.content, stop = res.content[:i], "stop_sequence"
				res.completion = tokensOf(len(res.content))
			}
		}
	}
	s.stats.answer(key, total, read, res.completion)
	usage := map[string]int{"inputTokens": max(total-read-write, 0), "outputTokens": res.completion,
		"totalTokens": total + res.completion, "cacheReadInputTokens": read, "cacheWriteInputTokens": write}
	toolUseIDs := make([]string, len(res.toolCalls))
	for i, c := range res.toolCalls {
		toolUseIDs[i] = "tooluse_" + strings.TrimPrefix(c.id, "call_")
	}
	if stream {
		s.bedrockStream(w, r, &d, &res, toolUseIDs, stop, usage)
		return
	}
	if d.hold != "" {
		s.stats.note("hold")
		if !s.wait(ctx, d.hold) {
			return
		}
	}
	var content []any
	if res.content != nil {
		content = append(content, map[string]any{"text": string(res.content)})
	}
	for i, c := range res.toolCalls {
		content = append(content, map[string]any{"toolUse": map[string]any{"toolUseId": toolUseIDs[i], "name": c.name, "input": json.RawMessage(c.args)}})
	}
	out := map[string]any{
		"output":     map[string]any{"message": map[string]any{"role": "assistant", "content": content}},
		"stopReason": stop, "usage": usage, "metrics": map[string]int{"latencyMs": 42},
	}
	b, _ := json.Marshal(out)
	h.Set("Content-Type", "application/json")
	if d.cutAfter >= 0 {
		s.stats.fault("cut")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:len(b)/2])
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (s *Server) recordBedrock(model string, stream bool, body []byte, points int) {
	s.bedrock.mu.Lock()
	s.bedrock.last = &BedrockRequest{Model: model, Stream: stream, Body: body, CachePoints: points}
	s.bedrock.mu.Unlock()
}

var bedrockMedia = map[string]string{"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}

// bedrockToOpenAI validates a Converse request and maps it onto a chat request. ends[i] marks
// OpenAI message i as ending at a cachePoint; toolsEnd marks a cachePoint in the tool list.
func bedrockToOpenAI(w *brWire, model string) (oa *oaReq, ends []bool, toolsEnd bool, points int, e *bedrockError) {
	oa = &oaReq{Model: model}
	if len(w.Messages) == 0 {
		return nil, nil, false, 0, bedrockBad("The messages field is required and must not be empty.")
	}
	hasToolConfig := w.ToolConfig != nil && len(w.ToolConfig.Tools) > 0
	checkCP := func(cp *struct {
		Type string `json:"type"`
		TTL  string `json:"ttl"`
	}) *bedrockError {
		points++
		if cp.Type != "default" {
			return bedrockBad("cachePoint.type must be default")
		}
		if cp.TTL != "" && cp.TTL != "5m" && cp.TTL != "1h" {
			return bedrockBad("cachePoint.ttl must be 5m or 1h")
		}
		return nil
	}
	add := func(m *oaMsg, end bool) {
		m.finish()
		oa.Messages = append(oa.Messages, m)
		ends = append(ends, end)
	}
	if len(w.System) > 0 {
		sys := &oaMsg{Role: "system"}
		end := false
		for _, b := range w.System {
			switch {
			case b.Text != nil:
				if strings.TrimSpace(*b.Text) == "" {
					return nil, nil, false, 0, bedrockBad("The text field in the system block is blank.")
				}
				sys.addText(*b.Text)
				end = false
			case b.CachePoint != nil:
				if e := checkCP(b.CachePoint); e != nil {
					return nil, nil, false, 0, e
				}
				end = true
			default:
				return nil, nil, false, 0, bedrockBad("system blocks must be text or cachePoint")
			}
		}
		add(sys, end)
	}
	for i, m := range w.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return nil, nil, false, 0, bedrockBad("messages.%d.role: %q is not one of user, assistant", i, m.Role)
		}
		if i == 0 && m.Role != "user" {
			return nil, nil, false, 0, bedrockBad("A conversation must start with a user message. Try again with a conversation that starts with a user message.")
		}
		if i > 0 && w.Messages[i-1].Role == m.Role {
			return nil, nil, false, 0, bedrockBad("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.")
		}
		if len(m.Content) == 0 {
			return nil, nil, false, 0, bedrockBad("messages.%d.content must not be empty", i)
		}
		cur := &oaMsg{Role: m.Role}
		var msgs []*oaMsg
		endLast := false
		flush := func() {
			if len(cur.parts) > 0 || len(cur.ToolCalls) > 0 {
				msgs = append(msgs, cur)
			}
			cur = &oaMsg{Role: m.Role}
		}
		for j, b := range m.Content {
			switch {
			case b.Text != nil:
				if strings.TrimSpace(*b.Text) == "" {
					return nil, nil, false, 0, bedrockBad("The text field in the ContentBlock object at messages.%d.content.%d is blank. Add text to the text field, and try again.", i, j)
				}
				cur.addText(*b.Text)
			case b.Image != nil:
				mt, ok := bedrockMedia[b.Image.Format]
				if !ok || len(b.Image.Source.Bytes) == 0 {
					return nil, nil, false, 0, bedrockBad("messages.%d.content.%d.image: invalid format or empty bytes", i, j)
				}
				cur.addImage(mt, b.Image.Source.Bytes)
			case b.ToolUse != nil:
				if m.Role != "assistant" || !hasToolConfig {
					return nil, nil, false, 0, bedrockBad("messages.%d.content.%d: toolUse needs an assistant message and a toolConfig", i, j)
				}
				if len(b.ToolUse.Input) == 0 || b.ToolUse.Input[0] != '{' {
					return nil, nil, false, 0, bedrockBad("messages.%d.content.%d.toolUse.input must be an object", i, j)
				}
				c := oaCall{ID: b.ToolUse.ToolUseID, Type: "function"}
				c.Function.Name, c.Function.Arguments = b.ToolUse.Name, string(b.ToolUse.Input)
				cur.ToolCalls = append(cur.ToolCalls, c)
			case b.ToolResult != nil:
				if m.Role != "user" || !hasToolConfig {
					return nil, nil, false, 0, bedrockBad("messages.%d.content.%d: toolResult needs a user message and a toolConfig", i, j)
				}
				flush()
				tm := &oaMsg{Role: "tool", ToolCallID: b.ToolResult.ToolUseID}
				for _, rb := range b.ToolResult.Content {
					switch {
					case rb.Text != nil:
						tm.addText(*rb.Text)
					case len(rb.JSON) > 0:
						tm.addText(string(rb.JSON))
					}
				}
				if len(tm.parts) == 0 {
					return nil, nil, false, 0, bedrockBad("messages.%d.content.%d.toolResult.content must not be empty", i, j)
				}
				msgs = append(msgs, tm)
			case b.CachePoint != nil:
				if e := checkCP(b.CachePoint); e != nil {
					return nil, nil, false, 0, e
				}
				if j == len(m.Content)-1 {
					endLast = true
				}
			case len(b.ReasoningContent) > 0:
				// Replayed thinking: accepted, not part of the prompt text.
			default:
				return nil, nil, false, 0, bedrockBad("messages.%d.content.%d: unsupported or empty content block", i, j)
			}
		}
		flush()
		for k, om := range msgs {
			add(om, endLast && k == len(msgs)-1)
		}
	}
	if tc := w.ToolConfig; tc != nil {
		for i, t := range tc.Tools {
			switch {
			case t.ToolSpec != nil:
				var ot oaTool
				ot.Type = "function"
				ot.Function.Name, ot.Function.Description, ot.Function.Parameters = t.ToolSpec.Name, t.ToolSpec.Description, t.ToolSpec.InputSchema.JSON
				if t.ToolSpec.Name == "" || len(t.ToolSpec.InputSchema.JSON) == 0 {
					return nil, nil, false, 0, bedrockBad("toolConfig.tools.%d.toolSpec needs a name and an inputSchema.json", i)
				}
				oa.Tools = append(oa.Tools, ot)
			case t.CachePoint != nil:
				points++
				toolsEnd = true
			default:
				return nil, nil, false, 0, bedrockBad("toolConfig.tools.%d must be a toolSpec or cachePoint", i)
			}
		}
		if len(oa.Tools) == 0 {
			return nil, nil, false, 0, bedrockBad("toolConfig.tools must contain at least one toolSpec")
		}
		if ch := tc.ToolChoice; ch != nil {
			switch {
			case ch.Any != nil:
				oa.ToolChoice = "required"
			case ch.Tool != nil:
				oa.ToolChoice = map[string]any{"type": "function", "function": map[string]string{"name": ch.Tool.Name}}
			default:
				oa.ToolChoice = "auto"
			}
		}
	}
	if ic := w.InferenceConfig; ic != nil {
		if ic.Temperature != nil && (*ic.Temperature < 0 || *ic.Temperature > 1) {
			return nil, nil, false, 0, bedrockBad("inferenceConfig.temperature must be between 0 and 1")
		}
		if ic.MaxTokens != nil {
			if *ic.MaxTokens < 1 {
				return nil, nil, false, 0, bedrockBad("inferenceConfig.maxTokens must be at least 1")
			}
			oa.MaxTokens = ic.MaxTokens
		}
	}
	if oc := w.OutputConfig; oc != nil && oc.TextFormat.Type == "json_schema" {
		schema := oc.TextFormat.Structure.JSONSchema.Schema
		if !json.Valid([]byte(schema)) {
			return nil, nil, false, 0, bedrockBad("outputConfig.textFormat.structure.jsonSchema.schema must be a JSON string")
		}
		oa.ResponseFormat, _ = json.Marshal(map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "out", "schema": json.RawMessage(schema)}})
	}
	return oa, ends, toolsEnd, points, nil
}

// bedrockFault answers a [sim:status=…] directive with a Bedrock error.
func (s *Server) bedrockFault(w http.ResponseWriter, d *directives) {
	e := &bedrockError{status: d.status}
	switch d.status {
	case 400:
		e.typ, e.msg = "ValidationException", "Simulated invalid request."
	case 403:
		e.typ, e.msg = "AccessDeniedException", "You don't have access to the model with the specified model ID."
	case 404:
		e.typ, e.msg = "ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."
	case 408:
		e.typ, e.msg = "ModelTimeoutException", "Model has timed out in processing the request."
	case 424:
		e.typ, e.msg = "ModelErrorException", "The model returned an error."
	case 429:
		e.typ, e.msg = "ThrottlingException", "Too many requests, please wait before trying again."
	case 503:
		e.typ, e.msg = "ServiceUnavailableException", "The service is temporarily unavailable."
	default:
		e.typ, e.msg = "InternalServerException", "The server encountered an internal error."
	}
	if d.code != "" {
		e.typ = d.code
	}
	if d.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((d.retryAfter+time.Second-1)/time.Second)))
	}
	s.stats.fault("status_" + strconv.Itoa(d.status))
	writeBedrockError(w, e)
}

// bedrockStream writes a ConverseStream answer as event-stream frames in small split writes.
func (s *Server) bedrockStream(w http.ResponseWriter, r *http.Request, d *directives, res *result, ids []string, stop string, usage map[string]int) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.WriteHeader(http.StatusOK)
	delay := s.opts.ChunkDelay + d.chunkDelay
	seed := uint64(len(ids)) ^ uint64(res.completion)
	send := func(frame []byte) bool {
		for len(frame) > 0 {
			seed = mix64(seed + 1)
			n := min(int(1+seed%61), len(frame))
			if ctx.Err() != nil {
				return false
			}
			if _, err := w.Write(frame[:n]); err != nil {
				return false
			}
			if rc.Flush() != nil {
				return false
			}
			frame = frame[n:]
		}
		return true
	}
	event := func(typ string, v any) bool {
		b, _ := json.Marshal(v)
		return send(eventstream.AppendEvent(nil, typ, b))
	}
	if !event("messageStart", map[string]string{"role": "assistant"}) {
		return
	}
	// Deltas: text pieces without contentBlockStart, or per tool a start and input pieces.
	type delta struct {
		block int
		start bool
		text  []byte
		input []byte
		stop  bool
	}
	var ds []delta
	n := s.opts.ChunksPerAnswer
	if res.content != nil {
		for _, part := range split(res.content, n) {
			ds = append(ds, delta{block: 0, text: part})
		}
		ds = append(ds, delta{block: 0, stop: true})
	}
	for i, c := range res.toolCalls {
		ds = append(ds, delta{block: i, start: true})
		for _, part := range split(c.args, max(n-1, 1)) {
			ds = append(ds, delta{block: i, input: part})
		}
		ds = append(ds, delta{block: i, stop: true})
	}
	sent := 0
	for _, dl := range ds {
		if d.cutAfter >= 0 && sent == d.cutAfter {
			s.stats.fault("cut")
			panic(http.ErrAbortHandler)
		}
		if d.streamErrorAfter >= 0 && sent == d.streamErrorAfter {
			s.bedrockStreamException(d, send)
			return
		}
		switch {
		case dl.start:
			if !event("contentBlockStart", map[string]any{"contentBlockIndex": dl.block,
				"start": map[string]any{"toolUse": map[string]string{"toolUseId": ids[dl.block], "name": res.toolCalls[dl.block].name}}}) {
				return
			}
		case dl.stop:
			if !event("contentBlockStop", map[string]any{"contentBlockIndex": dl.block}) {
				return
			}
		default:
			if sent > 0 && delay > 0 && !sleepCtx(ctx, delay) {
				return
			}
			var dv any = map[string]string{"text": string(dl.text)}
			if dl.input != nil {
				dv = map[string]any{"toolUse": map[string]string{"input": string(dl.input)}}
			}
			if !event("contentBlockDelta", map[string]any{"contentBlockIndex": dl.block, "delta": dv, "p": "abcdefgh"[:1+sent%8]}) {
				return
			}
			sent++
			if sent == 1 && d.hold != "" {
				s.stats.note("hold")
				if !s.wait(ctx, d.hold) {
					return
				}
			}
		}
	}
	if d.streamErrorAfter >= 0 {
		s.bedrockStreamException(d, send)
		return
	}
	if !event("messageStop", map[string]string{"stopReason": stop}) {
		return
	}
	event("metadata", map[string]any{"usage": usage, "metrics": map[string]int{"latencyMs": 42}})
}

func (s *Server) bedrockStreamException(d *directives, send func([]byte) bool) {
	s.stats.fault("stream_error")
	typ := d.code
	if typ == "" {
		typ = "modelStreamErrorException"
	}
	send(eventstream.AppendException(nil, typ, []byte(`{"message":"Simulated stream failure."}`)))
}
