package compress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/benchcpu"
)

type call struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type msg struct {
	Role       string `json:"role"`
	Content    any    `json:"content"`
	ToolCalls  []call `json:"tool_calls,omitempty"`
	ToolCallID string `json:"tool_call_id,omitempty"`
}

type req struct {
	Model    string `json:"model"`
	Messages []msg  `json:"messages"`
	Tools    []any  `json:"tools,omitempty"`
}

func lorem(r *rand.Rand, n int) string {
	words := []string{"error", "request", "line", "status", "ok", "value", "path", "/var/log", "42", "timeout", "retry", "user", "id", "x"}
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(10) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// genConversation builds a seeded agent conversation: user turns, each with rounds of
// (parallel) tool calls and their results.
func genConversation(seed uint64, turns int) []msg {
	r := rand.New(rand.NewPCG(seed, 7))
	ms := []msg{{Role: "system", Content: "You are an agent. " + lorem(r, 400)}}
	id := 0
	for t := 0; t < turns; t++ {
		ms = append(ms, msg{Role: "user", Content: fmt.Sprintf("task %d: %s", t, lorem(r, 80))})
		rounds := r.IntN(4)
		for k := 0; k < rounds; k++ {
			n := 1 + r.IntN(3)
			a := msg{Role: "assistant", Content: nil}
			for c := 0; c < n; c++ {
				var cl call
				cl.ID = fmt.Sprintf("call_%d", id)
				id++
				cl.Type = "function"
				cl.Function.Name = []string{"get_logs", "read_file", "search"}[r.IntN(3)]
				cl.Function.Arguments = `{"q":"x"}`
				a.ToolCalls = append(a.ToolCalls, cl)
			}
			ms = append(ms, a)
			for _, cl := range a.ToolCalls {
				size := 200 + r.IntN(6000)
				if r.IntN(8) == 0 {
					size = 40000 + r.IntN(20000)
				}
				ms = append(ms, msg{Role: "tool", ToolCallID: cl.ID, Content: lorem(r, size)})
			}
		}
		ms = append(ms, msg{Role: "assistant", Content: "done: " + lorem(r, 100)})
	}
	return ms
}

func encode(t testing.TB, ms []msg) []byte {
	b, err := json.Marshal(req{Model: "gpt-5", Messages: ms, Tools: []any{map[string]any{"type": "function", "function": map[string]any{"name": "get_logs"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t testing.TB, b []byte) []msg {
	var r req
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("output is not valid JSON: %v\n%s", err, b)
	}
	return r.Messages
}

func rawMessages(t testing.TB, b []byte) []json.RawMessage {
	var r struct{ Messages []json.RawMessage }
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r.Messages
}

func checkPairs(t *testing.T, ms []msg) {
	t.Helper()
	results := map[string]int{}
	for _, m := range ms {
		if m.Role == "tool" {
			results[m.ToolCallID]++
		}
	}
	calls := map[string]bool{}
	for _, m := range ms {
		for _, c := range m.ToolCalls {
			calls[c.ID] = true
			if results[c.ID] != 1 {
				t.Fatalf("tool call %s has %d results", c.ID, results[c.ID])
			}
		}
	}
	for id := range results {
		if !calls[id] {
			t.Fatalf("tool result %s has no call (orphaned)", id)
		}
	}
}

func TestToolPairsNeverBroken(t *testing.T) {
	for seed := uint64(0); seed < 60; seed++ {
		ms := genConversation(seed, 2+int(seed%9))
		body := encode(t, ms)
		for _, o := range []Options{
			{},
			{ForceMask: true, EpochMessages: 4, KeepTurns: 1},
			{ForceMask: true, KeepToolOutputs: 3},
			{ContextWindow: 8000, OutputTokens: 1000},
			{ContextWindow: 3000, EpochMessages: 2},
		} {
			out, rep, err := Compress(body, o)
			if err != nil {
				t.Fatal(err)
			}
			got := decode(t, out)
			checkPairs(t, got)
			if rep.Trimmed == 0 && len(got) != len(ms) {
				t.Fatalf("seed %d: message count changed without trimming", seed)
			}
			// System messages untouched.
			if got[0].Content != ms[0].Content {
				t.Fatalf("seed %d: system message changed", seed)
			}
			again, _, err := Compress(out, o)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("seed %d opts %+v: not idempotent\nfirst:  %.300s\nsecond: %.300s", seed, o, out, again)
			}
			again2, _, _ := Compress(body, o)
			if !bytes.Equal(again2, out) {
				t.Fatalf("seed %d: not deterministic", seed)
			}
		}
	}
}

// TestEpochPrefixStable grows one conversation message by message and checks that the
// compressed output of turn t is a byte prefix (message by message) of turn t+1's, except
// when the epoch advances.
func TestEpochPrefixStable(t *testing.T) {
	for seed := uint64(1); seed < 8; seed++ {
		full := genConversation(seed, 14)
		var prev []json.RawMessage
		prevEpoch := -1
		boundaries, masked := 0, 0
		for n := 2; n <= len(full); n++ {
			if full[n-1].Role != "user" { // a request ends with a user turn or tool results
				if full[n-1].Role != "tool" || (n < len(full) && full[n].Role == "tool") {
					continue
				}
			}
			out, rep, err := Compress(encode(t, full[:n]), Options{EpochMessages: 8})
			if err != nil {
				t.Fatal(err)
			}
			masked += rep.Masked
			cur := rawMessages(t, out)
			if prev != nil && rep.Epoch == prevEpoch {
				for i := range prev {
					if !bytes.Equal(prev[i], cur[i]) {
						t.Fatalf("seed %d n %d: message %d changed within epoch %d", seed, n, i, rep.Epoch)
					}
				}
			} else if prev != nil {
				boundaries++
			}
			prev, prevEpoch = cur, rep.Epoch
		}
		if boundaries == 0 || masked == 0 {
			t.Fatalf("seed %d: test did not exercise epochs (boundaries %d, masked %d)", seed, boundaries, masked)
		}
	}
}

func TestGolden(t *testing.T) {
	big := strings.Repeat("log line 0123456789\n", 100) // 2000 bytes = 500 tokens
	body := `{"model":"m", "messages": [
  {"role":"system","content":"sys"},
  {"role":"user","content":"first"},
  {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_logs","arguments":"{}"}}]},
  {"role":"tool","tool_call_id":"c1","content":` + jsonString(big) + `},
  {"role":"assistant","content":"ok"},
  {"role":"user","content":"second"},
  {"role":"assistant","content":"ok2"},
  {"role":"user","content":"third"}
], "temperature": 0}`
	out, rep, err := Compress([]byte(body), Options{EpochMessages: 4, ForceMask: true})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(body, jsonString(big), `"[tool output masked by gateway: get_logs, 500 tokens, sha256:`+sha8(big)+`]"`, 1)
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if rep.Masked != 1 || rep.Epoch != 4 || rep.TokensAfter >= rep.TokensBefore {
		t.Fatalf("report %+v", rep)
	}
	// Inside the protected window (KeepTurns 3), nothing changes and body is returned as is.
	out, rep, _ = Compress([]byte(body), Options{EpochMessages: 4, ForceMask: true, KeepTurns: 3})
	if string(out) != body || rep.Masked != 0 {
		t.Fatalf("protected window masked: %+v", rep)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func sha8(s string) string {
	p := placeholder("x", []byte(s), 0)
	return p[strings.Index(p, "sha256:")+7 : len(p)-1]
}

func TestTruncateNewest(t *testing.T) {
	var sb strings.Builder
	for i := 0; sb.Len() < 100000; i++ {
		fmt.Fprintf(&sb, "line %06d of the build log\n", i)
	}
	text := sb.String()
	ms := []msg{
		{Role: "user", Content: "build"},
		{Role: "assistant", ToolCalls: []call{{ID: "c", Type: "function"}}},
		{Role: "tool", ToolCallID: "c", Content: text},
	}
	out, rep, err := Compress(encode(t, ms), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, out)[2].Content.(string)
	if rep.Truncated != 1 || len(got) >= len(text) {
		t.Fatalf("not truncated: %+v", rep)
	}
	if !strings.HasPrefix(got, "line 000000 of the build log\n") || !strings.HasSuffix(got, text[len(text)-200:]) {
		t.Fatal("head or tail lost")
	}
	if !strings.Contains(got, "gateway truncated this tool output") || (len(got)+3)/4 > 8192 {
		t.Fatalf("bad marker or size %d", len(got))
	}
}

func TestTrimOnOverflow(t *testing.T) {
	ms := genConversation(3, 12)
	body := encode(t, ms)
	out, rep, err := Compress(body, Options{ContextWindow: 20000, OutputTokens: 2000, DisableMask: true, DisableTruncate: true})
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, out)
	if rep.Trimmed == 0 || rep.Overflow {
		t.Fatalf("report %+v", rep)
	}
	if got[1].Role != "system" || !strings.Contains(got[1].Content.(string), "earlier messages were omitted") {
		t.Fatalf("no marker: %+v", got[1])
	}
	if got[2].Role != "user" {
		t.Fatalf("kept part does not start with a user turn: %s", got[2].Role)
	}
	if rep.TokensAfter+2000 > 20000 {
		t.Fatalf("still over: %+v", rep)
	}
	checkPairs(t, got)
	// The last message is always kept.
	if got[len(got)-1].Content != ms[len(ms)-1].Content {
		t.Fatal("newest message lost")
	}
}

func TestWorth(t *testing.T) {
	for _, tc := range []struct {
		saved, rewritten int
		e                Economics
		want             bool
	}{
		{10000, 1000, Economics{}, true},
		{1000, 10000, Economics{}, false},
		{1000, 7000, Economics{CacheReadMultiplier: 1, CacheWriteMultiplier: 1}, true}, // no caching
		{1000, 900, Economics{ExpectedRemainingTurns: 1}, false},
		{0, 0, Economics{}, false},
	} {
		if got := tc.e.Worth(tc.saved, tc.rewritten); got != tc.want {
			t.Errorf("Worth(%d, %d, %+v) = %v", tc.saved, tc.rewritten, tc.e, got)
		}
	}
}

func TestBadBodies(t *testing.T) {
	for _, b := range []string{``, `[]`, `{"model":"x"}`, `{"messages":"x"}`, `{"messages":[1]}`, `{"messages":[{"role":"tool","content":"\u00"}]}`} {
		if out, _, err := Compress([]byte(b), Options{}); err == nil && string(out) != b {
			t.Errorf("%q: changed without error", b)
		}
	}
}

func FuzzCompress(f *testing.F) {
	f.Add(encode(f, genConversation(1, 3)), 4, 0)
	f.Add([]byte(`{"messages":[{"role":"tool","tool_call_id":"a","content":"`+strings.Repeat("ab\\n", 400)+`"}]}`), 1, 100)
	f.Add([]byte(`{"messages":[{"role":"system","content":"[gateway: 3 earlier messages were omitted to fit the context window]"},{"role":"user","content":"x"}]}`), 2, 10)
	f.Fuzz(func(t *testing.T, body []byte, epoch int, window int) {
		o := Options{EpochMessages: epoch%32 + 1, ForceMask: true, MaskMinTokens: 8, TruncateAboveTokens: 300, TruncateHeadTokens: 50, TruncateTailTokens: 50, ContextWindow: window % 5000}
		out, _, err := Compress(body, o)
		if err != nil || !json.Valid(body) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid output JSON: %s", out)
		}
		again, _, err := Compress(out, o)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%s\n%s", out, again)
		}
	})
}

func benchBody(b testing.TB, tokens int) []byte {
	r := rand.New(rand.NewPCG(9, 9))
	ms := []msg{{Role: "system", Content: lorem(r, 400)}}
	id := 0
	for n := 400; n < tokens*4; {
		ms = append(ms, msg{Role: "user", Content: lorem(r, 200)})
		c := call{ID: fmt.Sprintf("c%d", id), Type: "function"}
		c.Function.Name = "read_file"
		id++
		ms = append(ms, msg{Role: "assistant", ToolCalls: []call{c}})
		size := min(3000, tokens*4/3)
		ms = append(ms, msg{Role: "tool", ToolCallID: c.ID, Content: lorem(r, size)})
		ms = append(ms, msg{Role: "assistant", Content: lorem(r, 200)})
		n += 600 + size
	}
	ms = append(ms, msg{Role: "user", Content: "next"})
	return encode(b, ms)
}

func benchCompress(b *testing.B, body []byte, o Options) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var rep Report
	start := benchcpu.Now()
	for b.Loop() {
		_, rep, _ = Compress(body, o)
	}
	b.ReportMetric(float64(benchcpu.Now()-start)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(rep.Masked), "masked")
	b.ReportMetric(float64(rep.TokensBefore), "tokens")
}

func BenchmarkCompress1k(b *testing.B) {
	benchCompress(b, benchBody(b, 1000), Options{EpochMessages: 4, KeepTurns: 1})
}
func BenchmarkCompress100k(b *testing.B) {
	benchCompress(b, benchBody(b, 100000), Options{EpochMessages: 4, KeepTurns: 1})
}

// agentBody is one long agent loop under a single user message, about tokens tokens: rounds of
// three parallel tool calls and their outputs, so most messages are tool outputs.
func agentBody(b testing.TB, tokens int) []byte {
	r := rand.New(rand.NewPCG(5, 5))
	ms := []msg{{Role: "system", Content: lorem(r, 400)}, {Role: "user", Content: lorem(r, 200)}}
	id := 0
	for n := 600; n < tokens*4; {
		a := msg{Role: "assistant"}
		for range 3 {
			c := call{ID: fmt.Sprintf("call_%d", id), Type: "function"}
			c.Function.Name = []string{"get_logs", "read_file", "search"}[r.IntN(3)]
			c.Function.Arguments = `{"path":"x"}`
			id++
			a.ToolCalls = append(a.ToolCalls, c)
		}
		ms = append(ms, a)
		for _, c := range a.ToolCalls {
			size := 1000 + r.IntN(5000)
			ms = append(ms, msg{Role: "tool", ToolCallID: c.ID, Content: lorem(r, size)})
			n += size + 100
		}
	}
	return encode(b, ms)
}

// gatewayDefault is how handlers.Optimize calls Compress unless masking is enabled: on a
// typical body nothing changes, so this measures the pure overhead on the request path.
var gatewayDefault = Options{DisableMask: true, KeepToolOutputs: 4, ContextWindow: 200000}

func BenchmarkCompressGateway100k(b *testing.B) {
	benchCompress(b, benchBody(b, 100000), gatewayDefault)
}
func BenchmarkCompressGatewayAgent100k(b *testing.B) {
	benchCompress(b, agentBody(b, 100000), gatewayDefault)
}

// The gateway's call when masking is enabled for the workspace.
func BenchmarkCompressGatewayMaskAgent100k(b *testing.B) {
	o := gatewayDefault
	o.DisableMask = false
	benchCompress(b, agentBody(b, 100000), o)
}

// TestConcurrent runs Compress on many goroutines over bodies of different shapes, so pooled
// buffers pass between calls of every size; each result must match a sequential run.
func TestConcurrent(t *testing.T) {
	type tc struct {
		body []byte
		o    Options
		out  []byte
		rep  Report
	}
	var cases []tc
	for seed := uint64(0); seed < 12; seed++ {
		for _, o := range []Options{gatewayDefault, {ForceMask: true, EpochMessages: 4, KeepTurns: 1}, {ContextWindow: 3000, TruncateAboveTokens: 500}} {
			body := encode(t, genConversation(seed, 2+int(seed%9)))
			out, rep, err := Compress(body, o)
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, tc{body, o, bytes.Clone(out), rep})
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 40 {
				c := cases[(g*7+k*5)%len(cases)]
				out, rep, err := Compress(c.body, c.o)
				if err != nil || !bytes.Equal(out, c.out) || rep != c.rep {
					t.Errorf("concurrent call differs: %+v vs %+v", rep, c.rep)
					return
				}
			}
		})
	}
	wg.Wait()
}
