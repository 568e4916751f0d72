// Package budget shapes the output budget of OpenAI chat-completions bodies. When the caller
// gave no cap it adds one, clamped to the model maximum; a request that has a cap is never
// touched. The cap is generous only where reasoning tokens count against it — the request
// asked for reasoning (reasoning_effort, thinking, reasoning) or the model always reasons —
// and otherwise no larger than a careful direct caller would set, until the answers this
// workspace's traffic gets from this model, finished on their own, show that longer ones are
// normal (evidence.Store.OutputCap).
package budget

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
)

// Default caps. ChatCap is what a careful direct caller sets (Anthropic's SDK examples use
// 1,024–8,192; the gateway takes the lower half), ReasoningCap leaves room for the thinking
// that counts against the cap on reasoning requests.
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
	// Price is the catalog entry of Model (MaxOutput is used); a zero Price means no known
	// maximum.
	Price catalog.Price
	// Workspace and Evidence, when set, let the cap for a request without reasoning be learned
	// from the workspace's natural answer lengths on Model.
	Workspace string
	Evidence  *evidence.Store
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
	// Reasoning: the request asked for reasoning or the model always reasons.
	Reasoning bool
	// Learned: the cap came from the workspace's observed answer lengths.
	Learned bool
}

// CapFor is the cap for t: min(MaxOutput, 32768) when reasoning counts against it, else
// min(MaxOutput, 4096) or what the evidence learned.
func CapFor(t Target, reasoning bool) (cap int64, learned bool) {
	if reasoning {
		return clampTo(ReasoningCap, t.Price.MaxOutput), false
	}
	if t.Evidence != nil {
		return t.Evidence.OutputCap(t.Workspace, t.Model, clampTo(ChatCap, t.Price.MaxOutput), t.Price.MaxOutput)
	}
	return clampTo(ChatCap, t.Price.MaxOutput), false
}

func clampTo(c, modelMax int64) int64 {
	if modelMax > 0 && modelMax < c {
		return modelMax
	}
	return c
}

func bareModel(model string) string {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	return m
}

// openAIReasoning: OpenAI's o-series and GPT-5 reason on every request (and take
// max_completion_tokens); the gpt-5 chat variants do not reason.
func openAIReasoning(model string) bool {
	m := bareModel(model)
	if strings.Contains(m, "-chat") {
		return false
	}
	for _, p := range []string{"gpt-5", "o1", "o3", "o4"} {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}

// AlwaysReasons reports a model that thinks on every request, whether asked or not: OpenAI's
// reasoning models, Gemini 2.5 Pro and Flash and Gemini 3 (thinking on by default), and
// dedicated reasoning models. Claude reasons only when thinking is asked for.
func AlwaysReasons(model string) bool {
	if openAIReasoning(model) {
		return true
	}
	m := bareModel(model)
	switch {
	case strings.HasPrefix(m, "gemini-2.5-pro"), strings.HasPrefix(m, "gemini-3"),
		strings.HasPrefix(m, "gemini-2.5-flash") && !strings.Contains(m, "lite"):
		return true
	}
	for _, k := range []string{"reasoner", "-thinking", "qwq", "deepseek-r1"} {
		if strings.Contains(m, k) {
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

// asksReasoning reports a top-level field that turns reasoning on: reasoning_effort (other
// than "none"), Anthropic-style thinking (unless disabled) or OpenRouter-style reasoning
// (unless disabled or "none").
func asksReasoning(key string, v []byte) bool {
	if string(v) == "null" || string(v) == "false" {
		return false
	}
	switch key {
	case `"reasoning_effort"`:
		return string(v) != `"none"`
	case `"thinking"`:
		return !bytes.Contains(v, []byte(`"disabled"`))
	case `"reasoning"`:
		return !bytes.Contains(v, []byte(`"enabled":false`)) && !bytes.Contains(v, []byte(`"none"`))
	}
	return false
}

// Apply adds the default cap when body has neither max_tokens nor max_completion_tokens (a
// null counts as absent). The new field goes first in the object; all other bytes are kept.
// body must be valid JSON (the gateway validated it); one pass over its top level decides.
func Apply(body []byte, t Target) ([]byte, Result, error) {
	e, ok, r, err := Decide(body, nil, t)
	if err != nil || !ok {
		return body, r, err
	}
	return conv.Apply(body, []conv.Edit{e}), r, nil
}

// Decide is Apply as an edit of body, for a caller that applies it with others in one copy:
// ok is false when there is nothing to change. top, when not nil, is body's top-level
// members (conv.View.Top), which spares the walk.
func Decide(body []byte, top []conv.Member, t Target) (e conv.Edit, ok bool, r Result, err error) {
	// As encoding/json and the providers read it, the last occurrence of a key wins.
	maxTokens, maxCompletion := providers.Span{Start: -1}, providers.Span{Start: -1}
	asked := false
	visit := func(quoted []byte, v providers.Span) bool {
		switch string(quoted) {
		case `"max_tokens"`:
			maxTokens = v
		case `"max_completion_tokens"`:
			maxCompletion = v
		case `"reasoning_effort"`, `"thinking"`, `"reasoning"`:
			asked = asked || asksReasoning(string(quoted), body[v.Start:v.End])
		}
		return true
	}
	if top != nil {
		for _, m := range top {
			visit(m.Key, m.Val)
		}
	} else if err := providers.EachTopLevel(body, visit); err != nil {
		return e, false, Result{}, err
	}
	isNull := func(v providers.Span) bool { return string(body[v.Start:v.End]) == "null" }
	if (maxTokens.Start >= 0 && !isNull(maxTokens)) || (maxCompletion.Start >= 0 && !isNull(maxCompletion)) {
		return e, false, Result{CallerCap: true}, nil
	}
	r = Result{Field: FieldFor(t), Reasoning: asked || AlwaysReasons(t.Model)}
	r.Cap, r.Learned = CapFor(t, r.Reasoning)
	value := strconv.AppendInt(nil, r.Cap, 10)
	present := maxTokens // a null cap field is replaced in place
	if r.Field == "max_completion_tokens" {
		present = maxCompletion
	}
	if present.Start >= 0 {
		return conv.Edit{Start: present.Start, End: present.End, Repl: value}, true, r, nil
	}
	// "field":value first in the object, as providers.InsertTopLevel writes it.
	open := providers.SkipSpace(body, 0)
	ins := make([]byte, 0, len(r.Field)+len(value)+4)
	ins = append(append(append(append(ins, '"'), r.Field...), '"', ':'), value...)
	if body[providers.SkipSpace(body, open+1)] != '}' {
		ins = append(ins, ',')
	}
	return conv.Edit{Start: open + 1, End: open + 1, Repl: ins}, true, r, nil
}

// EmptyLength flags a completion cut by the output cap before it produced any content (a
// reasoning model that spent the budget thinking).
func EmptyLength(finishReason string, content string) bool {
	return finishReason == "length" && strings.TrimSpace(content) == ""
}
