package responses

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Meta is what a Response echoes of its request, plus its id and creation time.
type Meta struct {
	ID        string
	CreatedAt int64
	Request   *Request
}

// Response is the Responses API object (providers.md §2.2) as the gateway emits it.
type Response struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	CompletedAt        *int64            `json:"completed_at"`
	Status             string            `json:"status"`
	Error              *ResponseError    `json:"error"`
	IncompleteDetails  *Incomplete       `json:"incomplete_details"`
	Instructions       json.RawMessage   `json:"instructions"`
	MaxOutputTokens    *int64            `json:"max_output_tokens"`
	Model              string            `json:"model"`
	Output             []json.RawMessage `json:"output"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Reasoning          json.RawMessage   `json:"reasoning"`
	Store              bool              `json:"store"`
	Temperature        *float64          `json:"temperature"`
	Text               json.RawMessage   `json:"text"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              json.RawMessage   `json:"tools"`
	TopP               *float64          `json:"top_p"`
	Truncation         string            `json:"truncation"`
	Usage              *Usage            `json:"usage"`
	User               *string           `json:"user,omitempty"`
	Metadata           json.RawMessage   `json:"metadata"`
}

// ResponseError is Response.error.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Incomplete is Response.incomplete_details.
type Incomplete struct {
	Reason string `json:"reason"`
}

// Usage is the Responses usage object. Cost (dollars) is the gateway's addition, as on chat.
type Usage struct {
	InputTokens         int64           `json:"input_tokens"`
	InputTokensDetails  InputDetails    `json:"input_tokens_details"`
	OutputTokens        int64           `json:"output_tokens"`
	OutputTokensDetails OutputDetails   `json:"output_tokens_details"`
	TotalTokens         int64           `json:"total_tokens"`
	Cost                json.RawMessage `json:"cost,omitempty"`
}

// InputDetails is usage.input_tokens_details.
type InputDetails struct {
	CachedTokens     int64 `json:"cached_tokens"`
	CacheWriteTokens int64 `json:"cache_write_tokens"`
}

// OutputDetails is usage.output_tokens_details.
type OutputDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// chatUsage reads a chat usage object (OpenAI counting: prompt totals include cached tokens).
type chatUsage struct {
	providers.OpenAIUsage
	Cost json.RawMessage `json:"cost"`
}

func usageFromChat(raw json.RawMessage) *Usage {
	if isNull(raw) || raw[0] != '{' {
		return nil
	}
	var cu chatUsage
	if json.Unmarshal(raw, &cu) != nil {
		return nil
	}
	u := &Usage{InputTokens: cu.PromptTokens, OutputTokens: cu.CompletionTokens, TotalTokens: cu.TotalTokens, Cost: cu.Cost}
	if d := cu.PromptTokensDetails; d != nil {
		u.InputTokensDetails = InputDetails{CachedTokens: d.CachedTokens, CacheWriteTokens: d.CacheWriteTokens}
	} else if cu.PromptCacheHitTokens > 0 {
		u.InputTokensDetails.CachedTokens = cu.PromptCacheHitTokens
	}
	if d := cu.CompletionTokensDetails; d != nil {
		u.OutputTokensDetails.ReasoningTokens = d.ReasoningTokens
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.InputTokens + u.OutputTokens
	}
	if isNull(u.Cost) {
		u.Cost = nil
	}
	return u
}

// Output items.

type outputTextPart struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

type refusalPart struct {
	Type    string `json:"type"`
	Refusal string `json:"refusal"`
}

type outMessage struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Status  string `json:"status"`
	Role    string `json:"role"`
	Content []any  `json:"content"`
}

type outFunctionCall struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	Arguments string `json:"arguments"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
}

// NewID makes a random id with the given prefix (resp_, msg_, fc_).
func NewID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Skeleton is the response before any output: status in_progress, the request echoed.
func Skeleton(m *Meta) *Response {
	r := m.Request
	resp := &Response{
		ID: m.ID, Object: "response", CreatedAt: m.CreatedAt, Status: "in_progress", Model: r.Model,
		Output: []json.RawMessage{}, ParallelToolCalls: r.ParallelToolCalls == nil || *r.ParallelToolCalls,
		Instructions: orNull(r.Instructions), MaxOutputTokens: r.MaxOutputTokens, Reasoning: orDefault(r.Reasoning, `{"effort":null,"summary":null}`),
		Store: r.Stores(), Temperature: r.Temperature, TopP: r.TopP, Text: orDefault(r.Text, `{"format":{"type":"text"}}`),
		ToolChoice: orDefault(r.ToolChoice, `"auto"`), Tools: orDefault(r.Tools, `[]`), Truncation: "disabled",
		Metadata: orDefault(r.Metadata, `{}`),
	}
	if r.PreviousResponseID != "" {
		p := r.PreviousResponseID
		resp.PreviousResponseID = &p
	}
	if r.User != "" {
		u := r.User
		resp.User = &u
	}
	return resp
}

func orNull(raw json.RawMessage) json.RawMessage { return orDefault(raw, "null") }

func orDefault(raw json.RawMessage, def string) json.RawMessage {
	if isNull(raw) {
		return json.RawMessage(def)
	}
	return raw
}

// finishStatus maps a chat finish reason to the response status (providers.md §0.5).
func finishStatus(resp *Response, finish string) {
	switch finish {
	case providers.FinishLength:
		resp.Status, resp.IncompleteDetails = "incomplete", &Incomplete{Reason: "max_output_tokens"}
	case providers.FinishContentFilter:
		resp.Status, resp.IncompleteDetails = "incomplete", &Incomplete{Reason: "content_filter"}
	default:
		resp.Status = "completed"
	}
}

type chatCompletion struct {
	Model   string `json:"model"`
	Created int64  `json:"created"`
	Choices []struct {
		Message struct {
			Content   *string `json:"content"`
			Refusal   *string `json:"refusal"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

// FromCompletion builds the Response of a non-stream chat.completion body.
func FromCompletion(m *Meta, body []byte, completedAt int64) (*Response, error) {
	var cc chatCompletion
	if err := json.Unmarshal(body, &cc); err != nil {
		return nil, fmt.Errorf("responses: decoding the chat completion: %w", err)
	}
	resp := Skeleton(m)
	if cc.Model != "" {
		resp.Model = cc.Model
	}
	finish := providers.FinishStop
	if len(cc.Choices) > 0 {
		ch := cc.Choices[0]
		finish = ch.FinishReason
		var content []any
		if ch.Message.Content != nil && *ch.Message.Content != "" {
			content = append(content, outputTextPart{Type: "output_text", Text: *ch.Message.Content, Annotations: []any{}, Logprobs: []any{}})
		}
		if ch.Message.Refusal != nil && *ch.Message.Refusal != "" {
			content = append(content, refusalPart{Type: "refusal", Refusal: *ch.Message.Refusal})
		}
		if len(content) > 0 {
			b, _ := json.Marshal(outMessage{ID: NewID("msg_"), Type: "message", Status: "completed", Role: "assistant", Content: content})
			resp.Output = append(resp.Output, b)
		}
		for _, tc := range ch.Message.ToolCalls {
			b, _ := json.Marshal(outFunctionCall{ID: NewID("fc_"), Type: "function_call", Status: "completed",
				Arguments: tc.Function.Arguments, CallID: tc.ID, Name: tc.Function.Name})
			resp.Output = append(resp.Output, b)
		}
	}
	finishStatus(resp, finish)
	resp.Usage = usageFromChat(cc.Usage)
	resp.CompletedAt = &completedAt
	return resp, nil
}

// OutputItems returns the output array of a stored Response object.
func OutputItems(response []byte) ([]json.RawMessage, error) {
	var r struct {
		Output []json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(response, &r); err != nil {
		return nil, err
	}
	return r.Output, nil
}
