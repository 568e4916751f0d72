package providers

import (
	"bytes"
	"encoding/json"
)

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
//
// It runs once per response on the hot path, so the usual shape (plain keys, integer counts) is
// read by a scanner without reflection; anything else (escapes, case variants, floats, nulls,
// invalid JSON) takes encoding/json, whose answer is the reference (FuzzParseOpenAIUsage).
func ParseOpenAIUsage(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	var o OpenAIUsage
	if scanOpenAIUsage(raw, &o) {
		return o.Normal(), true
	}
	o = OpenAIUsage{}
	if err := json.Unmarshal(raw, &o); err != nil {
		return Usage{}, false
	}
	return o.Normal(), true
}

// usageDetails are the nested objects scanOpenAIUsage reads.
type usageDetails struct {
	CachedTokens, CacheWriteTokens, ReasoningTokens int64
}

// scanOpenAIUsage fills o from a usage object of the usual shape and reports whether it could;
// on false the caller decodes with encoding/json.
func scanOpenAIUsage(raw []byte, o *OpenAIUsage) bool {
	if !validJSON(raw) {
		return false
	}
	ok := true
	err := EachTopLevel(raw, func(quoted []byte, v Span) bool {
		val := raw[v.Start:v.End]
		switch string(quoted) {
		case `"prompt_tokens"`:
			ok = plainDigits(val, &o.PromptTokens)
		case `"completion_tokens"`:
			ok = plainDigits(val, &o.CompletionTokens)
		case `"total_tokens"`:
			ok = plainDigits(val, &o.TotalTokens)
		case `"prompt_cache_hit_tokens"`:
			ok = plainDigits(val, &o.PromptCacheHitTokens)
		case `"prompt_tokens_details"`:
			var d usageDetails
			if ok = scanDetails(val, &d); ok {
				if o.PromptTokensDetails == nil {
					o.PromptTokensDetails = &struct {
						CachedTokens     int64 `json:"cached_tokens"`
						CacheWriteTokens int64 `json:"cache_write_tokens"`
					}{}
				}
				// encoding/json merges a repeated object into the earlier one.
				if d.CachedTokens >= 0 {
					o.PromptTokensDetails.CachedTokens = d.CachedTokens
				}
				if d.CacheWriteTokens >= 0 {
					o.PromptTokensDetails.CacheWriteTokens = d.CacheWriteTokens
				}
			}
		case `"completion_tokens_details"`:
			var d usageDetails
			if ok = scanDetails(val, &d); ok {
				if o.CompletionTokensDetails == nil {
					o.CompletionTokensDetails = &struct {
						ReasoningTokens int64 `json:"reasoning_tokens"`
					}{}
				}
				if d.ReasoningTokens >= 0 {
					o.CompletionTokensDetails.ReasoningTokens = d.ReasoningTokens
				}
			}
		default:
			ok = !caseVariant(quoted, usageKeys[:])
		}
		return ok
	})
	return err == nil && ok
}

var usageKeys = [...]string{"prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_hit_tokens",
	"prompt_tokens_details", "completion_tokens_details", "cached_tokens", "cache_write_tokens", "reasoning_tokens"}

// scanDetails reads a details object; a field it did not see stays -1 (encoding/json leaves
// the earlier value).
func scanDetails(val []byte, d *usageDetails) bool {
	*d = usageDetails{-1, -1, -1}
	if val[0] != '{' {
		return false // null or another type: encoding/json decides
	}
	ok := true
	err := EachTopLevel(val, func(quoted []byte, v Span) bool {
		n := val[v.Start:v.End]
		switch string(quoted) {
		case `"cached_tokens"`:
			ok = plainDigits(n, &d.CachedTokens)
		case `"cache_write_tokens"`:
			ok = plainDigits(n, &d.CacheWriteTokens)
		case `"reasoning_tokens"`:
			ok = plainDigits(n, &d.ReasoningTokens)
		default:
			ok = !caseVariant(quoted, usageKeys[:])
		}
		return ok
	})
	return err == nil && ok
}

// plainDigits parses a JSON integer without sign, exponent or fraction of at most 18 digits
// (nothing there can overflow an int64).
func plainDigits(b []byte, dst *int64) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int64(c-'0')
	}
	*dst = n
	return true
}

// caseVariant reports whether a quoted key has escapes or matches one of keys only
// case-insensitively (encoding/json would decode it into that field).
func caseVariant(quoted []byte, keys []string) bool {
	k := quoted[1 : len(quoted)-1]
	for _, c := range k {
		if c == '\\' || c >= 0x80 { // escapes, and Unicode folds such as the Kelvin sign
			return true
		}
	}
	for _, want := range keys {
		if len(k) == len(want) && bytes.EqualFold(k, []byte(want)) {
			return true
		}
	}
	return false
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
