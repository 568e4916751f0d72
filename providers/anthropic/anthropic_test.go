package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// normJSON re-encodes a JSON document so that key order and spacing do not matter.
func normJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("bad JSON %s: %v", raw, err)
	}
	out, _ := json.MarshalIndent(v, "", " ")
	return string(out)
}

func TestGoldenRequests(t *testing.T) {
	files, _ := filepath.Glob("testdata/request_*.json")
	if len(files) == 0 {
		t.Fatal("no golden requests")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var g struct {
				OpenAI    json.RawMessage `json:"openai"`
				Anthropic json.RawMessage `json:"anthropic"`
			}
			raw, _ := os.ReadFile(f)
			if err := json.Unmarshal(raw, &g); err != nil {
				t.Fatal(err)
			}
			var want struct {
				Model  string `json:"model"`
				Stream bool   `json:"stream"`
			}
			_ = json.Unmarshal(g.Anthropic, &want)
			got, err := Body(g.OpenAI, want.Model, want.Stream, false, BuildOptions{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := normJSON(t, got), normJSON(t, g.Anthropic); a != b {
				t.Fatalf("got\n%s\nwant\n%s", a, b)
			}
			// Vertex: same body minus model, plus anthropic_version.
			vb, err := Body(g.OpenAI, want.Model, want.Stream, true, BuildOptions{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			_ = json.Unmarshal(vb, &m)
			if _, ok := m["model"]; ok || string(m["anthropic_version"]) != `"vertex-2023-10-16"` {
				t.Fatalf("vertex body: %s", vb)
			}
		})
	}
}

func TestGoldenResponses(t *testing.T) {
	files, _ := filepath.Glob("testdata/response_*.json")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var g struct {
				Anthropic json.RawMessage `json:"anthropic"`
				OpenAI    json.RawMessage `json:"openai"`
				Usage     providers.Usage `json:"usage"`
			}
			raw, _ := os.ReadFile(f)
			if err := json.Unmarshal(raw, &g); err != nil {
				t.Fatal(err)
			}
			c, err := ParseMessage(g.Anthropic, 1700000000)
			if err != nil {
				t.Fatal(err)
			}
			if c.Usage != g.Usage {
				t.Fatalf("usage %+v, want %+v", c.Usage, g.Usage)
			}
			out, _ := providers.MarshalCompletion(c)
			if a, b := normJSON(t, out), normJSON(t, g.OpenAI); a != b {
				t.Fatalf("got\n%s\nwant\n%s", a, b)
			}
		})
	}
}

type chunk struct {
	ID      string `json:"id"`
	Choices []struct {
		Delta struct {
			Role             string `json:"role"`
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			ToolCalls        []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *providers.OpenAIUsage `json:"usage"`
}

func collect(t *testing.T, s providers.ChunkStream) ([]chunk, error) {
	t.Helper()
	var out []chunk
	for {
		p, err := s.Next()
		if err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		var c chunk
		if jerr := json.Unmarshal(p, &c); jerr != nil {
			t.Fatalf("chunk %s: %v", p, jerr)
		}
		out = append(out, c)
	}
}

func TestStreamTranslation(t *testing.T) {
	raw, _ := os.ReadFile("testdata/stream_tool_use.sse")
	s := NewStream(io.NopCloser(bytes.NewReader(raw)), func() {}, time.Minute, 1)
	defer s.Close()
	chunks, err := collect(t, s)
	if err != nil {
		t.Fatal(err)
	}
	var content, reasoning string
	args := map[int]string{}
	ids := map[int]string{}
	for _, c := range chunks[:len(chunks)-1] {
		if c.ID != "chatcmpl-msg_1" || len(c.Choices) != 1 {
			t.Fatalf("bad chunk %+v", c)
		}
		d := c.Choices[0].Delta
		content += d.Content
		reasoning += d.ReasoningContent
		for _, tc := range d.ToolCalls {
			args[tc.Index] += tc.Function.Arguments
			if tc.ID != "" {
				ids[tc.Index] = tc.ID + "/" + tc.Function.Name
			}
		}
	}
	if chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Fatal("first chunk must carry the role")
	}
	if content != "Hello" || reasoning != "Let me think" {
		t.Fatalf("content %q reasoning %q", content, reasoning)
	}
	if !reflect.DeepEqual(args, map[int]string{0: `{"city": "Paris"}`, 1: "{}"}) ||
		ids[0] != "toolu_01A/get_weather" || ids[1] != "toolu_01B/get_time" {
		t.Fatalf("tool calls %v %v", args, ids)
	}
	fin := chunks[len(chunks)-2]
	if fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("finish %+v", fin)
	}
	last := chunks[len(chunks)-1]
	if len(last.Choices) != 0 || last.Usage == nil || last.Usage.PromptTokens != 1125 || last.Usage.CompletionTokens != 89 ||
		last.Usage.PromptTokensDetails.CacheWriteTokens != 1100 {
		t.Fatalf("usage chunk %+v", last.Usage)
	}
	if u := s.Usage(); u.CacheWrite1h != 1100 || u.InputUncached != 25 || u.Output != 89 {
		t.Fatalf("normal usage %+v", u)
	}
}

func TestStreamErrors(t *testing.T) {
	head := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n"
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"overloaded", head + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", 503, "upstream_overloaded"},
		{"api error", head + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n", 502, "upstream_error"},
		{"truncated", head, 502, "upstream_stream_truncated"},
		{"garbage", head + "event: content_block_delta\ndata: {not json\n\n", 502, "upstream_bad_response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStream(io.NopCloser(strings.NewReader(tc.body)), func() {}, 0, 1)
			chunks, err := collect(t, s)
			var e *providers.Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("got %v", err)
			}
			if len(chunks) != 1 {
				t.Fatalf("want the role chunk before the error, got %d", len(chunks))
			}
		})
	}
}

func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   int
		class  providers.Class
		code   string
		msg    string
	}{
		{400, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`, 400, providers.ClassClient, "", "max_tokens: Field required"},
		{401, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-secret"}}`, 502, providers.ClassFailover, "upstream_auth_failed", "the upstream provider rejected the gateway's credentials"},
		{403, `{"type":"error","error":{"type":"permission_error","message":"no"}}`, 502, providers.ClassFailover, "upstream_auth_failed", ""},
		{404, `{"type":"error","error":{"type":"not_found_error","message":"model: x"}}`, 404, providers.ClassFailover, "model_not_found", ""},
		{413, `{"type":"error","error":{"type":"request_too_large","message":"too big"}}`, 413, providers.ClassClient, "request_too_large", ""},
		{429, `{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}`, 429, providers.ClassRetryable, "rate_limit_exceeded", ""},
		{429, `{"type":"error","error":{"type":"rate_limit_error","message":"spend","details":{"error_code":"enforced_spend_limit_reached"}}}`, 503, providers.ClassFailover, "upstream_quota_exhausted", ""},
		{500, `{"type":"error","error":{"type":"api_error","message":"x"}}`, 502, providers.ClassRetryable, "upstream_error", ""},
		{529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 503, providers.ClassRetryable, "upstream_overloaded", ""},
		{504, `{"type":"error","error":{"type":"timeout_error","message":"x"}}`, 504, providers.ClassRetryable, "upstream_timeout", ""},
	} {
		e := ParseError(tc.status, http.Header{"Retry-After": {"3"}}, []byte(tc.body))
		if e.Status != tc.want || e.Class != tc.class || e.Code != tc.code || (tc.msg != "" && e.Message != tc.msg) {
			t.Errorf("%d %s: got %d %v %q %q", tc.status, tc.body, e.Status, e.Class, e.Code, e.Message)
		}
		if strings.Contains(e.Message, "sk-ant") {
			t.Errorf("secret leaked: %q", e.Message)
		}
		if e.RetryAfter != 3*time.Second {
			t.Errorf("retry-after %v", e.RetryAfter)
		}
	}
}

func TestBuildRequestRules(t *testing.T) {
	parse := func(body string) *providers.Chat {
		c, err := providers.ParseCanonical([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// n > 1 is rejected.
	_, err := BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}`), "claude", BuildOptions{})
	var e *providers.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Param != "n" {
		t.Fatalf("n>1: %v", err)
	}
	// Defaults: max_tokens by model and from options; temperature clamp low.
	r, _ := BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":-1}`), "claude-opus-4-5", BuildOptions{})
	if r.MaxTokens != 8192 || *r.Temperature != 0 {
		t.Fatalf("defaults %+v", r)
	}
	r, _ = BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":"x"}]}`), "claude-opus-4-5", BuildOptions{DefaultMaxTokens: 1000})
	if r.MaxTokens != 1000 {
		t.Fatalf("option default %d", r.MaxTokens)
	}
	// reasoning_effort enables thinking, drops temperature, keeps max_tokens above budget.
	r, _ = BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"medium","max_tokens":100,"temperature":0.5}`), "c", BuildOptions{})
	if r.Thinking == nil || r.Thinking.BudgetTokens != 4096 || r.MaxTokens != 4196 || r.Temperature != nil {
		t.Fatalf("thinking %+v", r)
	}
	// Signed thinking blocks are replayed before text and tool_use; tool choice none kept.
	r, err = BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":"x"},
		{"role":"assistant","content":"ok","thinking_blocks":[{"type":"thinking","thinking":"t","signature":"s"}],"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":""}}]},
		{"role":"tool","tool_call_id":"a","content":"r"}],
		"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}`), "c", BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(r)
	for _, want := range []string{`{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"ok"},{"type":"tool_use","id":"a","name":"f","input":{}}`,
		`"tool_choice":{"type":"none"}`, `"input_schema":{"type":"object","properties":{}}`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("missing %s in %s", want, body)
		}
	}
	// Bad tool arguments are a 400.
	_, err = BuildRequest(parse(`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`), "c", BuildOptions{})
	if !errors.As(err, &e) || e.Status != 400 {
		t.Fatalf("bad args: %v", err)
	}
	// json_object becomes an instruction; audio is rejected.
	r, _ = BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}`), "c", BuildOptions{})
	if len(r.System) != 1 || r.System[0].Text != jsonObjectInstruction {
		t.Fatalf("json_object %+v", r.System)
	}
	_, err = BuildRequest(parse(`{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}`), "c", BuildOptions{})
	if !errors.As(err, &e) || e.Status != 400 {
		t.Fatalf("audio: %v", err)
	}
}

func TestAdapterHeadersAndVertex(t *testing.T) {
	var got *http.Request
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		gotBody, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_1")
		_, _ = io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}`)
	}))
	defer srv.Close()
	body := []byte(`{"model":"p/claude","messages":[{"role":"user","content":"hello"}]}`)
	req, _ := providers.ParseChatRequest(body)

	a, err := New(providers.Config{Name: "anth", Type: Type, BaseURL: srv.URL + "/v1", APIKey: "sk-test",
		Options: map[string]string{"anthropic_beta": "a,b"}}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.Chat(context.Background(), &providers.Call{Request: req, Body: body, UpstreamModel: "claude-x"})
	if err != nil {
		t.Fatal(err)
	}
	if got.URL.Path != "/v1/messages" || got.Header.Get("X-Api-Key") != "sk-test" || got.Header.Get("Anthropic-Version") != DefaultVersion ||
		got.Header.Get("Anthropic-Beta") != "a,b" || !strings.Contains(string(gotBody), `"model":"claude-x"`) {
		t.Fatalf("request %v %s", got.Header, gotBody)
	}
	if resp.UpstreamRequestID != "req_1" || resp.Usage == nil || resp.Usage.InputUncached != 3 || !strings.Contains(string(resp.Body), `"content":"hi"`) {
		t.Fatalf("response %+v %s", resp, resp.Body)
	}

	v := NewVertexClaude(providers.Config{Name: "vx", Type: "vertex"}, srv.Client(),
		func(context.Context) (string, error) { return "ya29.token", nil },
		func(model string, stream bool) string {
			return srv.URL + "/v1/projects/p/locations/us-east5/publishers/anthropic/models/" + model + ":rawPredict"
		})
	if _, err := v.Chat(context.Background(), &providers.Call{Request: req, Body: body, UpstreamModel: "claude-x@1"}); err != nil {
		t.Fatal(err)
	}
	if v.Type() != "vertex" || got.Header.Get("Authorization") != "Bearer ya29.token" || got.Header.Get("X-Api-Key") != "" ||
		!strings.HasSuffix(got.URL.Path, "/models/claude-x@1:rawPredict") ||
		strings.Contains(string(gotBody), `"model"`) || !strings.Contains(string(gotBody), `"anthropic_version":"vertex-2023-10-16"`) {
		t.Fatalf("vertex request %s %v %s", got.URL, got.Header, gotBody)
	}
	if _, err := New(providers.Config{Name: "x", Type: Type}, nil); err == nil {
		t.Fatal("missing api_key must fail")
	}
}

func FuzzTranslator(f *testing.F) {
	raw, _ := os.ReadFile("testdata/stream_tool_use.sse")
	f.Add(raw)
	f.Add([]byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n"))
	f.Add([]byte("data: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := NewStream(io.NopCloser(bytes.NewReader(in)), func() {}, 0, 1)
		for range 10000 {
			p, err := s.Next()
			if err != nil {
				return
			}
			if !json.Valid(p) {
				t.Fatalf("invalid chunk %s", p)
			}
		}
		t.Fatal("stream did not end")
	})
}
