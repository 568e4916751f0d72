package gemini

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
)

var randReader = rand.Reader

// stream translates alt=sse chunks (each a whole GenerateContentResponse, no [DONE]) into
// chat.completion.chunk payloads (reference providers.md §5.5). Text parts are deltas;
// functionCall parts arrive whole and become one tool-call start plus one arguments chunk.
// finishReason comes on the last chunk and usageMetadata is kept from the latest chunk, so the
// finish and usage chunks are emitted when the body ends. The role chunk waits for the first
// output so an error chunk before any output can still be retried.
type stream struct {
	body   io.ReadCloser
	rd     *sse.Reader
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
	idled  atomic.Bool
	model  string
	cw     *providers.ChunkWriter
	// created is used for the chunk writer, made once the response id is known.
	created int64

	queue    [][]byte
	roleSent bool
	nCalls   int
	finish   string // raw Gemini finishReason
	blocked  bool
	usage    *UsageMetadata
	done     bool
}

func newStream(body io.ReadCloser, cancel context.CancelFunc, idle time.Duration, model string, created int64) *stream {
	s := &stream{body: body, rd: sse.NewReader(body), cancel: cancel, idle: idle, model: model, created: created}
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

// Pending reports whether Next can answer without waiting for the upstream (providers.Pender).
func (s *stream) Pending() bool { return len(s.queue) > 0 || (!s.done && s.rd.Buffered() > 0) }

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

func (s *stream) step() error {
	ev, err := s.rd.Next()
	if err != nil {
		if err == io.EOF {
			return s.end()
		}
		return s.readError(err)
	}
	s.timer.Reset(s.idle)
	if len(ev.Data) == 0 {
		return nil
	}
	var r Response
	if err := json.Unmarshal(ev.Data, &r); err != nil {
		return badResponse("the upstream stream carried invalid JSON", err)
	}
	if len(r.Error) > 0 && string(r.Error) != "null" {
		var st Status
		_ = json.Unmarshal(r.Error, &st)
		status := st.Code
		if status < 400 || status > 599 {
			status = http.StatusInternalServerError
		}
		return classify(status, st, nil, ev.Data)
	}
	if s.cw == nil {
		s.cw = providers.NewChunkWriter(responseID(r.ResponseID), s.model, s.created)
	}
	if r.UsageMetadata != nil {
		s.usage = r.UsageMetadata
	}
	if len(r.Candidates) == 0 {
		if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
			s.blocked = true
		}
		return nil
	}
	cand := r.Candidates[0]
	for _, p := range cand.Content.Parts {
		switch {
		case p.FunctionCall != nil:
			args := compactJSON(p.FunctionCall.Args)
			idx := s.nCalls
			s.nCalls++
			s.push(s.cw.ToolCallStart(idx, CallID(p.FunctionCall.Name, idx, args, p.ThoughtSignature), p.FunctionCall.Name))
			s.queue = append(s.queue, s.cw.ToolCallArgs(idx, string(args)))
		case p.Thought:
			if p.Text != "" {
				s.push(s.cw.Reasoning(p.Text))
			}
		case p.Text != "":
			s.push(s.cw.Content(p.Text))
		}
	}
	if cand.FinishReason != "" {
		if malformed(cand.FinishReason) && !s.roleSent {
			return badResponse("the upstream model produced a malformed function call", errors.New("finishReason "+cand.FinishReason))
		}
		s.finish = cand.FinishReason
	}
	return nil
}

// end finishes a stream whose body ended: finish and usage chunks, or a truncation error.
func (s *stream) end() error {
	if s.finish == "" && !s.blocked {
		return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_stream_truncated",
			Message: "the upstream stream ended before completion", Class: providers.ClassRetryable, Internal: io.ErrUnexpectedEOF}
	}
	if s.cw == nil {
		s.cw = providers.NewChunkWriter(responseID(""), s.model, s.created)
	}
	reason := providers.FinishFromGemini(s.finish, s.nCalls > 0)
	if s.blocked && s.finish == "" {
		reason = providers.FinishContentFilter
	}
	s.push(s.cw.Finish(reason))
	s.queue = append(s.queue, s.cw.Usage(s.usage.Normal()))
	s.done = true
	return nil
}

func (s *stream) readError(err error) error {
	switch {
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
	err := s.body.Close()
	s.done, s.queue = true, nil
	s.rd.Release()
	return err
}
