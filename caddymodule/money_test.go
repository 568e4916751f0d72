package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// Request-path money (issue 13 items 7–13), through a real Caddy with the openai-go SDK.

// scriptedUpstream is an OpenAI-type upstream whose answers the money tests script: a stream
// sends the deltas and is then cut (no finish, no usage, no [DONE]); a non-stream answer
// comes after delay with fixed usage and names the service tier it served (the one asked
// for, "default" for none or auto, as OpenAI does). It serves the chat and Responses APIs.
type scriptedUpstream struct {
	deltas   []string
	toolArgs string // a tool-call arguments fragment after the deltas (chat streams)
	delay    time.Duration
	requests atomic.Int64
	bodies   chan []byte
}

const scriptedPrompt, scriptedOutput = 1000, 200

func newScriptedUpstream(t *testing.T, deltas ...string) (*scriptedUpstream, string) {
	u := &scriptedUpstream{deltas: deltas, bodies: make(chan []byte, 64)}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	return u, srv.URL
}

func (u *scriptedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	raw, _ := io.ReadAll(r.Body)
	select {
	case u.bodies <- raw:
	default:
	}
	var req struct {
		Model       string `json:"model"`
		Stream      bool   `json:"stream"`
		ServiceTier string `json:"service_tier"`
	}
	_ = json.Unmarshal(raw, &req)
	tier := req.ServiceTier
	if tier == "" || tier == "auto" {
		tier = "default"
	}
	responsesAPI := strings.HasSuffix(r.URL.Path, "/responses")
	if !req.Stream {
		select {
		case <-time.After(u.delay):
		case <-r.Context().Done(): // the gateway gave up: no answer
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if responsesAPI {
			io.WriteString(w, `{"id":"resp_s","object":"response","created_at":1,"status":"completed","model":"`+req.Model+`","service_tier":"`+tier+`",`+
				`"output":[{"type":"message","id":"msg_s","status":"completed","role":"assistant","content":[{"type":"output_text","text":"ok","annotations":[]}]}],`+
				`"usage":{"input_tokens":`+strconv.Itoa(scriptedPrompt)+`,"output_tokens":`+strconv.Itoa(scriptedOutput)+`,"total_tokens":1200}}`)
			return
		}
		io.WriteString(w, `{"id":"c","object":"chat.completion","created":1,"model":"`+req.Model+`","service_tier":"`+tier+`",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":`+strconv.Itoa(scriptedPrompt)+`,"completion_tokens":`+strconv.Itoa(scriptedOutput)+`,"total_tokens":1200}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	send := func(data string) {
		if responsesAPI {
			var probe struct{ Type string }
			_ = json.Unmarshal([]byte(data), &probe)
			io.WriteString(w, "event: "+probe.Type+"\n")
		}
		io.WriteString(w, "data: "+data+"\n\n")
		w.(http.Flusher).Flush()
	}
	str := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	if responsesAPI {
		send(`{"type":"response.created","sequence_number":0,"response":{"id":"resp_s","object":"response","status":"in_progress","output":[]}}`)
		for i, d := range u.deltas {
			send(`{"type":"response.output_text.delta","sequence_number":` + strconv.Itoa(i+1) + `,"item_id":"msg_s","output_index":0,"content_index":0,"delta":` + str(d) + `}`)
		}
		return // cut before response.completed
	}
	chunk := func(delta string) string {
		return `{"id":"c","object":"chat.completion.chunk","created":1,"model":"` + req.Model + `","service_tier":"` + tier +
			`","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":null}],"usage":null}`
	}
	send(chunk(`{"role":"assistant","content":""}`))
	for _, d := range u.deltas {
		send(chunk(`{"content":` + str(d) + `}`))
	}
	if u.toolArgs != "" {
		send(chunk(`{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"lookup","arguments":""}}]}`))
		send(chunk(`{"tool_calls":[{"index":0,"function":{"arguments":` + str(u.toolArgs) + `}}]}`))
	}
	// cut: the connection ends without a finish reason, usage or [DONE]
}

// moneyLedger opens the test ledger's store.
func moneyLedger(t *testing.T, tl *testLedger) ledger.Store {
	t.Helper()
	store, err := ledger.OpenSQLite(context.Background(), tl.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// rowFor waits for the row of the request for model.
func rowFor(t *testing.T, store ledger.Store, ws, model string) ledger.Row {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range waitRows(t, store, ws, 0, 0) {
			if r.RequestedModel == model {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ledger row for %s", model)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkMoney is the money invariant over a workspace's rows: every row's cost is its usage at
// the catalog price of its upstream model (in the tier it names, when given), and the balance
// is the grants less the sum of the rows' costs.
func checkMoney(t *testing.T, store ledger.Store, ws string, granted ledger.Micros, rows []ledger.Row, tier string) {
	t.Helper()
	prices, err := catalog.Default().WithEntries(moneyTestPrices)
	if err != nil {
		t.Fatal(err)
	}
	var spent ledger.Micros
	for _, r := range rows {
		p, ok := prices.Lookup(r.UpstreamModel)
		if !ok {
			t.Fatalf("row %s: upstream model %q has no price", r.RequestID, r.UpstreamModel)
		}
		if p, ok = p.ForTier(tier); !ok {
			t.Fatalf("tier %s not priced for %s", tier, r.UpstreamModel)
		}
		u := providers.Usage{InputUncached: r.InputUncached, CacheRead: r.CacheRead, CacheWrite5m: r.CacheWrite5m,
			CacheWrite1h: r.CacheWrite1h, Output: r.Output, Reasoning: r.Reasoning}
		if want := ledger.Micros(p.Cost(u)); r.CostMicros != want {
			t.Errorf("row %s (%s): cost %d µ$, usage %+v at the catalog price is %d µ$", r.RequestID, r.RequestedModel, r.CostMicros, u, want)
		}
		spent += r.CostMicros
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		bal, err := store.Balance(context.Background(), ws)
		if err != nil {
			t.Fatal(err)
		}
		if bal == granted-spent {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("balance %s, want grants %s − Σ row cost %s", bal, granted, spent)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// moneyTestPrices prices the made-up model names of the money tests at gpt-4o-mini's rates,
// in their configs and in checkMoney alike.
var moneyTestPrices = map[string]catalog.Entry{
	"gpt-4o-mini-cut-chat": {Input: 0.15, CachedInput: 0.075, Output: 0.6}, "gpt-4o-mini-cut-messages": {Input: 0.15, CachedInput: 0.075, Output: 0.6},
	"gpt-4o-mini-cut-resp-translated": {Input: 0.15, CachedInput: 0.075, Output: 0.6}, "gpt-4o-mini-cut-resp-native": {Input: 0.15, CachedInput: 0.075, Output: 0.6},
	"claude-sonnet-4-5-cut": {Input: 3, CachedInput: 0.3, Output: 15},
	"vendor-free":           {}, // priced at zero by its test's config
}

// TestMoneyCutStreamBilledByDeliveredText (item 7): a stream cut before its usage arrived is
// billed for the text it delivered — content and tool arguments, four bytes a token for a
// model with nothing learned yet — on every stream path: OpenAI chat, Anthropic translated,
// the Anthropic Messages ingress, Responses translated and Responses pass-through. Before,
// it was billed by its JSON envelopes (bytes / 16): several times too much for small deltas,
// a third of it for large ones.
func TestMoneyCutStreamBilledByDeliveredText(t *testing.T) {
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	deltas := []string{"Hi", " there,", " é✓", strings.Repeat(" large chunk of text", 25), "!"}
	up, upURL := newScriptedUpstream(t, deltas...)
	up.toolArgs = `{"city":"Paris"}`
	sim := httptest.NewServer(simulated.New(simulated.Options{}))
	t.Cleanup(sim.Close)
	// One model name per stream path, so each row can be found; the catalog prices only exact
	// ids (and date/version suffixes), so the config prices the names (moneyTestPrices).
	prices := ""
	for m, e := range moneyTestPrices {
		prices += fmt.Sprintf("\n\t\tprice %s {\n\t\t\tinput %g\n\t\t\tcached_input %g\n\t\t\toutput %g\n\t\t}", m, e.Input, e.CachedInput, e.Output)
	}
	base := startGateway(t, tl.withStorage(`btl {`+prices+`
		provider up openai_compatible {
			base_url `+upURL+`/v1
		}
		provider oai openai {
			base_url `+upURL+`/v1
			api_key sk-test
		}
		provider anth anthropic {
			base_url `+sim.URL+`
			api_key sk-ant-test-key
		}
	}`), fullChain)
	client := sdk(base)
	ctx := context.Background()
	textOf := func(s ...string) int64 { return int64(len(strings.Join(s, ""))) }
	scripted := textOf(deltas...)

	delivered := map[string]int64{}
	// OpenAI chat, with a tool call's arguments.
	model := "up/gpt-4o-mini-cut-chat"
	st := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream please")}})
	var got strings.Builder
	for st.Next() {
		for _, c := range st.Current().Choices {
			got.WriteString(c.Delta.Content)
			for _, tc := range c.Delta.ToolCalls {
				got.WriteString(tc.Function.Name + tc.Function.Arguments)
			}
		}
	}
	if want := textOf(deltas...) + textOf("lookup", up.toolArgs); int64(got.Len()) != want {
		t.Fatalf("chat: client got %d bytes of text (%v), want %d", got.Len(), st.Err(), want)
	}
	delivered[model] = int64(got.Len())

	// Anthropic translated: the simulator cuts after six content chunks.
	model = "anth/claude-sonnet-4-5-cut"
	st = client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(200),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me a long story [sim:cut_after=6]")}})
	got.Reset()
	for st.Next() {
		for _, c := range st.Current().Choices {
			got.WriteString(c.Delta.Content)
		}
	}
	if got.Len() == 0 {
		t.Fatalf("anthropic: no text before the cut: %v", st.Err())
	}
	delivered[model] = int64(got.Len())

	// The Anthropic Messages ingress, to the cut OpenAI-compatible upstream.
	model = "up/gpt-4o-mini-cut-messages"
	status, _, _, raw := postRaw(t, base+"/v1/messages", "application/json", strings.NewReader(
		`{"model":"`+model+`","max_tokens":300,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	var text int64
	for _, line := range strings.Split(string(raw), "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var ev struct {
				Delta struct {
					Text        string `json:"text"`
					PartialJSON string `json:"partial_json"`
				} `json:"delta"`
				ContentBlock struct {
					Name string `json:"name"`
				} `json:"content_block"`
			}
			if json.Unmarshal([]byte(d), &ev) == nil {
				text += int64(len(ev.Delta.Text) + len(ev.Delta.PartialJSON) + len(ev.ContentBlock.Name))
			}
		}
	}
	withTool := scripted + textOf("lookup", up.toolArgs)
	if status != 200 || text != withTool {
		t.Fatalf("messages: %d, %d bytes of text, want %d: %s", status, text, withTool, raw)
	}
	delivered[model] = text

	// Responses, translated (OpenAI-compatible upstream) and passed through (OpenAI upstream).
	for _, model := range []string{"up/gpt-4o-mini-cut-resp-translated", "oai/gpt-4o-mini-cut-resp-native"} {
		rs := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: model,
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("stream it")}})
		got.Reset()
		for rs.Next() {
			switch ev := rs.Current(); ev.Type {
			case "response.output_text.delta", "response.function_call_arguments.delta":
				got.WriteString(ev.Delta)
			case "response.output_item.added":
				got.WriteString(ev.Item.Name)
			}
		}
		want := scripted // the native Responses script has no tool call
		if strings.HasPrefix(model, "up/") {
			want += textOf("lookup", up.toolArgs)
		}
		if int64(got.Len()) != want {
			t.Fatalf("%s: client got %d bytes of text (%v), want %d", model, got.Len(), rs.Err(), want)
		}
		delivered[model] = int64(got.Len())
	}

	store := moneyLedger(t, tl)
	var rows []ledger.Row
	for model, textBytes := range delivered {
		r := rowFor(t, store, tl.workspace, model)
		if !r.Stream {
			t.Fatalf("%s: row is not a stream", model)
		}
		if want := (textBytes + 3) / 4; r.Output != want {
			t.Errorf("%s: billed %d output tokens for %d bytes of delivered text, want %d", model, r.Output, textBytes, want)
		}
		rows = append(rows, r)
	}
	checkMoney(t, store, tl.workspace, 100*ledger.Credit, rows, "")
}

// TestMoneyClientAbortNonStreamBilled (item 8): a client that leaves a non-stream request
// does not cancel the upstream call: it runs to completion (bounded by the route deadline)
// and is billed from the usage the upstream reported. Twelve such aborts do not open the
// provider's circuit breaker, and nothing is retried or failed over for them.
func TestMoneyClientAbortNonStreamBilled(t *testing.T) {
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	up, upURL := newScriptedUpstream(t)
	up.delay = 300 * time.Millisecond
	backup, backupURL := newScriptedUpstream(t)
	base := startGateway(t, tl.withStorage(`btl {
		provider up openai_compatible {
			base_url `+upURL+`/v1
		}
		provider backup openai_compatible {
			base_url `+backupURL+`/v1
		}
		model btl-abort {
			candidates up/gpt-4o-mini backup/gpt-4o-mini
			strategy ordered
		}
	}`), fullChain)
	client := sdk(base)
	const aborts = 12
	for i := range aborts {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "btl-abort",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("question " + strconv.Itoa(i))}})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("abort %d: %v", i, err)
		}
	}
	store := moneyLedger(t, tl)
	rows := waitRows(t, store, tl.workspace, aborts, 10*time.Second)
	if len(rows) != aborts {
		t.Fatalf("%d rows for %d aborted requests", len(rows), aborts)
	}
	for _, r := range rows {
		if r.Provider != "up" || r.Output != scriptedOutput || r.InputUncached != scriptedPrompt || r.CostMicros == 0 {
			t.Errorf("aborted request %s: provider %s, usage in %d out %d, cost %d µ$: want the upstream's reported usage billed",
				r.RequestID, r.Provider, r.InputUncached, r.Output, r.CostMicros)
		}
	}
	checkMoney(t, store, tl.workspace, 100*ledger.Credit, rows, "")
	if n := backup.requests.Load(); n != 0 {
		t.Fatalf("client aborts failed over to the backup %d times", n)
	}
	var provs struct {
		Data []struct{ Name, Health string } `json:"data"`
	}
	if err := json.Unmarshal(getRaw(t, base+"/v1/providers", tl.ownerKey), &provs); err != nil {
		t.Fatal(err)
	}
	for _, p := range provs.Data {
		if p.Name == "up" && p.Health != "closed" {
			t.Fatalf("client aborts moved the upstream's breaker to %q", p.Health)
		}
	}
	// The upstream still serves the next caller first.
	up.delay = 0
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "btl-abort",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("still there?")}})
	if err != nil || resp.Choices[0].Message.Content != "ok" || backup.requests.Load() != 0 {
		t.Fatalf("after the aborts: %v, backup called %d times", err, backup.requests.Load())
	}
}

// TestMoneyNChoicesReserved (item 9): n multiplies the output reservation. 128 choices of
// 1,000 tokens cost up to $0.077 on gpt-4o-mini, more than a $0.01 balance: refused with 402
// before the upstream is called. n above 128 is a 400.
func TestMoneyNChoicesReserved(t *testing.T) {
	tl := newTestLedger(t, 10_000) // $0.01
	testKey = tl.ownerKey
	up, upURL := newScriptedUpstream(t)
	base := startGateway(t, tl.withStorage(`btl {
		provider up openai_compatible {
			base_url `+upURL+`/v1
		}
	}`), fullChain)
	client := sdk(base)
	params := openai.ChatCompletionNewParams{Model: "up/gpt-4o-mini", N: openai.Int(128), MaxTokens: openai.Int(1000),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("many answers")}}
	_, err := client.Chat.Completions.New(context.Background(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusPaymentRequired || apiErr.Code != "insufficient_quota" {
		t.Fatalf("n=128 × 1,000 tokens on $0.01: %v", err)
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("a refused request reached the upstream (%d calls)", n)
	}
	params.N = openai.Int(129)
	if _, err = client.Chat.Completions.New(context.Background(), params); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "n" {
		t.Fatalf("n=129: %v", err)
	}
	params.N, params.MaxTokens = openai.Int(2), openai.Int(100)
	if _, err = client.Chat.Completions.New(context.Background(), params); err != nil {
		t.Fatalf("n=2 × 100 tokens: %v", err)
	}
}

// TestMoneyThinkingBudgetReserved (item 10): the reservation covers what the adapter sends,
// after its rewrites. max_tokens 1 with reasoning_effort high reaches Anthropic as 16,385
// tokens ($0.25 of claude-sonnet-4-5 output): on a $0.05 balance it is refused with 402 and
// never sent; reasoning_effort low (1,025 tokens) fits and is served.
func TestMoneyThinkingBudgetReserved(t *testing.T) {
	tl := newTestLedger(t, 50_000) // $0.05
	testKey = tl.ownerKey
	var calls atomic.Int64
	var lastMaxTokens atomic.Int64
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		raw, _ := io.ReadAll(r.Body)
		var probe struct {
			MaxTokens int64 `json:"max_tokens"`
		}
		_ = json.Unmarshal(raw, &probe)
		lastMaxTokens.Store(probe.MaxTokens)
		r.Body = io.NopCloser(strings.NewReader(string(raw)))
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	base := startGateway(t, tl.withStorage(`btl {
		provider anth anthropic {
			base_url `+srv.URL+`
			api_key sk-ant-test-key
		}
	}`), fullChain)
	client := sdk(base)
	params := openai.ChatCompletionNewParams{Model: "anth/claude-sonnet-4-5", MaxTokens: openai.Int(1),
		ReasoningEffort: shared.ReasoningEffortHigh,
		Messages:        []openai.ChatCompletionMessageParamUnion{openai.UserMessage("think hard")}}
	_, err := client.Chat.Completions.New(context.Background(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusPaymentRequired || apiErr.Code != "insufficient_quota" {
		t.Fatalf("max_tokens 1 + high effort on $0.05: %v (the upstream saw max_tokens %d)", err, lastMaxTokens.Load())
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("refused request reached Anthropic %d times", n)
	}
	params.ReasoningEffort = shared.ReasoningEffortLow
	if _, err := client.Chat.Completions.New(context.Background(), params); err != nil {
		t.Fatalf("low effort: %v", err)
	}
	if calls.Load() != 1 || lastMaxTokens.Load() != 1025 {
		t.Fatalf("low effort: %d calls, max_tokens %d sent", calls.Load(), lastMaxTokens.Load())
	}
	store := moneyLedger(t, tl)
	checkMoney(t, store, tl.workspace, 50_000, waitRows(t, store, tl.workspace, 2, 10*time.Second), "")
}

// TestMoneyHostileNumbersAndCaseVariantsRefused (items 11, 12): numbers outside their range
// and case variants of fields the gateway reads are 400s on every body it reads — chat,
// Responses (translated and pass-through) and the Anthropic ingress — before any upstream
// call.
func TestMoneyHostileNumbersAndCaseVariantsRefused(t *testing.T) {
	tl := newTestLedger(t, 10_000)
	testKey = tl.ownerKey
	up, upURL := newScriptedUpstream(t)
	base := startGateway(t, tl.withStorage(`btl {
		provider oai openai {
			base_url `+upURL+`/v1
			api_key sk-test
		}
	}`), fullChain)
	for _, c := range []struct{ path, body, param string }{
		{"/v1/chat/completions", `{"model":"oai/gpt-4o-mini","max_tokens":9223372036854775807,"messages":[{"role":"user","content":"x"}]}`, "max_tokens"},
		{"/v1/chat/completions", `{"model":"oai/gpt-4o-mini","n":1000,"messages":[{"role":"user","content":"x"}]}`, "n"},
		{"/v1/chat/completions", `{"model":"oai/gpt-4o-mini","top_logprobs":99,"logprobs":true,"messages":[{"role":"user","content":"x"}]}`, "top_logprobs"},
		{"/v1/chat/completions", `{"model":"oai/gpt-4o-mini","max_tokens":16,"Max_Tokens":100000,"messages":[{"role":"user","content":"x"}]}`, "Max_Tokens"},
		{"/v1/responses", `{"model":"oai/gpt-4o-mini","input":"x","max_output_tokens":16,"MAX_OUTPUT_TOKENS":100000}`, "MAX_OUTPUT_TOKENS"},
		{"/v1/responses", `{"model":"oai/gpt-4o-mini","input":"x","max_output_tokens":9223372036854775807}`, "max_output_tokens"},
		{"/v1/messages", `{"model":"oai/gpt-4o-mini","max_tokens":16,"MAX_TOKENS":100000,"messages":[{"role":"user","content":"x"}]}`, "MAX_TOKENS"},
		{"/v1/messages", `{"model":"oai/gpt-4o-mini","max_tokens":16,"thinking":{"type":"enabled","budget_tokens":9223372036854775807},"messages":[{"role":"user","content":"x"}]}`, "thinking.budget_tokens"},
	} {
		status, raw := call(t, "POST", base+c.path, tl.ownerKey, c.body)
		named := strings.Contains(string(raw), `"param":"`+c.param+`"`)
		if c.path == "/v1/messages" { // Anthropic's error shape has no param: the message names it
			named = strings.Contains(string(raw), c.param)
		}
		if status != 400 || !named {
			t.Errorf("%s %s: %d %s", c.path, c.body, status, raw)
		}
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}
}

// TestMoneyServiceTierPriced (item 13): service_tier is billed at its tier's catalog price
// (priority at OpenAI's priority rates), on chat (stream and not) and the Responses
// pass-through; a tier the catalog does not price for the model is refused with a 400 before
// the call; "auto" is billed in the tier the upstream says it served.
func TestMoneyServiceTierPriced(t *testing.T) {
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	up, upURL := newScriptedUpstream(t, "priority text")
	base := startGateway(t, tl.withStorage(`btl {
		provider oai openai {
			base_url `+upURL+`/v1
			api_key sk-test
		}
	}`), fullChain)
	client := sdk(base)
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("fast please")}
	var raw *http.Response
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini", Messages: msgs,
		ServiceTier: openai.ChatCompletionNewParamsServiceTierPriority}, option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	// 1,000 prompt and 200 output tokens at $0.25 / $1.00 per 1M (priority), not $0.15 / $0.60.
	if got := raw.Header.Get("X-Btl-Cost-Usd"); got != "0.000450" {
		t.Fatalf("priority cost %s, want 0.000450", got)
	}
	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini", Messages: msgs,
		ServiceTier: openai.ChatCompletionNewParamsServiceTierFlex})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "service_tier" || !strings.Contains(apiErr.Message, "priority") {
		t.Fatalf("flex on gpt-4o-mini (not priced): %v", err)
	}
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini", Messages: msgs,
		ServiceTier: openai.ChatCompletionNewParamsServiceTierAuto}, option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get("X-Btl-Cost-Usd"); got != "0.000270" {
		t.Fatalf("auto (served as default) cost %s, want 0.000270", got)
	}
	if n := up.requests.Load(); n != 2 {
		t.Fatalf("upstream called %d times, want 2 (flex refused before the call)", n)
	}
	// A stream in the priority tier, cut after its text: billed at priority rates.
	st := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "oai/gpt-4o-mini-2024-07-18", Messages: msgs,
		ServiceTier: openai.ChatCompletionNewParamsServiceTierPriority})
	for st.Next() {
	}
	// The Responses pass-through, priority on gpt-4o.
	if _, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "oai/gpt-4o",
		Input:       responses.ResponseNewParamsInputUnion{OfString: openai.String("fast")},
		ServiceTier: responses.ResponseNewParamsServiceTierPriority}, option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	// 1,000 × $4.25 + 200 × $17 per 1M.
	if got := raw.Header.Get("X-Btl-Cost-Usd"); got != "0.007650" {
		t.Fatalf("responses priority cost %s, want 0.007650", got)
	}
	store := moneyLedger(t, tl)
	stream := rowFor(t, store, tl.workspace, "oai/gpt-4o-mini-2024-07-18")
	checkMoney(t, store, tl.workspace, 100*ledger.Credit-450-270-7650, []ledger.Row{stream}, "priority")
}
