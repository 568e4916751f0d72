package anthropic

import (
	"encoding/json"
	"errors"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Wire types of the Anthropic Messages API (reference providers.md §3). They serve both
// directions: the adapter marshals Request and unmarshals Message; the ingress unmarshals
// Request and marshals Message.

// Request is a Messages API request body.
type Request struct {
	Model string `json:"model,omitempty"`
	// AnthropicVersion is set only on Vertex, where the version travels in the body.
	AnthropicVersion string                  `json:"anthropic_version,omitempty"`
	MaxTokens        int64                   `json:"max_tokens"`
	System           Blocks                  `json:"system,omitempty"`
	Messages         []MessageParam          `json:"messages"`
	Tools            []Tool                  `json:"tools,omitempty"`
	ToolChoice       *ToolChoice             `json:"tool_choice,omitempty"`
	Temperature      *float64                `json:"temperature,omitempty"`
	TopP             *float64                `json:"top_p,omitempty"`
	TopK             *int64                  `json:"top_k,omitempty"`
	StopSequences    []string                `json:"stop_sequences,omitempty"`
	Metadata         *Metadata               `json:"metadata,omitempty"`
	Thinking         *Thinking               `json:"thinking,omitempty"`
	OutputConfig     *OutputConfig           `json:"output_config,omitempty"`
	CacheControl     *providers.CacheControl `json:"cache_control,omitempty"`
	Stream           bool                    `json:"stream,omitempty"`
}

// MessageParam is one conversation turn.
type MessageParam struct {
	Role    string `json:"role"`
	Content Blocks `json:"content"`
}

// Blocks is a content array. On input it also accepts a plain string (one text block), as
// the API does for message content, system and tool_result content.
type Blocks []Block

// UnmarshalJSON accepts a string or an array of blocks.
func (b *Blocks) UnmarshalJSON(raw []byte) error {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		*b = Blocks{{Type: "text", Text: s}}
		return nil
	}
	if string(raw) == "null" {
		*b = nil
		return nil
	}
	var list []Block
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	*b = list
	return nil
}

// Block is a content block of any type; only the fields of its Type are set.
type Block struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
	// image and document
	Source *Source `json:"source,omitempty"`
	// tool_use
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
	// tool_result
	ToolUseID string `json:"tool_use_id,omitempty"`
	Content   Blocks `json:"content,omitempty"`
	IsError   bool   `json:"is_error,omitempty"`
	// thinking and redacted_thinking
	Thinking  string `json:"thinking,omitempty"`
	Signature string `json:"signature,omitempty"`
	Data      string `json:"data,omitempty"`

	CacheControl *providers.CacheControl `json:"cache_control,omitempty"`
}

// MarshalJSON writes a text block's text even when empty (the field is required), and
// thinking's thinking likewise; other types omit what they do not have.
func (b Block) MarshalJSON() ([]byte, error) {
	type plain Block
	switch b.Type {
	case "text":
		return json.Marshal(struct {
			Type         string                  `json:"type"`
			Text         string                  `json:"text"`
			CacheControl *providers.CacheControl `json:"cache_control,omitempty"`
		}{b.Type, b.Text, b.CacheControl})
	case "thinking":
		return json.Marshal(struct {
			Type      string `json:"type"`
			Thinking  string `json:"thinking"`
			Signature string `json:"signature"`
		}{b.Type, b.Thinking, b.Signature})
	case "tool_use":
		in := b.Input
		if len(in) == 0 {
			in = json.RawMessage("{}")
		}
		return json.Marshal(struct {
			Type         string                  `json:"type"`
			ID           string                  `json:"id"`
			Name         string                  `json:"name"`
			Input        json.RawMessage         `json:"input"`
			CacheControl *providers.CacheControl `json:"cache_control,omitempty"`
		}{b.Type, b.ID, b.Name, in, b.CacheControl})
	}
	return json.Marshal(plain(b))
}

// Source is an image or document source.
type Source struct {
	Type      string `json:"type"` // base64 | url | file
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
	FileID    string `json:"file_id,omitempty"`
}

// Tool is a tool definition.
type Tool struct {
	Type         string                  `json:"type,omitempty"` // custom tools omit it; server tools name a version
	Name         string                  `json:"name"`
	Description  string                  `json:"description,omitempty"`
	InputSchema  json.RawMessage         `json:"input_schema,omitempty"`
	Strict       *bool                   `json:"strict,omitempty"`
	CacheControl *providers.CacheControl `json:"cache_control,omitempty"`
}

// ToolChoice is {type: auto|any|tool|none, name?, disable_parallel_tool_use?}.
type ToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// Metadata carries the end-user id.
type Metadata struct {
	UserID string `json:"user_id,omitempty"`
}

// Thinking enables extended thinking.
type Thinking struct {
	Type         string `json:"type"` // enabled | disabled | adaptive
	BudgetTokens int64  `json:"budget_tokens,omitempty"`
}

// OutputConfig holds the structured-output format.
type OutputConfig struct {
	Format *OutputFormat `json:"format,omitempty"`
}

// OutputFormat is {type:"json_schema", schema}.
type OutputFormat struct {
	Type   string          `json:"type"`
	Schema json.RawMessage `json:"schema,omitempty"`
}

// Message is a Messages API response.
type Message struct {
	ID           string  `json:"id"`
	Type         string  `json:"type"`
	Role         string  `json:"role"`
	Model        string  `json:"model"`
	Content      []Block `json:"content"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
	Usage        Usage   `json:"usage"`
}

// Usage is Anthropic's usage object. Pointers tell "absent" from 0, which matters when a
// message_delta overlays message_start.
type Usage struct {
	InputTokens              *int64         `json:"input_tokens,omitempty"`
	CacheCreationInputTokens *int64         `json:"cache_creation_input_tokens,omitempty"`
	CacheReadInputTokens     *int64         `json:"cache_read_input_tokens,omitempty"`
	CacheCreation            *CacheCreation `json:"cache_creation,omitempty"`
	OutputTokens             *int64         `json:"output_tokens,omitempty"`
}

// CacheCreation splits cache writes by TTL.
type CacheCreation struct {
	Ephemeral5m int64 `json:"ephemeral_5m_input_tokens"`
	Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
}

// Overlay sets the fields present in o (message_delta usage is cumulative).
func (u *Usage) Overlay(o Usage) {
	if o.InputTokens != nil {
		u.InputTokens = o.InputTokens
	}
	if o.CacheCreationInputTokens != nil {
		u.CacheCreationInputTokens = o.CacheCreationInputTokens
	}
	if o.CacheReadInputTokens != nil {
		u.CacheReadInputTokens = o.CacheReadInputTokens
	}
	if o.CacheCreation != nil {
		u.CacheCreation = o.CacheCreation
	}
	if o.OutputTokens != nil {
		u.OutputTokens = o.OutputTokens
	}
}

func val(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// Normal maps Anthropic usage (input excludes cached) into the normal form. Cache writes are
// split by TTL when the upstream says how; otherwise they count as 5-minute writes.
func (u Usage) Normal() providers.Usage {
	n := providers.Usage{
		InputUncached: val(u.InputTokens),
		CacheRead:     val(u.CacheReadInputTokens),
		Output:        val(u.OutputTokens),
	}
	created := val(u.CacheCreationInputTokens)
	if cc := u.CacheCreation; cc != nil && cc.Ephemeral5m+cc.Ephemeral1h > 0 {
		n.CacheWrite5m, n.CacheWrite1h = cc.Ephemeral5m, cc.Ephemeral1h
		if rest := created - cc.Ephemeral5m - cc.Ephemeral1h; rest > 0 {
			n.CacheWrite5m += rest
		}
	} else {
		n.CacheWrite5m = created
	}
	return n
}

// UsageFrom renders the normal form as Anthropic counts it.
func UsageFrom(u providers.Usage) Usage {
	in, read, out := u.InputUncached, u.CacheRead, u.Output
	created := u.CacheWrite5m + u.CacheWrite1h
	return Usage{InputTokens: &in, CacheCreationInputTokens: &created, CacheReadInputTokens: &read,
		CacheCreation: &CacheCreation{Ephemeral5m: u.CacheWrite5m, Ephemeral1h: u.CacheWrite1h}, OutputTokens: &out}
}

// errorBody is Anthropic's error envelope.
type errorBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
		Details *struct {
			ErrorCode string `json:"error_code"`
		} `json:"details"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

var errNotObject = errors.New("not a JSON object")
