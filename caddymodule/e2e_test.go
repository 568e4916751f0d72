package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// simBlock is a btl block with two simulated upstreams on real loopback servers, so tests can
// reach the simulator's controls.
func simGateway(t *testing.T) (base string, primary, backup *simulated.Server) {
	base, primary, backup, _ = simGatewayLedger(t)
	return base, primary, backup
}

// testKey is the owner key of the workspace the current simGateway bills.
var testKey string

func simGatewayLedger(t *testing.T) (base string, primary, backup *simulated.Server, tl *testLedger) {
	t.Helper()
	tl = newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	primary, backup = simulated.New(simulated.Options{}), simulated.New(simulated.Options{})
	ps, bs := httptest.NewServer(primary), httptest.NewServer(backup)
	t.Cleanup(ps.Close)
	t.Cleanup(bs.Close)
	block := `btl {
		provider sim simulated {
			base_url ` + ps.URL + `/v1
			api_key sim-key
			models gpt-4o-mini
		}
		provider backup openai_compatible {
			base_url ` + bs.URL + `/v1
			api_key backup-key
		}
		model btl-fast {
			candidates sim/gpt-4o-mini backup/gpt-4o-mini
		}
	}`
	base = startGateway(t, tl.withStorage(block), fullChain)
	return base, primary, backup, tl
}

func sdk(base string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(base + "/v1"), option.WithAPIKey(testKey), option.WithMaxRetries(0)}, opts...)...)
}

func TestChatNonStreamThroughSDK(t *testing.T) {
	base, _, _ := simGateway(t)
	client := sdk(base)
	for _, model := range []string{"btl-fast", "sim/gpt-4o-mini", "gpt-4o-mini"} {
		var raw *http.Response
		resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" || resp.Choices[0].FinishReason != "stop" {
			t.Fatalf("%s: bad completion %+v", model, resp)
		}
		if resp.Usage.PromptTokens == 0 || resp.Usage.CompletionTokens == 0 {
			t.Fatalf("%s: no usage %+v", model, resp.Usage)
		}
		h := raw.Header
		if !strings.HasPrefix(h.Get("X-Btl-Request-Id"), "req_") || h.Get("X-Btl-Provider") != "sim" ||
			h.Get("X-Btl-Upstream-Model") != "gpt-4o-mini" || h.Get("X-Btl-Cache") != "bypass" {
			t.Fatalf("%s: headers %v", model, h)
		}
		if h.Get("X-Btl-Cost-Usd") == "" || h.Get("X-Btl-Baseline-Usd") == "" || h.Get("X-Btl-Upstream-Request-Id") == "" {
			t.Fatalf("%s: cost/request-id headers missing: %v", model, h)
		}
		var cost struct {
			Usage struct {
				Cost json.Number `json:"cost"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(resp.RawJSON()), &cost); err != nil || cost.Usage.Cost.String() != h.Get("X-Btl-Cost-Usd") {
			t.Fatalf("%s: usage.cost %q vs header %q (%v)", model, cost.Usage.Cost, h.Get("X-Btl-Cost-Usd"), err)
		}
	}
}

func TestChatStreamThroughSDK(t *testing.T) {
	base, _, _ := simGateway(t)
	client := sdk(base)
	for _, wantUsage := range []bool{false, true} {
		params := openai.ChatCompletionNewParams{
			Model:    "btl-fast",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Stream a greeting")},
		}
		if wantUsage {
			params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		}
		stream := client.Chat.Completions.NewStreaming(context.Background(), params)
		var acc openai.ChatCompletionAccumulator
		usageChunks := 0
		for stream.Next() {
			c := stream.Current()
			acc.AddChunk(c)
			if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
				usageChunks++
				if !strings.Contains(c.RawJSON(), `"cost":`) {
					t.Fatalf("usage chunk without cost: %s", c.RawJSON())
				}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if acc.Choices[0].Message.Content == "" || acc.Choices[0].FinishReason != "stop" {
			t.Fatalf("accumulated %+v", acc.ChatCompletion)
		}
		if wantUsage && usageChunks != 1 {
			t.Fatalf("want one usage chunk, got %d", usageChunks)
		}
		if !wantUsage && usageChunks != 0 {
			t.Fatalf("client did not ask for usage but saw %d usage chunks", usageChunks)
		}
	}
}

// TestStreamRelayedAsItArrives proves the gateway does not buffer: the client reads the first
// chunk while the upstream still holds the rest back.
func TestStreamRelayedAsItArrives(t *testing.T) {
	base, primary, _ := simGateway(t)
	client := sdk(base)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "sim/gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hold on [sim:hold=relay]")},
	})
	sawContent := false
	for !sawContent && stream.Next() {
		c := stream.Current()
		sawContent = len(c.Choices) > 0 && c.Choices[0].Delta.Content != ""
	}
	if !sawContent {
		t.Fatalf("no content chunk arrived while the upstream held the stream: %v", stream.Err())
	}
	// Only now let the upstream send the rest.
	primary.Release("relay")
	var finish string
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 && c.Choices[0].FinishReason != "" {
			finish = c.Choices[0].FinishReason
		}
	}
	if stream.Err() != nil || finish != "stop" {
		t.Fatalf("stream did not finish after release: finish=%q err=%v", finish, stream.Err())
	}
}

// TestUnknownFieldsPassBothWays uses a plain upstream that records what it receives.
func TestUnknownFieldsPassBothWays(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	var gotHeader http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, gotHeader = b, r.Header.Clone()
		mu.Unlock()
		var req struct {
			Stream bool `json:"stream"`
		}
		_ = json.Unmarshal(b, &req)
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"x_vendor\":{\"k\":1},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\",\"reasoning_content\":\"r\"},\"finish_reason\":null}]}\n\n")
			io.WriteString(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
			io.WriteString(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n")
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","x_vendor":{"trace":[1,2]},"choices":[{"index":0,"message":{"role":"assistant","content":"hi","reasoning_content":"because"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6,"x_usage_extra":7}}`)
	}))
	defer up.Close()
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	base := startGateway(t, tl.withStorage(`btl {
		price vendor-model {
			input 0.1
			output 0.4
		}
		provider up openai_compatible {
			base_url `+up.URL+`/v1
		}
	}`), "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tdisable output_budget\n\t}\n\tbtl_route\n") // a priced model gets an output cap

	reqBody := `{"model":"up/vendor-model","messages":[{"role":"user","content":"hi","x_msg_field":true}],"x_top_level":{"a":[1,2,{"b":null}]},"temperature":0.3}`
	_, _, _, body := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(reqBody))
	mu.Lock()
	sent := string(got)
	mu.Unlock()
	want := strings.Replace(reqBody, `"up/vendor-model"`, `"vendor-model"`, 1)
	if sent != want {
		t.Fatalf("upstream got\n%s\nwant\n%s", sent, want)
	}
	if gotHeader.Get("Accept-Encoding") != "identity" {
		t.Fatalf("Accept-Encoding upstream = %q", gotHeader.Get("Accept-Encoding"))
	}
	for _, s := range []string{`"x_vendor":{"trace":[1,2]}`, `"reasoning_content":"because"`, `"x_usage_extra":7`} {
		if !bytes.Contains(body, []byte(s)) {
			t.Fatalf("response lost %s: %s", s, body)
		}
	}

	// Stream: unknown chunk fields pass; usage requested upstream but not shown.
	streamBody := `{"model":"up/vendor-model","stream":true,"messages":[{"role":"user","content":"hi"}],"x_top_level":1}`
	_, _, _, sb := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(streamBody))
	mu.Lock()
	sent = string(got)
	mu.Unlock()
	if !strings.Contains(sent, `"stream_options":{"include_usage":true}`) || !strings.Contains(sent, `"x_top_level":1`) {
		t.Fatalf("stream request upstream: %s", sent)
	}
	if !bytes.Contains(sb, []byte(`"x_vendor":{"k":1}`)) || !bytes.Contains(sb, []byte(`"reasoning_content":"r"`)) {
		t.Fatalf("stream lost unknown fields: %s", sb)
	}
	if bytes.Contains(sb, []byte(`"prompt_tokens"`)) {
		t.Fatalf("client saw a usage chunk it did not ask for: %s", sb)
	}
	if !bytes.HasSuffix(sb, []byte("data: [DONE]\n\n")) {
		t.Fatalf("stream not terminated: %q", sb)
	}
}

type apiError struct {
	Error struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func postRaw(t *testing.T, url, contentType string, body io.Reader) (int, http.Header, apiError, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e apiError
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, resp.Header, e, raw
}

func TestBadInputGetsOpenAIErrors(t *testing.T) {
	base, _, _ := simGateway(t)
	url := base + "/v1/chat/completions"
	big := `{"model":"btl-fast","messages":[{"role":"user","content":"` + strings.Repeat("a", 33<<20) + `"}]}`
	cases := []struct {
		name, ctype, body string
		status            int
		code, param       string
	}{
		{"invalid json", "application/json", `{"model":`, 400, "invalid_json", ""},
		{"not an object", "application/json", `[1,2]`, 400, "invalid_request_body", ""},
		{"empty", "application/json", ``, 400, "invalid_request_body", ""},
		{"wrong type model", "application/json", `{"model":5,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_type", "model"},
		{"wrong type stream", "application/json", `{"model":"btl-fast","stream":"yes","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_type", "stream"},
		{"wrong type messages", "application/json", `{"model":"btl-fast","messages":"hi"}`, 400, "invalid_type", "messages"},
		{"missing model", "application/json", `{"messages":[{"role":"user","content":"x"}]}`, 400, "missing_required_parameter", "model"},
		{"missing messages", "application/json", `{"model":"btl-fast"}`, 400, "missing_required_parameter", "messages"},
		{"unknown model", "application/json", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, 404, "model_not_found", "model"},
		{"unknown provider", "application/json", `{"model":"acme/gpt-4o","messages":[{"role":"user","content":"x"}]}`, 404, "model_not_found", "model"},
		{"wrong content type", "text/plain", `{"model":"btl-fast","messages":[{"role":"user","content":"x"}]}`, 415, "unsupported_media_type", ""},
		{"body over limit", "application/json", big, 413, "request_too_large", ""},
		{"bad max_tokens", "application/json", `{"model":"btl-fast","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_value", "max_tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, hdr, e, raw := postRaw(t, url, c.ctype, strings.NewReader(c.body))
			if status != c.status {
				t.Fatalf("status %d want %d: %s", status, c.status, raw)
			}
			if e.Error.Message == nil || e.Error.Type == nil || !bytes.Contains(raw, []byte(`"param":`)) || !bytes.Contains(raw, []byte(`"code":`)) {
				t.Fatalf("not an OpenAI envelope: %s", raw)
			}
			if e.Error.Code == nil || *e.Error.Code != c.code {
				t.Fatalf("code %v want %s: %s", e.Error.Code, c.code, raw)
			}
			if c.param != "" && (e.Error.Param == nil || *e.Error.Param != c.param) {
				t.Fatalf("param %v want %s", e.Error.Param, c.param)
			}
			if hdr.Get("X-Btl-Request-Id") == "" {
				t.Fatal("error without x-btl-request-id")
			}
		})
	}
	// Wrong method.
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET chat: %d", resp.StatusCode)
	}
}

func TestUpstreamErrorsAndFailover(t *testing.T) {
	base, primary, backup := simGateway(t)
	url := base + "/v1/chat/completions"
	msg := func(model, text string) string {
		b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": text}}})
		return string(b)
	}
	// A 500 from the first candidate fails over to the second before any byte is sent.
	primary.SetFaults(simulated.Faults{ErrorRate: 1, ErrorStatus: 500})
	status, hdr, _, raw := postRaw(t, url, "application/json", strings.NewReader(msg("btl-fast", "hi")))
	if status != 200 {
		t.Fatalf("failover: %d %s", status, raw)
	}
	// Two retries with backoff on the first candidate, then the backup.
	if hdr.Get("X-Btl-Provider") != "backup" || hdr.Get("X-Btl-Attempts") != "4" || primary.Stats().Requests != 3 {
		t.Fatalf("failover headers: %v (primary saw %d)", hdr, primary.Stats().Requests)
	}
	if backup.Stats().Requests != 1 {
		t.Fatalf("backup saw %d requests", backup.Stats().Requests)
	}
	primary.SetFaults(simulated.Faults{})
	// Pinned: no other candidate, the error maps to the envelope.
	cases := []struct {
		directive  string
		status     int
		code       string
		retryAfter string
	}{
		{"[sim:status=500]", 502, "upstream_error", ""},
		{"[sim:status=503]", 503, "upstream_overloaded", ""},
		{"[sim:status=429,retry_after=2]", 429, "rate_limit_exceeded", "2"},
		{"[sim:status=400]", 400, "", ""},
	}
	for _, c := range cases {
		status, hdr, e, raw := postRaw(t, url, "application/json", strings.NewReader(msg("sim/gpt-4o-mini", "x "+c.directive)))
		if status != c.status {
			t.Fatalf("%s: status %d want %d: %s", c.directive, status, c.status, raw)
		}
		if c.code != "" && (e.Error.Code == nil || *e.Error.Code != c.code) {
			t.Fatalf("%s: code %s", c.directive, raw)
		}
		if hdr.Get("Retry-After") != c.retryAfter {
			t.Fatalf("%s: Retry-After %q", c.directive, hdr.Get("Retry-After"))
		}
		if hdr.Get("X-Btl-Upstream-Request-Id") == "" {
			t.Fatalf("%s: upstream request id not kept", c.directive)
		}
	}
}

// TestStreamCutMidwayReportedInBand: after the first byte there is no failover; the client
// gets the error in the stream.
func TestStreamCutMidwayReportedInBand(t *testing.T) {
	base, _, _ := simGateway(t)
	body := `{"model":"btl-fast","stream":true,"messages":[{"role":"user","content":"go [sim:cut_after=2]"}]}`
	status, hdr, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if status != 200 || hdr.Get("X-Btl-Provider") != "sim" {
		t.Fatalf("status %d provider %s", status, hdr.Get("X-Btl-Provider"))
	}
	if !bytes.Contains(raw, []byte(`"error":{`)) || bytes.Contains(raw, []byte("[DONE]")) {
		t.Fatalf("cut stream should end with an in-band error and no [DONE]: %s", raw)
	}
}

func TestModelsAndProviders(t *testing.T) {
	base, _, _ := simGateway(t)
	client := sdk(base)
	page, err := client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, m := range page.Data {
		ids[m.ID] = m.OwnedBy
	}
	if ids["btl-fast"] != "btl" || ids["sim/gpt-4o-mini"] != "sim" {
		t.Fatalf("models: %v", ids)
	}
	raw := getRaw(t, base+"/v1/providers", testKey)
	if !bytes.Contains(raw, []byte(`"name":"sim","type":"simulated"`)) || bytes.Contains(raw, []byte("sim-key")) || bytes.Contains(raw, []byte("backup-key")) {
		t.Fatalf("providers: %s", raw)
	}
}

// TestToolCallsRoundTrip runs a tool call and its result through the SDK.
func TestToolCallsRoundTrip(t *testing.T) {
	base, _, _ := simGateway(t)
	client := sdk(base)
	tool := openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name: "get_weather",
		Parameters: shared.FunctionParameters{"type": "object",
			"properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
	})
	params := openai.ChatCompletionNewParams{
		Model:    "btl-fast",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		Tools:    []openai.ChatCompletionToolUnionParam{tool},
	}
	resp, err := client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	calls := resp.Choices[0].Message.ToolCalls
	if resp.Choices[0].FinishReason != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "get_weather" {
		t.Fatalf("tool call: %+v", resp.Choices[0])
	}
	params.Messages = append(params.Messages, resp.Choices[0].Message.ToParam(), openai.ToolMessage(`{"temp":21}`, calls[0].ID))
	resp, err = client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].FinishReason != "stop" || resp.Choices[0].Message.Content == "" {
		t.Fatalf("after tool result: %+v", resp.Choices[0])
	}
}

func getRaw(t *testing.T, url, key string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, raw)
	}
	return raw
}

// readSSE is a small raw SSE reader for assertions the SDK hides.
func readSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

var _ = readSSE
