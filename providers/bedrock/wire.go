package bedrock

import (
	"encoding/json"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Wire types of the Converse API (reference providers.md §4.3–4.5). Content blocks are a
// union: exactly one member is set.

// Request is a Converse / ConverseStream body.
type Request struct {
	Messages                     []Message       `json:"messages"`
	System                       []Block         `json:"system,omitempty"`
	InferenceConfig              *InferenceCfg   `json:"inferenceConfig,omitempty"`
	ToolConfig                   *ToolConfig     `json:"toolConfig,omitempty"`
	AdditionalModelRequestFields json.RawMessage `json:"additionalModelRequestFields,omitempty"`
	OutputConfig                 *OutputConfig   `json:"outputConfig,omitempty"`
}

// Message is one conversation turn.
type Message struct {
	Role    string  `json:"role"`
	Content []Block `json:"content"`
}

// Block is a content block (also used for system blocks).
type Block struct {
	Text             *string           `json:"text,omitempty"`
	Image            *Image            `json:"image,omitempty"`
	ToolUse          *ToolUse          `json:"toolUse,omitempty"`
	ToolResult       *ToolResult       `json:"toolResult,omitempty"`
	ReasoningContent *ReasoningContent `json:"reasoningContent,omitempty"`
	CachePoint       *CachePoint       `json:"cachePoint,omitempty"`
	JSON             json.RawMessage   `json:"json,omitempty"`
}

// Image is an inline image.
type Image struct {
	Format string      `json:"format"`
	Source ImageSource `json:"source"`
}

// ImageSource carries the bytes (base64 in JSON, as []byte marshals).
type ImageSource struct {
	Bytes []byte `json:"bytes"`
}

// ToolUse is a model's tool call.
type ToolUse struct {
	ToolUseID string          `json:"toolUseId"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
}

// ToolResult answers a tool call.
type ToolResult struct {
	ToolUseID string  `json:"toolUseId"`
	Content   []Block `json:"content"`
	Status    string  `json:"status,omitempty"`
}

// ReasoningContent is a thinking block.
type ReasoningContent struct {
	ReasoningText *ReasoningText `json:"reasoningText,omitempty"`
	// RedactedContent is base64 in JSON.
	RedactedContent []byte `json:"redactedContent,omitempty"`
}

// ReasoningText is visible thinking with its signature.
type ReasoningText struct {
	Text      string `json:"text"`
	Signature string `json:"signature,omitempty"`
}

// CachePoint is a prompt-cache checkpoint (tokenopt.md §1.3).
type CachePoint struct {
	Type string `json:"type"`
	TTL  string `json:"ttl,omitempty"`
}

// InferenceCfg is inferenceConfig.
type InferenceCfg struct {
	MaxTokens     int64    `json:"maxTokens,omitempty"`
	Temperature   *float64 `json:"temperature,omitempty"`
	TopP          *float64 `json:"topP,omitempty"`
	StopSequences []string `json:"stopSequences,omitempty"`
}

// ToolConfig is toolConfig.
type ToolConfig struct {
	Tools      []ToolEntry `json:"tools"`
	ToolChoice *ToolChoice `json:"toolChoice,omitempty"`
}

// ToolEntry is a tool definition or a cache point in the tools list.
type ToolEntry struct {
	ToolSpec   *ToolSpec   `json:"toolSpec,omitempty"`
	CachePoint *CachePoint `json:"cachePoint,omitempty"`
}

// ToolSpec defines one tool.
type ToolSpec struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	InputSchema InputSchema `json:"inputSchema"`
}

// InputSchema wraps the JSON schema document.
type InputSchema struct {
	JSON json.RawMessage `json:"json"`
}

// ToolChoice is {"auto":{}} | {"any":{}} | {"tool":{"name":…}}.
type ToolChoice struct {
	Auto *struct{}  `json:"auto,omitempty"`
	Any  *struct{}  `json:"any,omitempty"`
	Tool *NamedTool `json:"tool,omitempty"`
}

// NamedTool names the tool a toolChoice forces.
type NamedTool struct {
	Name string `json:"name"`
}

// OutputConfig asks for structured output (newer models).
type OutputConfig struct {
	TextFormat TextFormat `json:"textFormat"`
}

// TextFormat is outputConfig.textFormat.
type TextFormat struct {
	Type      string `json:"type"`
	Structure struct {
		JSONSchema JSONSchema `json:"jsonSchema"`
	} `json:"structure"`
}

// JSONSchema carries the schema as a JSON string, as the API models it.
type JSONSchema struct {
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	Schema      string `json:"schema"`
}

// Response is a Converse answer.
type Response struct {
	Output struct {
		Message Message `json:"message"`
	} `json:"output"`
	StopReason string     `json:"stopReason"`
	Usage      TokenUsage `json:"usage"`
}

// TokenUsage is Bedrock's usage: inputTokens excludes cache reads and writes.
type TokenUsage struct {
	InputTokens           int64         `json:"inputTokens"`
	OutputTokens          int64         `json:"outputTokens"`
	TotalTokens           int64         `json:"totalTokens"`
	CacheReadInputTokens  int64         `json:"cacheReadInputTokens,omitempty"`
	CacheWriteInputTokens int64         `json:"cacheWriteInputTokens,omitempty"`
	CacheDetails          []CacheDetail `json:"cacheDetails,omitempty"`
}

// CacheDetail is one TTL's share of the cache writes.
type CacheDetail struct {
	TTL         string `json:"ttl"`
	InputTokens int64  `json:"inputTokens"`
}

// Normal maps Bedrock usage into the normal form. Writes listed with a 1h TTL in cacheDetails
// are priced as 1h writes, the rest as 5m.
func (u TokenUsage) Normal() providers.Usage {
	n := providers.Usage{InputUncached: u.InputTokens, CacheRead: u.CacheReadInputTokens, Output: u.OutputTokens}
	var oneHour int64
	for _, d := range u.CacheDetails {
		if d.TTL == "1h" {
			oneHour += d.InputTokens
		}
	}
	oneHour = min(oneHour, u.CacheWriteInputTokens)
	n.CacheWrite1h = oneHour
	n.CacheWrite5m = u.CacheWriteInputTokens - oneHour
	return n
}

// Stream event payloads (the member bodies of ConverseStreamOutput).
type (
	contentBlockStart struct {
		ContentBlockIndex int `json:"contentBlockIndex"`
		Start             struct {
			ToolUse *struct {
				ToolUseID string `json:"toolUseId"`
				Name      string `json:"name"`
			} `json:"toolUse"`
		} `json:"start"`
	}
	contentBlockDelta struct {
		ContentBlockIndex int `json:"contentBlockIndex"`
		Delta             struct {
			Text    *string `json:"text"`
			ToolUse *struct {
				Input string `json:"input"`
			} `json:"toolUse"`
			ReasoningContent *struct {
				Text            string `json:"text"`
				Signature       string `json:"signature"`
				RedactedContent []byte `json:"redactedContent"`
			} `json:"reasoningContent"`
		} `json:"delta"`
	}
	messageStop struct {
		StopReason string `json:"stopReason"`
	}
	metadataEvent struct {
		Usage TokenUsage `json:"usage"`
	}
)
