package providers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseCanonicalFull(t *testing.T) {
	body := `{
	  "model": "m",
	  "messages": [
	    {"role": "developer", "content": "Be terse."},
	    {"role": "system", "content": [{"type":"text","text":"Long doc","cache_control":{"type":"ephemeral","ttl":"1h"}}]},
	    {"role": "user", "content": [
	      {"type":"text","text":"What is this?"},
	      {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}},
	      {"type":"image_url","image_url":{"url":"https://example.com/a.jpg"}},
	      {"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}}
	    ]},
	    {"role": "assistant", "content": null, "reasoning_content": "hmm",
	     "thinking_blocks": [{"type":"thinking","thinking":"hmm","signature":"sig=="}],
	     "tool_calls": [{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
	                    {"id":"call_2","type":"function","function":{"name":"get_time","arguments":{"tz":"CET"}},"extra_content":{"google":{"thought_signature":"x"}}}]},
	    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"},
	    {"role": "tool", "tool_call_id": "call_2", "content": [{"type":"text","text":"12:00"}], "cache_control":{"type":"ephemeral"}}
	  ],
	  "tools": [{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true},"cache_control":{"type":"ephemeral"}}],
	  "tool_choice": {"type":"function","function":{"name":"get_weather"}},
	  "parallel_tool_calls": false,
	  "response_format": {"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","b":1,"a":2},"strict":true}},
	  "max_tokens": 100, "max_completion_tokens": 200,
	  "temperature": 1.5, "top_p": 0.9, "stop": "END", "seed": 7, "n": 1, "user": "u1",
	  "metadata": {"k":"v"}, "stream": true, "stream_options": {"include_usage": true}, "reasoning_effort": "low"
	}`
	c, err := ParseCanonical([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if c.Model != "m" || c.MaxTokens != 200 || *c.Temperature != 1.5 || *c.TopP != 0.9 || *c.Seed != 7 || c.N != 1 ||
		c.User != "u1" || c.Metadata["k"] != "v" || !c.Stream || !c.IncludeUsage || c.ReasoningEffort != "low" {
		t.Fatalf("scalars: %+v", c)
	}
	if !reflect.DeepEqual(c.Stop, []string{"END"}) {
		t.Fatalf("stop %v", c.Stop)
	}
	if c.ParallelToolCalls == nil || *c.ParallelToolCalls {
		t.Fatal("parallel_tool_calls")
	}
	if *c.ToolChoice != (ToolChoice{Mode: ToolChoiceFunction, Name: "get_weather"}) {
		t.Fatalf("tool choice %+v", c.ToolChoice)
	}
	rf := c.ResponseFormat
	if rf.Type != FormatJSONSchema || rf.Name != "x" || string(rf.Schema) != `{"type":"object","b":1,"a":2}` || !*rf.Strict {
		t.Fatalf("response format %+v", rf)
	}
	if len(c.Tools) != 1 || c.Tools[0].Name != "get_weather" || !*c.Tools[0].Strict || c.Tools[0].CacheControl == nil ||
		!strings.Contains(string(c.Tools[0].Parameters), `"city"`) {
		t.Fatalf("tools %+v", c.Tools)
	}
	if len(c.Messages) != 6 {
		t.Fatalf("messages %d", len(c.Messages))
	}
	sys, rest := c.SplitSystem()
	if len(sys) != 2 || sys[0].Text != "Be terse." || sys[1].CacheControl.TTL != "1h" || len(rest) != 4 {
		t.Fatalf("split system %+v", sys)
	}
	u := c.Messages[2]
	if len(u.Content) != 4 || u.Content[1].Image.Detail != "low" || u.Content[2].Image.URL != "https://example.com/a.jpg" ||
		u.Content[3].Type != PartInputAudio || len(u.Content[3].Raw) == 0 {
		t.Fatalf("user parts %+v", u.Content)
	}
	mt, b64, ok := u.Content[1].Image.Inline()
	if !ok || mt != "image/png" || b64 != "iVBORw0KGgo=" {
		t.Fatalf("inline %q %q %v", mt, b64, ok)
	}
	if _, _, ok := u.Content[2].Image.Inline(); ok {
		t.Fatal("http URL is not inline")
	}
	a := c.Messages[3]
	if len(a.Content) != 0 || len(a.ToolCalls) != 2 || a.ToolCalls[0].Arguments != `{"city":"Paris"}` ||
		a.ToolCalls[1].Arguments != `{"tz":"CET"}` || len(a.ToolCalls[1].Extra) == 0 {
		t.Fatalf("assistant %+v", a)
	}
	if a.Reasoning == nil || a.Reasoning.Content != "hmm" || a.Reasoning.Blocks[0].Signature != "sig==" {
		t.Fatalf("reasoning %+v", a.Reasoning)
	}
	if c.Messages[4].ToolCallID != "call_1" || c.Messages[4].Text() != `{"temp":21}` ||
		c.Messages[5].Text() != "12:00" || c.Messages[5].CacheControl == nil {
		t.Fatalf("tool messages %+v", c.Messages[4:])
	}
}

func TestParseCanonicalVariants(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		check func(*Chat) bool
	}{
		{"max_tokens only", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":9}`,
			func(c *Chat) bool {
				return c.MaxTokens == 9 && c.N == 1 && c.ToolChoice == nil && c.ResponseFormat == nil
			}},
		{"stop array", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["a","b"]}`,
			func(c *Chat) bool { return reflect.DeepEqual(c.Stop, []string{"a", "b"}) }},
		{"tool_choice required", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"required"}`,
			func(c *Chat) bool { return c.ToolChoice.Mode == ToolChoiceRequired }},
		{"tool_choice none", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"none"}`,
			func(c *Chat) bool { return c.ToolChoice.Mode == ToolChoiceNone }},
		{"json_object", `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`,
			func(c *Chat) bool { return c.ResponseFormat.Type == FormatJSONObject }},
		{"text format is nil", `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"}}`,
			func(c *Chat) bool { return c.ResponseFormat == nil }},
		{"n", `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":3}`,
			func(c *Chat) bool { return c.N == 3 }},
		{"top-level cache_control", `{"model":"m","messages":[{"role":"user","content":"hi"}],"cache_control":{"type":"ephemeral"}}`,
			func(c *Chat) bool { return c.CacheControl != nil && c.CacheControl.Type == "ephemeral" }},
		{"deprecated function message", `{"model":"m","messages":[{"role":"function","name":"f","content":"1"}]}`,
			func(c *Chat) bool { return c.Messages[0].Role == RoleTool && c.Messages[0].ToolCallID == "f" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCanonical([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected %+v", c)
			}
		})
	}
}

func TestParseCanonicalErrors(t *testing.T) {
	for _, tc := range []struct{ body, param string }{
		{`[]`, ""},
		{`{"model":"m","messages":[]}`, "messages"},
		{`{"model":"m","messages":[{"role":"robot","content":"x"}]}`, "messages[0].role"},
		{`{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{`{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0].tool_call_id"},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0].content[0].image_url.url"},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}`, "tool_choice"},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}`, "response_format.type"},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"stop":5}`, "stop"},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}`, "max_tokens"},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}`, "tools[0].function.name"},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, "temperature"},
	} {
		_, err := ParseCanonical([]byte(tc.body))
		var e *Error
		if !errors.As(err, &e) || e.Status != 400 || e.Param != tc.param {
			t.Errorf("%s: got %v (param %q), want 400 param %q", tc.body, err, func() string {
				if e != nil {
					return e.Param
				}
				return ""
			}(), tc.param)
		}
	}
}

func TestFinishMappings(t *testing.T) {
	for in, want := range map[string]string{"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
		"model_context_window_exceeded": "length", "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter", "new": "stop"} {
		if got := FinishFromAnthropic(in); got != want {
			t.Errorf("anthropic %s: %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{"guardrail_intervened": "content_filter", "tool_use": "tool_calls", "max_tokens": "length", "end_turn": "stop"} {
		if got := FinishFromBedrock(in); got != want {
			t.Errorf("bedrock %s: %s, want %s", in, got, want)
		}
	}
	if FinishFromGemini("STOP", true) != "tool_calls" || FinishFromGemini("STOP", false) != "stop" ||
		FinishFromGemini("SAFETY", false) != "content_filter" || FinishFromGemini("MAX_TOKENS", true) != "length" {
		t.Error("gemini mapping")
	}
}

func TestMarshalCompletion(t *testing.T) {
	raw, err := MarshalCompletion(&Completion{ID: "chatcmpl-1", Model: "m", Created: 5, Content: "hi",
		ToolCalls:    []ToolCall{{ID: "c1", Name: "f", Arguments: `{"a":1}`}},
		FinishReason: FinishToolCalls,
		Usage:        Usage{InputUncached: 10, CacheRead: 100, CacheWrite5m: 20, CacheWrite1h: 5, Output: 7, Reasoning: 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"chatcmpl-1","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":135,"completion_tokens":7,"total_tokens":142,"prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":25},"completion_tokens_details":{"reasoning_tokens":2}}}`
	if string(raw) != want {
		t.Fatalf("got  %s\nwant %s", raw, want)
	}
	u, ok := ParseOpenAIUsage(mustField(t, raw, "usage"))
	if !ok || u.PromptTokens() != 135 || u.CacheRead != 100 || u.Output != 7 {
		t.Fatalf("round trip usage %+v", u)
	}
	// Tool calls without text: content is omitted rather than "".
	raw, _ = MarshalCompletion(&Completion{ToolCalls: []ToolCall{{ID: "c", Name: "f", Arguments: "{}"}}})
	if !strings.Contains(string(raw), `"content":null`) {
		t.Fatalf("content should be null: %s", raw)
	}
}

func mustField(t *testing.T, doc []byte, key string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	return m[key]
}

func TestChunkWriter(t *testing.T) {
	w := NewChunkWriter("chatcmpl-x", "claude", 9)
	chunks := [][]byte{w.Role(), w.Content("He\"llo"), w.Reasoning("think"), w.ToolCallStart(0, "call_1", "f"),
		w.ToolCallArgs(0, `{"a":`), w.Finish(FinishToolCalls), w.Usage(Usage{InputUncached: 3, CacheRead: 4, CacheWrite1h: 2, Output: 5})}
	for _, c := range chunks {
		var v struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			Model   string `json:"model"`
			Choices []struct {
				Index        int             `json:"index"`
				Delta        json.RawMessage `json:"delta"`
				FinishReason *string         `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(c, &v); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if v.ID != "chatcmpl-x" || v.Object != "chat.completion.chunk" || v.Created != 9 || v.Model != "claude" {
			t.Fatalf("header %s", c)
		}
	}
	if string(chunks[1]) != `{"id":"chatcmpl-x","object":"chat.completion.chunk","created":9,"model":"claude","choices":[{"index":0,"delta":{"content":"He\"llo"},"logprobs":null,"finish_reason":null}],"usage":null}` {
		t.Fatalf("content chunk %s", chunks[1])
	}
	if !strings.Contains(string(chunks[3]), `"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]`) {
		t.Fatalf("tool start %s", chunks[3])
	}
	if !strings.Contains(string(chunks[4]), `"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]`) {
		t.Fatalf("tool args %s", chunks[4])
	}
	if !strings.Contains(string(chunks[5]), `"delta":{},"logprobs":null,"finish_reason":"tool_calls"`) {
		t.Fatalf("finish %s", chunks[5])
	}
	if !strings.Contains(string(chunks[6]), `"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":2}`) {
		t.Fatalf("usage %s", chunks[6])
	}
}

func TestFetchImage(t *testing.T) {
	png := []byte("\x89PNG\r\n\x1a\n0000")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(png)
		case "/big":
			_, _ = w.Write(make([]byte, 2048))
		case "/redirect":
			http.Redirect(w, r, "/a.png", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	// Loopback is refused by default, also behind a redirect.
	for _, p := range []string{"/a.png", "/redirect"} {
		_, err := FetchImage(ctx, srv.URL+p, ImageLimits{})
		var e *Error
		if !errors.As(err, &e) || e.Code != "invalid_image_url" {
			t.Fatalf("%s: want private-address refusal, got %v", p, err)
		}
	}
	img, err := FetchImage(ctx, srv.URL+"/redirect", ImageLimits{AllowPrivate: true})
	if err != nil || img.MediaType != "image/png" || string(img.Data) != string(png) {
		t.Fatalf("fetch: %v %+v", err, img)
	}
	if _, err := FetchImage(ctx, srv.URL+"/big", ImageLimits{AllowPrivate: true, MaxBytes: 1024}); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("size limit: %v", err)
	}
	if _, err := FetchImage(ctx, srv.URL+"/missing", ImageLimits{AllowPrivate: true}); err == nil {
		t.Fatal("404 must fail")
	}
	img, err = FetchImage(ctx, "data:image/gif;base64,R0lGODlh", ImageLimits{})
	if err != nil || img.MediaType != "image/gif" || string(img.Data) != "GIF89a" {
		t.Fatalf("data URL: %v %+v", err, img)
	}
	if _, err := FetchImage(ctx, "file:///etc/passwd", ImageLimits{}); err == nil {
		t.Fatal("file URL must fail")
	}
}

func TestIsPublicAddr(t *testing.T) {
	for s, want := range map[string]bool{"8.8.8.8": true, "127.0.0.1": false, "10.1.2.3": false, "169.254.169.254": false,
		"::1": false, "fe80::1": false, "::ffff:127.0.0.1": false, "100.64.1.1": false, "2606:4700::1111": true, "0.0.0.0": false} {
		if got := IsPublicAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("%s: %v", s, got)
		}
	}
}

// TestHostileSSRFAddressForms: image URLs must never make the gateway connect to its own
// network. Checked on the address (the dialer's Control function refuses these before any
// packet leaves), so the private and metadata ranges are tested without dialing them.
func TestHostileSSRFAddressForms(t *testing.T) {
	for _, s := range []string{
		"127.0.0.1", "127.255.255.254", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1",
		"10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
		"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "fe80::1", "fe80::a9fe:a9fe", "fc00::1",
		"100.64.0.1", "192.0.0.192", "198.18.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
		"64:ff9b::a00:1", "64:ff9b::7f00:1", "2001:db8::1", "ff02::1",
	} {
		if IsPublicAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s is treated as public", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"} {
		if !IsPublicAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s is treated as non-public", s)
		}
	}
}
