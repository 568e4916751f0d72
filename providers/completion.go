package providers

import (
	"encoding/json"
	"strconv"
)

// Output side of the canonical model: what translating adapters build their OpenAI-shaped
// answers with, so every adapter emits the same bytes for the same content.

// OpenAI finish reasons.
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishToolCalls     = "tool_calls"
	FinishContentFilter = "content_filter"
)

// FinishFromAnthropic maps an Anthropic stop_reason (providers.md §0.5). Unknown values map to
// stop.
func FinishFromAnthropic(stopReason string) string {
	switch stopReason {
	case "max_tokens", "model_context_window_exceeded":
		return FinishLength
	case "tool_use":
		return FinishToolCalls
	case "refusal":
		return FinishContentFilter
	}
	return FinishStop
}

// FinishFromBedrock maps a Converse stopReason. malformed_model_output and malformed_tool_use
// map to stop here; an adapter that has not streamed anything yet should turn them into a 502.
func FinishFromBedrock(stopReason string) string {
	switch stopReason {
	case "max_tokens", "model_context_window_exceeded":
		return FinishLength
	case "tool_use":
		return FinishToolCalls
	case "guardrail_intervened", "content_filtered":
		return FinishContentFilter
	}
	return FinishStop
}

// FinishFromGemini maps a Gemini finishReason. Gemini says STOP for function calls, so
// hasFunctionCall turns STOP into tool_calls.
func FinishFromGemini(finishReason string, hasFunctionCall bool) string {
	switch finishReason {
	case "MAX_TOKENS":
		return FinishLength
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
		"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION":
		return FinishContentFilter
	}
	if hasFunctionCall {
		return FinishToolCalls
	}
	return FinishStop
}

// Completion is a finished, non-stream answer in canonical form.
type Completion struct {
	ID      string
	Model   string
	Created int64
	Content string
	// Refusal is set when the model refused (OpenAI's message.refusal).
	Refusal string
	// ReasoningContent is the model's visible thinking, emitted as message.reasoning_content
	// (the DeepSeek/OpenRouter convention) when non-empty.
	ReasoningContent string
	// ThinkingBlocks are signed thinking blocks, emitted as message.thinking_blocks so a client
	// can echo them back on the next turn (LiteLLM's convention).
	ThinkingBlocks []ThinkingBlock
	ToolCalls      []ToolCall
	FinishReason   string
	Usage          Usage
}

type outFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type outToolCall struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Function     outFunction     `json:"function"`
	ExtraContent json.RawMessage `json:"extra_content,omitempty"`
}

type outMessage struct {
	Role             string          `json:"role"`
	Content          *string         `json:"content"`
	Refusal          *string         `json:"refusal"`
	ReasoningContent string          `json:"reasoning_content,omitempty"`
	ThinkingBlocks   []ThinkingBlock `json:"thinking_blocks,omitempty"`
	ToolCalls        []outToolCall   `json:"tool_calls,omitempty"`
}

type outChoice struct {
	Index        int             `json:"index"`
	Message      outMessage      `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type outCompletion struct {
	ID      string           `json:"id"`
	Object  string           `json:"object"`
	Created int64            `json:"created"`
	Model   string           `json:"model"`
	Choices []outChoice      `json:"choices"`
	Usage   *OpenAIUsageJSON `json:"usage"`
}

// OpenAIUsageJSON is the usage object in OpenAI's shape as the gateway emits it.
type OpenAIUsageJSON struct {
	PromptTokens            int64               `json:"prompt_tokens"`
	CompletionTokens        int64               `json:"completion_tokens"`
	TotalTokens             int64               `json:"total_tokens"`
	PromptTokensDetails     PromptTokensOut     `json:"prompt_tokens_details"`
	CompletionTokensDetails CompletionTokensOut `json:"completion_tokens_details"`
}

// PromptTokensOut is usage.prompt_tokens_details.
type PromptTokensOut struct {
	CachedTokens     int64 `json:"cached_tokens"`
	CacheWriteTokens int64 `json:"cache_write_tokens"`
}

// CompletionTokensOut is usage.completion_tokens_details.
type CompletionTokensOut struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// ToOpenAIUsage renders the normal form the way OpenAI counts: prompt_tokens is the whole
// prompt (uncached + cache read + cache writes), cached_tokens the cache read, and
// cache_write_tokens both write TTLs together. Parsing it back with OpenAIUsage.Normal loses
// only the 5m/1h split, which adapters keep on Response.Usage.
func ToOpenAIUsage(u Usage) OpenAIUsageJSON {
	p := u.PromptTokens()
	return OpenAIUsageJSON{
		PromptTokens: p, CompletionTokens: u.Output, TotalTokens: p + u.Output,
		PromptTokensDetails:     PromptTokensOut{CachedTokens: u.CacheRead, CacheWriteTokens: u.CacheWrite5m + u.CacheWrite1h},
		CompletionTokensDetails: CompletionTokensOut{ReasoningTokens: u.Reasoning},
	}
}

// MarshalCompletion renders a chat.completion body with one choice.
func MarshalCompletion(c *Completion) ([]byte, error) {
	msg := outMessage{Role: RoleAssistant, ReasoningContent: c.ReasoningContent, ThinkingBlocks: c.ThinkingBlocks}
	if c.Content != "" || len(c.ToolCalls) == 0 {
		content := c.Content
		msg.Content = &content
	}
	if c.Refusal != "" {
		r := c.Refusal
		msg.Refusal = &r
	}
	for _, tc := range c.ToolCalls {
		msg.ToolCalls = append(msg.ToolCalls, outToolCall{ID: tc.ID, Type: "function",
			Function: outFunction{Name: tc.Name, Arguments: tc.Arguments}, ExtraContent: tc.Extra})
	}
	finish := c.FinishReason
	if finish == "" {
		finish = FinishStop
	}
	u := ToOpenAIUsage(c.Usage)
	return json.Marshal(outCompletion{
		ID: c.ID, Object: "chat.completion", Created: c.Created, Model: c.Model,
		Choices: []outChoice{{Message: msg, Logprobs: jsonNull, FinishReason: finish}},
		Usage:   &u,
	})
}

var jsonNull = json.RawMessage("null")

// ChunkWriter builds chat.completion.chunk payloads for one streamed answer: every chunk has
// the same id, created and model, as OpenAI's do. Each method returns a new slice the caller
// owns. Tool-call indexes are OpenAI's: 0, 1, 2 … per message, whatever the upstream numbered.
type ChunkWriter struct {
	prefix []byte // {"id":…,"object":"chat.completion.chunk","created":…,"model":…,
}

// NewChunkWriter starts a stream's chunks.
func NewChunkWriter(id, model string, created int64) *ChunkWriter {
	b := make([]byte, 0, 128)
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = appendJSONString(b, model)
	b = append(b, ',')
	return &ChunkWriter{prefix: b}
}

func (w *ChunkWriter) delta(extra int) []byte {
	b := make([]byte, 0, len(w.prefix)+96+extra)
	b = append(b, w.prefix...)
	return append(b, `"choices":[{"index":0,"delta":`...)
}

func endChoice(b []byte, finish string) []byte {
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, finish)
	}
	return append(b, `}],"usage":null}`...)
}

// Role is the first chunk: {"role":"assistant","content":""}.
func (w *ChunkWriter) Role() []byte {
	b := w.delta(0)
	b = append(b, `{"role":"assistant","content":""}`...)
	return endChoice(b, "")
}

// Content is a content delta.
func (w *ChunkWriter) Content(text string) []byte {
	b := w.delta(len(text))
	b = append(b, `{"content":`...)
	b = appendJSONString(b, text)
	b = append(b, '}')
	return endChoice(b, "")
}

// Reasoning is a reasoning_content delta (DeepSeek/OpenRouter convention), never content.
func (w *ChunkWriter) Reasoning(text string) []byte {
	b := w.delta(len(text))
	b = append(b, `{"reasoning_content":`...)
	b = appendJSONString(b, text)
	b = append(b, '}')
	return endChoice(b, "")
}

// ToolCallStart is a tool call's first fragment: index, id, type, name and empty arguments.
func (w *ChunkWriter) ToolCallStart(index int, id, name string) []byte {
	b := w.delta(len(id) + len(name))
	b = append(b, `{"tool_calls":[{"index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"type":"function","function":{"name":`...)
	b = appendJSONString(b, name)
	b = append(b, `,"arguments":""}}]}`...)
	return endChoice(b, "")
}

// ToolCallArgs is a later fragment carrying a piece of the arguments string.
func (w *ChunkWriter) ToolCallArgs(index int, args string) []byte {
	b := w.delta(len(args))
	b = append(b, `{"tool_calls":[{"index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, `,"function":{"arguments":`...)
	b = appendJSONString(b, args)
	b = append(b, `}}]}`...)
	return endChoice(b, "")
}

// Finish is the chunk with an empty delta and the finish reason.
func (w *ChunkWriter) Finish(reason string) []byte {
	if reason == "" {
		reason = FinishStop
	}
	b := w.delta(0)
	b = append(b, `{}`...)
	return endChoice(b, reason)
}

// Usage is the final chunk: no choices, usage in OpenAI's shape.
func (w *ChunkWriter) Usage(u Usage) []byte {
	raw, _ := json.Marshal(ToOpenAIUsage(u))
	b := make([]byte, 0, len(w.prefix)+len(raw)+32)
	b = append(b, w.prefix...)
	b = append(b, `"choices":[],"usage":`...)
	b = append(b, raw...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	raw, _ := json.Marshal(s)
	return append(b, raw...)
}
