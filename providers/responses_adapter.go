package providers

import "context"

// ResponsesAdapter is an optional adapter capability: the upstream speaks OpenAI's Responses
// API natively, so a /v1/responses request can be relayed as the caller wrote it (only
// "model" rewritten, unknown fields kept both ways) instead of being translated through the
// chat shape. The router decides when to use it.
type ResponsesAdapter interface {
	Adapter
	// Responses performs one upstream attempt against {base_url}/responses. A non-stream
	// answer is the Response object in Body, with its usage in Usage; a stream yields the
	// data payloads of the Responses events (each carries its "type") and ends with io.EOF
	// when the body ends.
	Responses(ctx context.Context, call *ResponsesCall) (*Response, error)
}

// ResponsesCall is one Responses API attempt.
type ResponsesCall struct {
	// Body is the Responses request body; adapters replace "model" with UpstreamModel.
	Body          []byte
	UpstreamModel string
	Stream        bool
	// Admit is Call.Admit for a pass-through: told the Bounds of the body as sent.
	Admit func(Bounds) error
}

// ResponsesUsage is the usage object of the Responses API (input totals include cached).
type ResponsesUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails *struct {
		CachedTokens     int64 `json:"cached_tokens"`
		CacheWriteTokens int64 `json:"cache_write_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

// Normal maps Responses usage into the normal form.
func (o ResponsesUsage) Normal() Usage {
	var u Usage
	if d := o.InputTokensDetails; d != nil {
		u.CacheRead, u.CacheWrite5m = d.CachedTokens, d.CacheWriteTokens
	}
	u.InputUncached = max(o.InputTokens-u.CacheRead-u.CacheWrite5m, 0)
	u.Output = o.OutputTokens
	if d := o.OutputTokensDetails; d != nil {
		u.Reasoning = d.ReasoningTokens
	}
	return u
}
