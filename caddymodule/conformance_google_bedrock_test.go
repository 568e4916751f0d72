package caddymodule

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// Conformance of the bedrock, gemini and vertex provider types: the official OpenAI client
// talks to a real Caddy gateway, the gateway talks Converse (SigV4, binary event streams),
// generateContent (API key) and Vertex (service-account OAuth2, and Claude via rawPredict) to
// the simulator, and the answers must look like an OpenAI upstream's. Shared helpers (runChat,
// weatherTool, tinyPNG, postRaw, lastUsage) live in the other conformance and e2e tests.

const (
	gbAKID    = "AKIDSIMULATOR0001"
	gbSecret  = "sim/Secret+Key0123456789abcdefghijklmno"
	gbWrong   = "wrong/Secret+Key0123456789abcdefghijkl"
	gbAPIKey  = "AIzaSim-gemini-key"
	gbBedrock = "bed/anthropic.claude-3-5-sonnet-20240620-v1:0"
)

type gbEnv struct {
	base string
	sim  *simulated.Server
}

// gbGateway runs the full handler chain with bedrock, gemini and vertex providers on one
// simulator, plus providers with a wrong AWS secret and an unregistered service account.
func gbGateway(t *testing.T) gbEnv {
	t.Helper()
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	sim.SetAWSCredentials("us-east-1", gbAKID, gbSecret, "")
	sim.SetGeminiAPIKey(gbAPIKey)
	sa, err := sim.GoogleServiceAccount(srv.URL + "/token")
	if err != nil {
		t.Fatal(err)
	}
	saFile := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(saFile, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	// An unregistered key: the token endpoint refuses its assertions (invalid_grant).
	other := simulated.New(simulated.Options{})
	badSA, _ := other.GoogleServiceAccount(srv.URL + "/token")
	badFile := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badFile, badSA, 0o600); err != nil {
		t.Fatal(err)
	}
	// gemini-3-pro-preview is not in the catalog: priced here, as an operator would.
	block := `btl {
		price gemini-3-pro-preview {
			input 2
			output 12
		}
		provider bed bedrock {
			base_url ` + srv.URL + `
			region us-east-1
			access_key_id ` + gbAKID + `
			secret_access_key ` + gbSecret + `
		}
		provider badsig bedrock {
			base_url ` + srv.URL + `
			region us-east-1
			access_key_id ` + gbAKID + `
			secret_access_key ` + gbWrong + `
		}
		provider gem gemini {
			base_url ` + srv.URL + `
			api_key ` + gbAPIKey + `
		}
		provider badkey gemini {
			base_url ` + srv.URL + `
			api_key AIzaWrongKey
		}
		provider vtx vertex {
			base_url ` + srv.URL + `
			project btl-sim
			location us-central1
			credentials_file ` + saFile + `
		}
		provider vtxbad vertex {
			base_url ` + srv.URL + `
			project btl-sim
			location us-central1
			credentials_file ` + badFile + `
		}
	}`
	return gbEnv{base: startGateway(t, tl.withStorage(block), fullChain), sim: sim}
}

// lastUpstream returns the body the simulator last received for the provider's wire format.
func (e gbEnv) lastUpstream(t *testing.T, model string) string {
	t.Helper()
	if strings.HasPrefix(model, "bed/") {
		rec, ok := e.sim.LastBedrockRequest()
		if !ok {
			t.Fatal("no Bedrock request recorded")
		}
		return string(rec.Body)
	}
	rec, ok := e.sim.LastGeminiRequest()
	if !ok {
		t.Fatal("no Gemini request recorded")
	}
	return string(rec.Body)
}

func TestGoogleBedrockConformanceMatrix(t *testing.T) {
	env := gbGateway(t)
	client := sdk(env.base)
	schema := shared.ResponseFormatJSONSchemaJSONSchemaParam{
		Name: "person",
		Schema: map[string]any{
			"type":                 "object",
			"properties":           map[string]any{"name": map[string]any{"type": "string"}, "age": map[string]any{"type": "integer"}},
			"required":             []string{"name", "age"},
			"additionalProperties": false,
		},
	}
	models := []string{gbBedrock, "gem/gemini-2.5-flash", "vtx/gemini-2.5-pro", "gem/gemini-3-pro-preview"}
	for _, model := range models {
		for _, stream := range []bool{false, true} {
			name := model + "/" + map[bool]string{false: "non-stream", true: "stream"}[stream]

			t.Run("text/"+name, func(t *testing.T) {
				r := runChat(t, client, openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{
					openai.SystemMessage("You are terse."), openai.UserMessage("Say hello"),
				}, Temperature: openai.Float(1.6), MaxTokens: openai.Int(300)}, stream)
				if r.finish != "stop" || !strings.HasPrefix(r.content, "Simulated answer: Say hello") {
					t.Fatalf("%+v", r)
				}
				if r.usage.PromptTokens == 0 || r.usage.CompletionTokens == 0 || r.usage.TotalTokens != r.usage.PromptTokens+r.usage.CompletionTokens {
					t.Fatalf("usage %+v", r.usage)
				}
				up := env.lastUpstream(t, model)
				if strings.HasPrefix(model, "bed/") {
					if !strings.Contains(up, `"system":[{"text":"You are terse."}]`) || !strings.Contains(up, `"temperature":1`) || !strings.Contains(up, `"maxTokens":300`) {
						t.Fatalf("converse request %s", up)
					}
				} else if !strings.Contains(up, `"systemInstruction":{"parts":[{"text":"You are terse."}]}`) || !strings.Contains(up, `"temperature":1.6`) ||
					!strings.Contains(up, `"maxOutputTokens":300`) {
					t.Fatalf("generateContent request %s", up)
				}
			})

			t.Run("tools/"+name, func(t *testing.T) {
				msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")}
				r := runChat(t, client, openai.ChatCompletionNewParams{Model: model, Messages: msgs,
					Tools: []openai.ChatCompletionToolUnionParam{weatherTool}}, stream)
				if r.finish != "tool_calls" || len(r.toolCalls) != 1 {
					t.Fatalf("first turn %+v", r)
				}
				tc := r.toolCalls[0]
				var args map[string]any
				if tc.Function.Name != "get_weather" || tc.ID == "" || json.Unmarshal([]byte(tc.Function.Arguments), &args) != nil || args["city"] == nil {
					t.Fatalf("tool call %+v", tc)
				}
				// The client echoes only id, name and arguments: a Gemini 3 thought signature
				// must survive that round trip or the second turn is a 400.
				msgs = append(msgs,
					openai.ChatCompletionMessageParamUnion{OfAssistant: &openai.ChatCompletionAssistantMessageParam{
						ToolCalls: []openai.ChatCompletionMessageToolCallUnionParam{{OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
							ID: tc.ID, Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{Name: tc.Function.Name, Arguments: tc.Function.Arguments},
						}}},
					}},
					openai.ToolMessage(`{"temp_c":21}`, tc.ID))
				r = runChat(t, client, openai.ChatCompletionNewParams{Model: model, Messages: msgs,
					Tools: []openai.ChatCompletionToolUnionParam{weatherTool}}, stream)
				if r.finish != "stop" || !strings.Contains(r.content, `the tool returned {"temp_c":21}`) || len(r.toolCalls) != 0 {
					t.Fatalf("second turn %+v", r)
				}
				up := env.lastUpstream(t, model)
				switch {
				case strings.HasPrefix(model, "bed/"):
					if !strings.Contains(up, `{"toolResult":{"toolUseId":"`+tc.ID+`"`) {
						t.Fatalf("toolResult not sent: %s", up)
					}
				case strings.Contains(model, "gemini-3"):
					if !strings.Contains(up, `"thoughtSignature":"`) || !strings.Contains(up, `"functionResponse":{"name":"get_weather","response":{"temp_c":21}}`) {
						t.Fatalf("signature or response not sent: %s", up)
					}
				default:
					if !strings.Contains(up, `"functionResponse":{"name":"get_weather","response":{"temp_c":21}}`) {
						t.Fatalf("functionResponse not sent: %s", up)
					}
				}
			})

			t.Run("image/"+name, func(t *testing.T) {
				r := runChat(t, client, openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{
					openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
						openai.TextContentPart("Describe this image"),
						openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: tinyPNG}),
					}),
				}}, stream)
				if r.finish != "stop" || !strings.HasPrefix(r.content, "Simulated answer: Describe this image") || r.usage.PromptTokens < 85 {
					t.Fatalf("%+v", r)
				}
				up := env.lastUpstream(t, model)
				want := `"inlineData":{"mimeType":"image/png","data":"iVBOR`
				if strings.HasPrefix(model, "bed/") {
					want = `{"image":{"format":"png","source":{"bytes":"iVBOR`
				}
				if !strings.Contains(up, want) {
					t.Fatalf("image block: %s", up)
				}
			})

			t.Run("json_schema/"+name, func(t *testing.T) {
				r := runChat(t, client, openai.ChatCompletionNewParams{Model: model,
					Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Invent a person")},
					ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{JSONSchema: schema}},
				}, stream)
				var p struct {
					Name *string `json:"name"`
					Age  *int    `json:"age"`
				}
				if r.finish != "stop" || len(r.toolCalls) != 0 || json.Unmarshal([]byte(r.content), &p) != nil || p.Name == nil || p.Age == nil {
					t.Fatalf("%+v", r)
				}
				up := env.lastUpstream(t, model)
				want := `"responseMimeType":"application/json","responseSchema":{"properties":{"age":{"type":"INTEGER"}`
				if strings.HasPrefix(model, "bed/") {
					want = `"toolChoice":{"tool":{"name":"person"}}`
				}
				if !strings.Contains(up, want) {
					t.Fatalf("structured output request: %s", up)
				}
			})
		}
	}
}

func TestVertexClaudeConformance(t *testing.T) {
	env := gbGateway(t)
	client := sdk(env.base)
	for _, stream := range []bool{false, true} {
		r := runChat(t, client, openai.ChatCompletionNewParams{Model: "vtx/claude-sonnet-4-5@20250929", Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Say hello"),
		}}, stream)
		if r.finish != "stop" || !strings.HasPrefix(r.content, "Simulated answer: Say hello") || r.usage.PromptTokens == 0 {
			t.Fatalf("stream=%v %+v", stream, r)
		}
		rec, ok := env.sim.LastAnthropicRequest()
		if !ok || !strings.HasSuffix(rec.Path, "/publishers/anthropic/models/claude-sonnet-4-5@20250929:"+map[bool]string{false: "rawPredict", true: "streamRawPredict"}[stream]) ||
			!strings.Contains(string(rec.Body), `"anthropic_version":"vertex-2023-10-16"`) {
			t.Fatalf("vertex claude request %+v %s", rec.Path, rec.Body)
		}
	}
	if issued, _ := env.sim.GoogleTokenGrants(); issued != 1 {
		t.Fatalf("%d tokens issued, want one shared by both calls", issued)
	}
}

// Cache semantics end to end: Bedrock cachePoints (explicit, inputTokens excludes the cache)
// and Gemini implicit caching (promptTokenCount includes it) both normalise to OpenAI usage.
func TestGoogleBedrockConformanceCaching(t *testing.T) {
	env := gbGateway(t)
	system := strings.Repeat("You are a meticulous assistant for the BTL gateway test suite. ", 80) // ~1300 tokens
	for _, model := range []string{gbBedrock, "gem/gemini-2.5-flash", "vtx/gemini-2.5-flash"} {
		for _, stream := range []bool{false, true} {
			env.sim.Reset()
			req := map[string]any{
				"model": model, "stream": stream,
				"messages": []any{
					map[string]any{"role": "system", "content": []any{map[string]any{"type": "text", "text": system, "cache_control": map[string]string{"type": "ephemeral"}}}},
					map[string]any{"role": "user", "content": "Hello"},
				},
			}
			if stream {
				req["stream_options"] = map[string]any{"include_usage": true}
			}
			body, _ := json.Marshal(req)
			var usages []anthUsageJSON
			for range 2 {
				status, _, _, raw := postRaw(t, env.base+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
				if status != 200 {
					t.Fatalf("%s status %d: %s", model, status, raw)
				}
				usages = append(usages, lastUsage(t, raw, stream))
			}
			first, second := usages[0], usages[1]
			if first.PromptTokens != second.PromptTokens || first.PromptTokens < 1024 {
				t.Fatalf("%s stream=%v prompt_tokens must be the whole prompt both times: %+v %+v", model, stream, first, second)
			}
			if strings.HasPrefix(model, "bed/") {
				if first.PromptTokensDetails.CacheWriteTokens < 1024 || first.PromptTokensDetails.CachedTokens != 0 {
					t.Fatalf("stream=%v first call must write the cache: %+v", stream, first)
				}
				if second.PromptTokensDetails.CachedTokens != first.PromptTokensDetails.CacheWriteTokens || second.PromptTokensDetails.CacheWriteTokens != 0 {
					t.Fatalf("stream=%v second call must read the cache: %+v", stream, second)
				}
				rec, _ := env.sim.LastBedrockRequest()
				if rec.CachePoints != 1 || !strings.Contains(string(rec.Body), `{"cachePoint":{"type":"default"}}]`) {
					t.Fatalf("cachePoint did not arrive: %d %s", rec.CachePoints, rec.Body)
				}
			} else {
				if first.PromptTokensDetails.CachedTokens != 0 || second.PromptTokensDetails.CachedTokens < 1024 ||
					second.PromptTokensDetails.CachedTokens >= second.PromptTokens {
					t.Fatalf("%s stream=%v implicit cache: %+v %+v", model, stream, first, second)
				}
			}
		}
	}
}

func TestGoogleBedrockConformanceErrors(t *testing.T) {
	env := gbGateway(t)
	msg := func(model, text string, stream bool) string {
		b, _ := json.Marshal(map[string]any{"model": model, "stream": stream, "messages": []map[string]string{{"role": "user", "content": text}}})
		return string(b)
	}
	cases := []struct {
		name, model, text string
		status            int
		code, retryAfter  string
	}{
		{"bad signature", "badsig/anthropic.claude-3-5-sonnet-20240620-v1:0", "hi", 502, "upstream_signature_rejected", ""},
		{"bad api key", "badkey/gemini-2.5-flash", "hi", 502, "upstream_auth_failed", ""},
		{"refused service account", "vtxbad/gemini-2.5-flash", "hi", 502, "upstream_auth_failed", ""},
		{"bedrock throttled", gbBedrock, "hi [sim:status=429,retry_after=2]", 429, "rate_limit_exceeded", "2"},
		{"gemini quota", "gem/gemini-2.5-flash", "hi [sim:status=429,retry_after=2]", 429, "rate_limit_exceeded", "2"},
		{"vertex unavailable", "vtx/gemini-2.5-flash", "hi [sim:status=503]", 503, "upstream_overloaded", ""},
		{"bedrock validation", gbBedrock, "hi [sim:status=400]", 400, "invalid_request", ""},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			status, hdr, e, raw := postRaw(t, env.base+"/v1/chat/completions", "application/json", strings.NewReader(msg(c.model, c.text, stream)))
			if status != c.status {
				t.Fatalf("%s stream=%v: status %d want %d: %s", c.name, stream, status, c.status, raw)
			}
			if e.Error.Code == nil || *e.Error.Code != c.code || e.Error.Message == nil || *e.Error.Message == "" || e.Error.Type == nil {
				t.Fatalf("%s: envelope %s", c.name, raw)
			}
			if hdr.Get("Retry-After") != c.retryAfter {
				t.Fatalf("%s: Retry-After %q", c.name, hdr.Get("Retry-After"))
			}
			for _, secret := range []string{gbSecret, gbWrong, gbAPIKey, "AIzaWrongKey", "PRIVATE KEY", "Signature=", "ya29."} {
				if strings.Contains(string(raw), secret) || strings.Contains(hdr.Get("Www-Authenticate"), secret) {
					t.Fatalf("%s: response leaks %q: %s", c.name, secret, raw)
				}
			}
		}
	}

	// A revoked Vertex token is refreshed once and the call succeeds.
	client := sdk(env.base)
	runChat(t, client, openai.ChatCompletionNewParams{Model: "vtx/gemini-2.5-flash", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one")}}, false)
	env.sim.RevokeGoogleTokens()
	r := runChat(t, client, openai.ChatCompletionNewParams{Model: "vtx/gemini-2.5-flash", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("two")}}, false)
	if r.finish != "stop" {
		t.Fatalf("after revocation: %+v", r)
	}

	// A blocked prompt is HTTP 200 with finish_reason content_filter and empty content.
	for _, stream := range []bool{false, true} {
		r := runChat(t, client, openai.ChatCompletionNewParams{Model: "gem/gemini-2.5-flash", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("bad [sim:blocked]")}}, stream)
		if r.finish != "content_filter" || r.content != "" || r.usage.PromptTokens == 0 {
			t.Fatalf("blocked stream=%v: %+v", stream, r)
		}
	}

	// A Bedrock exception frame before any output is retried/failed over like an HTTP error;
	// after output it is reported in-band.
	status, _, _, raw := postRaw(t, env.base+"/v1/chat/completions", "application/json",
		strings.NewReader(msg(gbBedrock, "go [sim:stream_error_after=2,code=throttlingException]", true)))
	if status != 200 || !strings.Contains(string(raw), `"code":"rate_limit_exceeded"`) || strings.Contains(string(raw), "[DONE]") {
		t.Fatalf("in-band exception: %d %s", status, raw)
	}
}
