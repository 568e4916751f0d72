package bedrock

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
	"github.com/badtheorylabs/btl-runtime/providers/eventstream"
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

func build(t *testing.T, file string) *Built {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	chat, err := providers.ParseCanonical(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildRequest(context.Background(), chat, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildRequestGolden(t *testing.T) {
	for _, name := range []string{"chat_tools_cache", "chat_json_schema"} {
		t.Run(name, func(t *testing.T) {
			b := build(t, name+".json")
			raw, _ := json.Marshal(b.Request)
			golden(t, name+".converse.golden.json", raw)
		})
	}
	if b := build(t, "chat_json_schema.json"); b.JSONTool != "city" {
		t.Errorf("JSONTool %q", b.JSONTool)
	}
}

func TestBuildRequestRules(t *testing.T) {
	tests := []struct {
		name, body string
		check      func(t *testing.T, r *Request)
		wantErr    string
	}{
		{name: "tool_choice none drops tools", body: `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}`,
			check: func(t *testing.T, r *Request) {
				if r.ToolConfig != nil {
					t.Error("toolConfig kept")
				}
			}},
		{name: "tool_choice none keeps tools with tool history", body: `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":""}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}`,
			check: func(t *testing.T, r *Request) {
				if r.ToolConfig == nil || r.ToolConfig.ToolChoice != nil || len(r.Messages) != 3 {
					t.Errorf("got %+v", r.ToolConfig)
				}
				if string(r.Messages[1].Content[0].ToolUse.Input) != "{}" {
					t.Error("empty arguments not {}")
				}
			}},
		{name: "required and named", body: `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
			check: func(t *testing.T, r *Request) {
				if r.ToolConfig.ToolChoice.Tool == nil || r.ToolConfig.ToolChoice.Tool.Name != "f" {
					t.Error("named choice lost")
				}
			}},
		{name: "consecutive users merge", body: `{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`,
			check: func(t *testing.T, r *Request) {
				if len(r.Messages) != 1 || len(r.Messages[0].Content) != 2 {
					t.Errorf("messages %+v", r.Messages)
				}
			}},
		{name: "schema alongside tools uses outputConfig", body: `{"messages":[{"role":"user","content":"a"}],"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}`,
			check: func(t *testing.T, r *Request) {
				if r.OutputConfig == nil || r.OutputConfig.TextFormat.Structure.JSONSchema.Schema != `{"type":"object"}` {
					t.Errorf("outputConfig %+v", r.OutputConfig)
				}
			}},
		{name: "n>1", body: `{"messages":[{"role":"user","content":"a"}],"n":2}`, wantErr: "n > 1"},
		{name: "bad image", body: `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]}`, wantErr: "not supported"},
		{name: "audio", body: `{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]}]}`, wantErr: "not supported"},
		{name: "bad arguments", body: `{"messages":[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, wantErr: "JSON object"},
		{name: "only system", body: `{"messages":[{"role":"system","content":"a"}]}`, wantErr: "non-system"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chat, err := providers.ParseCanonical([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			b, err := BuildRequest(context.Background(), chat, BuildOptions{})
			if tc.wantErr != "" {
				var pe *providers.Error
				if !errors.As(err, &pe) || pe.Status != 400 || !strings.Contains(pe.Message, tc.wantErr) {
					t.Fatalf("got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, b.Request)
		})
	}
}

func TestTranslateResponse(t *testing.T) {
	raw, _ := os.ReadFile("testdata/converse_response.json")
	c, err := TranslateResponse(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	c.ID, c.Model, c.Created = "chatcmpl-x", "m", 1
	out, _ := providers.MarshalCompletion(c)
	golden(t, "converse_response.openai.golden.json", out)
	if c.Usage != (providers.Usage{InputUncached: 30, CacheRead: 1800, Output: 20}) {
		t.Errorf("usage %+v", c.Usage)
	}

	// The forced JSON tool is the answer's content.
	jr := `{"output":{"message":{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"city","input":{"name": "Paris"}}}]}},"stopReason":"tool_use","usage":{"inputTokens":5,"outputTokens":3,"totalTokens":8,"cacheWriteInputTokens":1200,"cacheDetails":[{"ttl":"1h","inputTokens":1000}]}}`
	c, err = TranslateResponse([]byte(jr), "city")
	if err != nil || c.Content != `{"name":"Paris"}` || c.FinishReason != "stop" || len(c.ToolCalls) != 0 {
		t.Fatalf("json tool: %+v %v", c, err)
	}
	if c.Usage.CacheWrite1h != 1000 || c.Usage.CacheWrite5m != 200 {
		t.Errorf("cache details: %+v", c.Usage)
	}
	if _, err := TranslateResponse([]byte(`{"stopReason":"malformed_tool_use"}`), ""); err == nil {
		t.Error("malformed output accepted")
	}
}

func frames(events ...[2]string) []byte {
	var b []byte
	for _, ev := range events {
		if strings.HasSuffix(ev[0], "Exception") {
			b = eventstream.AppendException(b, ev[0], []byte(ev[1]))
		} else {
			b = eventstream.AppendEvent(b, ev[0], []byte(ev[1]))
		}
	}
	return b
}

func collect(t *testing.T, body []byte, jsonTool string) ([]string, error) {
	t.Helper()
	cw := providers.NewChunkWriter("chatcmpl-1", "m", 1)
	s := newStream(io.NopCloser(bytes.NewReader(body)), func() {}, time.Minute, cw, jsonTool)
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

// The documented event sequence (providers.md §4.5).
func TestStream(t *testing.T) {
	body := frames(
		[2]string{"messageStart", `{"role":"assistant"}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"abc"}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"lo"}}`},
		[2]string{"contentBlockStop", `{"contentBlockIndex":0}`},
		[2]string{"contentBlockStart", `{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_abc","name":"get_weather"}}}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}`},
		[2]string{"contentBlockStop", `{"contentBlockIndex":1}`},
		[2]string{"messageStop", `{"stopReason":"tool_use"}`},
		[2]string{"metadata", `{"usage":{"inputTokens":30,"outputTokens":20,"totalTokens":50,"cacheReadInputTokens":7,"cacheWriteInputTokens":3},"metrics":{"latencyMs":812}}`},
	)
	chunks, err := collect(t, body, "")
	if err != nil {
		t.Fatal(err)
	}
	all := "[" + strings.Join(chunks, ",") + "]"
	golden(t, "stream.openai.golden.json", []byte(all))
}

func TestStreamErrors(t *testing.T) {
	start := [2]string{"messageStart", `{"role":"assistant"}`}
	tests := []struct {
		name       string
		body       []byte
		wantStatus int
		wantCode   string
		wantChunks int
	}{
		{"throttled before output", frames(start, [2]string{"throttlingException", `{"message":"Too many requests"}`}), 429, "rate_limit_exceeded", 0},
		{"model error after text", frames(start, [2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"x"}}`},
			[2]string{"modelStreamErrorException", `{"message":"boom"}`}), 502, "upstream_error", 2},
		{"validation", frames([2]string{"validationException", `{"message":"bad"}`}), 400, "invalid_request", 0},
		{"truncated", frames(start, [2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"x"}}`}), 502, "upstream_stream_truncated", 2},
		{"malformed before output", frames(start, [2]string{"messageStop", `{"stopReason":"malformed_model_output"}`}), 502, "upstream_bad_response", 0},
		{"corrupt frame", func() []byte {
			b := frames(start)
			b[len(b)-1] ^= 1
			return b
		}(), 502, "upstream_stream_error", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chunks, err := collect(t, tc.body, "")
			var pe *providers.Error
			if !errors.As(err, &pe) || pe.Status != tc.wantStatus || pe.Code != tc.wantCode {
				t.Fatalf("got %v", err)
			}
			if len(chunks) != tc.wantChunks {
				t.Fatalf("%d chunks: %v", len(chunks), chunks)
			}
		})
	}
	// No metadata after messageStop: still a clean end.
	chunks, err := collect(t, frames(start, [2]string{"messageStop", `{"stopReason":"end_turn"}`}), "")
	if err != nil || len(chunks) != 2 {
		t.Fatalf("%v %v", chunks, err)
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		status   int
		errType  string
		body     string
		want     int
		class    providers.Class
		noEcho   bool
		retrySec int
	}{
		{403, "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/", `{"message":"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key"}`, 502, providers.ClassConfig, true, 0},
		{403, "", `{"__type":"com.amazon.coral#SignatureDoesNotMatch","message":"x"}`, 502, providers.ClassConfig, true, 0},
		{403, "AccessDeniedException", `{"message":"You don't have access to the model with the specified model ID."}`, 502, providers.ClassFailover, true, 0},
		{404, "ResourceNotFoundException", `{"message":"no"}`, 404, providers.ClassFailover, true, 0},
		{429, "ThrottlingException", `{"message":"Too many requests"}`, 429, providers.ClassRetryable, true, 0},
		{400, "ServiceQuotaExceededException", `{"message":"quota"}`, 503, providers.ClassFailover, true, 0},
		{400, "ValidationException", `{"message":"messages: bad"}`, 400, providers.ClassClient, false, 0},
		{503, "ServiceUnavailableException", `{"Message":"x"}`, 503, providers.ClassRetryable, true, 0},
		{500, "InternalServerException", ``, 502, providers.ClassRetryable, true, 0},
		{408, "ModelTimeoutException", ``, 504, providers.ClassRetryable, true, 0},
	}
	for _, tc := range tests {
		h := http.Header{}
		if tc.errType != "" {
			h.Set("X-Amzn-ErrorType", tc.errType)
		}
		e := ParseError(tc.status, h, []byte(tc.body))
		if e.Status != tc.want || e.Class != tc.class {
			t.Errorf("%d %s: got %d %v", tc.status, tc.errType, e.Status, e.Class)
		}
		if tc.noEcho && strings.Contains(string(e.Envelope()), "Secret") {
			t.Errorf("%s echoes the upstream message", tc.errType)
		}
	}
}

func TestNewOptions(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, err := New(providers.Config{Name: "b", Type: Type, Options: map[string]string{"region": "us-east-1"}}, nil); err == nil {
		t.Error("missing credentials accepted")
	}
	if _, err := New(providers.Config{Name: "b", Type: Type, Options: map[string]string{"access_key_id": "a", "secret_access_key": "s"}}, nil); err == nil {
		t.Error("missing region accepted")
	}
	a, err := New(providers.Config{Name: "b", Type: Type, Options: map[string]string{"region": "eu-west-1", "access_key_id": "a", "secret_access_key": "s"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u := a.(*Adapter).endpoint("arn:aws:bedrock:us-east-1:1:inference-profile/us.x:0", "converse")
	if got := u.String(); got != "https://bedrock-runtime.eu-west-1.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x%3A0/converse" {
		t.Errorf("endpoint %s", got)
	}
}
