package simulated

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func anthPost(t *testing.T, s *Server, path, key, body string) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	req.Header.Set("Anthropic-Version", "2023-06-01")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, rec.Header(), string(b)
}

func TestAnthropicValidation(t *testing.T) {
	s := New(Options{})
	long := strings.Repeat("word ", 1200)
	cc := `,"cache_control":{"type":"ephemeral"}`
	for _, tc := range []struct {
		name, key, body, want string
		status                int
	}{
		{"no key", "", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "x-api-key", 401},
		{"invalid key", "invalid-1", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "invalid x-api-key", 401},
		{"max_tokens", "k", `{"model":"c","messages":[{"role":"user","content":"hi"}]}`, "max_tokens: Field required", 400},
		{"system role", "k", `{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"hi"}]}`, "role", 400},
		{"alternation", "k", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`, "alternate", 400},
		{"temperature", "k", `{"model":"c","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}`, "temperature", 400},
		{"unknown field", "k", `{"model":"c","max_tokens":5,"n":2,"messages":[{"role":"user","content":"hi"}]}`, "n: Extra inputs", 400},
		{"orphan tool_result", "k", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"1"}]}]}`, "tool_use_id", 400},
		{"unanswered tool_use", "k", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},{"role":"user","content":"b"}]}`, "without `tool_result`", 400},
		{"five breakpoints", "k", `{"model":"c","max_tokens":5,"system":[{"type":"text","text":"a"` + cc + `},{"type":"text","text":"b"` + cc + `},{"type":"text","text":"c"` + cc + `},{"type":"text","text":"d"` + cc + `}],"messages":[{"role":"user","content":[{"type":"text","text":"e"` + cc + `}]}]}`, "maximum of 4", 400},
		{"ttl order", "k", `{"model":"c","max_tokens":5,"system":[{"type":"text","text":"a"` + cc + `},{"type":"text","text":"b","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"x"}]}`, "ttl", 400},
		{"empty text", "k", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":""}]}]}`, "non-empty", 400},
		{"ok", "k", `{"model":"c","max_tokens":50,"system":"` + long + `","messages":[{"role":"user","content":"hi"}]}`, `"type":"message"`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := anthPost(t, s, "/v1/messages", tc.key, tc.body)
			if code != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s", code, body)
			}
			if code != 200 && !strings.Contains(body, `"type":"error"`) {
				t.Fatalf("not an Anthropic error envelope: %s", body)
			}
		})
	}
}

func TestAnthropicCaching(t *testing.T) {
	s := New(Options{})
	sys := strings.Repeat("cacheable system prompt text ", 200) // ~5800 bytes ≈ 1450 tokens
	body := `{"model":"claude-sonnet-4-5","max_tokens":100,"system":[{"type":"text","text":"` + sys + `","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"hello there"}]}`
	type usage struct {
		Input         int `json:"input_tokens"`
		Create        int `json:"cache_creation_input_tokens"`
		Read          int `json:"cache_read_input_tokens"`
		CacheCreation struct {
			M5 int `json:"ephemeral_5m_input_tokens"`
			H1 int `json:"ephemeral_1h_input_tokens"`
		} `json:"cache_creation"`
		Output int `json:"output_tokens"`
	}
	get := func(key string) usage {
		code, _, b := anthPost(t, s, "/v1/messages", key, body)
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		var m struct{ Usage usage }
		_ = json.Unmarshal([]byte(b), &m)
		return m.Usage
	}
	u1 := get("k1")
	if u1.Create < 1024 || u1.Read != 0 || u1.CacheCreation.H1 != u1.Create || u1.Input <= 0 || u1.Input > 20 {
		t.Fatalf("first %+v", u1)
	}
	u2 := get("k1")
	if u2.Read != u1.Create || u2.Create != 0 || u2.Input != u1.Input {
		t.Fatalf("second %+v", u2)
	}
	if u3 := get("k2"); u3.Read != 0 || u3.Create != u1.Create {
		t.Fatalf("other key must not hit: %+v", u3)
	}
	rec, ok := s.LastAnthropicRequest()
	if !ok || len(rec.Breakpoints) != 1 || rec.Breakpoints[0].Where != "system[0]" || rec.Breakpoints[0].TTL != "1h" || rec.Header.Get("X-Api-Key") != "***" {
		t.Fatalf("record %+v", rec)
	}
	// Below the model minimum nothing is cached.
	s.Reset()
	body = strings.Replace(body, "claude-sonnet-4-5", "claude-haiku-4-5", 1)
	if u := get("k1"); u.Create != 0 || u.Read != 0 {
		t.Fatalf("haiku 4.5 minimum is 4096: %+v", u)
	}
}

func TestAnthropicStreamAndFaults(t *testing.T) {
	s := New(Options{})
	tools := `"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`
	code, h, body := anthPost(t, s, "/v1/messages", "k", `{"model":"c","max_tokens":50,"stream":true,`+tools+`,"messages":[{"role":"user","content":"weather?"}]}`)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %v", code, h)
	}
	for _, want := range []string{"event: message_start\n", "event: ping\n", `"content_block":{"id":"toolu_`, `"partial_json":""`,
		"event: content_block_stop\n", `"stop_reason":"tool_use"`, "event: message_stop\n"} {
		if !strings.Contains(body, want) {
			t.Fatalf("missing %q in\n%s", want, body)
		}
	}
	code, h, body = anthPost(t, s, "/v1/messages", "k", `{"model":"c","max_tokens":50,"messages":[{"role":"user","content":"hi [sim:status=529,retry_after=2]"}]}`)
	if code != 529 || h.Get("Retry-After") != "2" || !strings.Contains(body, "overloaded_error") {
		t.Fatalf("529: %d %v %s", code, h, body)
	}
	_, _, body = anthPost(t, s, "/v1/messages", "k", `{"model":"c","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi [sim:stream_error_after=1]"}]}`)
	if !strings.Contains(body, "event: error\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"},\"type\":\"error\"}") ||
		strings.Contains(body, "message_stop") {
		t.Fatalf("stream error:\n%s", body)
	}
	// Vertex route: model in the URL, bearer auth, anthropic_version in the body.
	req := httptest.NewRequest(http.MethodPost, "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x@1:rawPredict",
		strings.NewReader(`{"anthropic_version":"vertex-2023-10-16","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"model":"claude-x@1"`) {
		t.Fatalf("vertex: %d %s", rec.Code, rec.Body)
	}
}
