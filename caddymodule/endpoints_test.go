package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// The endpoints an app reaches through the same OpenAI client besides chat: embeddings,
// models.retrieve, legacy completions and moderations, through a real Caddy with the
// official openai-go client, against the in-process simulator, Bedrock-only and
// Anthropic-only configurations.

func endpointsGateway(t *testing.T) (string, *testLedger) {
	t.Helper()
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	return startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini text-embedding-3-small text-embedding-3-large gpt-3.5-turbo-instruct omni-moderation-latest
		}
	}`), fullChain), tl
}

// usageRows reads the workspace's ledger rows through the API, newest first, waiting until
// at least n are there (rows reach the database in batches).
func usageRows(t *testing.T, base, key string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, raw := call(t, http.MethodGet, base+"/v1/usage/requests?limit=100", key, "")
		var page struct {
			Data []map[string]any `json:"data"`
		}
		_ = json.Unmarshal(raw, &page)
		if status == 200 && len(page.Data) >= n || time.Now().After(deadline) {
			if len(page.Data) < n {
				t.Fatalf("%d ledger rows, want %d: %d %s", len(page.Data), n, status, raw)
			}
			return page.Data
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEmbeddingsThroughSDK(t *testing.T) {
	base, tl := endpointsGateway(t)
	client := sdk(base)
	inputs := []string{"the first document", "a second, longer document about gateways", "third"}
	var raw *http.Response
	resp, err := client.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model:      "btl-embed",
		Input:      openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
		Dimensions: openai.Int(256),
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != len(inputs) || resp.Model != "text-embedding-3-small" {
		t.Fatalf("%d embeddings of %s", len(resp.Data), resp.Model)
	}
	for i, d := range resp.Data {
		want := simulated.EmbeddingVector("text-embedding-3-small", inputs[i], 256)
		if int(d.Index) != i || len(d.Embedding) != 256 {
			t.Fatalf("embedding %d: index %d, %d dims", i, d.Index, len(d.Embedding))
		}
		for j := range want {
			if math.Abs(d.Embedding[j]-float64(want[j])) > 1e-6 {
				t.Fatalf("embedding %d differs at %d: %v vs %v", i, j, d.Embedding[j], want[j])
			}
		}
	}
	if resp.Usage.PromptTokens == 0 {
		t.Fatal("no usage")
	}
	if raw.Header.Get("X-Btl-Provider") != "sim" || raw.Header.Get("X-Btl-Upstream-Model") != "text-embedding-3-small" {
		t.Fatalf("headers %v", raw.Header)
	}
	// $0.02 per 1M tokens, rounded half up to whole micro-dollars.
	wantCost := (resp.Usage.PromptTokens*20_000 + 500_000) / 1_000_000
	if got := raw.Header.Get("X-Btl-Cost-Usd"); got != ledger.Micros(wantCost).String() {
		t.Fatalf("cost header %s, want %d µ$", got, wantCost)
	}
	rows := usageRows(t, base, tl.ownerKey, 1)
	if rows[0]["model"] != "btl-embed" || rows[0]["upstream_model"] != "text-embedding-3-small" {
		t.Fatalf("row %v", rows[0])
	}

	// base64: little-endian float32, the same vector.
	status, body := call(t, http.MethodPost, base+"/v1/embeddings", tl.ownerKey,
		`{"model":"sim/text-embedding-3-large","input":"hello","encoding_format":"base64"}`)
	var b64 struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if status != 200 || json.Unmarshal(body, &b64) != nil || len(b64.Data) != 1 {
		t.Fatalf("%d %s", status, body)
	}
	bin, _ := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
	want := simulated.EmbeddingVector("text-embedding-3-large", "hello", 0)
	if len(bin) != 4*len(want) || math.Float32frombits(binary.LittleEndian.Uint32(bin)) != want[0] {
		t.Fatalf("base64 embedding: %d bytes", len(bin))
	}
}

func TestEndpointsBadInput(t *testing.T) {
	base, tl := endpointsGateway(t)
	for _, c := range []struct {
		path, body string
		status     int
		param      string
	}{
		{"/v1/embeddings", `{"model":"btl-embed"}`, 400, "input"},
		{"/v1/embeddings", `{"model":"btl-embed","input":[]}`, 400, "input"},
		{"/v1/embeddings", `{"model":"btl-embed","input":[1,"a"]}`, 400, "input"},
		{"/v1/embeddings", `{"model":"btl-embed","input":"x","encoding_format":"int8"}`, 400, "encoding_format"},
		{"/v1/embeddings", `{"model":"btl-embed","input":"x","dimensions":0}`, 400, "dimensions"},
		{"/v1/embeddings", `{"input":"x"}`, 400, "model"},
		{"/v1/embeddings", `{"model":"btl-fast","input":"x"}`, 400, "model"}, // a chat slug cannot embed
		{"/v1/chat/completions", `{"model":"btl-embed","messages":[{"role":"user","content":"x"}]}`, 400, "model"},
		{"/v1/completions", `{"model":"sim/gpt-3.5-turbo-instruct","prompt":"x","stream":true}`, 400, "stream"},
		{"/v1/completions", `{"model":"sim/gpt-3.5-turbo-instruct"}`, 400, "prompt"},
		{"/v1/moderations", `{"model":"omni-moderation-latest"}`, 400, "input"},
		// A case variant is what the gateway would read and the upstream would not.
		{"/v1/embeddings", `{"model":"btl-embed","input":"x","Input":["a","b","c"]}`, 400, "Input"},
		{"/v1/completions", `{"model":"sim/gpt-3.5-turbo-instruct","prompt":"x","Max_Tokens":5}`, 400, "Max_Tokens"},
		{"/v1/moderations", `{"input":"x","MODEL":"text-moderation-latest"}`, 400, "MODEL"},
		{"/v1/completions", `{"model":"sim/gpt-3.5-turbo-instruct","prompt":"x","n":0}`, 400, "n"},
		{"/v1/completions", `{"model":"sim/gpt-3.5-turbo-instruct","prompt":"x","best_of":-2}`, 400, "best_of"},
	} {
		status, raw := call(t, http.MethodPost, base+c.path, tl.ownerKey, c.body)
		var e apiError
		_ = json.Unmarshal(raw, &e)
		if status != c.status || e.Error.Message == nil || e.Error.Param == nil || *e.Error.Param != c.param {
			t.Errorf("%s %s: %d %s", c.path, c.body, status, raw)
		}
	}
}

func TestModelsRetrieveCompletionsModerationsThroughSDK(t *testing.T) {
	base, tl := endpointsGateway(t)
	client := sdk(base)
	ctx := context.Background()
	for _, id := range []string{"btl-embed", "btl-fast", "sim/gpt-4o-mini", "gpt-4o-mini"} {
		m, err := client.Models.Get(ctx, id)
		if err != nil || m.ID != id || m.Object != "model" {
			t.Fatalf("%s: %+v %v", id, m, err)
		}
	}
	_, err := client.Models.Get(ctx, "no-such-model")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Fatalf("unknown model: %v", err)
	}
	// A key restricted to btl-fast sees btl-fast and nothing else, as in models.list.
	_, restrictedKey := createKey(t, base, tl.ownerKey, `{"name":"r","scopes":["inference"],"models":["btl-fast"]}`)
	restricted := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(restrictedKey), option.WithMaxRetries(0))
	if m, err := restricted.Models.Get(ctx, "btl-fast"); err != nil || m.ID != "btl-fast" {
		t.Fatalf("restricted key, allowed model: %v", err)
	}
	if _, err := restricted.Models.Get(ctx, "btl-embed"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Fatalf("restricted key, other model: %v", err)
	}

	var raw *http.Response
	comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:     "sim/gpt-3.5-turbo-instruct",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(64),
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(comp.Choices) != 1 || comp.Choices[0].Text == "" || comp.Usage.PromptTokens == 0 || comp.Usage.CompletionTokens == 0 {
		t.Fatalf("%+v", comp)
	}
	if raw.Header.Get("X-Btl-Cost-Usd") == "" || raw.Header.Get("X-Btl-Provider") != "sim" {
		t.Fatalf("not metered: %v", raw.Header)
	}

	mod, err := client.Moderations.New(ctx, openai.ModerationNewParams{
		Input: openai.ModerationNewParamsInputUnion{OfStringArray: []string{"a kind word", "I will kill the process"}},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(mod.Results) != 2 || mod.Results[0].Flagged || !mod.Results[1].Flagged || !mod.Results[1].Categories.Violence {
		t.Fatalf("%+v", mod.Results)
	}
	if raw.Header.Get("X-Btl-Upstream-Model") != "omni-moderation-latest" || raw.Header.Get("X-Btl-Cost-Usd") != "0.000000" {
		t.Fatalf("moderation headers %v", raw.Header)
	}
	rows := usageRows(t, base, tl.ownerKey, 2)
	if rows[0]["model"] != "omni-moderation-latest" || rows[1]["upstream_model"] != "gpt-3.5-turbo-instruct" {
		t.Fatalf("rows %v / %v", rows[0], rows[1])
	}
}

// A Bedrock-only gateway serves embeddings by translation (Titan, Cohere), and says clearly
// that it cannot serve legacy completions or moderations; an Anthropic-only one serves none
// of the three but still answers models.retrieve.
func TestEndpointsOnBedrockAndAnthropicOnly(t *testing.T) {
	t.Run("bedrock", func(t *testing.T) {
		tl := newTestLedger(t, 10*ledger.Credit)
		testKey = tl.ownerKey
		sim := simulated.New(simulated.Options{})
		srv := httptestServer(t, sim)
		sim.SetAWSCredentials("us-east-1", gbAKID, gbSecret, "")
		base := startGateway(t, tl.withStorage(`btl {
		provider bed bedrock {
			base_url `+srv+`
			region us-east-1
			access_key_id `+gbAKID+`
			secret_access_key `+gbSecret+`
			models amazon.titan-embed-text-v2:0 cohere.embed-english-v3 anthropic.claude-haiku-4-5-20251001-v1:0
		}
	}`), fullChain)
		client := sdk(base)
		ctx := context.Background()
		var raw *http.Response
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:      "btl-embed",
			Input:      openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"alpha", "beta"}},
			Dimensions: openai.Int(512),
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if raw.Header.Get("X-Btl-Upstream-Model") != "amazon.titan-embed-text-v2:0" || len(resp.Data) != 2 || len(resp.Data[1].Embedding) != 512 {
			t.Fatalf("%v %d", raw.Header, len(resp.Data))
		}
		if want := simulated.EmbeddingVector("amazon.titan-embed-text-v2:0", "beta", 512); math.Abs(resp.Data[1].Embedding[7]-float64(want[7])) > 1e-6 {
			t.Fatal("titan vector differs")
		}
		if resp.Usage.PromptTokens == 0 || raw.Header.Get("X-Btl-Cost-Usd") == "" {
			t.Fatalf("not metered: %+v", resp.Usage)
		}
		rec, _ := sim.LastBedrockRequest()
		if !strings.Contains(string(rec.Body), `"inputText":"beta"`) || !strings.Contains(string(rec.Body), `"dimensions":512`) {
			t.Fatalf("titan request %s", rec.Body)
		}
		cohere, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "bed/cohere.embed-english-v3",
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two", "three"}},
		})
		if err != nil || len(cohere.Data) != 3 || len(cohere.Data[0].Embedding) != 1024 || cohere.Usage.PromptTokens == 0 {
			t.Fatalf("cohere: %v", err)
		}
		// Cohere has a fixed size: asking for another is the caller's error, said plainly.
		_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "bed/cohere.embed-english-v3",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}, Dimensions: openai.Int(256)})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "dimensions" {
			t.Fatalf("cohere dimensions: %v", err)
		}
		_, err = client.Completions.New(ctx, openai.CompletionNewParams{Model: "bed/anthropic.claude-haiku-4-5-20251001-v1:0",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")}})
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "OpenAI-style provider") {
			t.Fatalf("completions on bedrock: %v", err)
		}
		_, err = client.Moderations.New(ctx, openai.ModerationNewParams{Input: openai.ModerationNewParamsInputUnion{OfString: openai.String("x")}})
		if !errors.As(err, &apiErr) || apiErr.StatusCode/100 != 4 || !strings.Contains(apiErr.Message, "omni-moderation-latest") {
			t.Fatalf("moderations on bedrock: %v", err)
		}
	})
	t.Run("anthropic", func(t *testing.T) {
		tl := newTestLedger(t, 10*ledger.Credit)
		testKey = tl.ownerKey
		sim := simulated.New(simulated.Options{})
		srv := httptestServer(t, sim)
		base := startGateway(t, tl.withStorage(`btl {
		provider anth anthropic {
			base_url `+srv+`
			api_key sim-key
			models claude-haiku-4-5
		}
	}`), fullChain)
		client := sdk(base)
		ctx := context.Background()
		if m, err := client.Models.Get(ctx, "btl-fast"); err != nil || m.ID != "btl-fast" {
			t.Fatalf("models.retrieve: %v", err)
		}
		var apiErr *openai.Error
		_, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "anth/claude-haiku-4-5",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "embedding model") {
			t.Fatalf("embeddings on anthropic: %v", err)
		}
		_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "btl-embed",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.Message, "text-embedding-3-small") {
			t.Fatalf("btl-embed on anthropic: %v", err)
		}
		_, err = client.Completions.New(ctx, openai.CompletionNewParams{Model: "anth/claude-haiku-4-5",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")}})
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
			t.Fatalf("completions on anthropic: %v", err)
		}
	})
}

// httptestServer serves h on a loopback port for the test's lifetime and returns its URL.
func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Gemini's batchEmbedContents and Vertex's predict, translated: batched inputs kept in
// order, dimensions sent as outputDimensionality, usage from Vertex's token counts.
func TestEmbeddingsGeminiAndVertex(t *testing.T) {
	env := gbGateway(t)
	client := sdk(env.base)
	inputs := []string{"red", "green", "blue"}
	for _, model := range []string{"gem/gemini-embedding-001", "vtx/text-embedding-005"} {
		resp, err := client.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
			Model:      model,
			Input:      openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
			Dimensions: openai.Int(128),
		})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		upstream := model[strings.IndexByte(model, '/')+1:]
		for i, d := range resp.Data {
			want := simulated.EmbeddingVector(upstream, inputs[i], 128)
			if len(d.Embedding) != 128 || math.Abs(d.Embedding[3]-float64(want[3])) > 1e-6 {
				t.Fatalf("%s: embedding %d wrong", model, i)
			}
		}
		if resp.Usage.PromptTokens == 0 {
			t.Fatalf("%s: no usage", model)
		}
		body := env.lastUpstream(t, model)
		if !strings.Contains(body, `"outputDimensionality":128`) || !strings.Contains(body, `blue`) {
			t.Fatalf("%s: upstream body %s", model, body)
		}
	}
}
