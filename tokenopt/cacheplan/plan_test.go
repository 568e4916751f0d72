package cacheplan

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/anthropic"
	"github.com/badtheorylabs/btl-runtime/providers/bedrock"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

var long = strings.Repeat("Be precise and cite sources. ", 300) // ~9 KB, > 1024 tokens

func claude() Target {
	return Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Workspace: "w", Price: catalog.Price{CacheMinTokens: 1024}}
}

func TestSchemaCanonicalGolden(t *testing.T) {
	in := `{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"b","parameters":{"type":"object","properties":{"z":{"type":"string","description":"Z"},"a":{"type":"number"}},"required":["z"]}}},{"type":"function","function":{"name":"a","parameters":{"properties":{},"type":"object"}}}],"messages":[{"role":"user","content":"hi"}], "temperature": 1.0e0}`
	want := `{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"b","parameters":{"properties":{"a":{"type":"number"},"z":{"description":"Z","type":"string"}},"required":["z"],"type":"object"}}},{"type":"function","function":{"name":"a","parameters":{"properties":{},"type":"object"}}}],"messages":[{"role":"user","content":"hi"}], "temperature": 1.0e0}`
	got, rep, err := NewPlanner().Plan([]byte(in), Target{Provider: "openai_compatible", Model: "x"})
	if err != nil || string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s (%v)", got, want, err)
	}
	if rep.SchemasSorted != 1 {
		t.Errorf("sorted = %d", rep.SchemasSorted)
	}
	// Already canonical: identical bytes, even with odd whitespace.
	same := `{ "messages" : [ {"role":"user","content":"hi"} ] , "tools":[{"function":{"parameters":{"a" : 1, "b":[ {"c":1} ]}}}] }`
	got, _, _ = NewPlanner().Plan([]byte(same), Target{Provider: "openai_compatible"})
	if string(got) != same {
		t.Fatalf("canonical input changed:\n%s", got)
	}
}

func TestBreakers(t *testing.T) {
	sys := `You are a bot. Current time: 2026-03-04T10:22:33Z. Today is 2026-03-04. Session 3f2b8c1e-9a4d-4e1f-8b2c-1d2e3f4a5b6c at 10:22. ts=1767225600 req_a8f3k2m9x7q4w1z5t6y0 trace 9f86d081884c7d65 on 3/4/2026. Version 4.1 costs $3.75 in 2026.`
	body := `{"messages":[{"role":"system","content":` + jsonStr(sys) + `},{"role":"user","content":"2026-01-01 ok"}],"tools":[{"type":"function","function":{"name":"f","description":"Data as of 2025-12-31."}}]}`
	_, rep, err := NewPlanner().Plan([]byte(body), Target{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, f := range rep.Breakers {
		kinds = append(kinds, f.Kind+"@"+f.Where)
	}
	want := []string{"date@tools[0]", "timestamp@system[0]", "date@system[0]", "uuid@system[0]", "time@system[0]", "epoch@system[0]", "request_id@system[0]", "request_id@system[0]", "date@system[0]"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("findings %v\nwant %v", kinds, want)
	}
	if h := rep.BreakerHeader(); !strings.HasPrefix(h, "date@tools[0]:") {
		t.Errorf("header %q", h)
	}
	_, rep, _ = NewPlanner().Plan([]byte(`{"messages":[{"role":"system","content":"Plain instructions, version 4.1, 100 items, gpt-4o."}]}`), Target{})
	if len(rep.Breakers) != 0 {
		t.Errorf("false positives: %v", rep.Breakers)
	}
}

func jsonStr(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestBreakpointsAnthropic(t *testing.T) {
	body := `{"model":"c","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":[{"type":"text","text":"q1"}]},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]}`
	out, rep, err := NewPlanner().Plan([]byte(body), claude())
	if err != nil {
		t.Fatal(err)
	}
	var where []string
	for _, b := range rep.Breakpoints {
		where = append(where, b.Where+"/"+b.TTL)
	}
	// The tool alone is below the minimum; q1 ended the previous request, so it is marked again
	// (an upstream that looks up only marked positions reads what that request wrote there).
	if !reflect.DeepEqual(where, []string{"messages[0]/5m", "messages[1]/5m", "messages[3]/5m"}) {
		t.Fatalf("breakpoints %v", where)
	}
	s := string(out)
	for _, frag := range []string{
		`{"role":"system","content":[{"type":"text","text":"Be precise`,
		`{"role":"user","content":[{"type":"text","text":"q2","cache_control":{"type":"ephemeral"}}]}`,
		`{"role":"user","content":[{"type":"text","text":"q1","cache_control":{"type":"ephemeral"}}]}`,
	} {
		if !strings.Contains(s, frag) {
			t.Errorf("missing %s in\n%s", frag, s)
		}
	}
	// With a big tool set the end of tools is marked too, first.
	big := strings.Replace(body, `"parameters":{"type":"object"}`, `"description":`+jsonStr(long)+`,"parameters":{"type":"object"}`, 1)
	outBig, repBig, _ := NewPlanner().Plan([]byte(big), claude())
	if len(repBig.Breakpoints) != 4 || repBig.Breakpoints[0].Where != "tools[0]" ||
		!strings.Contains(string(outBig), `"parameters":{"type":"object"}},"cache_control":{"type":"ephemeral"}}]`) {
		t.Fatalf("tools marker: %+v", repBig.Breakpoints)
	}
	cb, _ := providers.ParseCanonical(outBig)
	abig, _ := anthropic.BuildRequest(cb, "claude-sonnet-4-5", anthropic.BuildOptions{})
	if w, _ := json.Marshal(abig); strings.Count(string(w), `"cache_control"`) != 4 {
		t.Fatalf("anthropic tools marker lost: %s", w)
	}
	// Idempotent: planning the output again changes nothing.
	again, _, _ := NewPlanner().Plan(out, claude())
	if string(again) != s {
		t.Fatal("Plan(Plan(x)) != Plan(x)")
	}
	// The markers survive the real translations.
	c, err := providers.ParseCanonical(out)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := anthropic.BuildRequest(c, "claude-sonnet-4-5", anthropic.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wire, _ := json.Marshal(ar)
	if n := strings.Count(string(wire), `"cache_control":{"type":"ephemeral"}`); n != 3 {
		t.Fatalf("anthropic request has %d markers:\n%s", n, wire)
	}
	c, _ = providers.ParseCanonical(out)
	br, err := bedrock.BuildRequest(context.Background(), c, bedrock.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bw, _ := json.Marshal(br)
	if n := strings.Count(string(bw), `"cachePoint"`); n != 3 {
		t.Fatalf("bedrock request has %d cache points:\n%s", n, bw)
	}
}

func TestCallerMarkersNeverOverridden(t *testing.T) {
	for _, body := range []string{
		`{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":[{"type":"text","text":"q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}`,
		`{"cache_control":{"type":"ephemeral"},"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`,
		`{"messages":[{"role":"system","content":` + jsonStr(long) + `,"cache_control" : {"type":"ephemeral"}},{"role":"user","content":"q"}]}`,
	} {
		out, rep, err := NewPlanner().Plan([]byte(body), claude())
		if err != nil || string(out) != body || !rep.CallerMarkers || len(rep.Breakpoints) != 0 {
			t.Errorf("caller markers touched: %v %+v\n%s", err, rep, out)
		}
	}
}

func TestHasCallerMarkers(t *testing.T) {
	for body, want := range map[string]bool{
		`"cache_control":`:                        true,
		`{"cache_control" :1}`:                    true,
		`{"a":"cache_control","b":1}`:             false,
		`{"a":"x\"cache_control\":1"}`:            false,
		`{"x\"cache_control":1}`:                  true,  // a raw match, though the key is not cache_control
		`"cache_control"cache_control":`:          false, // the second match overlaps the first
		`"cache_control" "cache_control"` + "\n:": true,
		`_control":`:                              false,
		`cache_control":`:                         false,
		`"cache_control"`:                         false,
		`"cache_contro":"cache__control":`:        false,
		`{"_control":1,"a_b":"cache_control"}`:    false,
		``:                                        false,
	} {
		if got := hasCallerMarkers([]byte(body)); got != want {
			t.Errorf("hasCallerMarkers(%s) = %v", body, got)
		}
	}
}

func TestBelowMinimum(t *testing.T) {
	body := `{"messages":[{"role":"system","content":"short"},{"role":"user","content":"q"}]}`
	out, rep, _ := NewPlanner().Plan([]byte(body), claude())
	if string(out) != body || !rep.BelowMinimum {
		t.Fatalf("%+v %s", rep, out)
	}
	tgt := claude()
	tgt.Price.CacheMinTokens = 100000
	out, rep, _ = NewPlanner().Plan([]byte(`{"messages":[{"role":"system","content":`+jsonStr(long)+`},{"role":"user","content":"q"}]}`), tgt)
	if !rep.BelowMinimum || strings.Contains(string(out), "cache_control") {
		t.Fatal("min not honoured")
	}
}

// agentBody builds a system prompt and n tool-loop turns (assistant tool call + tool result).
func agentBody(n int) string {
	var sb strings.Builder
	sb.WriteString(`{"model":"c","messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"start"}`)
	for i := range n {
		fmt.Fprintf(&sb, `,{"role":"assistant","content":null,"tool_calls":[{"id":"c%d","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c%d","content":"result %d"}`, i, i, i)
	}
	sb.WriteString(`]}`)
	return sb.String()
}

func TestSpacingAndTTLOrder(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := clockedPlanner(func() time.Time { return now })
	body := []byte(agentBody(40)) // 1 + 1 + 80 blocks
	_, rep, err := p.Plan(body, claude())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Breakpoints) != MaxBreakpoints {
		t.Fatalf("want %d breakpoints, got %+v", MaxBreakpoints, rep.Breakpoints)
	}
	for i := 1; i < len(rep.Breakpoints); i++ {
		if gap := rep.Breakpoints[i].Block - rep.Breakpoints[i-1].Block; gap > Lookback && i > 1 {
			t.Errorf("gap %d between %v and %v", gap, rep.Breakpoints[i-1], rep.Breakpoints[i])
		}
	}
	last := rep.Breakpoints[len(rep.Breakpoints)-1]
	if last.Where != "messages[81]" {
		t.Errorf("rolling breakpoint at %s", last.Where)
	}
	// Reuse after a 10-minute gap → the prefix marker takes 1h, before every 5m marker.
	now = now.Add(10 * time.Minute)
	out, rep, _ := p.Plan(body, claude())
	if rep.Breakpoints[0].TTL != "1h" || rep.Breakpoints[0].Where != "messages[0]" {
		t.Fatalf("want 1h prefix marker: %+v", rep.Breakpoints)
	}
	seen5m := false
	for _, b := range rep.Breakpoints {
		if b.TTL == "5m" {
			seen5m = true
		} else if seen5m {
			t.Fatalf("1h after 5m: %+v", rep.Breakpoints)
		}
	}
	if !strings.Contains(string(out), `"cache_control":{"type":"ephemeral","ttl":"1h"}`) {
		t.Fatal("1h marker missing")
	}
	c, _ := providers.ParseCanonical(out)
	if _, err := bedrock.BuildRequest(context.Background(), c, bedrock.BuildOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestPromptCacheKey(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := clockedPlanner(func() time.Time { return now })
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"S"},{"role":"user","content":"q"}]}`)
	tgt := Target{Provider: "openai", Model: "gpt-4o", Workspace: "ws1", Price: keyed}
	out, rep, _ := p.Plan(body, tgt)
	if rep.PromptCacheKey == "" || !strings.HasPrefix(string(out), `{"prompt_cache_key":"`+rep.PromptCacheKey+`",`) {
		t.Fatalf("%s", out)
	}
	_, rep2, _ := p.Plan(body, tgt)
	if rep2.PromptCacheKey != rep.PromptCacheKey {
		t.Fatal("key must be stable")
	}
	tgt.Workspace = "ws2"
	if _, r, _ := p.Plan(body, tgt); r.PromptCacheKey == rep.PromptCacheKey {
		t.Fatal("key must depend on workspace")
	}
	for _, tt := range []Target{{Provider: "openai_compatible", Model: "gpt-4o", Price: keyed}, {Provider: "openai", Model: "gpt-3.5-turbo"}, {Provider: "openrouter", Model: "openai/gpt-4o", Price: keyed}} {
		if out, r, _ := p.Plan(body, tt); r.PromptCacheKey != "" || string(out) != string(body) {
			t.Errorf("%+v got a key", tt)
		}
	}
	own := []byte(`{"prompt_cache_key":"mine","model":"gpt-5","messages":[{"role":"user","content":"q"}]}`)
	if out, r, _ := p.Plan(own, Target{Provider: "openai", Model: "gpt-5", Price: keyed}); string(out) != string(own) || r.PromptCacheKey != "" {
		t.Fatal("caller key overridden")
	}
	// Whitespace before the opening brace (pretty-printed clients): the key still goes inside
	// the object and the body stays JSON.
	for _, spaced := range []string{" \n\t" + string(body), "  {\n  \"model\": \"gpt-4o\", \"messages\": [{\"role\":\"user\",\"content\":\"q\"}]\n}"} {
		out, r, err := p.Plan([]byte(spaced), Target{Provider: "openai", Model: "gpt-4o", Workspace: "ws1", Price: keyed})
		if err != nil || !json.Valid(out) || (r.PromptCacheKey != "" && !strings.Contains(string(out), `"prompt_cache_key":"`+r.PromptCacheKey+`"`)) {
			t.Fatalf("%q → %s (%+v, %v)", spaced, out, r, err)
		}
	}
	// A busy key is not sharded on its rate alone: that takes evidence of lost cache hits
	// (TestShardOnlyOnEvidence).
	tgt.Workspace = "busy"
	for range 40 {
		if _, r, _ := p.Plan(body, tgt); r.PromptCacheKey != r.CacheKeyBase {
			t.Fatalf("sharded without evidence: %+v", r)
		}
	}
}

// TestShardOnlyOnEvidence: the Planner shards a busy key once the upstream's reported cache
// hits fall, and each conversation keeps its shard.
func TestShardOnlyOnEvidence(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := clockedPlanner(func() time.Time { return now })
	sys := strings.Repeat("policy text ", 1000)
	tgt := Target{Provider: "openai", Model: "gpt-4o", Workspace: "ws", Price: keyed}
	shardOf := map[string]string{}
	for i := range 80 {
		now = now.Add(2 * time.Second) // 30 requests a minute
		user := fmt.Sprintf("user %d asks", i%7)
		body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"` + sys + `"},{"role":"user","content":"` + user + `"}]}`)
		_, r, err := p.Plan(body, tgt)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := shardOf[user]; ok && prev != r.PromptCacheKey && r.PromptCacheKey != r.CacheKeyBase && prev != r.CacheKeyBase {
			t.Fatalf("conversation %q moved from %s to %s", user, prev, r.PromptCacheKey)
		}
		shardOf[user] = r.PromptCacheKey
		// The upstream overflows: nothing cached while unsharded, everything once sharded.
		cached := int64(0)
		if r.PromptCacheKey != r.CacheKeyBase {
			cached = 2944
		}
		p.evidence().Observe(evidence.Observation{Workspace: "ws", Model: "gpt-4o", CacheKey: r.CacheKeyBase, KeyWarm: r.KeyWarm,
			PrefixShare: float64(r.PrefixTokens) / float64(r.TotalTokens), Prompt: int64(r.TotalTokens), CacheRead: cached})
		if i < 16 && r.PromptCacheKey != r.CacheKeyBase {
			t.Fatalf("request %d sharded before a window of evidence", i)
		}
	}
	if ks := p.evidence().KeyStats(shardOf["user 0 asks"][:len("btl-")+16]); ks.Shards < 2 || ks.Trial {
		t.Fatalf("want a kept shard split: %+v", ks)
	}
}

func TestMalformed(t *testing.T) {
	for _, b := range []string{``, `[]`, `{"messages":`, `{"messages":{}}`, `{"tools":[{]}`, `{"messages":[1]}`} {
		out, _, err := NewPlanner().Plan([]byte(b), claude())
		if err == nil || string(out) != b {
			t.Errorf("%q: err=%v out=%s", b, err, out)
		}
	}
}

// strip removes what Plan may change: cache markers, prompt_cache_key, and string content
// versus a one-element text array.
func strip(v any) any {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "cache_control")
		delete(x, "prompt_cache_key")
		for k, e := range x {
			x[k] = strip(e)
		}
		if arr, ok := x["content"].([]any); ok && len(arr) == 1 {
			if p, ok := arr[0].(map[string]any); ok && len(p) == 2 && p["type"] == "text" {
				if s, ok := p["text"].(string); ok {
					x["content"] = s
				}
			}
		}
	case []any:
		for i := range x {
			x[i] = strip(x[i])
		}
	}
	return v
}

func FuzzPlan(f *testing.F) {
	f.Add([]byte(agentBody(3)), uint8(0))
	f.Add([]byte(`{"tools":[{"type":"function","function":{"name":"x","description":"2026-01-01","parameters":{"b":1,"a":[{"d":1,"c":2}]}}}],"messages":[{"role":"system","content":"`+long[:2000]+`"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"u"}}]}]}`), uint8(1))
	f.Add([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"q"}]}`), uint8(2))
	f.Fuzz(func(t *testing.T, body []byte, sel uint8) {
		targets := []Target{claude(), {Provider: "bedrock", Model: "claude-sonnet-4-5", Price: catalog.Price{CacheMinTokens: 1}}, {Provider: "openai", Model: "gpt-4o", Workspace: "w", Price: keyed}}
		tgt := targets[int(sel)%len(targets)]
		out, _, err := NewPlanner().Plan(body, tgt)
		if err != nil {
			return
		}
		var in, got any
		if json.Unmarshal(body, &in) != nil {
			return // Plan only delimits scalars; invalid input is the caller's 400
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("invalid output %s: %v", out, err)
		}
		if !reflect.DeepEqual(strip(in), strip(got)) {
			t.Fatalf("non-cache fields changed:\n%s\n%s", body, out)
		}
	})
}

func benchBody(tokens int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"claude-sonnet-4-5","tools":[{"type":"function","function":{"name":"search","description":"Search the docs.","parameters":{"type":"object","properties":{"q":{"type":"string"},"k":{"type":"integer"}},"required":["q"]}}}],"messages":[{"role":"system","content":` + jsonStr(strings.Repeat("You are a careful assistant. ", 100)) + `}`)
	chunk := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 20)
	for i := 0; sb.Len() < tokens*4; i++ {
		if i%2 == 0 {
			sb.WriteString(`,{"role":"user","content":` + jsonStr(chunk) + `}`)
		} else {
			sb.WriteString(`,{"role":"assistant","content":` + jsonStr(chunk) + `}`)
		}
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}

func benchPlan(b *testing.B, n int, tgt Target) {
	body := benchBody(n)
	p := NewPlanner()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := p.Plan(body, tgt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlan1kAnthropic(b *testing.B)   { benchPlan(b, 1000, claude()) }
func BenchmarkPlan100kAnthropic(b *testing.B) { benchPlan(b, 100000, claude()) }
func BenchmarkPlan1kOpenAI(b *testing.B) {
	benchPlan(b, 1000, Target{Provider: "openai", Model: "gpt-4o", Workspace: "w", Price: keyed})
}
func BenchmarkPlan100kOpenAI(b *testing.B) {
	benchPlan(b, 100000, Target{Provider: "openai", Model: "gpt-4o", Workspace: "w", Price: keyed})
}

// Concurrent calls share the Planner and the pooled scratch space; each must get the result
// it gets alone (run with -race).
func TestConcurrentPlan(t *testing.T) {
	golden := goldenBodies()
	bodies := [][]byte{benchBody(3000), []byte(agentBody(30)), []byte(golden["schema-deep"]), []byte(golden["tools-after"]), []byte(golden["malformed-10"])}
	// A clock that never moves keeps the 1h TTL decision stable; the key's shard suffix
	// depends on the call rate, so the key is compared as a placeholder.
	p := clockedPlanner(func() time.Time { return goldenNow })
	targets := []Target{claude(), {Provider: "openai", Model: "gpt-4o", Workspace: "w", Price: keyed}}
	result := func(b []byte, tg Target) string {
		out, rep, err := p.Plan(b, tg)
		s := fmt.Sprintf("%s %+v %v", out, rep, err)
		if rep.PromptCacheKey != "" {
			s = strings.ReplaceAll(s, rep.PromptCacheKey, "KEY")
		}
		s = strings.ReplaceAll(s, "KeyWarm:true", "KeyWarm:false") // the first call finds the key cold
		return s
	}
	want := map[int]string{}
	for i, b := range bodies {
		for j, tg := range targets {
			want[i*len(targets)+j] = result(b, tg)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 50 {
				i, j := (g+k)%len(bodies), k%len(targets)
				if result(bodies[i], targets[j]) != want[i*len(targets)+j] {
					t.Errorf("body %d target %d: result differs under concurrency", i, j)
					return
				}
			}
		})
	}
	wg.Wait()
}

// keyed is a catalog entry whose model accepts prompt_cache_key.
var keyed = catalog.Price{CacheMinTokens: 1024, CacheFields: []string{"prompt_cache_key"}}

// TestKeyOnlyWhereTheCatalogAllowsIt: the allow-list is catalog data. The shipped catalog
// lists the field for gpt-4o and not for gpt-3.5-turbo; an entry without it gets no key.
func TestKeyOnlyWhereTheCatalogAllowsIt(t *testing.T) {
	body := []byte(`{"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":"q"}]}`)
	cat := catalog.Default()
	for model, want := range map[string]bool{"gpt-4o": true, "gpt-5.6-terra": true, "gpt-3.5-turbo": false} {
		p, _ := cat.Lookup(model)
		if _, r, _ := NewPlanner().Plan(body, Target{Provider: "openai", Model: model, Workspace: "w", Price: p}); (r.PromptCacheKey != "") != want {
			t.Errorf("%s: key %q, want one: %v", model, r.PromptCacheKey, want)
		}
	}
	if _, r, _ := NewPlanner().Plan(body, Target{Provider: "openai", Model: "gpt-4o", Workspace: "w"}); r.PromptCacheKey != "" {
		t.Error("a model without the field in its catalog entry got a key")
	}
}

// clockedPlanner is a Planner whose evidence runs on the given clock.
func clockedPlanner(now func() time.Time) *Planner {
	ev := evidence.New()
	ev.SetClock(now)
	return &Planner{Evidence: ev}
}

// TestIsolation: the workspace salt goes first where markers make the upstream cache (and
// no tool is marked ahead of it); OpenAI is scoped by the key instead; automatic caching is
// salted only in strict mode; short prompts are left alone.
func TestIsolation(t *testing.T) {
	salt := Isolate("ws_a")
	if salt == Isolate("ws_b") || salt != Isolate("ws_a") {
		t.Fatal("the salt must be stable per workspace and differ between workspaces")
	}
	bigTools := `[{"type":"function","function":{"name":"f","description":` + jsonStr(long) + `,"parameters":{"type":"object"}}}]`
	longBody := `{"model":"m","tools":` + bigTools + `,"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`
	shortBody := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	first := `"messages":[{"role":"system","content":"` + salt + `"},`
	gpt := Target{Provider: "openai", Model: "gpt-4o", Workspace: "ws_a", Price: keyed, Salt: salt}
	gem := Target{Provider: "gemini", Model: "gemini-2.5-flash", Workspace: "ws_a", Salt: salt}
	strict := gem
	strict.SaltAutomatic = true
	cl := claude()
	cl.Workspace, cl.Salt = "ws_a", salt
	cases := []struct {
		name, body string
		tgt        Target
		salted     bool
	}{
		{"claude with markers", longBody, cl, true},
		{"claude below the minimum", shortBody, cl, false},
		{"openai: scoped by key, no salt", longBody, gpt, false},
		{"gemini: automatic caching, no salt by default", longBody, gem, false},
		{"gemini strict", longBody, strict, true},
		{"gemini strict, short", shortBody, strict, false},
	}
	for _, c := range cases {
		out, rep, err := NewPlanner().Plan([]byte(c.body), c.tgt)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(out), first); got != c.salted || rep.Salted != c.salted {
			t.Errorf("%s: salted %v (report %v), want %v:\n%.300s", c.name, got, rep.Salted, c.salted, out)
		}
		for _, b := range rep.Breakpoints {
			if strings.HasPrefix(b.Where, "tools") {
				t.Errorf("%s: a tool marked ahead of the salt", c.name)
			}
		}
	}
	// A caller's own prompt_cache_key is scoped to its workspace.
	own := `{"prompt_cache_key":"shared-bot","model":"gpt-4o","messages":[{"role":"user","content":"q"}]}`
	outA, rep, _ := NewPlanner().Plan([]byte(own), gpt)
	gpt.Workspace, gpt.Salt = "ws_b", Isolate("ws_b")
	outB, _, _ := NewPlanner().Plan([]byte(own), gpt)
	if !rep.CallerKeyScoped || strings.Contains(string(outA), "shared-bot") || string(outA) == string(outB) {
		t.Fatalf("caller key not scoped per workspace:\n%s\n%s", outA, outB)
	}
}
