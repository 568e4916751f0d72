package responses

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Stream turns one chat.completion.chunk stream into the Responses event ladder (providers.md
// §2.3, §2.4): response.created and response.in_progress first, a message item opened lazily
// on the first text, one function_call item per tool call, items closed in order, and a
// terminal response.completed, response.incomplete or response.failed. sequence_number rises
// from 0. Methods append SSE events (event: and data: lines) to dst and return it.
type Stream struct {
	resp   *Response
	seq    int64
	items  []*streamItem
	open   *streamItem // the message item receiving text, if open
	calls  map[int]*streamItem
	finish string
	usage  *Usage
	ended  bool
}

type streamItem struct {
	index  int
	id     string
	call   bool
	done   bool
	text   strings.Builder
	refuse strings.Builder
	// function call
	callID, name string
	args         strings.Builder
}

// NewStream starts the translation of one streamed response.
func NewStream(m *Meta) *Stream {
	return &Stream{resp: Skeleton(m), calls: map[int]*streamItem{}}
}

// Ended reports whether a terminal event was emitted.
func (s *Stream) Ended() bool { return s.ended }

// event appends one SSE event whose payload is {"type":typ,"sequence_number":n, …fields}.
func (s *Stream) event(dst []byte, typ string, fields any) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: {\"type\":\""...)
	dst = append(dst, typ...)
	dst = append(dst, "\",\"sequence_number\":"...)
	dst = strconv.AppendInt(dst, s.seq, 10)
	s.seq++
	if fields != nil {
		b, _ := json.Marshal(fields)
		if len(b) > 2 {
			dst = append(dst, ',')
			dst = append(dst, b[1:len(b)-1]...)
		}
	}
	return append(dst, "}\n\n"...)
}

type respEvent struct {
	Response *Response `json:"response"`
}

// Start emits response.created and response.in_progress.
func (s *Stream) Start(dst []byte) []byte {
	dst = s.event(dst, "response.created", respEvent{s.resp})
	return s.event(dst, "response.in_progress", respEvent{s.resp})
}

type itemEvent struct {
	OutputIndex int `json:"output_index"`
	Item        any `json:"item"`
}

type partEvent struct {
	ItemID       string `json:"item_id"`
	OutputIndex  int    `json:"output_index"`
	ContentIndex int    `json:"content_index"`
	Part         any    `json:"part"`
}

type textDeltaEvent struct {
	ItemID       string `json:"item_id"`
	OutputIndex  int    `json:"output_index"`
	ContentIndex int    `json:"content_index"`
	Delta        string `json:"delta"`
	Logprobs     []any  `json:"logprobs"`
}

type textDoneEvent struct {
	ItemID       string `json:"item_id"`
	OutputIndex  int    `json:"output_index"`
	ContentIndex int    `json:"content_index"`
	Text         string `json:"text"`
	Logprobs     []any  `json:"logprobs"`
}

type argsDeltaEvent struct {
	ItemID      string `json:"item_id"`
	OutputIndex int    `json:"output_index"`
	Delta       string `json:"delta"`
}

type argsDoneEvent struct {
	ItemID      string `json:"item_id"`
	OutputIndex int    `json:"output_index"`
	Name        string `json:"name"`
	Arguments   string `json:"arguments"`
}

type chunk struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content   *string `json:"content"`
			Refusal   *string `json:"refusal"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

// Chunk translates one chat.completion.chunk payload. A payload that does not decode is
// skipped: the chat path already relayed it, and one odd chunk must not end the stream.
func (s *Stream) Chunk(dst []byte, payload []byte) []byte {
	var c chunk
	if json.Unmarshal(payload, &c) != nil {
		return dst
	}
	if c.Model != "" {
		s.resp.Model = c.Model
	}
	if u := usageFromChat(c.Usage); u != nil {
		s.usage = u
	}
	if len(c.Choices) == 0 {
		return dst
	}
	ch := &c.Choices[0]
	if t := ch.Delta.Content; t != nil && *t != "" {
		dst = s.text(dst, *t)
	}
	if t := ch.Delta.Refusal; t != nil && *t != "" {
		it := s.message(&dst)
		it.refuse.WriteString(*t)
	}
	for _, tc := range ch.Delta.ToolCalls {
		it := s.calls[tc.Index]
		if it == nil {
			dst = s.closeOpen(dst)
			for _, prev := range s.items {
				if prev.call && !prev.done {
					dst = s.closeItem(dst, prev)
				}
			}
			it = &streamItem{index: len(s.items), id: NewID("fc_"), call: true, callID: tc.ID, name: tc.Function.Name}
			if it.callID == "" {
				it.callID = NewID("call_")
			}
			s.items = append(s.items, it)
			s.calls[tc.Index] = it
			dst = s.event(dst, "response.output_item.added", itemEvent{it.index, s.callItem(it, "in_progress")})
		}
		if a := tc.Function.Arguments; a != "" {
			it.args.WriteString(a)
			if !it.done {
				dst = s.event(dst, "response.function_call_arguments.delta", argsDeltaEvent{it.id, it.index, a})
			}
		}
	}
	if ch.FinishReason != nil && *ch.FinishReason != "" {
		s.finish = *ch.FinishReason
	}
	return dst
}

// message returns the open message item, opening one (and its output_text part) if needed.
func (s *Stream) message(dst *[]byte) *streamItem {
	if s.open != nil {
		return s.open
	}
	it := &streamItem{index: len(s.items), id: NewID("msg_")}
	s.items = append(s.items, it)
	s.open = it
	*dst = s.event(*dst, "response.output_item.added", itemEvent{it.index,
		outMessage{ID: it.id, Type: "message", Status: "in_progress", Role: "assistant", Content: []any{}}})
	*dst = s.event(*dst, "response.content_part.added", partEvent{it.id, it.index, 0, emptyText()})
	return it
}

func emptyText() outputTextPart {
	return outputTextPart{Type: "output_text", Text: "", Annotations: []any{}, Logprobs: []any{}}
}

func (s *Stream) text(dst []byte, t string) []byte {
	it := s.message(&dst)
	it.text.WriteString(t)
	return s.event(dst, "response.output_text.delta", textDeltaEvent{it.id, it.index, 0, t, []any{}})
}

func (s *Stream) closeOpen(dst []byte) []byte {
	if s.open == nil {
		return dst
	}
	it := s.open
	s.open = nil
	return s.closeItem(dst, it)
}

func (s *Stream) callItem(it *streamItem, status string) outFunctionCall {
	return outFunctionCall{ID: it.id, Type: "function_call", Status: status, Arguments: it.args.String(), CallID: it.callID, Name: it.name}
}

func (s *Stream) messageItem(it *streamItem, status string) outMessage {
	content := []any{outputTextPart{Type: "output_text", Text: it.text.String(), Annotations: []any{}, Logprobs: []any{}}}
	if it.refuse.Len() > 0 {
		content = append(content, refusalPart{Type: "refusal", Refusal: it.refuse.String()})
	}
	return outMessage{ID: it.id, Type: "message", Status: status, Role: "assistant", Content: content}
}

func (s *Stream) closeItem(dst []byte, it *streamItem) []byte {
	if it.done {
		return dst
	}
	it.done = true
	if it.call {
		dst = s.event(dst, "response.function_call_arguments.done", argsDoneEvent{it.id, it.index, it.name, it.args.String()})
		return s.event(dst, "response.output_item.done", itemEvent{it.index, s.callItem(it, "completed")})
	}
	text := it.text.String()
	dst = s.event(dst, "response.output_text.done", textDoneEvent{it.id, it.index, 0, text, []any{}})
	dst = s.event(dst, "response.content_part.done", partEvent{it.id, it.index, 0,
		outputTextPart{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: []any{}}})
	return s.event(dst, "response.output_item.done", itemEvent{it.index, s.messageItem(it, "completed")})
}

// Finish closes every open item and returns the final response (status from the finish
// reason, usage from the usage chunk). Emit it with Terminal once it is stored.
func (s *Stream) Finish(dst []byte) ([]byte, *Response) {
	dst = s.closeOpen(dst)
	for _, it := range s.items {
		dst = s.closeItem(dst, it)
	}
	resp := s.resp
	resp.Output = resp.Output[:0]
	for _, it := range s.items {
		var b []byte
		if it.call {
			b, _ = json.Marshal(s.callItem(it, "completed"))
		} else {
			b, _ = json.Marshal(s.messageItem(it, "completed"))
		}
		resp.Output = append(resp.Output, b)
	}
	finishStatus(resp, s.finish)
	resp.Usage = s.usage
	now := time.Now().Unix()
	resp.CompletedAt = &now
	return dst, resp
}

// Terminal emits response.completed or response.incomplete carrying resp.
func (s *Stream) Terminal(dst []byte, resp *Response) []byte {
	s.ended = true
	typ := "response.completed"
	if resp.Status == "incomplete" {
		typ = "response.incomplete"
	}
	return s.event(dst, typ, respEvent{resp})
}

// Fail emits response.failed after an upstream error mid-stream: the items so far are closed
// as incomplete and the response carries error{code,message}.
func (s *Stream) Fail(dst []byte, e *providers.Error) []byte {
	if s.ended {
		return dst
	}
	dst, resp := s.Finish(dst)
	resp.Status, resp.IncompleteDetails = "failed", nil
	code := "server_error"
	if e != nil && e.Code != "" {
		code = e.Code
	}
	msg := "the upstream provider failed"
	if e != nil && e.Message != "" {
		msg = e.Message
	}
	resp.Error = &ResponseError{Code: code, Message: msg}
	s.ended = true
	return s.event(dst, "response.failed", respEvent{resp})
}

// EventTextBytes is how many bytes of text a native Responses stream event delivers: the
// decoded length of the delta of every *.delta event (output text, refusal, reasoning,
// function-call arguments …) except audio, whose deltas are encoded sound. A stream cut
// before its terminal event is billed by this, never by the event envelopes. typ is the
// event's type; it does not allocate.
func EventTextBytes(typ string, payload []byte) int64 {
	if !strings.HasSuffix(typ, ".delta") || strings.Contains(typ, "audio") {
		return 0
	}
	span, ok, err := providers.FindTopLevel(payload, "delta")
	if err != nil || !ok {
		return 0
	}
	return providers.StringBytes(payload[span.Start:span.End])
}
