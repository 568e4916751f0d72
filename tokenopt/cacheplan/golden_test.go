package cacheplan

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// The golden file pins Plan's exact output bytes and Report (error cases included) for a
// varied corpus, so that rewrites of its internals can be checked for byte-identical
// behaviour. Regenerate with -update only when a change of output is intended.
var update = flag.Bool("update", false, "rewrite testdata/golden.txt from the current implementation")

const goldenFile = "testdata/golden.txt"

var goldenNow = time.Unix(1_800_000_000, 0)

// goldenTargets covers every branch that depends on the target: Anthropic-format with and
// without the 1h TTL and with different minimums, prompt_cache_key, and targets that get
// neither.
func goldenTargets() []Target {
	return []Target{
		claude(),
		{Provider: "anthropic", Model: "claude-haiku-4-5", Workspace: "w", Price: catalog.Price{CacheMinTokens: 1}},
		{Provider: "bedrock", Model: "anthropic.claude-3-haiku", Workspace: "w", Price: catalog.Price{CacheMinTokens: 4}},
		{Provider: "vertex", Model: "publishers/anthropic/claude-opus-4-1", Workspace: "v"},
		{Provider: "openai", Model: "gpt-4o", Workspace: "w", Price: keyed},
		{Provider: "openai_compatible", Model: "x"},
		{Provider: "openai", Model: "gpt-3.5-turbo", Workspace: "w"},
	}
}

// goldenBodies are hand-written bodies: the other tests' bodies and the edge cases of the
// walk (key order, escapes in keys and roles, duplicate keys, content shapes, whitespace).
func goldenBodies() map[string]string {
	sysDates := `Now: 2026-03-04T10:22:33Z, id 3f2b8c1e-9a4d-4e1f-8b2c-1d2e3f4a5b6c, 10:22, 1767225600, 3/4/2026, req_a8f3k2m9x7q4w1z5t6y0`
	unsorted := `{"type":"object","properties":{"z":{"type":"string","enum":["b","a"],"description":"Z"},"a":{"type":"array","items":{"type":"object","properties":{"y":{},"x":[{"d":1,"c":2},3]}}}},"required":["z"]}`
	tool := func(name, desc, params string) string {
		return `{"type":"function","function":{"name":"` + name + `","description":` + jsonStr(desc) + `,"parameters":` + params + `}}`
	}
	b := map[string]string{
		"schema-golden":       `{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"b","parameters":{"type":"object","properties":{"z":{"type":"string","description":"Z"},"a":{"type":"number"}},"required":["z"]}}},{"type":"function","function":{"name":"a","parameters":{"properties":{},"type":"object"}}}],"messages":[{"role":"user","content":"hi"}], "temperature": 1.0e0}`,
		"schema-canonical":    `{ "messages" : [ {"role":"user","content":"hi"} ] , "tools":[{"function":{"parameters":{"a" : 1, "b":[ {"c":1} ]}}}] }`,
		"schema-ws":           `{"tools":[{"type":"function","function":{"name":"f","parameters":{ "b" : [ 1 , {"y" : 1, "x" : 2} ] , "a" : { "d" : 1 , "c" : 2 } }}}],"messages":[{"role":"user","content":"hi"}]}`,
		"schema-deep":         `{"tools":[` + tool("f", "Find things.", unsorted) + `,` + tool("g", "As of 2025-12-31.", `{"properties":{},"type":"object"}`) + `],"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`,
		"schema-bad":          `{"tools":[{"type":"function","function":{"name":"f","parameters":{"b":1,"a":{"x" 1}}}}],"messages":[{"role":"user","content":"q"}]}`,
		"schema-bad-later":    `{"tools":[` + tool("f", "2026-01-01", unsorted) + `,{"function":{"parameters":{"b":[1 2],"a":1}}}],"messages":[{"role":"user","content":"q"}]}`,
		"schema-esc-keys":     `{"tools":[{"function":{"parameters":{"b\u0062":1,"b":2,"a\"q":3,"\u00e9":4,"e":5,"\x":6,"\ud800":7}}}],"messages":[{"role":"user","content":"q"}]}`,
		"tools-after":         `{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"},{"role":"assistant","content":"a"},{"role":"user","content":"q2"}],"tools":[` + tool("f", long, unsorted) + `],"model":"m"}`,
		"tools-odd":           `{"tools":[{},1,"x",{"function":1},{"function":{"parameters":[{"b":1,"a":2}]}},{"type":"function","function":{"name":"n"}}, { } ],"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`,
		"tools-not-array":     `{"tools":{"a":1},"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`,
		"tools-dup":           `{"tools":[` + tool("f", "2026-01-01", unsorted) + `],"tools":[` + tool("g", "2026-02-02", unsorted) + `],"messages":[{"role":"user","content":"q"}]}`,
		"breakers":            `{"messages":[{"role":"system","content":` + jsonStr(`You are a bot. Current time: 2026-03-04T10:22:33Z. Today is 2026-03-04. Session 3f2b8c1e-9a4d-4e1f-8b2c-1d2e3f4a5b6c at 10:22. ts=1767225600 req_a8f3k2m9x7q4w1z5t6y0 trace 9f86d081884c7d65 on 3/4/2026. Version 4.1 costs $3.75 in 2026.`) + `},{"role":"user","content":"2026-01-01 ok"}],"tools":[{"type":"function","function":{"name":"f","description":"Data as of 2025-12-31."}}]}`,
		"breakers-none":       `{"messages":[{"role":"system","content":"Plain instructions, version 4.1, 100 items, gpt-4o."}]}`,
		"breakers-parts":      `{"messages":[{"role":"developer","content":[{"type":"text","text":` + jsonStr(sysDates) + `},{"type":"text","text":"plain"},{"type":"text","text":"at 12:00"},7,{"text":1}]},{"role":"system","content":` + jsonStr(sysDates+long) + `},{"role":"user","content":` + jsonStr(sysDates) + `}]}`,
		"breakers-long":       `{"messages":[{"role":"system","content":` + jsonStr(strings.Repeat("x", ScanLimit-5)+" 2026-01-01 and 2026-01-02") + `},{"role":"user","content":"q"}]}`,
		"breakers-escapes":    `{"messages":[{"role":"system","content":"a\n2026-01-01\u00e9 10:22\\n3/4/2026 \"1767225600\""},{"role":"user","content":"q"}]}`,
		"anthropic":           `{"model":"c","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":[{"type":"text","text":"q1"}]},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]}`,
		"anthropic-big":       `{"model":"c","tools":[{"type":"function","function":{"name":"f","description":` + jsonStr(long) + `,"parameters":{"type":"object"}}}],"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":[{"type":"text","text":"q1"}]},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]}`,
		"anthropic-toolsonly": `{"tools":[` + tool("f", long, unsorted) + `,` + tool("g", long, `{}`) + `,{"type":"function","function":{}}, {}],"messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}]}`,
		"caller-1":            `{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":[{"type":"text","text":"q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}`,
		"caller-2":            `{"cache_control":{"type":"ephemeral"},"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`,
		"caller-3":            `{"messages":[{"role":"system","content":` + jsonStr(long) + `,"cache_control" : {"type":"ephemeral"}},{"role":"user","content":"q"}]}`,
		"caller-value":        `{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"cache_control"},{"role":"user","content":"q", "x":"cache_control" }]}`,
		"caller-string":       `{"messages":[{"role":"system","content":` + jsonStr(long+` "cache_control": x`) + `},{"role":"user","content":"q"}]}`,
		"below-min":           `{"messages":[{"role":"system","content":"short"},{"role":"user","content":"q"}]}`,
		"parts":               `{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}}]},{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}},{"type":"input_audio"}]},{"role":"user","content":[{"type":"text","text":""}]},{"role":"user","content":[{"type":"text","text":1}]},{"role":"user","content":[]},{"role":"user","content":[{"type":"text","text":"x","type":"image_url"}]},{"role":"user","content":[{"type":"text" , "text":"y" } ]},{"role":"user","content":[1]}]}`,
		"content-shapes":      `{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":""},{"role":"user","content":null},{"role":"user"},{"role":"user","content":1},{"role":"user","content":{"a":1}},{"role":"user","content":"x","content":"y"},{"role":"assistant","content":"z","tool_calls":[]},{"role":"user","content":"last"}]}`,
		"roles-escaped":       `{"messages":[{"r\u006fle":"sys\u0074em","content":` + jsonStr(long) + `},{"role":"developer","\u0063ontent":"2026-01-01"},{"role":"\x","content":"q"},{"role":"system","role":"user","content":"2026-01-01"},{"role":1,"content":"q"},{"role":"","content":"q"},{"role":"user","content":"end"}]}`,
		"tool-calls-dup":      `{"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"assistant","content":"c","tool_calls":[{"id":"a"},{"id":"b"}],"tool_calls":[1 2]},{"role":"assistant","content":[{"type":"text","text":"t"}],"tool_calls":{"x":1}},{"role":"assistant","tool_calls":[{},{},{}],"content":[{"type":"text","text":"t"}]},{"role":"user","content":"q"}]}`,
		"key-null":            `{"prompt_cache_key":null,"model":"gpt-4o","messages":[{"role":"system","content":"S"},{"role":"user","content":"q"}]}`,
		"key-null-late":       `{"model":"gpt-4o","messages":[{"role":"user","content":"q"}],"prompt_cache_key" : null }`,
		"key-own":             `{"prompt_cache_key":"mine","model":"gpt-5","messages":[{"role":"user","content":"q"}]}`,
		"key-empty-obj":       `{"messages":[]}`,
		"key-ws-obj":          "{ \n\t\"messages\" : [ ] \n}",
		"key-no-conv":         `{"messages":[{"role":"system","content":"S"}]}`,
		"ws-leading":          ` {"messages":[{"role":"user","content":"q"}]}`,
		"ws-trailing":         `{"messages":[{"role":"user","content":"q"}]}` + " \n garbage",
		"empty-objects":       `{"messages":[{},{ },{"role":"system","content":[ ]},{"role":"user","content":[]},{"role":"system","content":` + jsonStr(long) + `},{} , {"role":"user","content":"q"},{}]}`,
		"dup-messages":        `{"messages":[{"role":"system","content":"2026-01-01"}],"messages":[{"role":"system","content":` + jsonStr(long) + `},{"role":"user","content":"q"}]}`,
		"fuzz-seed-1":         `{"tools":[{"type":"function","function":{"name":"x","description":"2026-01-01","parameters":{"b":1,"a":[{"d":1,"c":2}]}}}],"messages":[{"role":"system","content":"` + long[:2000] + `"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"u"}}]}]}`,
		"fuzz-seed-2":         `{"model":"gpt-4o","messages":[{"role":"user","content":"q"}]}`,
		"agent-0":             agentBody(0),
		"agent-3":             agentBody(3),
		"agent-12":            agentBody(12),
		"agent-40":            agentBody(40),
		"bench-1k":            string(benchBody(1000)),
		"bench-10k":           string(benchBody(10000)),
		"bench-100k":          string(benchBody(100000)),
		"many-system":         manySystem(),
		"sparse-markable":     sparseMarkable(),
	}
	// Malformed inputs, and bodies that turn malformed after some messages were walked (the
	// Report then carries what was found up to there).
	for i, s := range []string{``, ` `, `[]`, `{`, `{}`, `{"messages":`, `{"messages":{}}`, `{"tools":[{]}`, `{"messages":[1]}`,
		`{"messages":[{"role":"system","content":"2026-01-01"},{"role":"user","content":[1 2]}]}`,
		`{"messages":[{"role":"system","content":"2026-01-01"},{"role":"system","content":[{"type":"text","text":"2026-01-02"},1 2]}]}`,
		`{"messages":[{"role":"system","content":"2026-01-01"},{"role":"user" "content":"q"}]}`,
		`{"messages":[{"role":"system","content":"2026-01-01"},2,{"role":"user","content":"q"} x]}`,
		`{"messages":[{"role":"system","content":"2026-01-01"},{"role":"system","content":[{"type":"text","text":"2026-01-02"}]},3]}`,
		`{"messages":[{"role":"system","content":"2026-01-01"},[]]}`,
		`{"tools":[{"function":{"description":"2026-01-01"}}],"messages":[{"role":"system","content":"2026-01-01"},{"a" 1}]}`,
		`{"tools":[{"function":{"parameters":{"b":1,"a":2}}}],"messages":[{"role":"system","content":"2026-01-01"},{"a" 1}]}`,
		`{"tools":[{"function":{"parameters":{"b":1,"a":2}}}] "messages":[]}`,
		`{"tools":[{"function":{"parameters":{"b":1,"a":2}}} x],"messages":[]}`,
		`{"messages":[{}]}`, `{"messages":[{} {}]}`, `{"messages":[{"role":"system","content":"2026-01-01"},{},{"content":[]}`,
		`{"messages":[,]}`, `{"messages":[{"role":"system","content":[,]}]}`, `{"tools":[{"function":{"parameters":{"b":[,],"a":2}}}],"messages":[]}`,
		`{"messages":[{"role":"user","content":"q"}],}`,
		`{"messages":[{"role":"user","content":"q"},]}`,
		`{"messages":[{"role":"user","content":"q",}]}`,
		`{"messages":[{"role":"user","content":"q"}]`,
		`{"messages":[{"role":"user","content":"q}]}`,
		`{"messages":[{"role":"user","content":"q"}}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"q"}}]}]}`,
	} {
		b[fmt.Sprintf("malformed-%02d", i)] = s
	}
	// Pretty-printed variants: whitespace everywhere the walk skips it.
	for _, name := range []string{"schema-deep", "anthropic-big", "parts", "content-shapes", "many-system", "agent-3"} {
		var buf bytes.Buffer
		if err := json.Indent(&buf, []byte(b[name]), "", "\t"); err != nil {
			panic(name + ": " + err.Error())
		}
		b[name+"-indented"] = buf.String()
	}
	return b
}

// manySystem has system messages after the conversation started and more markable units than
// breakpoints.
func manySystem() string {
	var sb strings.Builder
	sb.WriteString(`{"tools":[{"type":"function","function":{"name":"f","description":` + jsonStr(long) + `}}],"messages":[`)
	for i := range 30 {
		if i > 0 {
			sb.WriteByte(',')
		}
		switch i % 5 {
		case 0:
			fmt.Fprintf(&sb, `{"role":"system","content":%s}`, jsonStr(fmt.Sprintf("rule %d as of 2026-01-%02d. %s", i, i%28+1, long[:500])))
		case 1:
			fmt.Fprintf(&sb, `{"role":"user","content":[{"type":"text","text":"q%d"},{"type":"text","text":"more"}]}`, i)
		case 2:
			fmt.Fprintf(&sb, `{"role":"assistant","content":null,"tool_calls":[{"id":"c%d"},{"id":"d%d"}]}`, i, i)
		case 3:
			fmt.Fprintf(&sb, `{"role":"tool","tool_call_id":"c%d","content":%s}`, i, jsonStr(long[:300]))
		case 4:
			fmt.Fprintf(&sb, `{"role":"developer","content":[{"type":"text","text":"dev %d"}]}`, i)
		}
	}
	sb.WriteString(`]}`)
	return sb.String()
}

// sparseMarkable has long runs of unmarkable messages, so the spacing walk falls back to the
// latest markable unit before the gap.
func sparseMarkable() string {
	var sb strings.Builder
	sb.WriteString(`{"messages":[{"role":"system","content":` + jsonStr(long) + `}`)
	for i := range 120 {
		if i%37 == 5 {
			fmt.Fprintf(&sb, `,{"role":"user","content":"marker %d"}`, i)
		} else {
			fmt.Fprintf(&sb, `,{"role":"assistant","content":"","tool_calls":[{"id":"%d"},{"id":"x"},{"id":"y"}]}`, i)
		}
	}
	sb.WriteString(`]}`)
	return sb.String()
}

// randomBody builds a chat body from r: random tools, roles, content shapes, extra fields,
// key order, whitespace and escapes.
func randomBody(r *rand.Rand) string {
	ws := func() string {
		if r.IntN(4) == 0 {
			return []string{" ", "\n", "\t ", "\r\n  "}[r.IntN(4)]
		}
		return ""
	}
	text := func() string {
		words := []string{"alpha", "2026-01-02", "10:30", "3/4/26", "1767225600", "9f86d081884c7d65", "3f2b8c1e-9a4d-4e1f-8b2c-1d2e3f4a5b6c", "é", "\"quoted\"", "tab\tnew\nline", "cache_control", long[:200]}
		var sb strings.Builder
		for n := r.IntN(12); n >= 0; n-- {
			sb.WriteString(words[r.IntN(len(words))])
			sb.WriteByte(' ')
		}
		if r.IntN(6) == 0 {
			sb.WriteString(long[:r.IntN(len(long))])
		}
		return jsonStr(sb.String())
	}
	key := func(k string) string {
		if r.IntN(15) == 0 && len(k) > 1 { // the same key with an escape
			return `"` + k[:1] + fmt.Sprintf(`\u%04x`, k[1]) + k[2:] + `"`
		}
		return `"` + k + `"`
	}
	obj := func(members []string) string {
		r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
		return "{" + ws() + strings.Join(members, ws()+","+ws()) + ws() + "}"
	}
	var schema func(depth int) string
	schema = func(depth int) string {
		var ms []string
		for n := r.IntN(4); n >= 0; n-- {
			v := []string{`"string"`, `1`, `true`, `null`, `[1,2]`, `[]`, `{}`}[r.IntN(7)]
			if depth < 3 && r.IntN(3) == 0 {
				v = schema(depth + 1)
			}
			if depth < 3 && r.IntN(5) == 0 {
				v = "[" + schema(depth+1) + "," + schema(depth+1) + "]"
			}
			ms = append(ms, key([]string{"type", "properties", "required", "a", "b", "description", "items", "enum"}[r.IntN(8)])+ws()+":"+ws()+v)
		}
		return obj(ms)
	}
	var members []string
	if r.IntN(3) > 0 {
		var tools []string
		for n := r.IntN(4); n >= 0; n-- {
			fn := []string{key("name") + `:"f"`}
			if r.IntN(2) == 0 {
				fn = append(fn, key("description")+":"+text())
			}
			if r.IntN(4) > 0 {
				fn = append(fn, key("parameters")+":"+schema(0))
			}
			tools = append(tools, obj([]string{key("type") + `:"function"`, key("function") + ":" + obj(fn)}))
		}
		members = append(members, key("tools")+ws()+":"+ws()+"["+ws()+strings.Join(tools, ws()+",")+"]")
	}
	var msgs []string
	for n := r.IntN(30); n >= 0; n-- {
		role := []string{"system", "developer", "user", "assistant", "tool", "user", "assistant"}[r.IntN(7)]
		ms := []string{key("role") + ":" + jsonStr(role)}
		switch r.IntN(6) {
		case 0, 1:
			ms = append(ms, key("content")+":"+text())
		case 2, 3:
			var parts []string
			for k := r.IntN(4); k >= 0; k-- {
				switch r.IntN(4) {
				case 0:
					parts = append(parts, obj([]string{key("type") + `:"image_url"`, key("image_url") + `:{"url":"u"}`}))
				case 1:
					parts = append(parts, obj([]string{key("type") + `:"input_audio"`}))
				default:
					parts = append(parts, obj([]string{key("type") + `:"text"`, key("text") + ":" + text()}))
				}
			}
			ms = append(ms, key("content")+":["+ws()+strings.Join(parts, ","+ws())+"]")
		case 4:
			ms = append(ms, key("content")+":null")
		case 5:
			ms = append(ms, key("content")+`:""`)
		}
		if role == "assistant" && r.IntN(3) == 0 {
			ms = append(ms, key("tool_calls")+`:[{"id":"a"}`+strings.Repeat(`,{"id":"b"}`, r.IntN(3))+"]")
		}
		if r.IntN(5) == 0 {
			ms = append(ms, key("name")+`:"n"`)
		}
		msgs = append(msgs, obj(ms))
	}
	members = append(members, key("messages")+":"+ws()+"["+strings.Join(msgs, ","+ws())+"]", key("model")+`:"m"`)
	switch r.IntN(8) {
	case 0:
		members = append(members, key("prompt_cache_key")+":null")
	case 1:
		members = append(members, key("prompt_cache_key")+`:"k"`)
	case 2:
		members = append(members, key("cache_control")+`:{"type":"ephemeral"}`)
	}
	return ws() + obj(members)
}

type goldenCall struct {
	name string
	body []byte
	tgt  Target
	p    *Planner
	// clock is p's clock, set to at before the call.
	clock *time.Time
	at    time.Time
	// hashed records a hash of the result instead of the result.
	hashed bool
}

// goldenCalls lists the calls in order. Every call gets a fresh Planner at goldenNow, except
// the sequences that exercise the trackers (1h TTL after a long gap, key sharding).
func goldenCalls() []goldenCall {
	var calls []goldenCall
	fresh := func() (*Planner, *time.Time) {
		clock := new(time.Time)
		return clockedPlanner(func() time.Time { return *clock }), clock
	}
	bodies := goldenBodies()
	names := make([]string, 0, len(bodies))
	for n := range bodies {
		names = append(names, n)
	}
	slices.Sort(names)
	targets := goldenTargets()
	for _, n := range names {
		for ti, t := range targets {
			p, clock := fresh()
			calls = append(calls, goldenCall{fmt.Sprintf("%s/t%d", n, ti), []byte(bodies[n]), t, p, clock, goldenNow, false})
		}
	}
	// Random bodies, and truncations and byte substitutions of some of them.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		body := randomBody(r)
		p, clock := fresh()
		calls = append(calls, goldenCall{fmt.Sprintf("random-%03d", i), []byte(body), targets[i%len(targets)], p, clock, goldenNow, true})
		if i%20 == 0 {
			for cut := 0; cut < len(body); cut += 1 + len(body)/60 {
				p, clock := fresh()
				calls = append(calls, goldenCall{fmt.Sprintf("random-%03d/cut%d", i, cut), []byte(body[:cut]), targets[(i+cut)%len(targets)], p, clock, goldenNow, true})
			}
			for k := range 80 {
				mut := []byte(body)
				at := r.IntN(len(mut))
				const set = "{}[],:\" \\x1n"
				mut[at] = set[r.IntN(len(set))]
				p, clock := fresh()
				calls = append(calls, goldenCall{fmt.Sprintf("random-%03d/mut%d", i, k), mut, targets[k%len(targets)], p, clock, goldenNow, true})
			}
		}
	}
	// Tracker sequences: reuse after gaps (1h TTL), and a busy key (shards).
	for _, t := range []Target{claude(), {Provider: "bedrock", Model: "anthropic.claude-sonnet-4-5-v1", Price: catalog.Price{CacheMinTokens: 1}}, {Provider: "bedrock", Model: "anthropic.claude-3-haiku", Price: catalog.Price{CacheMinTokens: 1}}, {Provider: "bedrock", Model: "amazon.nova-pro-4-5", Price: catalog.Price{CacheMinTokens: 1}}} {
		p, clock := fresh()
		at := goldenNow
		for step, gap := range []time.Duration{0, 10 * time.Minute, time.Minute, 70 * time.Minute, 6 * time.Minute, 2 * time.Minute} {
			at = at.Add(gap)
			calls = append(calls, goldenCall{fmt.Sprintf("seq-%s/%d", t.Provider+t.Model, step), []byte(bodies["anthropic-big"]), t, p, clock, at, false})
		}
	}
	p, clock := fresh()
	for i := range 40 {
		at := goldenNow.Add(time.Duration(i) * time.Second)
		if i >= 30 {
			at = at.Add(40 * time.Second) // a new minute: the previous one's count decays
		}
		if i >= 36 {
			at = at.Add(130 * time.Second) // over two minutes: the previous count is dropped
		}
		calls = append(calls, goldenCall{fmt.Sprintf("seq-busy/%d", i), []byte(bodies["agent-3"]), Target{Provider: "openai", Model: "gpt-5", Workspace: "busy", Price: keyed}, p, clock, at, false})
	}
	return calls
}

// goldenLine renders one call's result: the output's length and hash, the Report as JSON
// (nil and empty slices differ) and the error.
func goldenLine(c goldenCall) string {
	in := bytes.Clone(c.body)
	*c.clock = c.at
	out, rep, err := c.p.Plan(c.body, c.tgt)
	if !bytes.Equal(in, c.body) {
		panic(c.name + ": Plan modified its input")
	}
	sum := sha256.Sum256(out)
	rj, _ := json.Marshal(rep)
	e := ""
	if err != nil {
		e = err.Error()
	}
	line := fmt.Sprintf("%s\tlen=%d sha=%s\terr=%q\trep=%s", c.name, len(out), hex.EncodeToString(sum[:12]), e, rj)
	if c.hashed { // keeps the file small; a mismatch is printed in full from the new result
		h := sha256.Sum256([]byte(line))
		return c.name + "\th=" + hex.EncodeToString(h[:8])
	}
	return line
}

func TestGolden(t *testing.T) {
	calls := goldenCalls()
	got := make([]string, len(calls))
	for i, c := range calls {
		got[i] = goldenLine(c)
	}
	if *update {
		if err := os.WriteFile(goldenFile, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var want []string
	for sc.Scan() {
		want = append(want, sc.Text())
	}
	if len(want) != len(got) {
		t.Fatalf("golden file has %d lines, the corpus %d (regenerate with -update?)", len(want), len(got))
	}
	bad := 0
	for i := range got {
		if got[i] != want[i] {
			c := calls[i]
			c.hashed = false
			clock := new(time.Time)
			c.p, c.clock = clockedPlanner(func() time.Time { return *clock }), clock
			t.Errorf("mismatch:\n got  %s\n want %s\n (got in full, on a fresh Planner: %s)", got[i], want[i], goldenLine(c))
			if bad++; bad == 10 {
				t.Fatal("too many mismatches")
			}
		}
	}
}

// TestGoldenOutputsStayJSON: whatever the plan edits (markers, schemas, the key, also after
// leading whitespace), a valid body comes out valid.
func TestGoldenOutputsStayJSON(t *testing.T) {
	planned := 0
	for _, c := range goldenCalls() {
		*c.clock = c.at
		out, _, err := c.p.Plan(c.body, c.tgt)
		if err != nil || !json.Valid(c.body) {
			continue
		}
		planned++
		if !json.Valid(out) {
			t.Fatalf("%s: valid body planned into invalid JSON:\n%s", c.name, out)
		}
	}
	if planned < 100 {
		t.Fatalf("only %d valid bodies planned", planned)
	}
}
