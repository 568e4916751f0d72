package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/anthropic"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// Conformance of the anthropic provider type: the official OpenAI client talks to the gateway,
// the gateway talks Anthropic Messages to the simulator, and the answers must look exactly like
// an OpenAI upstream's.

const anthModel = "anth/claude-sonnet-4-5"

// anthGateway runs the full handler chain with an anthropic provider on the simulator. A
// second provider with a revoked key exercises credential errors.
func anthGateway(t *testing.T) (string, *simulated.Server) {
	t.Helper()
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	block := `btl {
		provider anth anthropic {
			base_url ` + srv.URL + `
			api_key sk-ant-test-key
		}
		provider revoked anthropic {
			base_url ` + srv.URL + `
			api_key invalid-sk-ant-secret-123
		}
	}`
	return startGateway(t, tl.withStorage(block), fullChain), sim
}

// tinyPNG is a 1×1 PNG.
const tinyPNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

var weatherTool = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name:        "get_weather",
	Description: openai.String("Current weather for a city"),
	Parameters: shared.FunctionParameters{
		"type":       "object",
		"properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required":   []string{"city"},
	},
})

// anthResult is what both the stream and the non-stream path are reduced to.
type anthResult struct {
	content   string
	toolCalls []openai.ChatCompletionMessageToolCallUnion
	finish    string
	usage     openai.CompletionUsage
}

func runChat(t *testing.T, client openai.Client, params openai.ChatCompletionNewParams, stream bool) anthResult {
	t.Helper()
	ctx := context.Background()
	if !stream {
		resp, err := client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatalf("non-stream: %v", err)
		}
		if resp.Object != "chat.completion" || len(resp.Choices) != 1 || resp.ID == "" || resp.Created == 0 {
			t.Fatalf("bad completion shape: %s", resp.RawJSON())
		}
		m := resp.Choices[0].Message
		if m.Role != "assistant" {
			t.Fatalf("role %q", m.Role)
		}
		return anthResult{content: m.Content, toolCalls: m.ToolCalls, finish: resp.Choices[0].FinishReason, usage: resp.Usage}
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	id := ""
	for s.Next() {
		c := s.Current()
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("chunk object %q", c.Object)
		}
		if id == "" {
			id = c.ID
		} else if c.ID != id {
			t.Fatalf("chunk ids differ: %s vs %s", c.ID, id)
		}
		acc.AddChunk(c)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Choices) != 1 {
		t.Fatalf("stream choices %d", len(acc.Choices))
	}
	m := acc.Choices[0].Message
	return anthResult{content: m.Content, toolCalls: m.ToolCalls, finish: acc.Choices[0].FinishReason, usage: acc.Usage}
}

func TestAnthropicConformanceMatrix(t *testing.T) {
	base, sim := anthGateway(t)
	// Conformance is about the adapter's translation: the optimizer (which would add its own
	// output cap and cache markers) stays out of the way.
	client := sdk(base, option.WithHeader("X-Btl-Optimize", "off"))
	schema := shared.ResponseFormatJSONSchemaJSONSchemaParam{
		Name:   "person",
		Strict: openai.Bool(true),
		Schema: map[string]any{
			"type":                 "object",
			"properties":           map[string]any{"name": map[string]any{"type": "string"}, "age": map[string]any{"type": "integer"}},
			"required":             []string{"name", "age"},
			"additionalProperties": false,
		},
	}
	for _, stream := range []bool{false, true} {
		mode := map[bool]string{false: "non-stream", true: "stream"}[stream]

		t.Run("text/"+mode, func(t *testing.T) {
			r := runChat(t, client, openai.ChatCompletionNewParams{Model: anthModel, Messages: []openai.ChatCompletionMessageParamUnion{
				openai.SystemMessage("You are terse."), openai.UserMessage("Say hello"),
			}, Temperature: openai.Float(1.6)}, stream)
			if r.finish != "stop" || !strings.HasPrefix(r.content, "Simulated answer: Say hello") {
				t.Fatalf("%+v", r)
			}
			if r.usage.PromptTokens == 0 || r.usage.CompletionTokens == 0 || r.usage.TotalTokens != r.usage.PromptTokens+r.usage.CompletionTokens {
				t.Fatalf("usage %+v", r.usage)
			}
			rec, _ := sim.LastAnthropicRequest()
			if rec.Path != "/v1/messages" || rec.Header.Get("Anthropic-Version") != "2023-06-01" || rec.Header.Get("X-Api-Key") != "***" ||
				!strings.Contains(string(rec.Body), `"system":[{"type":"text","text":"You are terse."}]`) ||
				!strings.Contains(string(rec.Body), `"temperature":1`) || !strings.Contains(string(rec.Body), `"max_tokens":8192`) {
				t.Fatalf("upstream request %+v %s", rec.Header, rec.Body)
			}
		})

		t.Run("tools/"+mode, func(t *testing.T) {
			msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")}
			r := runChat(t, client, openai.ChatCompletionNewParams{Model: anthModel, Messages: msgs,
				Tools: []openai.ChatCompletionToolUnionParam{weatherTool}}, stream)
			if r.finish != "tool_calls" || len(r.toolCalls) != 1 {
				t.Fatalf("first turn %+v", r)
			}
			tc := r.toolCalls[0]
			var args map[string]any
			if tc.Function.Name != "get_weather" || !strings.HasPrefix(tc.ID, "toolu_") || json.Unmarshal([]byte(tc.Function.Arguments), &args) != nil || args["city"] == nil {
				t.Fatalf("tool call %+v", tc)
			}
			msgs = append(msgs,
				openai.ChatCompletionMessageParamUnion{OfAssistant: &openai.ChatCompletionAssistantMessageParam{
					ToolCalls: []openai.ChatCompletionMessageToolCallUnionParam{{OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
						ID: tc.ID, Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{Name: tc.Function.Name, Arguments: tc.Function.Arguments},
					}}},
				}},
				openai.ToolMessage(`{"temp_c":21}`, tc.ID))
			r = runChat(t, client, openai.ChatCompletionNewParams{Model: anthModel, Messages: msgs,
				Tools: []openai.ChatCompletionToolUnionParam{weatherTool}}, stream)
			if r.finish != "stop" || !strings.Contains(r.content, `the tool returned {"temp_c":21}`) || len(r.toolCalls) != 0 {
				t.Fatalf("second turn %+v", r)
			}
			rec, _ := sim.LastAnthropicRequest()
			if !strings.Contains(string(rec.Body), `{"type":"tool_result","tool_use_id":"`+tc.ID+`"`) {
				t.Fatalf("tool_result not sent: %s", rec.Body)
			}
		})

		t.Run("image/"+mode, func(t *testing.T) {
			r := runChat(t, client, openai.ChatCompletionNewParams{Model: anthModel, Messages: []openai.ChatCompletionMessageParamUnion{
				openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
					openai.TextContentPart("Describe this image"),
					openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: tinyPNG}),
				}),
			}}, stream)
			if r.finish != "stop" || !strings.HasPrefix(r.content, "Simulated answer: Describe this image") || r.usage.PromptTokens < 85 {
				t.Fatalf("%+v", r)
			}
			rec, _ := sim.LastAnthropicRequest()
			if !strings.Contains(string(rec.Body), `"source":{"type":"base64","media_type":"image/png","data":"iVBOR`) {
				t.Fatalf("image block: %s", rec.Body)
			}
		})

		t.Run("json_schema/"+mode, func(t *testing.T) {
			r := runChat(t, client, openai.ChatCompletionNewParams{Model: anthModel,
				Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Invent a person")},
				ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{JSONSchema: schema}},
			}, stream)
			var p struct {
				Name *string `json:"name"`
				Age  *int    `json:"age"`
			}
			if r.finish != "stop" || json.Unmarshal([]byte(r.content), &p) != nil || p.Name == nil || p.Age == nil {
				t.Fatalf("%+v", r)
			}
			rec, _ := sim.LastAnthropicRequest()
			if !strings.Contains(string(rec.Body), `"output_config":{"format":{"type":"json_schema","schema":{`) {
				t.Fatalf("output_config: %s", rec.Body)
			}
		})
	}
}

func TestAnthropicConformanceCaching(t *testing.T) {
	base, sim := anthGateway(t)
	system := strings.Repeat("You are a meticulous assistant for the BTL gateway test suite. ", 80) // ~1300 tokens
	for _, stream := range []bool{false, true} {
		sim.Reset()
		body, _ := json.Marshal(map[string]any{
			"model":  anthModel,
			"stream": stream,
			"messages": []any{
				map[string]any{"role": "system", "content": []any{map[string]any{"type": "text", "text": system, "cache_control": map[string]string{"type": "ephemeral"}}}},
				map[string]any{"role": "user", "content": "Hello"},
			},
			"stream_options": map[string]any{"include_usage": true},
		})
		if !stream {
			body = []byte(strings.Replace(string(body), `,"stream_options":{"include_usage":true}`, "", 1))
		}
		var usages []anthUsageJSON
		for range 2 {
			status, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
			if status != 200 {
				t.Fatalf("status %d: %s", status, raw)
			}
			usages = append(usages, lastUsage(t, raw, stream))
		}
		first, second := usages[0], usages[1]
		if first.PromptTokensDetails.CacheWriteTokens < 1024 || first.PromptTokensDetails.CachedTokens != 0 {
			t.Fatalf("stream=%v first call must write the cache: %+v", stream, first)
		}
		if second.PromptTokensDetails.CachedTokens != first.PromptTokensDetails.CacheWriteTokens || second.PromptTokensDetails.CacheWriteTokens != 0 {
			t.Fatalf("stream=%v second call must read the cache: %+v", stream, second)
		}
		if first.PromptTokens != second.PromptTokens || first.PromptTokens <= first.PromptTokensDetails.CacheWriteTokens {
			t.Fatalf("stream=%v prompt_tokens must include cached and written tokens: %+v %+v", stream, first, second)
		}
		rec, _ := sim.LastAnthropicRequest()
		// The caller's block follows the workspace's cache-isolation salt (system[0]).
		if len(rec.Breakpoints) != 1 || rec.Breakpoints[0].Where != "system[1]" {
			t.Fatalf("cache marker did not arrive: %+v", rec.Breakpoints)
		}
	}
}

type anthUsageJSON struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	PromptTokensDetails struct {
		CachedTokens     int64 `json:"cached_tokens"`
		CacheWriteTokens int64 `json:"cache_write_tokens"`
	} `json:"prompt_tokens_details"`
}

// lastUsage finds the usage object of a completion body or of a stream's usage chunk.
func lastUsage(t *testing.T, raw []byte, stream bool) anthUsageJSON {
	t.Helper()
	var u struct {
		Usage *anthUsageJSON `json:"usage"`
	}
	if !stream {
		if err := json.Unmarshal(raw, &u); err != nil || u.Usage == nil {
			t.Fatalf("no usage in %s", raw)
		}
		return *u.Usage
	}
	var found *anthUsageJSON
	for _, line := range strings.Split(string(raw), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		u.Usage = nil
		if json.Unmarshal([]byte(data), &u) == nil && u.Usage != nil {
			found = u.Usage
		}
	}
	if found == nil {
		t.Fatalf("no usage chunk in %s", raw)
	}
	return *found
}

func TestAnthropicConformanceErrors(t *testing.T) {
	base, _ := anthGateway(t)
	url := base + "/v1/chat/completions"
	for _, c := range []struct {
		name, model, text string
		status            int
		code, msg         string
	}{
		{"wrong key", "revoked/claude-sonnet-4-5", "hi", 502, "upstream_auth_failed", ""},
		{"overloaded", anthModel, "hi [sim:status=529]", 503, "upstream_overloaded", ""},
		{"bad request", anthModel, "hi [sim:status=400]", 400, "", "Simulated invalid request."},
		{"n>1", anthModel, "hi", 400, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := `{"model":"` + c.model + `","messages":[{"role":"user","content":"` + c.text + `"}]`
			if c.name == "n>1" {
				body += `,"n":2`
			}
			status, hdr, e, raw := postRaw(t, url, "application/json", strings.NewReader(body+"}"))
			if status != c.status || e.Error.Message == nil || e.Error.Type == nil {
				t.Fatalf("status %d want %d: %s", status, c.status, raw)
			}
			if c.code != "" && (e.Error.Code == nil || *e.Error.Code != c.code) {
				t.Fatalf("code: %s", raw)
			}
			if c.msg != "" && *e.Error.Message != c.msg {
				t.Fatalf("message: %s", raw)
			}
			if strings.Contains(string(raw), "secret") || strings.Contains(string(raw), "sk-ant") {
				t.Fatalf("secret leaked: %s", raw)
			}
			if c.name == "overloaded" && hdr.Get("X-Btl-Upstream-Request-Id") == "" {
				t.Fatalf("upstream request id missing: %v", hdr)
			}
		})
	}
	// In-stream error after the first byte arrives in band.
	// Conformance is about the adapter's translation: the optimizer (which would add its own
	// output cap and cache markers) stays out of the way.
	client := sdk(base, option.WithHeader("X-Btl-Optimize", "off"))
	s := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{Model: anthModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("go [sim:stream_error_after=2]")}}, option.WithMaxRetries(0))
	n := 0
	for s.Next() {
		n++
	}
	if s.Err() == nil || n == 0 || !strings.Contains(s.Err().Error(), "overloaded") {
		t.Fatalf("want in-band overloaded error after %d chunks, got %v", n, s.Err())
	}
}

// TestAnthropicConformanceVertexClaude drives the Vertex Claude delegate (the vertex provider
// type hands claude-* models to it) against the simulator's rawPredict/streamRawPredict routes.
func TestAnthropicConformanceVertexClaude(t *testing.T) {
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	endpoint := func(model string, stream bool) string {
		verb := "rawPredict"
		if stream {
			verb = "streamRawPredict"
		}
		return srv.URL + "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/" + model + ":" + verb
	}
	a := anthropic.NewVertexClaude(providers.Config{Name: "vx", Type: "vertex", Options: map[string]string{"anthropic_beta": "x"}}, srv.Client(),
		func(context.Context) (string, error) { return "ya29.token", nil }, endpoint)
	body := []byte(`{"model":"vx/claude-sonnet-4-5@20250929","messages":[{"role":"user","content":"Hello vertex"}]}`)
	req, _ := providers.ParseChatRequest(body)
	for _, stream := range []bool{false, true} {
		resp, err := a.Chat(context.Background(), &providers.Call{Request: req, Body: body, UpstreamModel: "claude-sonnet-4-5@20250929", Stream: stream})
		if err != nil {
			t.Fatal(err)
		}
		if stream {
			var content string
			var last []byte
			for {
				p, err := resp.Stream.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				var c openai.ChatCompletionChunk
				if err := json.Unmarshal(p, &c); err != nil {
					t.Fatal(err)
				}
				if len(c.Choices) > 0 {
					content += c.Choices[0].Delta.Content
				}
				last = append(last[:0], p...)
			}
			resp.Stream.Close()
			if !strings.HasPrefix(content, "Simulated answer: Hello vertex") || !strings.Contains(string(last), `"choices":[],"usage":{"prompt_tokens":`) {
				t.Fatalf("stream content %q, last chunk %s", content, last)
			}
		} else if !strings.Contains(string(resp.Body), `"content":"Simulated answer: Hello vertex`) || resp.Usage == nil || resp.Usage.InputUncached == 0 {
			t.Fatalf("body %s", resp.Body)
		}
		rec, _ := sim.LastAnthropicRequest()
		if rec.Header.Get("Authorization") != "***" || rec.Header.Get("Anthropic-Beta") != "x" || strings.Contains(string(rec.Body), `"model"`) ||
			!strings.Contains(rec.Path, "/models/claude-sonnet-4-5@20250929:") {
			t.Fatalf("vertex request %s %+v %s", rec.Path, rec.Header, rec.Body)
		}
	}
	// A failing token source is a failover-class 502 without the cause in the message.
	bad := anthropic.NewVertexClaude(providers.Config{Name: "vx", Type: "vertex"}, srv.Client(),
		func(context.Context) (string, error) { return "", errors.New("invalid_grant: key abc") }, endpoint)
	_, err := bad.Chat(context.Background(), &providers.Call{Request: req, Body: body, UpstreamModel: "claude-x"})
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Status != 502 || pe.Class != providers.ClassFailover || strings.Contains(pe.Message, "abc") {
		t.Fatalf("token failure: %v", err)
	}
}
