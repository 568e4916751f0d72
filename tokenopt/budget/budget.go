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
	// As encoding/json and the providers read it, the last occurrence of a key wins.
	maxTokens, maxCompletion := providers.Span{Start: -1}, providers.Span{Start: -1}
	err := providers.EachTopLevel(body, func(quoted []byte, v providers.Span) bool {
		switch string(quoted) {
		case `"max_tokens"`:
			maxTokens = v
		case `"max_completion_tokens"`:
			maxCompletion = v
		}
		return true
	})
	if err != nil {
		return body, Result{}, err
	}
	isNull := func(v providers.Span) bool { return string(body[v.Start:v.End]) == "null" }
	if (maxTokens.Start >= 0 && !isNull(maxTokens)) || (maxCompletion.Start >= 0 && !isNull(maxCompletion)) {
		return body, Result{CallerCap: true}, nil
	}
	r := Result{Field: FieldFor(t), Cap: CapFor(t)}
	value := strconv.AppendInt(nil, r.Cap, 10)
	present := maxTokens // a null cap field is replaced in place
	if r.Field == "max_completion_tokens" {
		present = maxCompletion
	}
	if present.Start >= 0 {
		return providers.Replace(body, present, value), r, nil
	}
	return providers.InsertTopLevel(body, r.Field, value), r, nil
}

// EmptyLength flags a completion cut by the output cap before it produced any content (a
// reasoning model that spent the budget thinking).
func EmptyLength(finishReason string, content string) bool {
	return finishReason == "length" && strings.TrimSpace(content) == ""
}
