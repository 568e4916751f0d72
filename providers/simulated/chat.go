package simulated

import (
	"errors"
	"net/http"
	"strconv"
	"sync"

	"github.com/badtheorylabs/btl-runtime/providers"
)

var statePool = sync.Pool{New: func() any { return new(reqState) }}

const maxPooledBytes = 1 << 20

func putState(st *reqState) {
	if cap(st.canon) > maxPooledBytes || cap(st.out) > maxPooledBytes || cap(st.answer) > maxPooledBytes {
		return
	}
	statePool.Put(st)
}

const systemFingerprint = "fp_sim0000001"

// chat serves POST /v1/chat/completions.
func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	s.setCommonHeaders(h, 0)
	s.stats.requests.Add(1)
	key, ok := s.checkKey(w, r)
	if !ok {
		s.stats.rejected.Add(1)
		return
	}
	buf, err := readBody(r, s.opts.MaxBodyBytes)
	if err != nil {
		s.stats.rejected.Add(1)
		if errors.Is(err, errTooLarge) {
			providers.WriteError(w, &providers.Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: "Request body too large; the maximum is " + strconv.FormatInt(s.opts.MaxBodyBytes, 10) + " bytes."})
			return
		}
		providers.WriteError(w, &providers.Error{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Message: "Could not read the request body."})
		return
	}
	st := statePool.Get().(*reqState)
	defer putState(st)
	var p parsed
	perr := parse(buf.Bytes(), st, &p)
	putBody(buf)
	if perr != nil {
		s.stats.rejected.Add(1)
		providers.WriteError(w, perr)
		return
	}
	if p.stream {
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
		s.injectError(w, &p, &d)
		return
	}

	// Usage: count, look up and refresh the prefix cache.
	var all uint64
	st.bounds, all = prefixBounds(st.bounds, st.canon, st.msgStarts, p.promptToks)
	now := s.opts.Now()
	cached := 0
	cnow := s.cacheNow()
	if scope, spilled := s.routes.scope(key, p.cacheKey, st.canon, cnow); !spilled {
		cached = s.cache.lookupStore(st.bounds, scope, cnow.UnixNano(), int64(s.opts.CacheTTL))
	}

	reqHash := mix64(fnvString(all^uint64(s.opts.Seed), p.model))
	if s.opts.Sampling && p.sampled {
		p.draw = mix64(s.draws.Add(1))
		reqHash = mix64(reqHash ^ p.draw)
	}
	res := s.generate(&p, &d, st, reqHash)
	s.stats.answer(key, p.promptToks, cached, res.completion)

	var idb [32]byte
	id := appendHex(append(idb[:0], "chatcmpl-sim-"...), reqHash)
	// OpenAI generates and bills n answers; the simulator's are n copies of one.
	u := usage{prompt: p.promptToks, cached: cached, completion: res.completion * max(p.choices, 1)}
	h["X-Ratelimit-Remaining-Tokens"] = []string{strconv.Itoa(max(rlTokens-p.promptToks, 0))}
	if !p.stream && d.hold != "" {
		s.stats.note("hold")
		if !s.wait(ctx, d.hold) {
			return
		}
	}
	if p.stream {
		s.stream(w, r, &p, &d, &res, id, now.Unix(), u, st)
		return
	}
	s.respond(w, &p, &d, &res, id, now.Unix(), u, st)
}

type usage struct{ prompt, cached, completion int }

func (u usage) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.prompt), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.completion), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.prompt+u.completion), 10)
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.cached), 10)
	dst = append(dst, `,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
	return dst
}

// injectError answers a [sim:status=…] directive or a random error fault.
func (s *Server) injectError(w http.ResponseWriter, p *parsed, d *directives) {
	e := &providers.Error{Status: d.status, Type: providers.TypeForStatus(d.status), Code: d.code, RetryAfter: d.retryAfter}
	switch d.status {
	case http.StatusBadRequest:
		e.Message = "Simulated invalid request."
		if e.Code == "" {
			e.Code = "invalid_value"
		}
	case http.StatusUnauthorized:
		e.Type = "invalid_request_error"
		e.Message = "Incorrect API key provided: sk-sim****. You can find your API key at https://platform.openai.com/account/api-keys."
		if e.Code == "" {
			e.Code = "invalid_api_key"
		}
	case http.StatusForbidden:
		e.Message = "Country, region, or territory not supported"
		if e.Code == "" {
			e.Code = "unsupported_country_region_territory"
		}
	case http.StatusNotFound:
		e.Message = "The model `" + p.model + "` does not exist or you do not have access to it."
		if e.Code == "" {
			e.Code = "model_not_found"
		}
	case http.StatusTooManyRequests:
		if e.Code == "" {
			e.Code = "rate_limit_exceeded"
		}
		if e.Code == "insufficient_quota" {
			e.Type = "insufficient_quota"
			e.Message = "You exceeded your current quota, please check your plan and billing details."
		} else {
			e.Type = "requests"
			e.Message = "Rate limit reached for " + p.model + " on requests per min (RPM): Limit 30000, Used 30000, Requested 1."
			if d.retryAfter > 0 {
				e.Message += " Please try again in " + d.retryAfter.String() + "."
			}
			w.Header()["X-Ratelimit-Remaining-Requests"] = hvZero
			if d.retryAfter > 0 {
				w.Header()["X-Ratelimit-Reset-Requests"] = []string{d.retryAfter.String()}
			}
		}
	case http.StatusServiceUnavailable:
		e.Message = "The engine is currently overloaded, please try again later."
	default:
		if d.status >= 500 {
			e.Message = "The server had an error while processing your request. Sorry about that!"
		} else {
			e.Message = "Simulated error " + strconv.Itoa(d.status) + "."
		}
	}
	s.stats.fault("status_" + strconv.Itoa(d.status))
	providers.WriteError(w, e)
}

// appendHead appends the common object head: id, object, created, model.
func appendHead(dst []byte, object string, id []byte, created int64, model string) []byte {
	dst = append(dst, `{"id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","object":"`...)
	dst = append(dst, object...)
	dst = append(dst, `","created":`...)
	dst = strconv.AppendInt(dst, created, 10)
	dst = append(dst, `,"model":`...)
	return appendJSONString(dst, model)
}

func appendToolCalls(dst []byte, calls []genCall) []byte {
	dst = append(dst, `"tool_calls":[`...)
	for i, c := range calls {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":"`...)
		dst = append(dst, c.id...)
		dst = append(dst, `","type":"function","function":{"name":`...)
		dst = appendJSONString(dst, c.name)
		dst = append(dst, `,"arguments":`...)
		dst = appendJSONString(dst, c.args)
		dst = append(dst, `}}`...)
	}
	return append(dst, ']')
}

// appendIndex opens a choice object with its index.
func appendIndex(dst []byte, i int) []byte {
	return append(strconv.AppendInt(append(dst, `{"index":`...), int64(i), 10), ',')
}

// respond writes a non-stream chat.completion.
func (s *Server) respond(w http.ResponseWriter, p *parsed, d *directives, res *result, id []byte, created int64, u usage, st *reqState) {
	b := appendHead(st.out[:0], "chat.completion", id, created, p.model)
	b = append(b, `,"choices":[`...)
	for i := range max(p.choices, 1) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendIndex(b, i)
		b = append(b, `"message":{"role":"assistant","content":`...)
		if res.content != nil {
			b = appendJSONString(b, res.content)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"refusal":null,"annotations":[]`...)
		if len(res.toolCalls) > 0 {
			b = append(b, ',')
			b = appendToolCalls(b, res.toolCalls)
		}
		b = append(b, `},"logprobs":null,"finish_reason":"`...)
		b = append(b, res.finish...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"usage":`...)
	b = u.appendJSON(b)
	b = append(b, `,"service_tier":"default","system_fingerprint":"`+systemFingerprint+`"}`...)
	st.out = b
	h := w.Header()
	h["Content-Type"] = hvJSON
	if d.cutAfter >= 0 {
		// Abort midway: no Content-Length, half a body, then a broken connection.
		s.stats.fault("cut")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:len(b)/2])
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// Obfuscation padding, like OpenAI's default side-channel padding: a short deterministic
// string whose length varies per chunk.
const obfAlphabet = "q2Xv9LmR4tZcW8pNbA7sKdJ3fHgY6eUx"

// stream writes an SSE answer chunk by chunk.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, p *parsed, d *directives, res *result, id []byte, created int64, u usage, st *reqState) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	h := w.Header()
	h["Content-Type"] = hvSSE
	h["Cache-Control"] = hvNoCache
	h["X-Accel-Buffering"] = []string{"no"}
	w.WriteHeader(http.StatusOK)

	// Common chunk prefix.
	head := append(st.out[:0], "data: "...)
	head = appendHead(head, "chat.completion.chunk", id, created, p.model)
	head = append(head, `,"service_tier":"default","system_fingerprint":"`+systemFingerprint+`","choices":[`...)
	hl := len(head)
	buf := head
	seq := uint64(0)
	delay := s.opts.ChunkDelay + d.chunkDelay

	emit := func() bool {
		buf = append(buf, ']')
		if p.usageChunk {
			buf = append(buf, `,"usage":null`...)
		}
		if p.obfuscate {
			seq++
			o := mix64(uint64(created) ^ seq)
			buf = append(buf, `,"obfuscation":"`...)
			buf = append(buf, obfAlphabet[:1+o%uint64(len(obfAlphabet)-1)]...)
			buf = append(buf, '"')
		}
		buf = append(buf, "}\n\n"...)
		if ctx.Err() != nil {
			return false
		}
		if _, err := w.Write(buf); err != nil {
			return false
		}
		if err := rc.Flush(); err != nil {
			return false
		}
		buf = buf[:hl]
		return true
	}
	defer func() { st.out = buf[:0] }()

	// Role chunk, one per choice (n answers are interleaved chunk by chunk, as OpenAI does).
	choices := max(p.choices, 1)
	for c := range choices {
		buf = appendIndex(buf, c)
		if res.content != nil {
			buf = append(buf, `"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}`...)
		} else {
			buf = append(buf, `"delta":{"role":"assistant","content":null,"refusal":null},"logprobs":null,"finish_reason":null}`...)
		}
		if !emit() {
			return
		}
	}

	// Content pieces: the answer, or tool-call fragments.
	type piece struct {
		call  int // -1: text
		first bool
		data  []byte
	}
	var pieces []piece
	n := s.opts.ChunksPerAnswer
	if res.content != nil {
		for _, part := range split(res.content, n) {
			pieces = append(pieces, piece{call: -1, data: part})
		}
	} else {
		for i, c := range res.toolCalls {
			pieces = append(pieces, piece{call: i, first: true})
			for _, part := range split(c.args, max(n-1, 1)) {
				pieces = append(pieces, piece{call: i, data: part})
			}
		}
	}
	cutAfter := d.cutAfter
	if d.randomCut {
		cutAfter %= len(pieces) + 1
	}
	for i, pc := range pieces {
		if cutAfter >= 0 && i == cutAfter {
			s.stats.fault("cut")
			panic(http.ErrAbortHandler)
		}
		if d.streamErrorAfter >= 0 && i == d.streamErrorAfter {
			s.streamError(w, rc)
			return
		}
		if i > 0 && delay > 0 && !sleepCtx(ctx, delay) {
			return
		}
		for c := range choices {
			buf = appendIndex(buf, c)
			switch {
			case pc.call < 0:
				buf = append(buf, `"delta":{"content":`...)
				buf = appendJSONString(buf, pc.data)
				buf = append(buf, `},"logprobs":null,"finish_reason":null}`...)
			case pc.first:
				tc := res.toolCalls[pc.call]
				buf = append(buf, `"delta":{"tool_calls":[{"index":`...)
				buf = strconv.AppendInt(buf, int64(pc.call), 10)
				buf = append(buf, `,"id":"`...)
				buf = append(buf, tc.id...)
				buf = append(buf, `","type":"function","function":{"name":`...)
				buf = appendJSONString(buf, tc.name)
				buf = append(buf, `,"arguments":""}}]},"logprobs":null,"finish_reason":null}`...)
			default:
				buf = append(buf, `"delta":{"tool_calls":[{"index":`...)
				buf = strconv.AppendInt(buf, int64(pc.call), 10)
				buf = append(buf, `,"function":{"arguments":`...)
				buf = appendJSONString(buf, pc.data)
				buf = append(buf, `}}]},"logprobs":null,"finish_reason":null}`...)
			}
			if !emit() {
				return
			}
		}
		if i == 0 && d.hold != "" {
			s.stats.note("hold")
			if !s.wait(ctx, d.hold) {
				return
			}
		}
	}
	if cutAfter >= 0 && cutAfter >= len(pieces) && !d.randomCut {
		s.stats.fault("cut")
		panic(http.ErrAbortHandler)
	}
	if d.streamErrorAfter >= 0 && d.streamErrorAfter >= len(pieces) {
		s.streamError(w, rc)
		return
	}
	if delay > 0 && !sleepCtx(ctx, delay) {
		return
	}
	for c := range choices {
		buf = appendIndex(buf, c)
		buf = append(buf, `"delta":{},"logprobs":null,"finish_reason":"`...)
		buf = append(buf, res.finish...)
		buf = append(buf, `"}`...)
		if !emit() {
			return
		}
	}
	if p.usageChunk {
		buf = append(buf, ']')
		buf = append(buf, `,"usage":`...)
		buf = u.appendJSON(buf)
		// emit appends "]" and usage:null; write this one by hand.
		if p.obfuscate {
			buf = append(buf, `,"obfuscation":"`...)
			buf = append(buf, obfAlphabet[:7]...)
			buf = append(buf, '"')
		}
		buf = append(buf, "}\n\n"...)
		if ctx.Err() != nil {
			return
		}
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		buf = buf[:hl]
	}
	if ctx.Err() != nil {
		return
	}
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
	_ = rc.Flush()
}

var streamErrorEvent = []byte(`data: {"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":"internal_error"}}` + "\n\n")

func (s *Server) streamError(w http.ResponseWriter, rc *http.ResponseController) {
	s.stats.fault("stream_error")
	_, _ = w.Write(streamErrorEvent)
	_ = rc.Flush()
}

// split cuts b into at most n pieces of about equal length, on UTF-8 boundaries.
func split(b []byte, n int) [][]byte {
	if len(b) == 0 {
		return nil
	}
	n = max(min(n, len(b)), 1)
	out := make([][]byte, 0, n)
	size := (len(b) + n - 1) / n
	for len(b) > 0 {
		k := min(size, len(b))
		for k < len(b) && !utf8RuneStart(b[k]) {
			k++
		}
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func utf8RuneStart(c byte) bool { return c&0xC0 != 0x80 }
