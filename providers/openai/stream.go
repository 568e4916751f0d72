package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
)

// stream relays an OpenAI-style SSE body chunk by chunk. An idle timer cancels the upstream
// request when no event arrives for the idle timeout, which unblocks the pending read.
type stream struct {
	body   io.ReadCloser
	rd     *sse.Reader
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
	idled  atomic.Bool
	done   bool
}

func newStream(body io.ReadCloser, cancel context.CancelFunc, idle time.Duration) *stream {
	s := &stream{body: body, rd: sse.NewReader(body), cancel: cancel, idle: idle}
	s.timer = time.AfterFunc(idle, func() {
		s.idled.Store(true)
		cancel()
	})
	return s
}

var (
	doneMarker = []byte("[DONE]")
	errorKey   = []byte(`"error"`)
)

// Next returns the next chunk payload, io.EOF at [DONE] or a clean end of the body.
func (s *stream) Next() ([]byte, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		ev, err := s.rd.Next()
		if err != nil {
			s.done = true
			if err == io.EOF {
				// A body that ends without [DONE] was cut: the caller must not treat it as complete.
				return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_stream_truncated",
					Message: "the upstream stream ended before completion", Class: providers.ClassRetryable, Internal: io.ErrUnexpectedEOF}
			}
			if s.idled.Load() {
				return nil, &providers.Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_idle_timeout",
					Message: "the upstream stream went silent", Class: providers.ClassRetryable, Internal: err}
			}
			if errors.Is(err, context.Canceled) {
				return nil, err
			}
			return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_stream_error",
				Message: "the upstream stream failed", Class: providers.ClassRetryable, Internal: err}
		}
		s.timer.Reset(s.idle)
		data := ev.Data
		if len(data) == 0 {
			continue
		}
		if bytes.Equal(data, doneMarker) {
			s.done = true
			return nil, io.EOF
		}
		if bytes.Contains(data, errorKey) {
			if e := inStreamError(data); e != nil {
				s.done = true
				return nil, e
			}
		}
		return data, nil
	}
}

// inStreamError recognises an error event sent after HTTP 200: OpenAI's {"error":{…}} line,
// OpenRouter's chunk with a top-level error, vLLM's {"object":"error"}.
func inStreamError(data []byte) *providers.Error {
	span, ok, err := providers.FindTopLevel(data, "error")
	if err != nil || !ok || bytes.Equal(data[span.Start:span.End], []byte("null")) {
		if span, ok, _ := providers.FindTopLevel(data, "object"); ok && bytes.Equal(data[span.Start:span.End], []byte(`"error"`)) {
			return ParseErrorInStream(data)
		}
		return nil
	}
	return ParseErrorInStream(data)
}

// ParseErrorInStream classifies an in-band stream error like an HTTP error of the status its
// code suggests (500 when it names none).
func ParseErrorInStream(data []byte) *providers.Error {
	status := http.StatusInternalServerError
	var probe struct {
		Error struct {
			Code json.RawMessage `json:"code"`
			Type string          `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &probe) == nil {
		var n int
		if json.Unmarshal(probe.Error.Code, &n) == nil && n >= 400 && n < 600 {
			status = n
		} else if probe.Error.Type == "rate_limit_error" || bytes.Contains(probe.Error.Code, []byte("rate_limit")) {
			status = http.StatusTooManyRequests
		}
	}
	e := ParseError(status, nil, data)
	e.Internal = errors.New("in-stream upstream error: " + string(truncate(data, 512)))
	return e
}

// Pending reports whether the next event has already arrived (at least its first bytes).
func (s *stream) Pending() bool { return !s.done && s.rd.Buffered() > 0 }

func (s *stream) Close() error {
	s.timer.Stop()
	s.cancel()
	err := s.body.Close()
	s.done = true
	s.rd.Release()
	return err
}
