package providers

import "encoding/json"

// Usage is the one normal form every provider's token accounting maps into. The fields are
// disjoint: InputUncached + CacheRead + CacheWrite5m + CacheWrite1h is the whole prompt, so a
// price is a plain dot product and no provider's "includes cached / excludes cached" rule leaks
// past its adapter. Reasoning is a part of Output, kept for reporting only.
type Usage struct {
	InputUncached int64 `json:"input_uncached"`
	CacheRead     int64 `json:"cache_read"`
	CacheWrite5m  int64 `json:"cache_write_5m"`
	CacheWrite1h  int64 `json:"cache_write_1h"`
	Output        int64 `json:"output"`
	Reasoning     int64 `json:"reasoning"`
}

// PromptTokens is the whole prompt, cached or not, as OpenAI reports prompt_tokens.
func (u Usage) PromptTokens() int64 {
	return u.InputUncached + u.CacheRead + u.CacheWrite5m + u.CacheWrite1h
}

// IsZero reports whether no usage was captured at all.
func (u Usage) IsZero() bool { return u == Usage{} }

// OpenAIUsage is the chat-completions usage object as OpenAI and compatible servers send it.
// DeepSeek's hit/miss counters are read too, since it omits prompt_tokens_details.
type OpenAIUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens     int64 `json:"cached_tokens"`
		CacheWriteTokens int64 `json:"cache_write_tokens"`
	} `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details,omitempty"`
	PromptCacheHitTokens int64 `json:"prompt_cache_hit_tokens,omitempty"`
}

// Normal maps OpenAI-style usage (prompt totals include cached tokens) into the normal form.
// Cache writes are priced at the 5-minute rate, which is what OpenAI bills them as.
func (o OpenAIUsage) Normal() Usage {
	var u Usage
	cached := o.PromptCacheHitTokens
	if d := o.PromptTokensDetails; d != nil {
		cached = d.CachedTokens
		u.CacheWrite5m = d.CacheWriteTokens
	}
	u.CacheRead = cached
	u.InputUncached = max(o.PromptTokens-cached-u.CacheWrite5m, 0)
	u.Output = o.CompletionTokens
	if d := o.CompletionTokensDetails; d != nil {
		u.Reasoning = d.ReasoningTokens
	}
	return u
}

// ParseOpenAIUsage decodes a usage object; a JSON null or garbage yields ok=false.
func ParseOpenAIUsage(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	var o OpenAIUsage
	if err := json.Unmarshal(raw, &o); err != nil {
		return Usage{}, false
	}
	return o.Normal(), true
}

// MaxUsageTokens bounds each usage count the gateway accepts from an upstream: 2^32 tokens,
// beyond any context window, so that pricing a hostile or broken upstream's report stays far
// from overflow and never turns negative.
const MaxUsageTokens = 1 << 32

// Bounded returns u with every count clamped to [0, MaxUsageTokens].
func (u Usage) Bounded() Usage {
	c := func(v int64) int64 { return min(max(v, 0), MaxUsageTokens) }
	return Usage{InputUncached: c(u.InputUncached), CacheRead: c(u.CacheRead), CacheWrite5m: c(u.CacheWrite5m),
		CacheWrite1h: c(u.CacheWrite1h), Output: c(u.Output), Reasoning: c(u.Reasoning)}
}
