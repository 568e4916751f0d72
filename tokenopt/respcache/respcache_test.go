package respcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
)

const baseReq = `{"model":"gpt-4.1","temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi <there> & \"you\""}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"number"}}}}}]}`

func mustKey(t *testing.T, ws, body string, p Policy) (Key, bool) {
	t.Helper()
	return MakeKey(ws, []byte(body), p)
}

func TestKeyCanonical(t *testing.T) {
	base, ok := mustKey(t, "ws1", baseReq, Policy{})
	if !ok {
		t.Fatal("base request not cacheable")
	}
	same := map[string]string{
		"key order":               `{"tools":[{"function":{"parameters":{"properties":{"a":{"type":"number"},"b":{"type":"string"}},"type":"object"},"name":"f"},"type":"function"}],"messages":[{"content":"be brief","role":"system"},{"content":"hi <there> & \"you\"","role":"user"}],"temperature":0,"model":"gpt-4.1"}`,
		"whitespace":              strings.ReplaceAll(strings.ReplaceAll(baseReq, `,"`, ",\n  \""), `:`, ` : `),
		"stream flag and options": strings.Replace(baseReq, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1),
		"client metadata":         strings.Replace(baseReq, `{"model"`, `{"user":"u-17","metadata":{"trace":"x"},"store":true,"prompt_cache_key":"k","safety_identifier":"s","service_tier":"auto","model"`, 1),
		"escapes":                 strings.Replace(baseReq, `"be brief"`, `"b\u0065 brief"`, 1),
		"html escapes":            strings.Replace(baseReq, `<there> &`, `\u003cthere\u003e \u0026`, 1),
		"number forms":            strings.Replace(baseReq, `"temperature":0`, `"temperature":0.0`, 1),
		"escaped key":             strings.Replace(baseReq, `"model"`, `"mod\u0065l"`, 1),
	}
	for name, body := range same {
		t.Run("same/"+name, func(t *testing.T) {
			k, ok := mustKey(t, "ws1", body, Policy{})
			if !ok || k != base {
				t.Fatalf("key differs (ok=%v) for %s", ok, body)
			}
		})
	}
	differ := map[string]struct{ ws, body string }{
		"workspace":          {"ws2", baseReq},
		"model":              {"ws1", strings.Replace(baseReq, "gpt-4.1", "gpt-4o", 1)},
		"message":            {"ws1", strings.Replace(baseReq, "be brief", "be briefer", 1)},
		"message order":      {"ws1", `{"model":"gpt-4.1","temperature":0,"messages":[{"role":"user","content":"hi <there> & \"you\""},{"role":"system","content":"be brief"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"number"}}}}}]}`},
		"max_tokens":         {"ws1", strings.Replace(baseReq, `{"model"`, `{"max_tokens":5,"model"`, 1)},
		"seed":               {"ws1", strings.Replace(baseReq, `{"model"`, `{"seed":1,"model"`, 1)},
		"tool schema":        {"ws1", strings.Replace(baseReq, `"number"`, `"integer"`, 1)},
		"empty ws vs prefix": {"", baseReq},
	}
	for name, c := range differ {
		t.Run("differ/"+name, func(t *testing.T) {
			k, ok := mustKey(t, c.ws, c.body, Policy{})
			if !ok || k == base {
				t.Fatalf("key equal (ok=%v)", ok)
			}
		})
	}
}

func TestKeyCacheability(t *testing.T) {
	cases := []struct {
		name           string
		body           string
		plain, sampled bool // cacheable under Policy{} / Policy{AllowSampled:true}
	}{
		{"temperature 0", baseReq, true, true},
		{"temperature absent (default 1)", strings.Replace(baseReq, `"temperature":0,`, "", 1), false, true},
		{"temperature null", strings.Replace(baseReq, `"temperature":0`, `"temperature":null`, 1), false, true},
		{"temperature 0.7", strings.Replace(baseReq, `"temperature":0`, `"temperature":0.7`, 1), false, true},
		{"n 1", strings.Replace(baseReq, `{"model"`, `{"n":1,"model"`, 1), true, true},
		{"n 2", strings.Replace(baseReq, `{"model"`, `{"n":2,"model"`, 1), false, true},
		{"n null", strings.Replace(baseReq, `{"model"`, `{"n":null,"model"`, 1), true, true},
		// Sampling-only parameters mean the caller wanted a draw, even at temperature 0 (the
		// coalescer's rule): never replayed without the opt-in.
		{"top_p 1 (no-op)", strings.Replace(baseReq, `{"model"`, `{"top_p":1,"model"`, 1), true, true},
		{"top_p 1.0 (no-op)", strings.Replace(baseReq, `{"model"`, `{"top_p":1.0,"model"`, 1), true, true},
		{"top_p null", strings.Replace(baseReq, `{"model"`, `{"top_p":null,"model"`, 1), true, true},
		{"top_p 0.9", strings.Replace(baseReq, `{"model"`, `{"top_p":0.9,"model"`, 1), false, true},
		{"top_k", strings.Replace(baseReq, `{"model"`, `{"top_k":40,"model"`, 1), false, true},
		{"min_p", strings.Replace(baseReq, `{"model"`, `{"min_p":0.05,"model"`, 1), false, true},
		{"typical_p", strings.Replace(baseReq, `{"model"`, `{"typical_p":0.9,"model"`, 1), false, true},
		{"top_a", strings.Replace(baseReq, `{"model"`, `{"top_a":0.1,"model"`, 1), false, true},
		{"best_of", strings.Replace(baseReq, `{"model"`, `{"best_of":3,"model"`, 1), false, true},
		{"top_k null", strings.Replace(baseReq, `{"model"`, `{"top_k":null,"model"`, 1), true, true},
		{"malformed", `{"model":"x","messages":[`, false, false},
		{"array body", `[1,2]`, false, false},
		{"trailing garbage", baseReq + "x", false, false},
		{"empty", ``, false, false},
		{"bad temperature", strings.Replace(baseReq, `"temperature":0`, `"temperature":"hot"`, 1), false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, ok := mustKey(t, "w", c.body, Policy{}); ok != c.plain {
				t.Errorf("default policy: cacheable=%v, want %v", ok, c.plain)
			}
			if _, ok := mustKey(t, "w", c.body, Policy{AllowSampled: true}); ok != c.sampled {
				t.Errorf("AllowSampled: cacheable=%v, want %v", ok, c.sampled)
			}
		})
	}
	c := New(1<<20, 0)
	defer c.Close()
	if _, ok := c.Key("w", []byte(strings.Replace(baseReq, `"temperature":0`, `"temperature":1`, 1))); ok {
		t.Error("cache default policy cached a sampled request")
	}
	if _, ok := c.WithPolicy(Policy{AllowSampled: true}).Key("w", []byte(strings.Replace(baseReq, `"temperature":0`, `"temperature":1`, 1))); !ok {
		t.Error("opt-in view refused a sampled request")
	}
}

// richCompletion has everything a replay must carry: reasoning, multibyte content longer than a
// replay piece, two tool calls with long arguments, a finish reason and detailed usage.
func richCompletion() []byte {
	content := strings.Repeat("Grüße, 世界! ", 80)
	args1, _ := json.Marshal(map[string]any{"q": strings.Repeat("x", 700), "n": 3})
	body, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "gpt-4.1-2025",
		"system_fingerprint": "fp_1",
		"choices": []any{map[string]any{"index": 0, "logprobs": nil, "finish_reason": "tool_calls",
			"message": map[string]any{"role": "assistant", "content": content, "refusal": nil,
				"reasoning_content": "think think",
				"tool_calls": []any{
					map[string]any{"id": "call_1", "type": "function", "function": map[string]any{"name": "search", "arguments": string(args1)}},
					map[string]any{"id": "call_2", "type": "function", "function": map[string]any{"name": "now", "arguments": "{}"}},
				}}}},
		"usage": map[string]any{"prompt_tokens": 120, "completion_tokens": 300, "total_tokens": 420,
			"prompt_tokens_details":     map[string]any{"cached_tokens": 100, "cache_write_tokens": 0},
			"completion_tokens_details": map[string]any{"reasoning_tokens": 20}},
	})
	return body
}

func richUsage() providers.Usage {
	return providers.Usage{InputUncached: 20, CacheRead: 100, Output: 300, Reasoning: 20}
}

func key(t *testing.T, i int) Key {
	k, ok := MakeKey("w", []byte(fmt.Sprintf(`{"model":"m","temperature":0,"messages":[{"role":"user","content":"q%d"}]}`, i)), Policy{})
	if !ok {
		t.Fatal("not cacheable")
	}
	return k
}

func TestHitMissAndRefusals(t *testing.T) {
	c := New(1<<20, time.Minute)
	defer c.Close()
	k := key(t, 1)
	if _, ok := c.Get(k); ok {
		t.Fatal("hit on empty cache")
	}
	if !c.Put(k, richCompletion(), richUsage()) {
		t.Fatal("put refused")
	}
	e, ok := c.Get(k)
	if !ok {
		t.Fatal("miss after put")
	}
	if !bytes.Equal(e.Body(), richCompletion()) || e.Usage() != richUsage() || time.Since(e.StoredAt()) > time.Minute {
		t.Fatal("entry does not match what was stored")
	}
	if _, ok := c.Get(key(t, 2)); ok {
		t.Fatal("hit for another key")
	}
	for name, body := range map[string]string{
		"garbage":    `nope`,
		"no choices": `{"id":"x","object":"chat.completion","choices":[]}`,
		"unfinished": `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hal"},"finish_reason":null}]}`,
		"error body": `{"error":{"message":"boom"}}`,
	} {
		if c.Put(key(t, 3), []byte(body), providers.Usage{}) {
			t.Errorf("%s: stored", name)
		}
	}
	c.Delete(k)
	if _, ok := c.Get(k); ok {
		t.Fatal("hit after delete")
	}
}

func TestByteBoundEviction(t *testing.T) {
	const maxBytes = 64 << 10
	c := New(maxBytes, 0)
	defer c.Close()
	body := richCompletion() // ~2.7 KiB body, ~5.5 KiB entry
	var size int64
	for i := range 200 {
		c.Put(key(t, i), body, richUsage())
	}
	present := 0
	for i := range 200 {
		if e, ok := c.Get(key(t, i)); ok {
			present++
			size = e.Size()
		}
	}
	if present == 0 || present == 200 {
		t.Fatalf("present=%d of 200, want some evicted and some kept", present)
	}
	if int64(present)*size > maxBytes {
		t.Fatalf("%d entries of %d bytes exceed the %d-byte bound", present, size, maxBytes)
	}
	st := c.Stats()
	if st.BytesAdded-st.BytesEvicted > maxBytes {
		t.Fatalf("held %d bytes > bound", st.BytesAdded-st.BytesEvicted)
	}
	t.Logf("entry %d B, kept %d/200 in %d B, stats %+v", size, present, maxBytes, st)
}

func TestTTLExpiry(t *testing.T) {
	c := New(1<<20, 80*time.Millisecond)
	defer c.Close()
	k := key(t, 1)
	c.Put(k, richCompletion(), richUsage())
	if _, ok := c.Get(k); !ok {
		t.Fatal("miss before expiry")
	}
	time.Sleep(150 * time.Millisecond)
	if _, ok := c.Get(k); ok {
		t.Fatal("hit after expiry")
	}
}

// parseStream reads an SSE replay, checks its framing and returns the chunk payloads.
func parseStream(t *testing.T, raw []byte, includeUsage bool) [][]byte {
	t.Helper()
	r := sse.NewReader(bytes.NewReader(raw))
	var chunks [][]byte
	sawDone, sawUsage := false, false
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if sawDone {
			t.Fatal("event after [DONE]")
		}
		if string(ev.Data) == "[DONE]" {
			sawDone = true
			continue
		}
		var ch struct {
			Object  string            `json:"object"`
			ID      string            `json:"id"`
			Choices []json.RawMessage `json:"choices"`
		}
		if err := json.Unmarshal(ev.Data, &ch); err != nil {
			t.Fatalf("chunk is not JSON: %v: %s", err, ev.Data)
		}
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(ev.Data, &fields)
		usage, hasUsage := fields["usage"]
		if ch.Object != "chat.completion.chunk" || ch.ID != "chatcmpl-abc" && ch.ID != "chatcmpl-s" {
			t.Fatalf("bad chunk header: %s", ev.Data)
		}
		if len(chunks) == 0 && !bytes.Contains(ev.Data, []byte(`"delta":{"role":"assistant","content":""}`)) {
			t.Fatalf("first chunk is not the role chunk: %s", ev.Data)
		}
		if ch.Choices == nil {
			t.Fatalf("chunk without choices: %s", ev.Data)
		}
		if includeUsage != hasUsage {
			t.Fatalf("usage field present=%v, include=%v: %s", hasUsage, includeUsage, ev.Data)
		}
		if len(ch.Choices) == 0 {
			if sawUsage || string(usage) == "null" || len(usage) == 0 {
				t.Fatalf("bad usage chunk: %s", ev.Data)
			}
			sawUsage = true
		} else if sawUsage {
			t.Fatal("choice chunk after the usage chunk")
		}
		if len(ev.Data) > 2048 {
			t.Fatalf("replay chunk of %d bytes", len(ev.Data))
		}
		chunks = append(chunks, append([]byte(nil), ev.Data...))
	}
	if !sawDone || sawUsage != includeUsage {
		t.Fatalf("done=%v usage=%v (include=%v)", sawDone, sawUsage, includeUsage)
	}
	return chunks
}

func decode(t *testing.T, body []byte) completion {
	t.Helper()
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func sameAnswer(t *testing.T, got, want completion, withUsage bool) {
	t.Helper()
	if !withUsage {
		want.Usage, got.Usage = nil, nil
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Fatalf("answers differ:\n got %s\nwant %s", g, w)
	}
}

func TestCachedAnswerReplaysAsValidStream(t *testing.T) {
	c := New(1<<20, time.Minute)
	defer c.Close()
	k := key(t, 1)
	c.Put(k, richCompletion(), richUsage())
	e, _ := c.Get(k)
	for _, includeUsage := range []bool{true, false} {
		t.Run(fmt.Sprintf("usage=%v", includeUsage), func(t *testing.T) {
			var out bytes.Buffer
			flushes := 0
			if err := e.WriteStream(&out, includeUsage, func() error { flushes++; return nil }); err != nil {
				t.Fatal(err)
			}
			if flushes == 0 {
				t.Fatal("never flushed")
			}
			chunks := parseStream(t, out.Bytes(), includeUsage)
			a := NewAssembler(0)
			for _, ch := range chunks {
				if err := a.Add(ch); err != nil {
					t.Fatal(err)
				}
			}
			body, err := a.Completion()
			if err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, decode(t, body), decode(t, richCompletion()), includeUsage)
			if includeUsage {
				if u, ok := a.Usage(); !ok || u != richUsage() {
					t.Fatalf("usage %+v ok=%v", u, ok)
				}
			}
		})
	}
}

// A stream, as the gateway relays it from an adapter, is cached via the Assembler and served
// to a non-stream request, and replays again as a stream.
func TestStreamCachedServesNonStream(t *testing.T) {
	w := providers.NewChunkWriter("chatcmpl-s", "m-1", 1700000001)
	u := providers.Usage{InputUncached: 10, Output: 7}
	chunks := [][]byte{w.Role(), w.Content("Hel"), w.Content("lo, "), w.Content("wörld"),
		w.ToolCallStart(0, "call_a", "lookup"), w.ToolCallArgs(0, `{"k":`), w.ToolCallArgs(0, `"v"}`),
		w.Finish("tool_calls"), w.Usage(u)}
	a := NewAssembler(0)
	for _, ch := range chunks {
		if err := a.Add(ch); err != nil {
			t.Fatal(err)
		}
	}
	_ = a.Add([]byte("[DONE]"))
	body, err := a.Completion()
	if err != nil {
		t.Fatal(err)
	}
	au, ok := a.Usage()
	if !ok || au != u {
		t.Fatalf("usage %+v", au)
	}
	c := New(1<<20, time.Minute)
	defer c.Close()
	k := key(t, 9)
	if !c.Put(k, body, au) {
		t.Fatal("assembled completion refused")
	}
	e, _ := c.Get(k)
	got := decode(t, e.Body())
	m := got.Choices[0].Message
	if got.Object != "chat.completion" || got.ID != "chatcmpl-s" || got.Model != "m-1" || m.Role != "assistant" ||
		m.Content == nil || *m.Content != "Hello, wörld" || len(m.ToolCalls) != 1 ||
		m.ToolCalls[0] != (toolCall{ID: "call_a", Type: "function", Function: function{Name: "lookup", Arguments: `{"k":"v"}`}}) ||
		*got.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("assembled body wrong: %s", e.Body())
	}
	if pu, ok := providers.ParseOpenAIUsage(got.Usage); !ok || pu != u {
		t.Fatalf("body usage %s", got.Usage)
	}
	var out bytes.Buffer
	if err := e.WriteStream(&out, true, nil); err != nil {
		t.Fatal(err)
	}
	a2 := NewAssembler(0)
	for _, ch := range parseStream(t, out.Bytes(), true) {
		if err := a2.Add(ch); err != nil {
			t.Fatal(err)
		}
	}
	body2, _ := a2.Completion()
	sameAnswer(t, decode(t, body2), got, true)
}

func TestAssemblerFailures(t *testing.T) {
	w := providers.NewChunkWriter("id", "m", 1)
	a := NewAssembler(0)
	_ = a.Add(w.Role())
	_ = a.Add(w.Content("partial"))
	if _, err := a.Completion(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("cut stream: %v", err)
	}
	if _, err := NewAssembler(0).Completion(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("empty stream: %v", err)
	}
	a = NewAssembler(0)
	_ = a.Add(w.Role())
	if err := a.Add([]byte(`{"error":{"message":"overloaded"}}`)); err == nil {
		t.Fatal("error chunk accepted")
	}
	_ = a.Add(w.Finish("stop"))
	if _, err := a.Completion(); err == nil {
		t.Fatal("errored stream assembled")
	}
	a = NewAssembler(10)
	_ = a.Add(w.Content(strings.Repeat("z", 11)))
	if _, err := a.Completion(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if err := NewAssembler(0).Add([]byte("{")); err == nil {
		t.Fatal("malformed chunk accepted")
	}
}

func TestConcurrentUse(t *testing.T) {
	c := New(256<<10, time.Minute)
	defer c.Close()
	body := richCompletion()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := key(t, (g*7+i)%40)
				if e, ok := c.Get(k); ok {
					if !bytes.Equal(e.Body(), body) {
						t.Error("corrupt body")
						return
					}
					if err := e.WriteStream(io.Discard, true, nil); err != nil {
						t.Error(err)
						return
					}
				} else {
					c.Put(k, body, richUsage())
				}
			}
		})
	}
	wg.Wait()
}

// TestCloseWhileInUse: a reload cleans the old handler's cache up while its last requests may
// still store answers; those calls must neither panic nor race, and miss once it is closed.
func TestCloseWhileInUse(t *testing.T) {
	for range 20 {
		c := New(256<<10, time.Minute).WithPolicy(Policy{})
		body := richCompletion()
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 50 {
					k := key(t, (g*7+i)%40)
					c.Put(k, body, richUsage())
					c.Get(k)
					c.Delete(k)
				}
			})
		}
		c.Close()
		wg.Wait()
		k := key(t, 1)
		if c.Put(k, body, richUsage()) {
			t.Fatal("a closed cache stored an answer")
		}
		if _, ok := c.Get(k); ok {
			t.Fatal("a closed cache answered")
		}
		c.Close()
	}
}

func TestSplitText(t *testing.T) {
	s := strings.Repeat("é世", 200)
	parts := splitText(s, 256)
	if strings.Join(parts, "") != s {
		t.Fatal("split lost text")
	}
	for _, p := range parts {
		if len(p) > 256 || !utf8ValidString(p) {
			t.Fatalf("bad piece %q", p)
		}
	}
}
