package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, got, "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s differs:\n%s", name, buf.String())
	}
}

func TestBuildRequestGolden(t *testing.T) {
	raw, _ := os.ReadFile("testdata/chat_tools.json")
	chat, err := providers.ParseCanonical(raw)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's gs:// image is one the operator allowed for the caller's workspace.
	ctx := providers.WithAllowedRefs(context.Background(), []string{"gs://bucket/"})
	r, err := BuildRequest(ctx, chat, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	golden(t, "chat_tools.gemini.golden.json", b)
}

func TestBuildRequestErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"messages":[{"role":"user","content":"a"},{"role":"tool","tool_call_id":"nope","content":"x"}]}`, "does not match"},
		{`{"messages":[{"role":"system","content":"a"}]}`, "non-system"},
		{`{"messages":[{"role":"user","content":"a"}],"n":2}`, "n > 1"},
		{`{"messages":[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"1"}}]}]}`, "JSON object"},
	} {
		chat, err := providers.ParseCanonical([]byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		_, err = BuildRequest(context.Background(), chat, BuildOptions{})
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Status != 400 || !strings.Contains(pe.Message, tc.want) {
			t.Errorf("%s: %v", tc.body, err)
		}
	}
}

func TestSanitizeSchema(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"type":"object","additionalProperties":false,"$schema":"x","properties":{"a":{"type":"string","format":"email"}}}`,
			`{"properties":{"a":{"type":"STRING"}},"type":"OBJECT"}`},
		{`{"type":["integer","null"]}`, `{"nullable":true,"type":"INTEGER"}`},
		{`{"anyOf":[{"type":"string"},{"type":"null"}]}`, `{"nullable":true,"type":"STRING"}`},
		{`{"$defs":{"P":{"type":"object","properties":{"x":{"type":"number"}}}},"type":"object","properties":{"p":{"$ref":"#/$defs/P"}}}`,
			`{"properties":{"p":{"properties":{"x":{"type":"NUMBER"}},"type":"OBJECT"}},"type":"OBJECT"}`},
		{`{"const":"x"}`, `{"enum":["x"],"type":"STRING"}`},
		{`{"properties":{"a":{}},"required":["a","b"]}`, `{"properties":{"a":{}},"required":["a"],"type":"OBJECT"}`},
		{`not json`, `{"type":"OBJECT"}`},
	}
	for _, tc := range tests {
		if got := string(SanitizeSchema(json.RawMessage(tc.in))); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
	// Recursive references terminate.
	SanitizeSchema(json.RawMessage(`{"$defs":{"N":{"type":"object","properties":{"n":{"$ref":"#/$defs/N"}}}},"$ref":"#/$defs/N"}`))
}

func TestThoughtSignatureRoundTrip(t *testing.T) {
	sig := strings.Repeat("\x00\xffsig/+=", 40)
	id := CallID("f", 0, []byte(`{}`), sig)
	if got := ThoughtSignature(providers.ToolCall{ID: id}); got != sig {
		t.Fatalf("from id: %q", got)
	}
	if got := ThoughtSignature(providers.ToolCall{ID: "call_x", Extra: Extra("abc")}); got != "abc" {
		t.Fatalf("from extra: %q", got)
	}
	if ThoughtSignature(providers.ToolCall{ID: "call_0123456789abcdef"}) != "" || ThoughtSignature(providers.ToolCall{ID: "toolu_1"}) != "" {
		t.Fatal("signature from plain id")
	}
	first, again := CallID("f", 0, []byte(`{}`), ""), CallID("f", 0, []byte(`{}`), "")
	if first != again || first == CallID("f", 1, []byte(`{}`), "") {
		t.Fatal("ids not stable or not distinct")
	}
	// Through the request translation: the echoed id restores the signature.
	body := `{"messages":[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"` + id + `","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"` + id + `","content":"ok"}]}`
	chat, _ := providers.ParseCanonical([]byte(body))
	r, err := BuildRequest(context.Background(), chat, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Contents[1].Parts[0].ThoughtSignature != sig || r.Contents[2].Parts[0].FunctionResponse.Name != "f" ||
		string(r.Contents[2].Parts[0].FunctionResponse.Response) != `{"result":"ok"}` {
		t.Fatalf("contents %+v", r.Contents)
	}
}

func TestTranslateResponse(t *testing.T) {
	raw, _ := os.ReadFile("testdata/response_tools.json")
	c, err := TranslateResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	c.Model, c.Created = "gemini-2.5-flash", 1
	b, _ := providers.MarshalCompletion(c)
	golden(t, "response_tools.openai.golden.json", b)
	if c.Usage != (providers.Usage{InputUncached: 10, CacheRead: 1800, Output: 52, Reasoning: 40}) || c.FinishReason != "tool_calls" {
		t.Errorf("usage %+v finish %s", c.Usage, c.FinishReason)
	}
	if ThoughtSignature(c.ToolCalls[0]) != "c2lnbmF0dXJl" {
		t.Error("signature lost")
	}

	blocked := `{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}`
	c, err = TranslateResponse([]byte(blocked))
	if err != nil || c.FinishReason != "content_filter" || c.Content != "" || c.Usage.InputUncached != 8 {
		t.Fatalf("blocked: %+v %v", c, err)
	}
	for reason, want := range map[string]string{"MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter", "OTHER": "stop", "NEW_REASON": "stop"} {
		c, _ := TranslateResponse([]byte(`{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"` + reason + `"}]}`))
		if c.FinishReason != want {
			t.Errorf("%s → %s", reason, c.FinishReason)
		}
	}
	if _, err := TranslateResponse([]byte(`{"candidates":[{"finishReason":"MALFORMED_FUNCTION_CALL"}]}`)); err == nil {
		t.Error("malformed call accepted")
	}
}

func collect(t *testing.T, body string) ([]string, error) {
	t.Helper()
	s := newStream(io.NopCloser(strings.NewReader(body)), func() {}, time.Minute, "gemini-2.5-flash", 1)
	defer s.Close()
	var out []string
	for {
		c, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(c))
	}
}

// The documented stream (providers.md §5.5) with \r\n line endings, plus a function call.
func TestStream(t *testing.T) {
	body := "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"It is\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,\"totalTokenCount\":10},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n" +
		"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\" 21°C.\"},{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}},\"thoughtSignature\":\"s\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,\"cachedContentTokenCount\":4,\"candidatesTokenCount\":6,\"thoughtsTokenCount\":40,\"totalTokenCount\":56},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n"
	chunks, err := collect(t, body)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "stream.openai.golden.json", []byte("["+strings.Join(chunks, ",")+"]"))
}

func TestStreamErrors(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		chunks     int
	}{
		{"truncated", "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}\n\n", 502, 2},
		{"error chunk", "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n", 503, 0},
		{"bad json", "data: {\n\n", 502, 0},
	}
	for _, tc := range tests {
		chunks, err := collect(t, tc.body)
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Status != tc.status || len(chunks) != tc.chunks {
			t.Errorf("%s: %v %d chunks", tc.name, err, len(chunks))
		}
	}
	chunks, err := collect(t, "data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":8}}\r\n\r\n")
	if err != nil || len(chunks) != 3 || !strings.Contains(chunks[1], `"content_filter"`) {
		t.Fatalf("blocked stream: %v %v", chunks, err)
	}
}

func TestParseError(t *testing.T) {
	quota := `{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}`
	daily := strings.Replace(quota, "PerMinute", "PerDay", 1)
	tests := []struct {
		status int
		body   string
		want   int
		class  providers.Class
		retry  time.Duration
	}{
		{429, quota, 429, providers.ClassRetryable, 37 * time.Second},
		{429, daily, 503, providers.ClassFailover, 37 * time.Second},
		{400, `{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}`, 400, providers.ClassClient, 0},
		{401, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`, 502, providers.ClassFailover, 0},
		{403, `{"error":{"code":403,"status":"PERMISSION_DENIED"}}`, 502, providers.ClassFailover, 0},
		{404, `{"error":{"code":404,"status":"NOT_FOUND"}}`, 404, providers.ClassFailover, 0},
		{503, `{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`, 503, providers.ClassRetryable, 0},
		{500, `[{"error":{"code":500,"status":"INTERNAL"}}]`, 502, providers.ClassRetryable, 0},
		{504, ``, 504, providers.ClassRetryable, 0},
		{400, `{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}`, 502, providers.ClassFailover, 0},
	}
	for _, tc := range tests {
		e := ParseError(tc.status, http.Header{}, []byte(tc.body))
		if e.Status != tc.want || e.Class != tc.class || e.RetryAfter != tc.retry {
			t.Errorf("%d %s: got %d %v %v", tc.status, tc.body, e.Status, e.Class, e.RetryAfter)
		}
	}
}

func TestEndpoints(t *testing.T) {
	a := &Adapter{cfg: providers.Config{Type: TypeVertex}, base: "https://" + VertexHost("global"), project: "p", location: "global"}
	if got := a.Endpoint("gemini-2.5-pro", true); got != "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse" {
		t.Error(got)
	}
	if got := a.claudeEndpoint("claude-sonnet-4-5@20250929", false); got != "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict" {
		t.Error(got)
	}
	g := &Adapter{cfg: providers.Config{Type: TypeGemini}, base: DefaultGeminiBaseURL}
	if got := g.Endpoint("gemini-2.5-flash", false); got != "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent" {
		t.Error(got)
	}
	if VertexHost("europe-west4") != "europe-west4-aiplatform.googleapis.com" {
		t.Error("regional host")
	}
	if _, err := New(providers.Config{Name: "v", Type: TypeVertex, Options: map[string]string{"project": "p"}}, nil); err == nil {
		t.Error("vertex without credentials accepted")
	}
	if _, err := New(providers.Config{Name: "g", Type: TypeGemini}, nil); err == nil {
		t.Error("gemini without key accepted")
	}
}
