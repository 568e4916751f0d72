// Package budget shapes the output budget of OpenAI chat-completions bodies: when the caller
// gave no cap, it adds one per model class from the catalog, clamped to the model maximum. A
// request that has a cap is never touched.
package budget

import (
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Default caps per model class.
const (
	ReasoningCap = 32768
	ChatCap      = 4096
)

// Target is where the request goes.
type Target struct {
	// Provider is the adapter type ("openai", "anthropic", ...).
	Provider string
	// Model is the upstream model id.
	Model string
	// Price is the catalog entry of Model (Caps.Reasoning and MaxOutput are used); a zero
	// Price counts as a non-reasoning model without a known maximum.
	Price catalog.Price
}

// Result says what Apply did.
type Result struct {
	// Field is the parameter set ("max_tokens" or "max_completion_tokens"), "" when the body
	// was left alone.
	Field string
	// Cap is the value set.
	Cap int64
	// CallerCap is true when the caller already gave a cap.
	CallerCap bool
}

// CapFor is the default cap for t: min(MaxOutput, 32768) for reasoning models, min(MaxOutput,
// 4096) for the rest.
func CapFor(t Target) int64 {
	c := int64(ChatCap)
	if reasoning(t) {
		c = ReasoningCap
	}
	if mo := t.Price.MaxOutput; mo > 0 && mo < c {
		c = mo
	}
	return c
}

func reasoning(t Target) bool {
	if t.Price.Caps.Reasoning {
		return true
	}
	return openAIReasoning(t.Model)
}

func openAIReasoning(model string) bool {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	for _, p := range []string{"gpt-5", "o1", "o3", "o4"} {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}

// FieldFor is the cap parameter for t: max_completion_tokens for OpenAI reasoning models and
// GPT-5 (they reject max_tokens), max_tokens elsewhere.
func FieldFor(t Target) string {
	if (t.Provider == "openai" || t.Provider == "azure") && (t.Price.Caps.Reasoning || openAIReasoning(t.Model)) {
		return "max_completion_tokens"
	}
	return "max_tokens"
}

// Apply adds the default cap when body has neither max_tokens nor max_completion_tokens (a
// null counts as absent). The new field goes first in the object; all other bytes are kept.
// body must be valid JSON (the gateway validated it); one pass over its top level decides.
func Apply(body []byte, t Target) ([]byte, Result, error) {
	r := Result{Field: FieldFor(t), Cap: CapFor(t)}
	quotedField := `"` + r.Field + `"`
	// As encoding/json and the providers read it, the last occurrence of a key wins.
	last := map[string]providers.Span{}
	err := providers.EachTopLevel(body, func(quoted []byte, v providers.Span) bool {
		if k := string(quoted); k == `"max_tokens"` || k == `"max_completion_tokens"` {
			last[k] = v
		}
		return true
	})
	if err != nil {
		return body, Result{}, err
	}
	null := providers.Span{Start: -1}
	for k, v := range last {
		if string(body[v.Start:v.End]) != "null" {
			return body, Result{CallerCap: true}, nil
		}
		if k == quotedField {
			null = v // a null cap field is replaced in place
		}
	}
	value := strconv.AppendInt(nil, r.Cap, 10)
	if null.Start >= 0 {
		return providers.Replace(body, null, value), r, nil
	}
	open := providers.SkipSpace(body, 0)
	rest := providers.SkipSpace(body, open+1)
	out := make([]byte, 0, len(body)+len(quotedField)+len(value)+2)
	out = append(out, body[:open+1]...)
	out = append(out, quotedField...)
	out = append(out, ':')
	out = append(out, value...)
	if rest < len(body) && body[rest] != '}' {
		out = append(out, ',')
	}
	return append(out, body[open+1:]...), r, nil
}

// EmptyLength flags a completion cut by the output cap before it produced any content (a
// reasoning model that spent the budget thinking).
func EmptyLength(finishReason string, content string) bool {
	return finishReason == "length" && strings.TrimSpace(content) == ""
}
