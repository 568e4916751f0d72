package handlers

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/anthropic"
)

// Anthropic Messages ingress: Anthropic SDKs and agent tools call the gateway as if it were
// Anthropic. The request is translated to the OpenAI chat shape when the body is first read
// (so the meter, optimizer and router see an ordinary chat request: one code path), and the
// answer is translated back by a ResponseWriter wrapper.
const (
	PathMessages    = "/v1/messages"
	PathCountTokens = "/v1/messages/count_tokens"
)

// ingressAnthropic marks an exchange that entered through /v1/messages.
const ingressAnthropic = "anthropic"

func (h *Route) serveMessages(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	aw, finish := ex.answerWriter(w)
	h.serveChat(aw, r, ex)
	finish()
}

// answerWriter wraps w so that a chat answer written to it reaches the client in the API the
// request came in through: a Messages message for /v1/messages, a Response object (stored for
// chaining) for /v1/responses, the chat answer itself otherwise. finish writes what the
// translation holds until the answer is complete.
func (ex *Exchange) answerWriter(w http.ResponseWriter) (_ http.ResponseWriter, finish func()) {
	switch {
	case ex.responses != nil:
		rw := &responsesWriter{ResponseWriter: w, ex: ex, st: ex.responses}
		return rw, rw.finish
	case ex.Ingress == ingressAnthropic:
		aw := &anthropicWriter{ResponseWriter: w, ex: ex}
		return aw, aw.finish
	}
	return w, func() {}
}

func (h *Route) serveCountTokens(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	body, perr := readBody(r, h.MaxBodyBytes)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	prices := h.rt.Prices()
	ctx := r.Context()
	var stopped error
	n, perr := anthropic.CountTokens(body, func(model, text string) int {
		c, err := countedTokens(ctx, prices, model, text)
		stopped = err
		return c
	})
	if stopped != nil {
		// The client left or the server is shutting down: nobody is waiting for the count.
		writeError(w, ex, providers.Errorf(http.StatusServiceUnavailable, "request_cancelled", "", "the request was cancelled before the count finished"))
		return
	}
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": n})
}

// anthropicWriter turns the chat pipeline's output into Messages API output: a completion
// body into a message, chat chunks into Anthropic SSE events, the error envelope into
// Anthropic's error shape. Streams are translated event by event, never buffered.
type anthropicWriter struct {
	http.ResponseWriter
	ex       *Exchange
	status   int
	stream   *anthropic.IngressStream
	pending  []byte
	body     []byte
	closed   bool
	finished bool
}

func (a *anthropicWriter) WriteHeader(code int) {
	if a.status != 0 {
		return
	}
	a.status = code
	hdr := a.ResponseWriter.Header()
	if code == http.StatusOK && bytes.HasPrefix([]byte(hdr.Get("Content-Type")), []byte("text/event-stream")) {
		a.stream = anthropic.NewIngressStream(a.ResponseWriter)
		a.ResponseWriter.WriteHeader(code)
		return
	}
	hdr.Del("Content-Length") // the translated body has another length; sent at finish
}

func (a *anthropicWriter) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	if a.stream == nil {
		a.body = append(a.body, p...)
		return len(p), nil
	}
	a.pending = append(a.pending, p...)
	for {
		i := bytes.Index(a.pending, []byte("\n\n"))
		if i < 0 {
			break
		}
		event := a.pending[:i]
		if err := a.streamEvent(event); err != nil {
			return 0, err
		}
		a.pending = a.pending[i+2:]
	}
	if len(a.pending) == 0 {
		a.pending = a.pending[:0]
	}
	return len(p), nil
}

func (a *anthropicWriter) streamEvent(event []byte) error {
	data, ok := bytes.CutPrefix(event, []byte("data: "))
	if !ok || a.closed {
		return nil
	}
	if bytes.Equal(data, []byte("[DONE]")) {
		a.closed = true
		return a.stream.Close(a.ex.Usage, nil)
	}
	if bytes.HasPrefix(data, []byte(`{"error"`)) {
		a.closed = true
		return a.stream.Close(a.ex.Usage, envelopeError(http.StatusBadGateway, data))
	}
	return a.stream.WriteChunk(data)
}

// FlushError flushes through to the real writer (http.ResponseController finds it).
func (a *anthropicWriter) FlushError() error {
	return http.NewResponseController(a.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (a *anthropicWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// finish writes a buffered (non-stream or error) answer in Anthropic's shape.
func (a *anthropicWriter) finish() {
	if a.finished || a.stream != nil {
		return
	}
	a.finished = true
	if a.status == 0 {
		return
	}
	var out []byte
	if a.status == http.StatusOK {
		msg, err := anthropic.CompletionToMessage(a.body, a.ex.Usage)
		if err != nil {
			a.status = http.StatusBadGateway
			out = anthropic.ErrorEnvelope(providers.Errorf(http.StatusBadGateway, "", "", "the upstream answer could not be translated"))
		} else {
			out = msg
		}
	} else {
		out = anthropic.ErrorEnvelope(envelopeError(a.status, a.body))
	}
	hdr := a.ResponseWriter.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	a.ResponseWriter.WriteHeader(a.status)
	_, _ = a.ResponseWriter.Write(out)
}

// envelopeError reads an OpenAI error envelope back into an error with the given status.
func envelopeError(status int, body []byte) *providers.Error {
	var env struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &env)
	e := providers.Errorf(status, env.Error.Code, "", "%s", env.Error.Message)
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}
