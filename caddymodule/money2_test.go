package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// Money integrity follow-ups (issue 13): what the gateway cannot price it does not serve, a
// coalesced caller reserves what it may pay, the row and the header agree on the cache
// outcome, and tokens-per-minute counts what the credit reservation counts.

// apiError4xx asserts err is an API error with the status and parameter (when given).
func apiError4xx(t *testing.T, what string, err error, status int, param string) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != status || (param != "" && apiErr.Param != param) {
		t.Fatalf("%s: want %d naming %q, got %v", what, status, param, err)
	}
	return apiErr
}

// TestMoneyUnpricedModelRefused (money2 item 1): a model pinned at request time that neither
// the catalog nor a price block prices — on an openai_compatible provider with no models
// list, or a declared model whose prices file (named by a placeholder, so not checked at
// adapt time) has no entry — is refused with a 400 naming it and the price block that would
// price it, before any upstream call. A model priced at zero is served free, and its row
// and the balance agree.
func TestMoneyUnpricedModelRefused(t *testing.T) {
	tl := newTestLedger(t, ledger.Credit)
	testKey = tl.ownerKey
	up, upURL := newScriptedUpstream(t)
	pricesFile := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(pricesFile, []byte(`{"models":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BTL_TEST_PRICES_FILE", pricesFile)
	base := startGateway(t, tl.withStorage(`btl {
		prices {env.BTL_TEST_PRICES_FILE}
		price vendor-free {
			input 0
			output 0
		}
		provider up openai_compatible {
			base_url `+upURL+`/v1
		}
		provider loc openai_compatible {
			base_url `+upURL+`/v1
			models local-unpriced
		}
	}`), fullChain)
	client := sdk(base)
	ctx := context.Background()
	ask := func(model string) (*openai.ChatCompletion, error) {
		return client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}})
	}
	for _, c := range []struct{ model, upstream string }{
		{"up/vendor-model", "vendor-model"},
		{"local-unpriced", "local-unpriced"},
		{"loc/local-unpriced", "local-unpriced"},
	} {
		_, err := ask(c.model)
		e := apiError4xx(t, c.model, err, http.StatusBadRequest, "model")
		if e.Code != "model_not_priced" || !strings.Contains(e.Message, "'"+c.model+"'") ||
			!strings.Contains(e.Message, "price "+c.upstream+" { input") {
			t.Fatalf("%s: %+v", c.model, e)
		}
	}
	// Embeddings, the Responses API and the Anthropic ingress take the same path.
	_, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "up/vendor-embed",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")}})
	apiError4xx(t, "embeddings", err, http.StatusBadRequest, "model")
	_, err = client.Responses.New(ctx, responses.ResponseNewParams{Model: "up/vendor-model",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")}})
	apiError4xx(t, "responses", err, http.StatusBadRequest, "model")
	if status, raw := call(t, http.MethodPost, base+"/v1/messages", tl.ownerKey,
		`{"model":"up/vendor-model","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}`); status != 400 || !strings.Contains(string(raw), "price vendor-model") {
		t.Fatalf("messages: %d %s", status, raw)
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("unpriced models reached the upstream %d times", n)
	}

	// An operator-priced free model is served, and billed at zero.
	if _, err := ask("up/vendor-free"); err != nil {
		t.Fatalf("free model: %v", err)
	}
	if n := up.requests.Load(); n != 1 {
		t.Fatalf("free model: %d upstream calls", n)
	}
	store := moneyLedger(t, tl)
	rows := waitRows(t, store, tl.workspace, 7, 10*time.Second)
	var served []ledger.Row
	for _, r := range rows {
		if r.Status == http.StatusOK {
			served = append(served, r)
		} else if r.CostMicros != 0 || r.Provider != "" {
			t.Errorf("refused request %s: cost %d, provider %q", r.RequestID, r.CostMicros, r.Provider)
		}
	}
	if len(served) != 1 || served[0].UpstreamModel != "vendor-free" || served[0].CostMicros != 0 || served[0].Output != scriptedOutput {
		t.Fatalf("served rows: %+v", served)
	}
	checkMoney(t, store, tl.workspace, ledger.Credit, served, "")
}

// TestMoneyUnpricedOptionsRefused (money2 item 4): options a provider bills beyond text tokens
// — audio output and input, web_search_options, OpenRouter plugins, and the Responses API's
// hosted tools — have no rate in the catalog, so they are refused with a 400 naming the
// option before any upstream call, rather than served unbilled.
func TestMoneyUnpricedOptionsRefused(t *testing.T) {
	tl := newTestLedger(t, ledger.Credit)
	testKey = tl.ownerKey
	up, upURL := newScriptedUpstream(t)
	base := startGateway(t, tl.withStorage(`btl {
		provider oai openai {
			base_url `+upURL+`/v1
			api_key sk-test
		}
	}`), fullChain)
	client := sdk(base)
	ctx := context.Background()
	hello := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}

	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini", Messages: hello,
		Modalities: []string{"text", "audio"},
		Audio:      openai.ChatCompletionAudioParam{Voice: openai.ChatCompletionAudioParamVoiceUnion{OfString: openai.String("alloy")}, Format: openai.ChatCompletionAudioParamFormatWAV}})
	if e := apiError4xx(t, "audio output", err, http.StatusBadRequest, ""); e.Param != "modalities" && e.Param != "audio" || !strings.Contains(e.Message, "audio output") {
		t.Fatalf("audio output: %+v", e)
	}
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini", Messages: hello,
		WebSearchOptions: openai.ChatCompletionNewParamsWebSearchOptions{SearchContextSize: "low"}})
	apiError4xx(t, "web_search_options", err, http.StatusBadRequest, "web_search_options")
	audioIn := openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
		openai.TextContentPart("what is said here?"),
		openai.InputAudioContentPart(openai.ChatCompletionContentPartInputAudioInputAudioParam{Data: "UklGRgAAAABXQVZF", Format: "wav"}),
	})
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{audioIn}})
	apiError4xx(t, "audio input", err, http.StatusBadRequest, "messages[0].content[1]")
	for body, param := range map[string]string{
		`{"model":"oai/gpt-4o-mini","messages":[{"role":"user","content":"x"}],"modalities":["audio"]}`:                "modalities",
		`{"model":"oai/gpt-4o-mini","messages":[{"role":"user","content":"x"}],"audio":{"voice":"alloy"}}`:             "audio",
		`{"model":"oai/gpt-4o-mini","messages":[{"role":"user","content":"x"}],"plugins":[{"id":"web"}]}`:              "plugins",
		`{"model":"oai/gpt-4o-mini","messages":[{"role":"user","content":"x"}],"Web_Search_Options":{}}`:               "Web_Search_Options",
		`{"model":"oai/gpt-4o-mini","messages":[{"role":"user","Content":[{"type":"input_audio","input_audio":{}}]}]}`: "messages[0].content[0]",
	} {
		if status, raw := call(t, http.MethodPost, base+"/v1/chat/completions", tl.ownerKey, body); status != 400 || !strings.Contains(string(raw), `"param":"`+param+`"`) {
			t.Errorf("%s: %d %s", body, status, raw)
		}
	}
	for _, tool := range []responses.ToolUnionParam{
		{OfWebSearch: &responses.WebSearchToolParam{Type: responses.WebSearchToolTypeWebSearch}},
		{OfFileSearch: &responses.FileSearchToolParam{VectorStoreIDs: []string{"vs_1"}}},
		{OfCodeInterpreter: &responses.ToolCodeInterpreterParam{Container: responses.ToolCodeInterpreterContainerUnionParam{OfString: openai.String("auto")}}},
		{OfImageGeneration: &responses.ToolImageGenerationParam{}},
	} {
		_, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "oai/gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")}, Tools: []responses.ToolUnionParam{tool}})
		if e := apiError4xx(t, "hosted tool", err, http.StatusBadRequest, "tools[0].type"); !strings.Contains(e.Message, "not priced") {
			t.Fatalf("hosted tool: %+v", e)
		}
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}
	// The same request without the option is served.
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini", Messages: hello,
		Modalities: []string{"text"}}); err != nil {
		t.Fatalf("text only: %v", err)
	}
}

// TestMoneyCoalescedJoinerReserves (money2 item 2): a caller that joins an identical stream
// in flight may end up paying it (when the first caller leaves before the usage arrives), so
// it reserves what the shared call can cost — the bounds the adapter admitted, here a
// thinking budget that turns max_tokens 1 into 16,385, up to $0.37 of claude-sonnet-4-5 at
// its long-context output rate — before it relays anything. On a balance that covers the
// call once, the joiner is refused with 402; the first caller is served and the money adds
// up.
func TestMoneyCoalescedJoinerReserves(t *testing.T) {
	const balance = 450_000 // $0.45: one call's bound, not two
	tl, sim, client, params := sharedStreamGateway(t, balance, "joiner-test")
	leader := client.Chat.Completions.NewStreaming(context.Background(), params)
	if !leader.Next() {
		t.Fatalf("leader got nothing: %v", leader.Err())
	}
	joined := make(chan error, 1)
	go func() {
		joiner := client.Chat.Completions.NewStreaming(context.Background(), params)
		for joiner.Next() {
		}
		joined <- joiner.Err()
	}()
	// Refused before its first byte, while the flight is held; a joiner that is served waits
	// for the release instead (bounded, so that case fails rather than hangs).
	var joinErr error
	select {
	case joinErr = <-joined:
	case <-time.After(10 * time.Second):
	}
	sim.Release("joiner-test")
	if joinErr == nil {
		joinErr = <-joined
	}
	for leader.Next() {
	}
	if err := leader.Err(); err != nil {
		t.Fatalf("leader: %v", err)
	}
	if e := apiError4xx(t, "joiner", joinErr, http.StatusPaymentRequired, ""); e.Code != "insufficient_quota" {
		t.Fatalf("joiner: %+v", e)
	}
	if n := sim.Stats().Requests; n != 1 {
		t.Fatalf("upstream called %d times", n)
	}
	store := moneyLedger(t, tl)
	rows := waitRows(t, store, tl.workspace, 2, 10*time.Second)
	var paid []ledger.Row
	for _, r := range rows {
		if r.Status == http.StatusOK {
			paid = append(paid, r)
		}
	}
	if len(rows) != 2 || len(paid) != 1 || paid[0].CostMicros == 0 {
		t.Fatalf("rows: %+v", rows)
	}
	checkMoney(t, store, tl.workspace, balance, paid, "")
}

// TestMoneyCoalescedJoinerPaysWithinReservation (money2 item 2): when the first caller of a
// shared stream leaves before the usage arrives, a joiner pays the whole call; its
// reservation covered it, so every workspace invariant still holds.
func TestMoneyCoalescedJoinerPaysWithinReservation(t *testing.T) {
	tl, sim, client, params := sharedStreamGateway(t, 10*ledger.Credit, "pays-test")
	leaderCtx, leave := context.WithCancel(context.Background())
	leader := client.Chat.Completions.NewStreaming(leaderCtx, params)
	if !leader.Next() {
		t.Fatalf("leader got nothing: %v", leader.Err())
	}
	done := make(chan error, 1)
	var joinedHeader string
	go func() {
		var raw *http.Response
		joiner := client.Chat.Completions.NewStreaming(context.Background(), params, option.WithResponseInto(&raw))
		for joiner.Next() {
		}
		if raw != nil {
			joinedHeader = raw.Header.Get("X-Btl-Cache")
		}
		done <- joiner.Err()
	}()
	waitFor(t, func() bool { return sim.Stats().Requests == 1 }, "the joiner")
	time.Sleep(200 * time.Millisecond) // the joiner has subscribed to the flight
	leave()
	leader.Close()
	time.Sleep(100 * time.Millisecond)
	sim.Release("pays-test")
	if err := <-done; err != nil {
		t.Fatalf("joiner: %v", err)
	}
	if joinedHeader != "coalesced" {
		t.Fatalf("joiner's x-btl-cache %q", joinedHeader)
	}
	store := moneyLedger(t, tl)
	rows := waitRows(t, store, tl.workspace, 2, 10*time.Second)
	if len(rows) != 2 {
		t.Fatalf("rows: %+v", rows)
	}
	checkMoney(t, store, tl.workspace, 10*ledger.Credit, rows, "")
}

// sharedStreamGateway serves Claude from the simulator on a ledger with balance; params is a
// deterministic stream that the simulator holds after its first event until hold is
// released, with max_tokens 1 and reasoning_effort high, which the adapter sends as 16,385.
func sharedStreamGateway(t *testing.T, balance ledger.Micros, hold string) (*testLedger, *simulated.Server, openai.Client, openai.ChatCompletionNewParams) {
	tl := newTestLedger(t, balance)
	testKey = tl.ownerKey
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	base := startGateway(t, tl.withStorage(`btl {
		provider anth anthropic {
			base_url `+srv.URL+`
			api_key sk-ant-test-key
		}
	}`), fullChain)
	client := sdk(base)
	params := openai.ChatCompletionNewParams{Model: "anth/claude-sonnet-4-5", MaxTokens: openai.Int(1), Temperature: openai.Float(0),
		ReasoningEffort: shared.ReasoningEffortHigh,
		Messages:        []openai.ChatCompletionMessageParamUnion{openai.UserMessage("think together [sim:hold=" + hold + "]")}}
	return tl, sim, client, params
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCacheOutcomeRowMatchesHeader (money2 item 3): the ledger row records the cache outcome
// the X-Btl-Cache header announced — "bypass" when no cache took part, stream or not — and
// never an empty one.
func TestCacheOutcomeRowMatchesHeader(t *testing.T) {
	base, _, _, tl := simGatewayLedger(t)
	client := sdk(base)
	ctx := context.Background()
	headers := map[string]string{}
	var raw *http.Response
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("non-stream")}}, option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	headers[raw.Header.Get("X-Btl-Request-Id")] = raw.Header.Get("X-Btl-Cache")
	st := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "btl-fast",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream")}}, option.WithResponseInto(&raw))
	for st.Next() {
	}
	if st.Err() != nil {
		t.Fatal(st.Err())
	}
	headers[raw.Header.Get("X-Btl-Request-Id")] = raw.Header.Get("X-Btl-Cache")
	store := moneyLedger(t, tl)
	rows := waitRows(t, store, tl.workspace, 2, 10*time.Second)
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, r := range rows {
		if h, ok := headers[r.RequestID]; !ok || h != "bypass" || r.CacheOutcome != h {
			t.Errorf("row %s: cache outcome %q, header %q", r.RequestID, r.CacheOutcome, h)
		}
	}
}

// TestTPMCountsChoices (money2 item 5): the tokens-per-minute limit counts what the credit
// reservation counts — the prompt and n times the output cap — so n answers of 1,000 tokens
// need n × 1,000 tokens of the limit.
func TestTPMCountsChoices(t *testing.T) {
	base, _, _, tl := simGatewayLedger(t)
	tk := mintKey(t, base, tl.ownerKey, `{"scopes":["inference"],"tpm":5000}`)
	client := keyClient(base, tk.Key)
	params := openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", MaxTokens: openai.Int(1000), N: openai.Int(8),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("eight answers")}}
	_, err := client.Chat.Completions.New(context.Background(), params)
	if e := apiError4xx(t, "n=8 × 1,000 tokens on 5,000 TPM", err, http.StatusTooManyRequests, ""); e.Type != "tokens" || !strings.Contains(e.Message, "too large") {
		t.Fatalf("429: %+v", e)
	}
	params.N = openai.Int(2)
	if _, err := client.Chat.Completions.New(context.Background(), params); err != nil {
		t.Fatalf("n=2 × 1,000 tokens on 5,000 TPM: %v", err)
	}
}
