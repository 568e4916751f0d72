package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
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

// request is one generated call: its OpenAI chat body (the model is filled in per provider),
// the facts it carries, and what its answer must say.
type request struct {
	body   map[string]any
	facts  []string
	expect string
}

// step is a group of requests sent at once, at an offset from the workload's start.
type step struct {
	at    time.Duration
	group []request
}

// workload is a generator of timed traffic. Times are virtual: the simulator and the gateway's
// evidence run on the benchmark's clock, so rates and cache lifetimes are what the workload
// says, however fast the machine is.
type workload struct {
	name string
	gen  func(rng *rand.Rand) []step
	// eachReaches: every request must reach the upstream (parallel samples are independent).
	eachReaches bool
}

var workloads = []workload{
	{name: "shared system prompt", gen: sharedSystem},
	{name: "RAG with re-pasted chunks", gen: rag},
	{name: "agent loop, growing tool outputs", gen: agent},
	{name: "duplicate bursts (temperature 0)", gen: duplicates},
	{name: "no max_tokens, natural answers", gen: noMaxTokens},
	{name: "a fact that changes and reverts", gen: revertedFact},
	{name: "parallel sampled requests", gen: parallelSamples, eachReaches: true},
	{name: "runaway answers, no max_tokens", gen: runaway},
}

func one(at time.Duration, r request) step { return step{at: at, group: []request{r}} }

// sharedSystem: 90 users, one question each, under one long system prompt, 30 a minute — twice
// the rate OpenAI documents as one cache machine's share.
func sharedSystem(rng *rand.Rand) []step {
	system := "You are the billing assistant. Policy handbook follows.\n" + prose(rng, 4500)
	var out []step
	for u := range 90 {
		fact := fmt.Sprintf("customer C-%03d prefers invoices in %s", u, []string{"EUR", "USD", "GBP"}[u%3])
		out = append(out, one(time.Duration(u)*2*time.Second, request{
			body: map[string]any{"max_tokens": 300, "messages": []any{
				msg("system", system), msg("user", fmt.Sprintf("Note: %s. Question %d: %s?", fact, u, prose(rng, 12)))}},
			facts: []string{fact},
		}))
	}
	return out
}

// rag: each turn re-pastes retrieved documents, most of them already pasted earlier.
func rag(rng *rand.Rand) []step {
	var out []step
	for c := range 8 {
		docs := make([]string, 10)
		var facts []string
		for d := range docs {
			fact := fmt.Sprintf("the access code for vault %d-%d is %04d", c, d, rng.IntN(10000))
			facts = append(facts, fact)
			docs[d] = fmt.Sprintf("<document source=\"kb/%d/%d\">\n%s Note that %s. %s\n</document>", c, d, prose(rng, 160), fact, prose(rng, 160))
		}
		history := []any{msg("system", "Answer strictly from the documents provided.")}
		for turn := range 5 {
			var paste []string
			var tf []string
			for k := range 4 {
				paste = append(paste, docs[(turn+k)%len(docs)])
				tf = append(tf, facts[(turn+k)%len(docs)])
			}
			user := "Retrieved context:\n" + strings.Join(paste, "\n") + fmt.Sprintf("\nQuestion %d: which vault codes appear above?", turn)
			msgs := append(append([]any{}, history...), msg("user", user))
			out = append(out, one(time.Duration(c)*3*time.Minute+time.Duration(turn)*30*time.Second,
				request{body: map[string]any{"max_tokens": 200, "messages": msgs}, facts: tf}))
			history = append(msgs, msg("assistant", fmt.Sprintf("Answer %d noted.", turn)))
		}
	}
	return out
}

// agent: a tool loop whose outputs grow; every request resends the whole transcript.
func agent(rng *rand.Rand) []step {
	tools := []any{map[string]any{"type": "function", "function": map[string]any{
		"name": "run_query", "description": "Run a read-only query against the logs.",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"q": map[string]any{"type": "string"}}, "required": []string{"q"}},
	}}}
	var out []step
	for a := range 5 {
		task := fmt.Sprintf("Investigate incident INC-%d: find the failing region and the error code.", 4000+a)
		msgs := []any{msg("system", "You are an SRE agent. Use run_query. "+prose(rng, 1200)), msg("user", task)}
		for s := range 10 {
			id := fmt.Sprintf("call_%d_%d", a, s)
			msgs = append(msgs,
				map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
					"id": id, "type": "function", "function": map[string]any{"name": "run_query", "arguments": fmt.Sprintf(`{"q":"step %d"}`, s)}}}},
				map[string]any{"role": "tool", "tool_call_id": id, "content": "log lines:\n" + prose(rng, 1000+150*s)})
			out = append(out, one(time.Duration(a)*3*time.Minute+time.Duration(s)*15*time.Second,
				request{body: map[string]any{"max_tokens": 400, "tools": tools, "messages": append([]any{}, msgs...)}, facts: []string{task}}))
		}
	}
	return out
}

// duplicates: bursts of five identical deterministic requests arriving together (a retrying
// client, a page rendered by several workers), each prompt burst three times a minute apart.
// The upstream takes 200 ms, so a burst is in flight at once.
func duplicates(rng *rand.Rand) []step {
	var out []step
	for i := range 6 {
		p := fmt.Sprintf("Classify ticket T-%d: %s [sim:ttfb=200ms]", i, prose(rng, 300))
		r := request{body: map[string]any{"temperature": 0, "max_tokens": 50,
			"messages": []any{msg("system", "Reply with one label."), msg("user", p)}}, facts: []string{fmt.Sprintf("ticket T-%d", i)}}
		for round := range 3 {
			out = append(out, step{at: time.Duration(round)*time.Minute + time.Duration(i)*5*time.Second, group: []request{r, r, r, r, r}})
		}
	}
	return out
}

// noMaxTokens: requests that leave the output cap to the gateway and get ordinary answers.
func noMaxTokens(rng *rand.Rand) []step {
	var out []step
	for i := range 10 {
		q := fmt.Sprintf("Summarise report R-%d: %s", i, prose(rng, 200))
		out = append(out, one(time.Duration(i)*20*time.Second, request{body: map[string]any{"messages": []any{msg("user", q)}},
			facts: []string{fmt.Sprintf("report R-%d", i)}}))
	}
	return out
}

// revertedFact: a conversation pastes a document, then its update, then the original again
// (a rollback), and asks for the value: the answer must come from the newest copy. The model
// is the simulator's recall, which answers from the last copy of the phrase in its prompt.
func revertedFact(rng *rand.Rand) []step {
	var out []step
	for c := range 6 {
		filler1, filler2 := prose(rng, 180), prose(rng, 180)
		doc := func(code int) string {
			return fmt.Sprintf("<document source=\"kb/vault-%d\">\n%s The access code for vault %d is %04d. %s\n</document>", c, filler1, c, code, filler2)
		}
		other := fmt.Sprintf("<document source=\"kb/ops-%d\">\n%s\n</document>", c, prose(rng, 300))
		a, b := 1000+rng.IntN(9000), 1000+rng.IntN(9000)
		phrase := fmt.Sprintf("access code for vault %d is", c)
		turns := []string{doc(a) + "\n" + other, doc(b) + "\n" + other, doc(a) + "\n" + other}
		history := []any{msg("system", "Answer from the newest documents provided.")}
		for t, paste := range turns {
			user := "Context:\n" + paste + fmt.Sprintf("\nWhat is the access code for vault %d now? [sim:recall=%s]", c, phrase)
			msgs := append(append([]any{}, history...), msg("user", user))
			want := a
			if t == 1 {
				want = b
			}
			out = append(out, one(time.Duration(c)*2*time.Minute+time.Duration(t)*30*time.Second, request{
				body: map[string]any{"max_tokens": 100, "messages": msgs}, expect: fmt.Sprintf("%s %04d", phrase, want)}))
			history = append(msgs, msg("assistant", fmt.Sprintf("The %s %04d.", phrase, want)))
		}
	}
	return out
}

// parallelSamples: bursts of identical requests that ask for samples — no temperature (the
// default, 1) or 0.7 — for best-of-n and self-consistency. Each is an independent draw and
// must reach the upstream; the upstream takes 200 ms, so a burst is in flight at once.
func parallelSamples(rng *rand.Rand) []step {
	var out []step
	for i := range 6 {
		body := map[string]any{"max_tokens": 200, "messages": []any{msg("user",
			fmt.Sprintf("Propose a name for project P-%d: %s [sim:ttfb=200ms]", i, prose(rng, 60)))}}
		if i%2 == 1 {
			body["temperature"] = 0.7
		}
		r := request{body: body, facts: []string{fmt.Sprintf("project P-%d", i)}}
		out = append(out, step{at: time.Duration(i) * 20 * time.Second, group: []request{r, r, r, r, r, r}})
	}
	return out
}

// runaway: requests without max_tokens whose answers run on (a model repeating itself, "write
// the whole file again") until something stops them. A direct Claude caller's own 8,192 does;
// a direct OpenAI or Gemini caller without a cap pays for all 30,000 tokens.
func runaway(rng *rand.Rand) []step {
	var out []step
	for i := range 8 {
		q := fmt.Sprintf("Rewrite module M-%d in full: %s [sim:answer_tokens=30000]", i, prose(rng, 120))
		out = append(out, one(time.Duration(i)*30*time.Second, request{body: map[string]any{"messages": []any{msg("user", q)}},
			facts: []string{fmt.Sprintf("module M-%d", i)}}))
	}
	return out
}
