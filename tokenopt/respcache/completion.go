package respcache

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// The chat.completion shape the cache stores and the Assembler builds. Unknown fields of a
// stored body are kept in the body (Entry.Body returns it verbatim); a stream replay carries
// what is modelled here.
type completion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint,omitempty"`
	Choices           []choice        `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type choice struct {
	Index        int             `json:"index"`
	Message      message         `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type message struct {
	Role             string     `json:"role"`
	Content          *string    `json:"content"`
	Refusal          *string    `json:"refusal"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
}

type toolCall struct {
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Function function `json:"function"`
}

type function struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// size estimates the memory the parsed form holds, for the cache's cost.
func (c *completion) size() int64 {
	n := int64(len(c.ID) + len(c.Model) + len(c.SystemFingerprint) + len(c.Usage) + 128)
	for _, ch := range c.Choices {
		n += 128
		m := &ch.Message
		if m.Content != nil {
			n += int64(len(*m.Content))
		}
		if m.Refusal != nil {
			n += int64(len(*m.Refusal))
		}
		n += int64(len(m.ReasoningContent))
		for _, tc := range m.ToolCalls {
			n += int64(len(tc.ID)+len(tc.Type)+len(tc.Function.Name)+len(tc.Function.Arguments)) + 96
		}
	}
	return n
}

func parseCompletion(body []byte) (*completion, error) {
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("respcache: not a chat.completion: %w", err)
	}
	if len(c.Choices) == 0 {
		return nil, errors.New("respcache: completion has no choices")
	}
	for _, ch := range c.Choices {
		if ch.FinishReason == nil || *ch.FinishReason == "" {
			return nil, errors.New("respcache: completion has an unfinished choice")
		}
	}
	return &c, nil
}

// --- stream assembly ---

type chunkIn struct {
	ID                string          `json:"id"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []chunkChoiceIn `json:"choices"`
	Usage             json.RawMessage `json:"usage"`
	Error             json.RawMessage `json:"error"`
}

type chunkChoiceIn struct {
	Index        int     `json:"index"`
	Delta        deltaIn `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type deltaIn struct {
	Role             string        `json:"role"`
	Content          *string       `json:"content"`
	Refusal          *string       `json:"refusal"`
	ReasoningContent string        `json:"reasoning_content"`
	ToolCalls        []toolDeltaIn `json:"tool_calls"`
}

type toolDeltaIn struct {
	Index    int    `json:"index"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// ErrIncomplete is returned by Assembler.Completion when the stream never finished a choice
// (cut off, failed or abandoned): such an answer must not be cached.
var ErrIncomplete = errors.New("respcache: stream did not finish")

// ErrTooLarge is returned once the assembled answer exceeds the Assembler's limit.
var ErrTooLarge = errors.New("respcache: streamed answer exceeds the cacheable size")

// Assembler rebuilds the chat.completion a stream amounts to, from its chunk payloads (the
// data of each event, without "[DONE]"), so a streamed answer can be cached and replayed as
// either shape. Feed it the upstream's chunks, before the gateway decorates them (usage.cost).
// It is not safe for concurrent use.
type Assembler struct {
	c     completion
	parts []assembling // by choice index
	size  int
	max   int
	err   error
}

type assembling struct {
	content, refusal, reasoning []byte
	hasContent, hasRefusal      bool
	tools                       []toolCall
	toolArgs                    [][]byte
	finish                      *string
}

// NewAssembler starts an assembly that gives up (ErrTooLarge) past maxBytes of text; <= 0 means
// 8 MiB.
func NewAssembler(maxBytes int) *Assembler {
	if maxBytes <= 0 {
		maxBytes = 8 << 20
	}
	return &Assembler{max: maxBytes}
}

// Add consumes one chunk payload. An error chunk, a malformed chunk or the size limit makes
// the assembly fail for good; later calls return the same error.
func (a *Assembler) Add(chunk []byte) error {
	if a.err != nil {
		return a.err
	}
	if string(chunk) == "[DONE]" {
		return nil
	}
	var in chunkIn
	if err := json.Unmarshal(chunk, &in); err != nil {
		a.err = fmt.Errorf("respcache: malformed chunk: %w", err)
		return a.err
	}
	if len(in.Error) > 0 && string(in.Error) != "null" {
		a.err = errors.New("respcache: stream carried an error")
		return a.err
	}
	if a.c.ID == "" {
		a.c.ID, a.c.Created, a.c.Model = in.ID, in.Created, in.Model
	}
	if a.c.SystemFingerprint == "" {
		a.c.SystemFingerprint = in.SystemFingerprint
	}
	if len(in.Usage) > 0 && string(in.Usage) != "null" {
		a.c.Usage = append(json.RawMessage(nil), in.Usage...)
	}
	for _, ch := range in.Choices {
		if ch.Index < 0 || ch.Index > 127 {
			a.err = errors.New("respcache: choice index out of range")
			return a.err
		}
		for len(a.parts) <= ch.Index {
			a.parts = append(a.parts, assembling{})
		}
		p := &a.parts[ch.Index]
		d := &ch.Delta
		if d.Content != nil {
			p.content = append(p.content, *d.Content...)
			p.hasContent = p.hasContent || *d.Content != ""
			a.size += len(*d.Content)
		}
		if d.Refusal != nil {
			p.refusal = append(p.refusal, *d.Refusal...)
			p.hasRefusal = true
			a.size += len(*d.Refusal)
		}
		p.reasoning = append(p.reasoning, d.ReasoningContent...)
		a.size += len(d.ReasoningContent)
		for _, td := range d.ToolCalls {
			if td.Index < 0 || td.Index > 1023 {
				a.err = errors.New("respcache: tool call index out of range")
				return a.err
			}
			for len(p.tools) <= td.Index {
				p.tools = append(p.tools, toolCall{Type: "function"})
				p.toolArgs = append(p.toolArgs, nil)
			}
			tc := &p.tools[td.Index]
			if td.ID != "" {
				tc.ID = td.ID
			}
			if td.Type != "" {
				tc.Type = td.Type
			}
			tc.Function.Name += td.Function.Name
			p.toolArgs[td.Index] = append(p.toolArgs[td.Index], td.Function.Arguments...)
			a.size += len(td.ID) + len(td.Function.Name) + len(td.Function.Arguments)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			f := *ch.FinishReason
			p.finish = &f
		}
	}
	if a.size > a.max {
		a.err = ErrTooLarge
	}
	return a.err
}

// Completion returns the chat.completion JSON the stream amounts to. Its usage object is the
// stream's usage chunk, when there was one. A stream with an unfinished choice is ErrIncomplete.
func (a *Assembler) Completion() (body []byte, err error) {
	if a.err != nil {
		return nil, a.err
	}
	if len(a.parts) == 0 {
		return nil, ErrIncomplete
	}
	c := a.c
	c.Object = "chat.completion"
	c.Choices = make([]choice, len(a.parts))
	for i := range a.parts {
		p := &a.parts[i]
		if p.finish == nil {
			return nil, ErrIncomplete
		}
		m := message{Role: "assistant", ReasoningContent: string(p.reasoning)}
		if p.hasContent || len(p.tools) == 0 {
			s := string(p.content)
			m.Content = &s
		}
		if p.hasRefusal {
			s := string(p.refusal)
			m.Refusal = &s
		}
		for j, tc := range p.tools {
			tc.Function.Arguments = string(p.toolArgs[j])
			m.ToolCalls = append(m.ToolCalls, tc)
		}
		c.Choices[i] = choice{Index: i, Message: m, Logprobs: json.RawMessage("null"), FinishReason: p.finish}
	}
	return json.Marshal(&c)
}

// Usage is the usage the stream's usage chunk reported, in normal form; ok is false when the
// stream had none.
func (a *Assembler) Usage() (u providers.Usage, ok bool) {
	return providers.ParseOpenAIUsage(a.c.Usage)
}
