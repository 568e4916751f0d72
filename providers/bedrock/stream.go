package bedrock

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/eventstream"
)

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// stream translates ConverseStream frames into chat.completion.chunk payloads (reference
// providers.md §4.5). Text blocks have no contentBlockStart; blocks are keyed by
// contentBlockIndex. The role chunk is held back until the first content, so an exception that
// arrives before any output can still be retried or failed over. metadata (usage) follows
// messageStop; the usage chunk is emitted when it arrives.
type stream struct {
	body     io.ReadCloser
	dec      *eventstream.Decoder
	cancel   context.CancelFunc
	idle     time.Duration
	timer    *time.Timer
	idled    atomic.Bool
	cw       *providers.ChunkWriter
	jsonTool string

	queue    [][]byte
	tools    map[int]int  // contentBlockIndex → OpenAI tool-call index
	jsonBlk  map[int]bool // blocks that carry the forced JSON tool's input (emitted as content)
	nTools   int
	roleSent bool
	content  bool // any content or tool output emitted
	stopped  bool // messageStop seen
	done     bool
}

func newStream(body io.ReadCloser, cancel context.CancelFunc, idle time.Duration, cw *providers.ChunkWriter, jsonTool string) *stream {
	s := &stream{body: body, dec: eventstream.NewDecoder(body), cancel: cancel, idle: idle, cw: cw, jsonTool: jsonTool,
		tools: map[int]int{}, jsonBlk: map[int]bool{}}
	s.timer = time.AfterFunc(idle, func() {
		s.idled.Store(true)
		cancel()
	})
	return s
}

func (s *stream) push(chunk []byte) {
	if !s.roleSent {
		s.roleSent = true
		s.queue = append(s.queue, s.cw.Role())
	}
	s.queue = append(s.queue, chunk)
}

// Pending reports whether a translated chunk is queued (providers.Pender). The event-stream
// decoder reads the body unbuffered, so one frame's chunks leave together, frames apart.
func (s *stream) Pending() bool { return len(s.queue) > 0 }

// Next returns the next chunk payload, io.EOF after the last.
func (s *stream) Next() ([]byte, error) {
	for len(s.queue) == 0 {
		if s.done {
			return nil, io.EOF
		}
		if err := s.step(); err != nil {
			s.done = true
			return nil, err
		}
	}
	c := s.queue[0]
	s.queue = s.queue[1:]
	return c, nil
}

// step reads one frame and queues what it translates to.
func (s *stream) step() error {
	m, err := s.dec.Next()
	if err != nil {
		if err == io.EOF && s.stopped {
			s.done = true // metadata never came: the stream still finished
			return nil
		}
		return s.readError(err)
	}
	s.timer.Reset(s.idle)
	switch m.MessageType() {
	case "event":
	case "exception":
		e := StreamException(m.ExceptionType(), m.Payload)
		return e
	case "error":
		return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "the upstream provider failed", Class: providers.ClassRetryable,
			Internal: errors.New("bedrock stream error " + m.Get(":error-code") + ": " + m.Get(":error-message"))}
	default:
		return nil
	}
	switch m.EventType() {
	case "messageStart", "contentBlockStop":
	case "contentBlockStart":
		var ev contentBlockStart
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			return badResponse("the upstream stream carried invalid JSON", err)
		}
		if tu := ev.Start.ToolUse; tu != nil {
			if s.jsonTool != "" && tu.Name == s.jsonTool {
				s.jsonBlk[ev.ContentBlockIndex] = true
				return nil
			}
			idx := s.nTools
			s.nTools++
			s.tools[ev.ContentBlockIndex] = idx
			s.content = true
			s.push(s.cw.ToolCallStart(idx, tu.ToolUseID, tu.Name))
		}
	case "contentBlockDelta":
		var ev contentBlockDelta
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			return badResponse("the upstream stream carried invalid JSON", err)
		}
		d := ev.Delta
		switch {
		case d.Text != nil:
			if *d.Text != "" {
				s.content = true
				s.push(s.cw.Content(*d.Text))
			}
		case d.ToolUse != nil:
			if d.ToolUse.Input == "" {
				return nil
			}
			s.content = true
			if s.jsonBlk[ev.ContentBlockIndex] {
				s.push(s.cw.Content(d.ToolUse.Input))
			} else if idx, ok := s.tools[ev.ContentBlockIndex]; ok {
				s.push(s.cw.ToolCallArgs(idx, d.ToolUse.Input))
			}
		case d.ReasoningContent != nil && d.ReasoningContent.Text != "":
			s.push(s.cw.Reasoning(d.ReasoningContent.Text))
		}
	case "messageStop":
		var ev messageStop
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			return badResponse("the upstream stream carried invalid JSON", err)
		}
		if (ev.StopReason == "malformed_model_output" || ev.StopReason == "malformed_tool_use") && !s.content {
			return badResponse("the upstream model produced malformed output", errors.New("stopReason "+ev.StopReason))
		}
		finish := providers.FinishFromBedrock(ev.StopReason)
		if finish == providers.FinishToolCalls && s.nTools == 0 {
			finish = providers.FinishStop // the forced JSON tool is an ordinary answer
		}
		s.stopped = true
		s.push(s.cw.Finish(finish))
	case "metadata":
		var ev metadataEvent
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			return badResponse("the upstream stream carried invalid JSON", err)
		}
		s.push(s.cw.Usage(ev.Usage.Normal()))
		if s.stopped {
			s.done = true
		}
	}
	return nil
}

func (s *stream) readError(err error) error {
	switch {
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_stream_truncated",
			Message: "the upstream stream ended before completion", Class: providers.ClassRetryable, Internal: io.ErrUnexpectedEOF}
	case s.idled.Load():
		return &providers.Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_idle_timeout",
			Message: "the upstream stream went silent", Class: providers.ClassRetryable, Internal: err}
	case errors.Is(err, context.Canceled):
		return err
	}
	return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_stream_error",
		Message: "the upstream stream failed", Class: providers.ClassRetryable, Internal: err}
}

func (s *stream) Close() error {
	s.timer.Stop()
	s.cancel()
	return s.body.Close()
}
