package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// A Messages request in the block form the adapter emits survives ingress → OpenAI body →
// canonical → Messages request unchanged.
func TestIngressRequestRoundTrip(t *testing.T) {
	in := `{
	  "model": "claude-sonnet-4-5",
	  "max_tokens": 5000,
	  "system": [{"type":"text","text":"Be terse.","cache_control":{"type":"ephemeral","ttl":"1h"}}],
	  "messages": [
	    {"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
	      {"type":"image","source":{"type":"url","url":"https://example.com/x.png"}}]},
	    {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"Checking."},
	      {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
	    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"21C"}],"cache_control":{"type":"ephemeral"}},
	      {"type":"text","text":"And tomorrow?"}]}
	  ],
	  "tools": [{"name":"get_weather","description":"d","input_schema":{"type":"object","properties":{"city":{"type":"string"}}},"cache_control":{"type":"ephemeral"}}],
	  "tool_choice": {"type":"any","disable_parallel_tool_use":true},
	  "temperature": 0.3, "top_p": 0.8, "top_k": 20,
	  "stop_sequences": ["END"],
	  "metadata": {"user_id":"u1"},
	  "thinking": {"type":"enabled","budget_tokens":4096},
	  "output_config": {"format":{"type":"json_schema","schema":{"type":"object"}}},
	  "stream": true
	}`
	oa, stream, perr := IngressToOpenAI([]byte(in))
	if perr != nil {
		t.Fatal(perr)
	}
	if !stream || !strings.Contains(string(oa), `"stream_options":{"include_usage":true}`) || !strings.Contains(string(oa), `"max_completion_tokens":5000`) {
		t.Fatalf("openai body %s", oa)
	}
	c, err := providers.ParseCanonical(oa)
	if err != nil {
		t.Fatalf("%v\n%s", err, oa)
	}
	r, err := BuildRequest(c, "claude-sonnet-4-5", BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	back, _ := json.Marshal(r)
	// Thinking drops temperature/top_k and forced tool choice on the way back (the API
	// rejects them together); compare everything else.
	want := strings.NewReplacer(`"temperature": 0.3, `, ``, `"top_k": 20,`, ``, `"type":"any"`, `"type":"auto"`).Replace(in)
	if a, b := normJSON(t, back), normJSON(t, []byte(want)); a != b {
		t.Fatalf("round trip\n%s\nwant\n%s", a, b)
	}
}

func TestIngressErrors(t *testing.T) {
	for _, body := range []string{
		`[]`,
		`{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}`,
		`{"model":"c","messages":[{"role":"user","content":"x"}]}`,
		`{"model":"c","max_tokens":5,"messages":[]}`,
		`{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`,
		`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`,
	} {
		if _, _, err := IngressToOpenAI([]byte(body)); err == nil || err.Status != 400 {
			t.Errorf("%s: want 400, got %v", body, err)
		}
	}
	env := ErrorEnvelope(&providers.Error{Status: 503, Message: "the upstream provider is overloaded"})
	if string(env) != `{"error":{"message":"the upstream provider is overloaded","type":"overloaded_error"},"type":"error"}` {
		t.Fatalf("envelope %s", env)
	}
}

func TestCompletionToMessageRoundTrip(t *testing.T) {
	u := providers.Usage{InputUncached: 10, CacheRead: 1000, CacheWrite1h: 50, Output: 20}
	comp, _ := providers.MarshalCompletion(&providers.Completion{ID: "chatcmpl-msg_abc", Model: "claude-x", Created: 1, Content: "Hi",
		ThinkingBlocks: []providers.ThinkingBlock{{Type: "thinking", Thinking: "t", Signature: "s"}},
		ToolCalls:      []providers.ToolCall{{ID: "toolu_1", Name: "f", Arguments: `{"a":1}`}}, FinishReason: "tool_calls", Usage: u})
	msg, err := CompletionToMessage(comp, u)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"msg_abc","type":"message","role":"assistant","model":"claude-x","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":50,"cache_read_input_tokens":1000,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":50},"output_tokens":20}}`
	if string(msg) != want {
		t.Fatalf("got  %s\nwant %s", msg, want)
	}
	back, err := ParseMessage(msg, 1)
	if err != nil || back.Content != "Hi" || back.Usage != u || back.ToolCalls[0].Arguments != `{"a":1}` || back.FinishReason != "tool_calls" {
		t.Fatalf("back %+v %v", back, err)
	}
	// Zero usage falls back to the completion's own (1h split is then unknown: 5m).
	msg, _ = CompletionToMessage(comp, providers.Usage{})
	if !strings.Contains(string(msg), `"cache_creation_input_tokens":50`) {
		t.Fatalf("fallback usage %s", msg)
	}
}

// OpenAI chunks → ingress SSE → the adapter's translator → the same content, tool calls,
// finish reason and usage.
func TestIngressStreamRoundTrip(t *testing.T) {
	w := providers.NewChunkWriter("chatcmpl-msg_s", "claude-x", 1)
	u := providers.Usage{InputUncached: 7, CacheRead: 1024, CacheWrite5m: 3, Output: 11}
	chunks := [][]byte{w.Role(), w.Reasoning("th"), w.Content("Hel"), w.Content("lo"), w.ToolCallStart(0, "toolu_a", "f"),
		w.ToolCallArgs(0, `{"x":`), w.ToolCallArgs(0, `1}`), w.ToolCallStart(1, "toolu_b", "g"), w.ToolCallArgs(1, `{}`),
		w.Finish("tool_calls"), w.Usage(u)}
	var out bytes.Buffer
	is := NewIngressStream(&out)
	for _, c := range chunks {
		if err := is.WriteChunk(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := is.Close(providers.Usage{}, nil); err != nil {
		t.Fatal(err)
	}
	sseText := out.String()
	for _, want := range []string{"event: message_start\n", `"type":"thinking_delta"`, "event: content_block_stop\n", `"stop_reason":"tool_use"`, "event: message_stop\n"} {
		if !strings.Contains(sseText, want) {
			t.Fatalf("missing %q in\n%s", want, sseText)
		}
	}
	s := NewStream(io.NopCloser(strings.NewReader(sseText)), func() {}, 0, 1)
	got, err := collect(t, s)
	if err != nil {
		t.Fatal(err)
	}
	var content, reasoning string
	args := map[int]string{}
	for _, c := range got[:len(got)-1] {
		d := c.Choices[0].Delta
		content += d.Content
		reasoning += d.ReasoningContent
		for _, tc := range d.ToolCalls {
			args[tc.Index] += tc.Function.Arguments
		}
	}
	if content != "Hello" || reasoning != "th" || args[0] != `{"x":1}` || args[1] != "{}" || got[0].ID != "chatcmpl-msg_s" {
		t.Fatalf("content %q reasoning %q args %v id %s", content, reasoning, args, got[0].ID)
	}
	if f := got[len(got)-2].Choices[0].FinishReason; f == nil || *f != "tool_calls" {
		t.Fatal("finish reason")
	}
	if s.Usage() != u {
		t.Fatalf("usage %+v want %+v", s.Usage(), u)
	}

	// An error closes the stream with an Anthropic error event.
	out.Reset()
	is = NewIngressStream(&out)
	_ = is.WriteChunk(w.Role())
	_ = is.Close(providers.Usage{}, &providers.Error{Status: 503, Message: "the upstream provider is overloaded"})
	s = NewStream(io.NopCloser(strings.NewReader(out.String())), func() {}, 0, 1)
	_, err = collect(t, s)
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Code != "upstream_overloaded" {
		t.Fatalf("error event: %v\n%s", err, out.String())
	}
}

func TestCountTokens(t *testing.T) {
	n, err := CountTokens([]byte(`{"model":"c","system":"12345678","messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image","source":{"type":"url","url":"https://x"}}]}]}`), nil)
	if err != nil || n != 3+1600+3 {
		t.Fatalf("%d %v", n, err)
	}
	if _, err := CountTokens([]byte(`{"model":"c"}`), nil); err == nil {
		t.Fatal("messages required")
	}
}
