package anthropic

import (
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

// Stream translates an Anthropic Messages SSE body into OpenAI chat.completion.chunk payloads
// (providers.md §3.4): message_start → role chunk; text_delta → content; tool_use blocks →
// tool-call fragments numbered 0, 1 … per message (not by Anthropic block index);
// thinking_delta → reasoning_content (never content); message_delta → stop reason and
// cumulative usage; message_stop → finish chunk, usage chunk, io.EOF. ping and unknown events
// are ignored; an error event becomes an *providers.Error.
type Stream struct {
	body   io.ReadCloser
	rd     *sse.Reader
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
	idled  atomic.Bool

	tr      Translator
	pending [][]byte
	done    bool
}

// NewStream wraps an upstream SSE body. cancel aborts the upstream request; the idle timer
// calls it when no event arrives for idle (0 disables the timer).
func NewStream(body io.ReadCloser, cancel context.CancelFunc, idle time.Duration, created int64) *Stream {
	s := &Stream{body: body, rd: sse.NewReader(body), cancel: cancel, idle: idle}
	s.tr.Created = created
	if idle > 0 {
		s.timer = time.AfterFunc(idle, func() {
			s.idled.Store(true)
			cancel()
		})
	}
	return s
}

// Usage is the usage seen so far in normal form (final after io.EOF).
func (s *Stream) Usage() providers.Usage { return s.tr.usage.Normal() }

// Next returns the next chunk payload, io.EOF after the usage chunk.
func (s *Stream) Next() ([]byte, error) {
	for {
		if len(s.pending) > 0 {
			p := s.pending[0]
			s.pending = s.pending[1:]
			return p, nil
		}
		if s.done {
			return nil, io.EOF
		}
		ev, err := s.rd.Next()
		if err != nil {
			s.done = true
			if err == io.EOF {
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
		if s.timer != nil {
			s.timer.Reset(s.idle)
		}
		out, end, terr := s.tr.Event(string(ev.Name), ev.Data)
		if terr != nil {
			s.done = true
			return nil, terr
		}
		s.pending = append(s.pending, out...)
		if end {
			s.done = true
		}
	}
}

// Pending reports whether Next can answer without waiting for the upstream: a translated
// chunk is queued, or the next event's bytes have arrived (providers.Pender).
func (s *Stream) Pending() bool { return len(s.pending) > 0 || (!s.done && s.rd.Buffered() > 0) }

// Close stops the idle timer and releases the upstream connection.
func (s *Stream) Close() error {
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
	err := s.body.Close()
	s.done, s.pending = true, nil
	s.rd.Release()
	return err
}

// Translator is the pure event → chunk state machine behind Stream, usable on its own (and
// fuzzed): feed it each SSE event's name and data in order.
type Translator struct {
	Created int64

	w       *providers.ChunkWriter
	started bool
	stop    string
	usage   Usage
	// tools maps an Anthropic content block index to its OpenAI tool-call index.
	tools   map[int]int
	ntools  int
	stopped bool
}

type streamEvent struct {
	Type    string          `json:"type"`
	Message *Message        `json:"message"`
	Index   int             `json:"index"`
	Block   *Block          `json:"content_block"`
	Delta   json.RawMessage `json:"delta"`
	Usage   *Usage          `json:"usage"`
	Error   json.RawMessage `json:"error"`
}

type blockDelta struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	PartialJSON string `json:"partial_json"`
	Thinking    string `json:"thinking"`
	// message_delta
	StopReason *string `json:"stop_reason"`
}

// Usage is the cumulative usage seen so far in normal form.
func (t *Translator) Usage() providers.Usage { return t.usage.Normal() }

// Event translates one SSE event. It returns the chunks to emit and end=true after
// message_stop (the last chunk then is the usage chunk). An error event or a malformed payload
// returns an *providers.Error.
func (t *Translator) Event(name string, data []byte) (chunks [][]byte, end bool, err error) {
	if t.stopped {
		return nil, true, nil
	}
	var ev streamEvent
	if len(data) == 0 {
		return nil, false, nil
	}
	if jerr := json.Unmarshal(data, &ev); jerr != nil {
		return nil, false, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
			Message: "the upstream sent a malformed stream event", Class: providers.ClassRetryable, Internal: jerr}
	}
	if ev.Type == "" {
		ev.Type = name
	}
	if ev.Type != "message_start" && ev.Type != "error" && ev.Type != "ping" && !t.started {
		// Tolerate a missing message_start: start with what we have.
		if ev.Type == "content_block_start" || ev.Type == "content_block_delta" || ev.Type == "message_delta" || ev.Type == "message_stop" {
			chunks = append(chunks, t.start("", ""))
		}
	}
	switch ev.Type {
	case "message_start":
		if t.started {
			return nil, false, nil
		}
		id, model := "", ""
		if ev.Message != nil {
			id, model = ev.Message.ID, ev.Message.Model
			t.usage.Overlay(ev.Message.Usage)
		}
		chunks = append(chunks, t.start(id, model))
	case "content_block_start":
		if ev.Block == nil {
			break
		}
		switch ev.Block.Type {
		case "tool_use", "server_tool_use":
			if t.tools == nil {
				t.tools = map[int]int{}
			}
			k := t.ntools
			t.ntools++
			t.tools[ev.Index] = k
			chunks = append(chunks, t.w.ToolCallStart(k, ev.Block.ID, ev.Block.Name))
			// Some upstreams put a non-empty input in the start block instead of deltas.
			if in := ev.Block.Input; len(in) > 0 && string(in) != "{}" {
				chunks = append(chunks, t.w.ToolCallArgs(k, string(in)))
			}
		case "text":
			if ev.Block.Text != "" {
				chunks = append(chunks, t.w.Content(ev.Block.Text))
			}
		case "thinking":
			if ev.Block.Thinking != "" {
				chunks = append(chunks, t.w.Reasoning(ev.Block.Thinking))
			}
		}
	case "content_block_delta":
		var d blockDelta
		if len(ev.Delta) > 0 {
			if jerr := json.Unmarshal(ev.Delta, &d); jerr != nil {
				return nil, false, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
					Message: "the upstream sent a malformed stream event", Class: providers.ClassRetryable, Internal: jerr}
			}
		}
		switch d.Type {
		case "text_delta":
			if d.Text != "" {
				chunks = append(chunks, t.w.Content(d.Text))
			}
		case "input_json_delta":
			if k, ok := t.tools[ev.Index]; ok && d.PartialJSON != "" {
				chunks = append(chunks, t.w.ToolCallArgs(k, d.PartialJSON))
			}
		case "thinking_delta":
			if d.Thinking != "" {
				chunks = append(chunks, t.w.Reasoning(d.Thinking))
			}
		}
	case "message_delta":
		var d blockDelta
		if len(ev.Delta) > 0 {
			_ = json.Unmarshal(ev.Delta, &d)
		}
		if d.StopReason != nil {
			t.stop = *d.StopReason
		}
		if ev.Usage != nil {
			t.usage.Overlay(*ev.Usage)
		}
	case "message_stop":
		t.stopped = true
		chunks = append(chunks, t.w.Finish(providers.FinishFromAnthropic(t.stop)), t.w.Usage(t.usage.Normal()))
		return chunks, true, nil
	case "error":
		return nil, false, StreamError(data)
	}
	return chunks, false, nil
}

func (t *Translator) start(id, model string) []byte {
	t.started = true
	t.w = providers.NewChunkWriter(completionID(id), model, t.Created)
	return t.w.Role()
}

// statusForType is the HTTP status an Anthropic error type stands for.
var statusForType = map[string]int{
	"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
	"not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
	"timeout_error": 504, "overloaded_error": 529,
}

// StreamError classifies an in-stream "error" event like the HTTP error of its type.
func StreamError(data []byte) *providers.Error {
	var eb errorBody
	_ = json.Unmarshal(data, &eb)
	status, ok := statusForType[eb.Error.Type]
	if !ok {
		status = http.StatusInternalServerError
	}
	e := ParseError(status, nil, data)
	e.Internal = errors.New("in-stream upstream error: " + string(truncate(data, 512)))
	return e
}
