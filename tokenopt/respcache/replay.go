package respcache

import (
	"encoding/json"
	"io"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
)

// replayPiece is the size of a replayed content or arguments delta, in bytes (cut on a rune
// boundary): small enough to look like a live stream, large enough not to bloat it.
const replayPiece = 256

type chunkOut struct {
	ID                string           `json:"id"`
	Object            string           `json:"object"`
	Created           int64            `json:"created"`
	Model             string           `json:"model"`
	SystemFingerprint string           `json:"system_fingerprint,omitempty"`
	Choices           []chunkChoiceOut `json:"choices"`
	Usage             json.RawMessage  `json:"usage,omitempty"`
}

type chunkChoiceOut struct {
	Index        int             `json:"index"`
	Delta        deltaOut        `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type deltaOut struct {
	Role             string         `json:"role,omitempty"`
	Content          *string        `json:"content,omitempty"`
	Refusal          *string        `json:"refusal,omitempty"`
	ReasoningContent string         `json:"reasoning_content,omitempty"`
	ToolCalls        []toolDeltaOut `json:"tool_calls,omitempty"`
}

type toolDeltaOut struct {
	Index    int         `json:"index"`
	ID       string      `json:"id,omitempty"`
	Type     string      `json:"type,omitempty"`
	Function functionOut `json:"function"`
}

type functionOut struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

var (
	jsonNull  = json.RawMessage("null")
	doneEvent = []byte("data: [DONE]\n\n")
)

// WriteStream replays the answer as an OpenAI chat.completion.chunk SSE stream: per choice a
// role chunk, reasoning, content and refusal deltas, tool-call fragments (first with id, type,
// name and empty arguments, then argument pieces; OpenAI's per-message indexes), a finish chunk;
// then, when includeUsage (stream_options.include_usage), a usage chunk with "choices":[]; then
// "data: [DONE]". Chunks keep the stored id, created, model and system_fingerprint. flush (may
// be nil) is called after each batch of about 16 KiB and at the end.
func (e *Entry) WriteStream(w io.Writer, includeUsage bool, flush func() error) error {
	c := e.c
	var usageField json.RawMessage
	if includeUsage {
		usageField = jsonNull
	}
	base := chunkOut{ID: c.ID, Object: "chat.completion.chunk", Created: c.Created, Model: c.Model,
		SystemFingerprint: c.SystemFingerprint, Usage: usageField}
	buf := make([]byte, 0, 16<<10)
	emit := func(ch chunkOut) error {
		raw, err := json.Marshal(&ch)
		if err != nil {
			return err
		}
		buf = sse.AppendData(buf, raw)
		if len(buf) >= 16<<10 {
			return send(w, &buf, flush)
		}
		return nil
	}
	one := func(idx int, d deltaOut, finish *string) error {
		ch := base
		ch.Choices = []chunkChoiceOut{{Index: idx, Delta: d, Logprobs: jsonNull, FinishReason: finish}}
		return emit(ch)
	}
	for _, choice := range c.Choices {
		m := &choice.Message
		idx := choice.Index
		empty := ""
		if err := one(idx, deltaOut{Role: "assistant", Content: &empty}, nil); err != nil {
			return err
		}
		for _, p := range splitText(m.ReasoningContent, replayPiece) {
			if err := one(idx, deltaOut{ReasoningContent: p}, nil); err != nil {
				return err
			}
		}
		if m.Content != nil {
			for _, p := range splitText(*m.Content, replayPiece) {
				if err := one(idx, deltaOut{Content: &p}, nil); err != nil {
					return err
				}
			}
		}
		if m.Refusal != nil && *m.Refusal != "" {
			for _, p := range splitText(*m.Refusal, replayPiece) {
				if err := one(idx, deltaOut{Refusal: &p}, nil); err != nil {
					return err
				}
			}
		}
		for ti, tc := range m.ToolCalls {
			typ := tc.Type
			if typ == "" {
				typ = "function"
			}
			start := toolDeltaOut{Index: ti, ID: tc.ID, Type: typ, Function: functionOut{Name: tc.Function.Name}}
			if err := one(idx, deltaOut{ToolCalls: []toolDeltaOut{start}}, nil); err != nil {
				return err
			}
			for _, p := range splitText(tc.Function.Arguments, replayPiece) {
				frag := toolDeltaOut{Index: ti, Function: functionOut{Arguments: p}}
				if err := one(idx, deltaOut{ToolCalls: []toolDeltaOut{frag}}, nil); err != nil {
					return err
				}
			}
		}
		if err := one(idx, deltaOut{}, choice.FinishReason); err != nil {
			return err
		}
	}
	if includeUsage {
		u := c.Usage
		if len(u) == 0 || string(u) == "null" {
			raw, err := json.Marshal(providers.ToOpenAIUsage(e.usage))
			if err != nil {
				return err
			}
			u = raw
		}
		ch := base
		ch.Choices = []chunkChoiceOut{}
		ch.Usage = u
		if err := emit(ch); err != nil {
			return err
		}
	}
	buf = append(buf, doneEvent...)
	return send(w, &buf, flush)
}

func send(w io.Writer, buf *[]byte, flush func() error) error {
	if _, err := w.Write(*buf); err != nil {
		return err
	}
	*buf = (*buf)[:0]
	if flush != nil {
		return flush()
	}
	return nil
}
