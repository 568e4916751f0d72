package simulated

import (
	"encoding/json"
	"net/http"

	ssewire "github.com/badtheorylabs/btl-runtime/providers/sse"
)

// anthropicStream writes an answer as Anthropic SSE (providers.md §3.4, §11): event/data pairs,
// message_start with the input usage, one content block per text answer or tool call, ping
// events interleaved, input_json_delta starting with an empty partial_json, message_delta with
// the cumulative usage, message_stop.
func (s *Server) anthropicStream(w http.ResponseWriter, r *http.Request, d *directives, res *result,
	msgID, model, stop, stopSeq string, u anthUsage) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	h := w.Header()
	h["Content-Type"] = hvSSE
	h["Cache-Control"] = hvNoCache
	h["X-Accel-Buffering"] = []string{"no"}
	w.WriteHeader(http.StatusOK)

	var buf []byte
	send := func(name string, v any) bool {
		if ctx.Err() != nil {
			return false
		}
		payload, _ := json.Marshal(v)
		buf = ssewire.AppendEvent(buf[:0], name, payload)
		if _, err := w.Write(buf); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	delay := s.opts.ChunkDelay + d.chunkDelay

	if !send("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": msgID, "type": "message", "role": "assistant", "content": []any{}, "model": model,
		"stop_reason": nil, "stop_sequence": nil, "usage": u.object(false),
	}}) {
		return
	}
	if !send("ping", map[string]string{"type": "ping"}) {
		return
	}

	// Deltas: content pieces, counted for cut_after and stream_error_after.
	type delta struct {
		block int
		start map[string]any // content_block_start payload, when this piece opens a block
		body  map[string]any
		stop  bool // close the block after this piece
	}
	var deltas []delta
	n := s.opts.ChunksPerAnswer
	if len(res.toolCalls) > 0 {
		for i, c := range res.toolCalls {
			parts := split(c.args, max(n-1, 1))
			deltas = append(deltas, delta{block: i, start: map[string]any{"type": "tool_use", "id": anthToolUseID(c.id), "name": c.name, "input": map[string]any{}},
				body: map[string]any{"type": "input_json_delta", "partial_json": ""}, stop: len(parts) == 0})
			for k, p := range parts {
				deltas = append(deltas, delta{block: i, body: map[string]any{"type": "input_json_delta", "partial_json": string(p)}, stop: k == len(parts)-1})
			}
		}
	} else {
		parts := split(res.content, n)
		if len(parts) == 0 {
			parts = [][]byte{nil}
		}
		for k, p := range parts {
			dl := delta{body: map[string]any{"type": "text_delta", "text": string(p)}, stop: k == len(parts)-1}
			if k == 0 {
				dl.start = map[string]any{"type": "text", "text": ""}
			}
			deltas = append(deltas, dl)
		}
	}
	for i, dl := range deltas {
		if d.cutAfter >= 0 && i == d.cutAfter {
			s.stats.fault("cut")
			panic(http.ErrAbortHandler)
		}
		if d.streamErrorAfter >= 0 && i == d.streamErrorAfter {
			s.anthropicStreamError(send)
			return
		}
		if i > 0 && delay > 0 && !sleepCtx(ctx, delay) {
			return
		}
		if dl.start != nil && !send("content_block_start", map[string]any{"type": "content_block_start", "index": dl.block, "content_block": dl.start}) {
			return
		}
		if !send("content_block_delta", map[string]any{"type": "content_block_delta", "index": dl.block, "delta": dl.body}) {
			return
		}
		if i == 0 && d.hold != "" {
			s.stats.note("hold")
			if !s.wait(ctx, d.hold) {
				return
			}
		}
		if i == 1 && !send("ping", map[string]string{"type": "ping"}) {
			return
		}
		if dl.stop && !send("content_block_stop", map[string]any{"type": "content_block_stop", "index": dl.block}) {
			return
		}
	}
	if d.cutAfter >= 0 && d.cutAfter >= len(deltas) {
		s.stats.fault("cut")
		panic(http.ErrAbortHandler)
	}
	if d.streamErrorAfter >= 0 && d.streamErrorAfter >= len(deltas) {
		s.anthropicStreamError(send)
		return
	}
	if delay > 0 && !sleepCtx(ctx, delay) {
		return
	}
	if !send("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nullableString(stopSeq)},
		"usage": map[string]int{"output_tokens": u.output}}) {
		return
	}
	send("message_stop", map[string]string{"type": "message_stop"})
}

func (s *Server) anthropicStreamError(send func(string, any) bool) {
	s.stats.fault("stream_error")
	send("error", map[string]any{"type": "error", "error": map[string]string{"type": "overloaded_error", "message": "Overloaded"}})
}
