package simulated

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Anthropic Messages API simulation (reference providers.md §3, tokenopt.md §1.2).
//
// Routes: POST /v1/messages (x-api-key and anthropic-version headers required) and Claude on
// Vertex, POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict
// and :streamRawPredict (Authorization: Bearer required; the body must carry
// "anthropic_version":"vertex-2023-10-16" and no "model").
//
// Validation is as strict as the real API, and stricter in one place so adapter bugs show:
// unknown top-level fields, a missing max_tokens, roles other than user/assistant, two
// consecutive turns of the same role, tool_use blocks outside assistant turns, tool_result
// blocks that answer no tool_use of the previous assistant turn (and tool_use blocks left
// unanswered by the next turn), empty text blocks, temperature outside 0–1, more than four
// cache_control breakpoints, and a 1h breakpoint after a 5m one are all 400s. A key that starts
// with "invalid" gets 401, as a revoked key would.
//
// Usage follows Anthropic's caching semantics. The prompt is serialized in render order
// (tools, system, messages) like the OpenAI simulation, and tokens are ceil(bytes/4). Each
// cache_control breakpoint marks the prefix up to the end of its block; a prefix shorter than
// the model's minimum (1024 tokens; 4096 for Haiku 4.5 and Opus 4.5/4.6; 2048 for Claude 3
// Haiku) is not cached. Per API key, the longest stored prefix is reported as
// cache_read_input_tokens, the tokens from there to the last cacheable breakpoint as
// cache_creation_input_tokens (split into ephemeral_5m/1h by the TTL of the breakpoint that
// ends each segment), and input_tokens is the rest — it excludes cached tokens. Entries live
// for their TTL (5m or 1h) after their last use.
//
// Directives ([sim:…] in the last user text) work as for chat completions; status=529 answers
// overloaded_error with the Retry-After given, and stream_error_after=N sends an "event: error"
// overloaded_error after N deltas.

// AnthropicRequest is what the simulator last received on an Anthropic route.
type AnthropicRequest struct {
	Path string
	// Header holds the request headers, with x-api-key and Authorization values masked.
	Header http.Header
	Body   []byte
	// Breakpoints lists the cache_control markers in render order.
	Breakpoints []AnthropicBreakpoint
}

// AnthropicBreakpoint is one cache_control marker the simulator saw.
type AnthropicBreakpoint struct {
	// Where names the block: "tools[0]", "system[1]", "messages[2].content[0]" or "request".
	Where string
	TTL   string // "5m" or "1h"
	// Tokens is the prefix length up to the end of the marked block.
	Tokens int
}

// LastAnthropicRequest returns the last request received on an Anthropic route.
func (s *Server) LastAnthropicRequest() (AnthropicRequest, bool) {
	s.anth.mu.Lock()
	defer s.anth.mu.Unlock()
	if s.anth.last == nil {
		return AnthropicRequest{}, false
	}
	r := *s.anth.last
	return r, true
}

// anthropicState is the Anthropic side's prompt cache and last-request record. Its zero value
// is ready to use.
type anthropicState struct {
	mu    sync.Mutex
	cache map[uint64]int64 // prefix hash → expiry (unix ns)
	last  *AnthropicRequest
}

func (a *anthropicState) reset() {
	a.mu.Lock()
	a.cache, a.last = nil, nil
	a.mu.Unlock()
}

const anthropicCacheMax = 1 << 16

// anthropicLookback is how many blocks before a breakpoint Anthropic checks for a cache entry.
const anthropicLookback = 20

// has reports whether a live entry exists for the prefix hash under the key.
func (a *anthropicState) has(hash, key uint64, now int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.cache[mix64(hash^key)]
	return ok && exp > now
}

// store writes (or refreshes) every cacheable breakpoint with its TTL.
func (a *anthropicState) store(bps []anthBreak, key uint64, now int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cache == nil {
		a.cache = map[uint64]int64{}
	}
	if len(a.cache) > anthropicCacheMax {
		for k, exp := range a.cache {
			if exp <= now {
				delete(a.cache, k)
			}
		}
		if len(a.cache) > anthropicCacheMax {
			clear(a.cache)
		}
	}
	for _, b := range bps {
		a.cache[mix64(b.hash^key)] = now + int64(b.ttl)
	}
}

// anthBreak is a cacheable breakpoint: prefix hash, tokens, TTL.
type anthBreak struct {
	hash   uint64
	tokens int
	ttl    time.Duration
	long   bool
	block  int // index into blockEnds
}

// serveAnthropic answers the Anthropic routes; it reports false for other paths.
func (s *Server) serveAnthropic(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	vertexModel, vertexStream := "", false
	switch {
	case p == "/v1/messages":
	case strings.HasPrefix(p, "/v1/projects/") && strings.Contains(p, "/publishers/anthropic/models/"):
		_, rest, _ := strings.Cut(p, "/publishers/anthropic/models/")
		model, verb, ok := strings.Cut(rest, ":")
		if !ok || model == "" || (verb != "rawPredict" && verb != "streamRawPredict") {
			return false
		}
		vertexModel, vertexStream = model, verb == "streamRawPredict"
	default:
		return false
	}
	if r.Method != http.MethodPost {
		s.notAllowed(w, r)
		return true
	}
	s.anthropicMessages(w, r, vertexModel, vertexStream)
	return true
}

// anthError is an Anthropic error response.
type anthError struct {
	status     int
	typ        string
	msg        string
	retryAfter time.Duration
}

func anthBad(format string, args ...any) *anthError {
	return &anthError{status: http.StatusBadRequest, typ: "invalid_request_error", msg: fmt.Sprintf(format, args...)}
}

func (s *Server) writeAnthError(w http.ResponseWriter, e *anthError) {
	h := w.Header()
	h["Content-Type"] = hvJSON
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	reqID := h.Get("Request-Id")
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": e.typ, "message": e.msg}, "request_id": reqID})
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// anthWire is the request as the simulator decodes it.
type anthWire struct {
	Model            *string                 `json:"model"`
	AnthropicVersion string                  `json:"anthropic_version"`
	MaxTokens        *int64                  `json:"max_tokens"`
	System           json.RawMessage         `json:"system"`
	Messages         []anthWireMsg           `json:"messages"`
	Tools            []anthWireTool          `json:"tools"`
	ToolChoice       *anthWireToolChoice     `json:"tool_choice"`
	Temperature      *float64                `json:"temperature"`
	TopP             *float64                `json:"top_p"`
	TopK             *int64                  `json:"top_k"`
	StopSequences    []string                `json:"stop_sequences"`
	Stream           bool                    `json:"stream"`
	OutputConfig     *anthWireOutputConfig   `json:"output_config"`
	CacheControl     *providers.CacheControl `json:"cache_control"`
}

var anthKnownFields = []string{"model", "anthropic_version", "max_tokens", "system", "messages", "tools", "tool_choice",
	"temperature", "top_p", "top_k", "stop_sequences", "stream", "metadata", "thinking", "output_config",
	"cache_control", "service_tier", "container", "mcp_servers", "context_management"}

type anthWireMsg struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type anthWireBlock struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text"`
	Source    *anthWireSource `json:"source"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	Thinking  string          `json:"thinking"`
	Signature *string         `json:"signature"`
	Data      string          `json:"data"`

	CacheControl *providers.CacheControl `json:"cache_control"`
}

type anthWireSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type"`
	Data      string `json:"data"`
	URL       string `json:"url"`
	FileID    string `json:"file_id"`
}

type anthWireTool struct {
	Type         string                  `json:"type"`
	Name         string                  `json:"name"`
	Description  string                  `json:"description"`
	InputSchema  json.RawMessage         `json:"input_schema"`
	CacheControl *providers.CacheControl `json:"cache_control"`
}

type anthWireToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
}

type anthWireOutputConfig struct {
	Format *struct {
		Type   string          `json:"type"`
		Schema json.RawMessage `json:"schema"`
	} `json:"format"`
}

// anthParsed is the validated request plus what usage and generation need.
type anthParsed struct {
	wire   anthWire
	model  string
	canon  []byte
	breaks []AnthropicBreakpoint
	ends   []int // byte offsets of breakpoints in canon
	ttls   []time.Duration
	// blockEnds are the byte offsets in canon where every block ends (tools, system blocks,
	// message content blocks); endBlocks maps each breakpoint to its block.
	blockEnds []int
	endBlocks []int
	gen       parsed
}

func (s *Server) anthropicMessages(w http.ResponseWriter, r *http.Request, vertexModel string, vertexStream bool) {
	h := w.Header()
	s.stats.requests.Add(1)
	var idb [32]byte
	h.Set("Request-Id", string(strconv.AppendUint(append(idb[:0], "req_sim_"...), s.seq.Add(1), 10)))
	vertex := vertexModel != ""

	// Authentication.
	key := ""
	if vertex {
		key = bearer(r)
		if key == "" {
			s.stats.rejected.Add(1)
			s.writeAnthError(w, &anthError{status: http.StatusUnauthorized, typ: "authentication_error",
				msg: "Request is missing required authentication credential. Expected OAuth 2 access token."})
			return
		}
	} else {
		key = r.Header.Get("X-Api-Key")
		if key == "" {
			s.stats.rejected.Add(1)
			s.writeAnthError(w, &anthError{status: http.StatusUnauthorized, typ: "authentication_error", msg: "x-api-key header is required"})
			return
		}
		if r.Header.Get("Anthropic-Version") == "" {
			s.stats.rejected.Add(1)
			s.writeAnthError(w, anthBad("anthropic-version: header is required"))
			return
		}
	}
	if strings.HasPrefix(key, "invalid") {
		s.stats.rejected.Add(1)
		s.writeAnthError(w, &anthError{status: http.StatusUnauthorized, typ: "authentication_error", msg: "invalid x-api-key"})
		return
	}

	buf, err := readBody(r, s.opts.MaxBodyBytes)
	if err != nil {
		s.stats.rejected.Add(1)
		if errors.Is(err, errTooLarge) {
			s.writeAnthError(w, &anthError{status: http.StatusRequestEntityTooLarge, typ: "request_too_large", msg: "Request exceeds the maximum allowed number of bytes."})
			return
		}
		s.writeAnthError(w, anthBad("could not read the request body"))
		return
	}
	body := bytes.Clone(buf.Bytes())
	putBody(buf)

	var ap anthParsed
	if e := s.parseAnthropic(body, vertexModel, &ap); e != nil {
		s.stats.rejected.Add(1)
		s.recordAnthropic(r, body, nil)
		s.writeAnthError(w, e)
		return
	}
	s.recordAnthropic(r, body, ap.breaks)
	stream := ap.wire.Stream || vertexStream
	if stream {
		s.stats.streams.Add(1)
	}

	var d directives
	parseDirectives(ap.gen.lastUser, &d)
	s.drawFault(&d)
	ctx := r.Context()
	if !sleepCtx(ctx, s.opts.Latency+d.ttfb) {
		return
	}
	if d.status != 0 {
		s.anthropicFault(w, &ap, &d)
		return
	}

	// Usage under Anthropic's caching rules.
	total := tokensOf(len(ap.canon))
	minTokens := anthropicCacheMin(ap.model)
	// The prefix hash at every block end, computed incrementally (FNV continues).
	blockHash := make([]uint64, len(ap.blockEnds))
	ph, from := uint64(fnvOffset^0xa17), 0
	for k, end := range ap.blockEnds {
		ph = fnvBytes(ph, ap.canon[from:end])
		blockHash[k], from = ph, end
	}
	var bps []anthBreak
	for i, end := range ap.ends {
		toks := tokensOf(end)
		if end == 0 || toks < minTokens {
			continue
		}
		bps = append(bps, anthBreak{hash: blockHash[ap.endBlocks[i]], tokens: toks, ttl: ap.ttls[i], long: ap.ttls[i] == time.Hour, block: ap.endBlocks[i]})
	}
	now := s.cacheNow()
	keyHash := mix64(fnvString(fnvOffset, key))
	// Anthropic looks back up to about 20 blocks before each breakpoint for an earlier cache
	// entry, so a conversation whose rolling breakpoint moved forward still reads the prefix
	// the previous turn wrote.
	read := 0
	for _, b := range bps {
		for k := b.block; k >= 0 && k >= b.block-anthropicLookback; k-- {
			if t := tokensOf(ap.blockEnds[k]); t > read && t >= minTokens && s.anth.has(blockHash[k], keyHash, now.UnixNano()) {
				read = t
				break
			}
		}
	}
	s.anth.store(bps, keyHash, now.UnixNano())
	w5, w1 := 0, 0
	prev := read
	for _, b := range bps {
		if b.tokens <= read {
			continue
		}
		seg := max(b.tokens-prev, 0)
		if b.long {
			w1 += seg
		} else {
			w5 += seg
		}
		prev = max(prev, b.tokens)
	}
	u := anthUsage{input: max(total-read-w5-w1, 0), read: read, write5m: w5, write1h: w1}

	st := statePool.Get().(*reqState)
	defer putState(st)
	reqHash := mix64(fnvString(fnvBytes(fnvOffset^uint64(s.opts.Seed), ap.canon), ap.model))
	ap.gen.prompt = ap.canon
	res := s.generate(&ap.gen, &d, st, reqHash)
	stop := anthStopReason(res.finish)
	var stopSeq string
	if res.content != nil {
		for _, seq := range ap.wire.StopSequences {
			if i := bytes.Index(res.content, []byte(seq)); seq != "" && i >= 0 {
				res.content = res.content[:i]
				stop, stopSeq = "stop_sequence", seq
				res.completion = tokensOf(len(res.content))
			}
		}
	}
	u.output = res.completion
	s.stats.answer(key, total, read, res.completion)

	msgID := string(appendHex(append(idb[:0], "msg_sim_"...), reqHash))
	model := ap.model
	if stream {
		s.anthropicStream(w, r, &d, &res, msgID, model, stop, stopSeq, u)
		return
	}
	if d.hold != "" {
		s.stats.note("hold")
		if !s.wait(ctx, d.hold) {
			return
		}
	}
	out := map[string]any{
		"id": msgID, "type": "message", "role": "assistant", "model": model,
		"content": anthContent(&res), "stop_reason": stop, "stop_sequence": nullableString(stopSeq),
		"usage": u.object(true),
	}
	b, _ := json.Marshal(out)
	h["Content-Type"] = hvJSON
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

func nullableString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func anthStopReason(finish string) string {
	switch finish {
	case "tool_calls":
		return "tool_use"
	case "length":
		return "max_tokens"
	}
	return "end_turn"
}

// anthropicCacheMin is the minimum cacheable prefix for a model (tokenopt.md §1.2).
func anthropicCacheMin(model string) int {
	m := strings.ToLower(model)
	switch {
	case strings.Contains(m, "haiku-4-5"), strings.Contains(m, "opus-4-5"), strings.Contains(m, "opus-4-6"):
		return 4096
	case strings.Contains(m, "3-haiku"), strings.Contains(m, "3-5-haiku"):
		return 2048
	}
	return 1024
}

type anthUsage struct{ input, read, write5m, write1h, output int }

func (u anthUsage) object(withOutput bool) map[string]any {
	o := map[string]any{
		"input_tokens": u.input, "cache_creation_input_tokens": u.write5m + u.write1h, "cache_read_input_tokens": u.read,
		"cache_creation": map[string]int{"ephemeral_5m_input_tokens": u.write5m, "ephemeral_1h_input_tokens": u.write1h},
		"output_tokens":  1, "service_tier": "standard",
	}
	if withOutput {
		o["output_tokens"] = u.output
	}
	return o
}

func anthToolUseID(callID string) string { return "toolu_" + strings.TrimPrefix(callID, "call_") }

func anthContent(res *result) []map[string]any {
	if len(res.toolCalls) > 0 {
		out := make([]map[string]any, 0, len(res.toolCalls))
		for _, c := range res.toolCalls {
			out = append(out, map[string]any{"type": "tool_use", "id": anthToolUseID(c.id), "name": c.name, "input": json.RawMessage(c.args)})
		}
		return out
	}
	return []map[string]any{{"type": "text", "text": string(res.content)}}
}

func (s *Server) recordAnthropic(r *http.Request, body []byte, bps []AnthropicBreakpoint) {
	h := r.Header.Clone()
	for _, k := range []string{"X-Api-Key", "Authorization"} {
		if h.Get(k) != "" {
			h.Set(k, "***")
		}
	}
	rec := &AnthropicRequest{Path: r.URL.Path, Header: h, Body: body, Breakpoints: bps}
	s.anth.mu.Lock()
	s.anth.last = rec
	s.anth.mu.Unlock()
}

// anthropicFault answers a [sim:status=…] directive with an Anthropic error.
func (s *Server) anthropicFault(w http.ResponseWriter, ap *anthParsed, d *directives) {
	e := &anthError{status: d.status, retryAfter: d.retryAfter}
	switch d.status {
	case 400:
		e.typ, e.msg = "invalid_request_error", "Simulated invalid request."
	case 401:
		e.typ, e.msg = "authentication_error", "invalid x-api-key"
	case 402:
		e.typ, e.msg = "billing_error", "Your credit balance is too low to access the Anthropic API."
	case 403:
		e.typ, e.msg = "permission_error", "Your API key does not have permission to use the specified resource."
	case 404:
		e.typ, e.msg = "not_found_error", "model: "+ap.model
	case 413:
		e.typ, e.msg = "request_too_large", "Request exceeds the maximum allowed number of bytes."
	case 429:
		e.typ, e.msg = "rate_limit_error", "This request would exceed the rate limit for your organization."
	case 504:
		e.typ, e.msg = "timeout_error", "Request timed out."
	case 529:
		e.typ, e.msg = "overloaded_error", "Overloaded"
	default:
		e.typ, e.msg = "api_error", "Internal server error"
		if d.status < 500 {
			e.typ, e.msg = "invalid_request_error", "Simulated error "+strconv.Itoa(d.status)+"."
		}
	}
	s.stats.fault("status_" + strconv.Itoa(d.status))
	s.writeAnthError(w, e)
}

// parseAnthropic validates the body like the Messages API and serializes the prompt.
func (s *Server) parseAnthropic(body []byte, vertexModel string, ap *anthParsed) *anthError {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return anthBad("The request body is not valid JSON.")
	}
	for k := range top {
		if !slices.Contains(anthKnownFields, k) {
			return anthBad("%s: Extra inputs are not permitted", k)
		}
	}
	wr := &ap.wire
	if err := json.Unmarshal(body, wr); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return anthBad("%s: Input should be a valid %s", te.Field, te.Type.Kind())
		}
		return anthBad("The request body is not valid JSON.")
	}
	if vertexModel != "" {
		if wr.Model != nil {
			return anthBad("model: Extra inputs are not permitted")
		}
		if wr.AnthropicVersion != "vertex-2023-10-16" {
			return anthBad("anthropic_version: Input should be 'vertex-2023-10-16'")
		}
		ap.model = vertexModel
	} else {
		if wr.AnthropicVersion != "" {
			return anthBad("anthropic_version: Extra inputs are not permitted")
		}
		if wr.Model == nil || *wr.Model == "" {
			return anthBad("model: Field required")
		}
		ap.model = *wr.Model
	}
	if wr.MaxTokens == nil {
		return anthBad("max_tokens: Field required")
	}
	if *wr.MaxTokens < 1 {
		return anthBad("max_tokens: Input should be greater than or equal to 1")
	}
	if t := wr.Temperature; t != nil && (*t < 0 || *t > 1) {
		return anthBad("temperature: Input should be less than or equal to 1")
	}
	if p := wr.TopP; p != nil && (*p < 0 || *p > 1) {
		return anthBad("top_p: Input should be less than or equal to 1")
	}
	if len(wr.Messages) == 0 {
		return anthBad("messages: Field required")
	}

	g := &ap.gen
	g.model = ap.model
	g.outputCap = *wr.MaxTokens
	g.parallel = true
	canon := make([]byte, 0, len(body))
	mark := func(where string, cc *providers.CacheControl) *anthError {
		// Every block end is a place a later breakpoint can look back to.
		ap.blockEnds = append(ap.blockEnds, len(canon))
		if cc == nil {
			return nil
		}
		if cc.Type != "ephemeral" {
			return anthBad("%s.cache_control.type: Input should be 'ephemeral'", where)
		}
		ttl, name := 5*time.Minute, "5m"
		switch cc.TTL {
		case "", "5m":
		case "1h":
			ttl, name = time.Hour, "1h"
		default:
			return anthBad("%s.cache_control.ttl: Input should be '5m' or '1h'", where)
		}
		if n := len(ap.ttls); n > 0 && ap.ttls[n-1] < ttl {
			return anthBad("a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block")
		}
		ap.breaks = append(ap.breaks, AnthropicBreakpoint{Where: where, TTL: name, Tokens: tokensOf(len(canon))})
		ap.ends = append(ap.ends, len(canon))
		ap.endBlocks = append(ap.endBlocks, len(ap.blockEnds)-1)
		ap.ttls = append(ap.ttls, ttl)
		return nil
	}

	// Tools.
	for i, t := range wr.Tools {
		where := "tools." + strconv.Itoa(i)
		if t.Name == "" {
			return anthBad("%s.name: Field required", where)
		}
		if t.Type == "" || t.Type == "custom" {
			if len(t.InputSchema) == 0 || t.InputSchema[0] != '{' {
				return anthBad("%s.input_schema: Field required", where)
			}
		}
		canon = append(canon, t.Name...)
		canon = append(canon, '\n')
		canon = append(canon, t.Description...)
		canon = append(canon, t.InputSchema...)
		canon = append(canon, '\n')
		g.tools = append(g.tools, simTool(t.Name, t.InputSchema))
		if e := mark("tools["+strconv.Itoa(i)+"]", t.CacheControl); e != nil {
			return e
		}
	}
	if tc := wr.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto":
			g.toolChoice = "auto"
		case "any":
			g.toolChoice = "required"
		case "none":
			g.toolChoice = "none"
		case "tool":
			if tc.Name == "" {
				return anthBad("tool_choice.name: Field required")
			}
			g.toolChoice, g.namedTool = "function", tc.Name
		default:
			return anthBad("tool_choice.type: Input tag '%s' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'", tc.Type)
		}
		g.parallel = !tc.DisableParallelToolUse
	}
	if oc := wr.OutputConfig; oc != nil && oc.Format != nil {
		if oc.Format.Type != "json_schema" || len(oc.Format.Schema) == 0 {
			return anthBad("output_config.format: a json_schema format with a schema is required")
		}
		g.format, g.schema = "json_schema", oc.Format.Schema
	}

	// System.
	if len(wr.System) > 0 && !isNull(wr.System) {
		canon = append(canon, "system\n"...)
		if wr.System[0] == '"' {
			var s string
			_ = json.Unmarshal(wr.System, &s)
			canon = append(canon, s...)
		} else {
			var blocks []anthWireBlock
			if err := json.Unmarshal(wr.System, &blocks); err != nil {
				return anthBad("system: Input should be a valid string or list of text blocks")
			}
			for i, b := range blocks {
				if b.Type != "text" {
					return anthBad("system.%d.type: Input should be 'text'", i)
				}
				if b.Text == nil || *b.Text == "" {
					return anthBad("system: text content blocks must be non-empty")
				}
				canon = append(canon, *b.Text...)
				if e := mark("system["+strconv.Itoa(i)+"]", b.CacheControl); e != nil {
					return e
				}
			}
		}
		canon = append(canon, '\n')
	}

	// Messages.
	var pendingToolUse []string
	var lastUserText []byte
	for i, m := range wr.Messages {
		where := "messages." + strconv.Itoa(i)
		if m.Role != "user" && m.Role != "assistant" {
			return anthBad("%s.role: Input should be 'user' or 'assistant'", where)
		}
		if i > 0 && wr.Messages[i-1].Role == m.Role {
			return anthBad("messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"%s\" roles in a row", m.Role)
		}
		var blocks []anthWireBlock
		switch {
		case len(m.Content) > 0 && m.Content[0] == '"':
			var s string
			_ = json.Unmarshal(m.Content, &s)
			if s == "" && i < len(wr.Messages)-1 {
				return anthBad("%s: all messages must have non-empty content except for the optional final assistant message", where)
			}
			blocks = []anthWireBlock{{Type: "text", Text: &s}}
		case len(m.Content) > 0 && m.Content[0] == '[':
			if err := json.Unmarshal(m.Content, &blocks); err != nil {
				return anthBad("%s.content: Input should be a valid list", where)
			}
		default:
			return anthBad("%s.content: Field required", where)
		}
		if len(blocks) == 0 && i < len(wr.Messages)-1 {
			return anthBad("%s: all messages must have non-empty content except for the optional final assistant message", where)
		}
		canon = append(canon, m.Role...)
		canon = append(canon, '\n')
		var answered []string
		var userText, toolText []byte
		var toolUses []string
		for j, b := range blocks {
			bw := where + ".content." + strconv.Itoa(j)
			switch b.Type {
			case "text":
				if b.Text == nil || *b.Text == "" {
					return anthBad("%s: text content blocks must be non-empty", where)
				}
				canon = append(canon, *b.Text...)
				userText = append(userText, *b.Text...)
			case "image", "document":
				if m.Role != "user" {
					return anthBad("%s.type: %s blocks are only allowed in user messages", bw, b.Type)
				}
				if e := checkSource(bw, b.Type, b.Source); e != nil {
					return e
				}
				canon = appendPlaceholder(canon, b.Type, fnvString(fnvOffset, b.Source.Data+b.Source.URL))
			case "tool_use":
				if m.Role != "assistant" {
					return anthBad("%s.type: tool_use blocks are only allowed in assistant messages", bw)
				}
				if b.ID == "" || b.Name == "" {
					return anthBad("%s: tool_use blocks require id and name", bw)
				}
				if len(b.Input) == 0 || b.Input[0] != '{' {
					return anthBad("%s.input: Input should be a valid dictionary", bw)
				}
				toolUses = append(toolUses, b.ID)
				canon = append(canon, b.Name...)
				canon = append(canon, '\n')
				canon = append(canon, b.Input...)
			case "tool_result":
				if m.Role != "user" {
					return anthBad("%s.type: tool_result blocks are only allowed in user messages", bw)
				}
				if !slices.Contains(pendingToolUse, b.ToolUseID) {
					return anthBad("%s: unexpected `tool_use_id` found in `tool_result` blocks: %s. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", where, b.ToolUseID)
				}
				answered = append(answered, b.ToolUseID)
				t, e := toolResultText(bw, b.Content)
				if e != nil {
					return e
				}
				canon = append(canon, t...)
				toolText = append(toolText, t...)
			case "thinking", "redacted_thinking":
				if m.Role != "assistant" {
					return anthBad("%s.type: %s blocks are only allowed in assistant messages", bw, b.Type)
				}
				if b.Type == "thinking" && b.Signature == nil {
					return anthBad("%s.signature: Field required", bw)
				}
				canon = append(canon, b.Thinking...)
			default:
				return anthBad("%s.type: Input tag '%s' found using 'type' does not match any of the expected tags", bw, b.Type)
			}
			if e := mark("messages["+strconv.Itoa(i)+"].content["+strconv.Itoa(j)+"]", b.CacheControl); e != nil {
				return e
			}
		}
		canon = append(canon, '\n')
		if m.Role == "user" {
			for _, id := range pendingToolUse {
				if !slices.Contains(answered, id) {
					return anthBad("%s: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", where, id)
				}
			}
			if len(userText) > 0 {
				lastUserText = userText
			}
			g.lastRole = "user"
			if len(answered) > 0 && len(userText) == 0 {
				g.lastRole, g.lastTool = "tool", toolText
			}
			pendingToolUse = nil
		} else {
			pendingToolUse = toolUses
			g.lastRole = "assistant"
		}
	}
	g.lastUser = lastUserText
	if e := mark("request", wr.CacheControl); e != nil {
		return e
	}
	if wr.CacheControl != nil {
		ap.ends[len(ap.ends)-1] = len(canon)
		ap.breaks[len(ap.breaks)-1].Tokens = tokensOf(len(canon))
	}
	if len(ap.breaks) > 4 {
		return anthBad("A maximum of 4 blocks with cache_control may be provided. Found %d.", len(ap.breaks))
	}
	ap.canon = canon
	return nil
}

// simTool adapts an Anthropic tool to the generator's OpenAI-shaped tool.
func simTool(name string, schema json.RawMessage) wireTool {
	t := wireTool{Type: "function"}
	t.Function = &struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	}{Name: name, Parameters: schema}
	return t
}

var anthImageTypes = []string{"image/jpeg", "image/png", "image/gif", "image/webp"}

func checkSource(where, typ string, src *anthWireSource) *anthError {
	if src == nil {
		return anthBad("%s.source: Field required", where)
	}
	switch src.Type {
	case "base64":
		if typ == "image" && !slices.Contains(anthImageTypes, src.MediaType) {
			return anthBad("%s.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'", where)
		}
		if _, err := base64.StdEncoding.DecodeString(src.Data); err != nil || src.Data == "" {
			return anthBad("%s.source.data: invalid base64 data", where)
		}
	case "url":
		if !strings.HasPrefix(src.URL, "https://") && !strings.HasPrefix(src.URL, "http://") {
			return anthBad("%s.source.url: Input should be a valid URL", where)
		}
	case "file":
		if src.FileID == "" {
			return anthBad("%s.source.file_id: Field required", where)
		}
	default:
		return anthBad("%s.source.type: Input tag '%s' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'", where, src.Type)
	}
	return nil
}

// toolResultText is a tool_result's content as text: a string, or its text blocks.
func toolResultText(where string, raw json.RawMessage) ([]byte, *anthError) {
	if len(raw) == 0 || isNull(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		return []byte(s), nil
	}
	var blocks []anthWireBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, anthBad("%s.content: Input should be a valid string or list", where)
	}
	var out []byte
	for k, b := range blocks {
		switch b.Type {
		case "text":
			if b.Text == nil || *b.Text == "" {
				return nil, anthBad("%s.content.%d: text content blocks must be non-empty", where, k)
			}
			out = append(out, *b.Text...)
		case "image", "document":
			if e := checkSource(where+".content."+strconv.Itoa(k), b.Type, b.Source); e != nil {
				return nil, e
			}
			out = appendPlaceholder(out, b.Type, 0)
		default:
			return nil, anthBad("%s.content.%d.type: unsupported block type '%s' in tool_result", where, k, b.Type)
		}
	}
	return out, nil
}
