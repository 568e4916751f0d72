package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

var words = strings.Fields(`the ledger records every request with its cost and the baseline it would have cost
without the gateway routing caching dedupe compression budgets invoices credits workspace keys scopes
provider upstream latency throughput stream chunk usage tokens prompt completion policy refund audit
customer support escalation contract renewal region replica failover breaker window retry backoff`)

// prose makes n words of deterministic filler.
func prose(rng *rand.Rand, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[rng.IntN(len(words))])
		if i%17 == 16 {
			b.WriteByte('.')
		}
	}
	return b.String()
}

func msg(role, content string) map[string]any {
	return map[string]any{"role": role, "content": content}
}

// sharedSystem: many users send one question each under the same long system prompt.
func sharedSystem(rng *rand.Rand, model string) [][]request {
	system := "You are the billing assistant. Policy handbook follows.\n" + prose(rng, 4500)
	var out [][]request
	for u := range 30 {
		fact := fmt.Sprintf("customer C-%03d prefers invoices in %s", u, []string{"EUR", "USD", "GBP"}[u%3])
		out = append(out, []request{{
			body: map[string]any{"model": model, "max_tokens": 300, "messages": []any{
				msg("system", system), msg("user", fmt.Sprintf("Note: %s. Question %d: %s?", fact, u, prose(rng, 12)))}},
			facts: []string{fact},
		}})
	}
	return out
}

// rag: each turn re-pastes retrieved documents, most of them already pasted earlier.
func rag(rng *rand.Rand, model string) [][]request {
	var out [][]request
	for c := range 8 {
		docs := make([]string, 10)
		var facts []string
		for d := range docs {
			fact := fmt.Sprintf("the access code for vault %d-%d is %04d", c, d, rng.IntN(10000))
			facts = append(facts, fact)
			docs[d] = fmt.Sprintf("<document source=\"kb/%d/%d\">\n%s Note that %s. %s\n</document>", c, d, prose(rng, 160), fact, prose(rng, 160))
		}
		history := []any{msg("system", "Answer strictly from the documents provided.")}
		var conv []request
		for turn := range 5 {
			var paste []string
			for k := range 4 {
				paste = append(paste, docs[(turn+k)%len(docs)])
			}
			user := "Retrieved context:\n" + strings.Join(paste, "\n") + fmt.Sprintf("\nQuestion %d: which vault codes appear above?", turn)
			msgs := append(append([]any{}, history...), msg("user", user))
			var tf []string
			for k := range 4 {
				tf = append(tf, facts[(turn+k)%len(docs)])
			}
			conv = append(conv, request{body: map[string]any{"model": model, "max_tokens": 200, "messages": msgs}, facts: tf})
			history = append(msgs, msg("assistant", fmt.Sprintf("Answer %d noted.", turn)))
		}
		out = append(out, conv)
	}
	return out
}

// agent: a tool loop whose outputs grow; every request resends the whole transcript.
func agent(rng *rand.Rand, model string) [][]request {
	tools := []any{map[string]any{"type": "function", "function": map[string]any{
		"name": "run_query", "description": "Run a read-only query against the logs.",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"q": map[string]any{"type": "string"}}, "required": []string{"q"}},
	}}}
	var out [][]request
	for a := range 5 {
		task := fmt.Sprintf("Investigate incident INC-%d: find the failing region and the error code.", 4000+a)
		msgs := []any{msg("system", "You are an SRE agent. Use run_query. "+prose(rng, 1200)), msg("user", task)}
		var conv []request
		for step := range 10 {
			id := fmt.Sprintf("call_%d_%d", a, step)
			msgs = append(msgs,
				map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
					"id": id, "type": "function", "function": map[string]any{"name": "run_query", "arguments": fmt.Sprintf(`{"q":"step %d"}`, step)}}}},
				map[string]any{"role": "tool", "tool_call_id": id, "content": "log lines:\n" + prose(rng, 1000+150*step)})
			conv = append(conv, request{body: map[string]any{"model": model, "max_tokens": 400, "tools": tools,
				"messages": append([]any{}, msgs...)}, facts: []string{task}})
		}
		out = append(out, conv)
	}
	return out
}

// duplicates: bursts of identical deterministic requests.
func duplicates(rng *rand.Rand, model string) [][]request {
	prompts := make([]string, 6)
	for i := range prompts {
		prompts[i] = fmt.Sprintf("Classify ticket T-%d: %s", i, prose(rng, 300))
	}
	var out [][]request
	for round := range 6 {
		for i, p := range prompts {
			_ = round
			out = append(out, []request{{body: map[string]any{"model": model, "temperature": 0, "max_tokens": 50,
				"messages": []any{msg("system", "Reply with one label."), msg("user", p)}},
				facts: []string{fmt.Sprintf("ticket T-%d", i)}}})
		}
	}
	return out
}

// noMaxTokens: requests that leave the output cap to the gateway.
func noMaxTokens(rng *rand.Rand, model string) [][]request {
	var out [][]request
	for i := range 10 {
		q := fmt.Sprintf("Summarise report R-%d: %s", i, prose(rng, 200))
		out = append(out, []request{{body: map[string]any{"model": model, "messages": []any{msg("user", q)}},
			facts: []string{fmt.Sprintf("report R-%d", i)}}})
	}
	return out
}
