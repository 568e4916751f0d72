package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// POST /v1/responses end to end: the official openai-go client against the gateway, with an
// OpenAI-type (simulated, chat-shaped: served by translation) and an Anthropic-type upstream
// on the simulator.

type respEnv struct {
	base, key, otherKey string
	sim                 *simulated.Server
}

func responsesGateway(t *testing.T) *respEnv {
	t.Helper()
	tl := newTestLedger(t, 100*ledger.Credit)
	store, err := ledger.OpenSQLite(context.Background(), tl.db)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := store.CreateWorkspace(context.Background(), "other", 10*ledger.Credit)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	testKey = tl.ownerKey
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	block := `btl {
		provider sim simulated {
			base_url ` + srv.URL + `/v1
			api_key sim-key
		}
		provider anth anthropic {
			base_url ` + srv.URL + `
			api_key sk-ant-test-key
		}
		responses_retention 48h
	}`
	base := startGateway(t, tl.withStorage(block), fullChain)
	return &respEnv{base: base, key: tl.ownerKey, otherKey: otherKey, sim: sim}
}

func (e *respEnv) client(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(e.base+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

var respModels = []string{"sim/gpt-4o-mini", "anth/claude-sonnet-4-5"}

var weatherFn = responses.ToolParamOfFunction("get_weather", map[string]any{
	"type":                 "object",
	"properties":           map[string]any{"city": map[string]any{"type": "string"}},
	"required":             []string{"city"},
	"additionalProperties": false,
}, true)

// streamed runs NewStreaming and checks the event ladder: created and in_progress first,
// rising sequence numbers from 0, deltas that add up to the done events, and a terminal
// event carrying the final response.
func streamed(t *testing.T, c openai.Client, params responses.ResponseNewParams) (*responses.Response, string) {
	t.Helper()
	s := c.Responses.NewStreaming(context.Background(), params)
	var types []string
	var text, args strings.Builder
	var final *responses.Response
	seq := int64(0)
	for s.Next() {
		ev := s.Current()
		if ev.SequenceNumber != seq {
			t.Fatalf("sequence_number %d, want %d (%s)", ev.SequenceNumber, seq, ev.Type)
		}
		seq++
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.output_text.done":
			if ev.Text != text.String() {
				t.Fatalf("text.done %q != deltas %q", ev.Text, text.String())
			}
		case "response.function_call_arguments.delta":
			args.WriteString(ev.Delta)
		case "response.function_call_arguments.done":
			if ev.Arguments != args.String() {
				t.Fatalf("arguments.done %q != deltas %q", ev.Arguments, args.String())
			}
		case "response.completed", "response.incomplete", "response.failed":
			r := ev.Response
			final = &r
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(types) < 3 || types[0] != "response.created" || types[1] != "response.in_progress" || final == nil {
		t.Fatalf("event ladder: %v", types)
	}
	if types[len(types)-1] != "response.completed" && types[len(types)-1] != "response.incomplete" {
		t.Fatalf("terminal event: %v", types)
	}
	return final, strings.Join(types, " ")
}

func runResponse(t *testing.T, c openai.Client, params responses.ResponseNewParams, stream bool) *responses.Response {
	t.Helper()
	if stream {
		r, _ := streamed(t, c, params)
		return r
	}
	r, err := c.Responses.New(context.Background(), params)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return r
}

func TestResponsesText(t *testing.T) {
	env := responsesGateway(t)
	c := env.client(env.key)
	n := 0
	for _, model := range respModels {
		for _, stream := range []bool{false, true} {
			r := runResponse(t, c, responses.ResponseNewParams{
				Model:        model,
				Instructions: openai.String("Be brief."),
				Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
			}, stream)
			n++
			if r.Object != "response" || !strings.HasPrefix(r.ID, "resp_") || r.Status != "completed" || r.CreatedAt == 0 {
				t.Fatalf("%s stream=%v: shape %s", model, stream, r.RawJSON())
			}
			if !strings.HasPrefix(r.OutputText(), "Simulated answer: Say hello") {
				t.Fatalf("%s stream=%v: text %q", model, stream, r.OutputText())
			}
			if r.Usage.InputTokens == 0 || r.Usage.OutputTokens == 0 || r.Usage.TotalTokens != r.Usage.InputTokens+r.Usage.OutputTokens {
				t.Fatalf("%s stream=%v: usage %s", model, stream, r.Usage.RawJSON())
			}
			if !strings.Contains(r.Usage.RawJSON(), `"cost":`) || !strings.Contains(r.Usage.RawJSON(), `"cached_tokens"`) {
				t.Fatalf("%s stream=%v: usage lacks cost/cached_tokens: %s", model, stream, r.Usage.RawJSON())
			}
		}
	}
	// Metering: one ledger row per response request, with usage and cost.
	tot := waitLedger(t, env.base, env.key, int64(n))
	if tot.Cost <= 0 || tot.Tokens["output"] == 0 {
		t.Fatalf("ledger totals %+v", tot)
	}

	// max_output_tokens cut → incomplete, in both shapes.
	for _, stream := range []bool{false, true} {
		r := runResponse(t, c, responses.ResponseNewParams{
			Model:           "sim/gpt-4o-mini",
			MaxOutputTokens: openai.Int(2),
			Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Write a long story about routers")},
		}, stream)
		if r.Status != "incomplete" || r.IncompleteDetails.Reason != "max_output_tokens" {
			t.Fatalf("stream=%v: want incomplete: %s", stream, r.RawJSON())
		}
	}
}

func TestResponsesToolsRoundTrip(t *testing.T) {
	env := responsesGateway(t)
	c := env.client(env.key)
	for _, model := range respModels {
		for _, stream := range []bool{false, true} {
			first := runResponse(t, c, responses.ResponseNewParams{
				Model: model,
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("What is the weather in Paris?")},
				Tools: []responses.ToolUnionParam{weatherFn},
				Store: openai.Bool(false),
			}, stream)
			var call responses.ResponseFunctionToolCall
			for _, it := range first.Output {
				if it.Type == "function_call" {
					call = it.AsFunctionCall()
				}
			}
			if call.Name != "get_weather" || call.CallID == "" || !strings.HasPrefix(call.ID, "fc_") || !json.Valid([]byte(call.Arguments)) {
				t.Fatalf("%s stream=%v: function call %s", model, stream, first.RawJSON())
			}
			// The caller runs the tool and sends the result with the whole conversation.
			second := runResponse(t, c, responses.ResponseNewParams{
				Model: model,
				Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
					responses.ResponseInputItemParamOfMessage("What is the weather in Paris?", responses.EasyInputMessageRoleUser),
					responses.ResponseInputItemParamOfFunctionCall(call.Arguments, call.CallID, call.Name),
					{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{
						CallID: openai.String(call.CallID), Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: openai.String("sunny, 21C")}}},
				}},
				Tools: []responses.ToolUnionParam{weatherFn},
			}, stream)
			if second.Status != "completed" || !strings.Contains(second.OutputText(), "the tool returned sunny, 21C") {
				t.Fatalf("%s stream=%v: tool result not used: %s", model, stream, second.RawJSON())
			}
		}
	}
}

func TestResponsesJSONSchema(t *testing.T) {
	env := responsesGateway(t)
	c := env.client(env.key)
	schema := map[string]any{
		"type":                 "object",
		"properties":           map[string]any{"city": map[string]any{"type": "string"}, "temp": map[string]any{"type": "integer"}},
		"required":             []string{"city", "temp"},
		"additionalProperties": false,
	}
	for _, model := range respModels {
		for _, stream := range []bool{false, true} {
			r := runResponse(t, c, responses.ResponseNewParams{
				Model: model,
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris as JSON")},
				Text:  responses.ResponseTextConfigParam{Format: responses.ResponseFormatTextConfigParamOfJSONSchema("weather", schema)},
			}, stream)
			var v struct {
				City string `json:"city"`
				Temp *int   `json:"temp"`
			}
			if err := json.Unmarshal([]byte(r.OutputText()), &v); err != nil || v.City == "" || v.Temp == nil {
				t.Fatalf("%s stream=%v: not schema JSON: %q (%v)", model, stream, r.OutputText(), err)
			}
			if r.Text.Format.Type != "json_schema" {
				t.Fatalf("%s: text.format not echoed: %s", model, r.RawJSON())
			}
		}
	}
}

// TestResponsesChainingAcrossProviders: the first turn runs on one provider, the second is
// pinned to the other with previous_response_id; the conversation is rebuilt from the
// gateway's store. Tool calls made in turn one are answered in turn two.
func TestResponsesChainingAcrossProviders(t *testing.T) {
	env := responsesGateway(t)
	c := env.client(env.key)
	for i, pair := range [][2]string{{respModels[0], respModels[1]}, {respModels[1], respModels[0]}} {
		stream := i == 1
		first := runResponse(t, c, responses.ResponseNewParams{
			Model:        pair[0],
			Instructions: openai.String("Use tools when useful."),
			Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String("What is the weather in Rome?")},
			Tools:        []responses.ToolUnionParam{weatherFn},
		}, stream)
		if !strings.Contains(first.RawJSON(), `"store":true`) {
			t.Fatal("store should default to true")
		}
		call := first.Output[len(first.Output)-1].AsFunctionCall()
		if call.CallID == "" {
			t.Fatalf("no call: %s", first.RawJSON())
		}
		second := runResponse(t, c, responses.ResponseNewParams{
			Model:              pair[1],
			PreviousResponseID: openai.String(first.ID),
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{
					CallID: openai.String(call.CallID), Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: openai.String("rainy, 14C")}}},
			}},
			Tools: []responses.ToolUnionParam{weatherFn},
		}, !stream)
		if !strings.Contains(second.OutputText(), "the tool returned rainy, 14C") || second.PreviousResponseID != first.ID {
			t.Fatalf("%v: chained turn: %s", pair, second.RawJSON())
		}
		// A third turn chains again: the whole conversation carries over.
		third := runResponse(t, c, responses.ResponseNewParams{
			Model:              pair[0],
			PreviousResponseID: openai.String(second.ID),
			Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("And tomorrow?")},
		}, stream)
		if !strings.HasPrefix(third.OutputText(), "Simulated answer: And tomorrow") {
			t.Fatalf("third turn: %s", third.RawJSON())
		}
		items, err := c.Responses.InputItems.List(context.Background(), third.ID, responses.InputItemListParams{
			Order: responses.InputItemListParamsOrderAsc, Limit: openai.Int(100)})
		if err != nil {
			t.Fatal(err)
		}
		// user, function_call, function_call_output, assistant message, user.
		if len(items.Data) != 5 || items.Data[0].Type != "message" || items.Data[1].Type != "function_call" ||
			items.Data[2].Type != "function_call_output" || items.Data[4].Type != "message" {
			t.Fatalf("input items: %s", items.RawJSON())
		}
		got, err := c.Responses.Get(context.Background(), second.ID, responses.ResponseGetParams{})
		if err != nil || got.ID != second.ID || got.OutputText() != second.OutputText() {
			t.Fatalf("get: %v %+v", err, got)
		}
	}
}

func TestResponsesStoreIsolationAndErrors(t *testing.T) {
	env := responsesGateway(t)
	c, other := env.client(env.key), env.client(env.otherKey)
	r, err := c.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: respModels[0], Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("remember me")}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus := func(err error, status int, param string) {
		t.Helper()
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != status || apiErr.Type != "invalid_request_error" || apiErr.Param != param {
			t.Fatalf("want %d %q, got %v", status, param, err)
		}
	}
	// Another workspace: 404 everywhere, including as previous_response_id.
	_, err = other.Responses.Get(context.Background(), r.ID, responses.ResponseGetParams{})
	wantStatus(err, 404, "")
	_, err = other.Responses.InputItems.List(context.Background(), r.ID, responses.InputItemListParams{})
	wantStatus(err, 404, "")
	wantStatus(other.Responses.Delete(context.Background(), r.ID), 404, "")
	_, err = other.Responses.New(context.Background(), responses.ResponseNewParams{Model: respModels[0],
		PreviousResponseID: openai.String(r.ID), Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
	wantStatus(err, 404, "previous_response_id")
	// Unknown previous id, unsupported item and tool types.
	_, err = c.Responses.New(context.Background(), responses.ResponseNewParams{Model: respModels[0],
		PreviousResponseID: openai.String("resp_nope"), Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
	wantStatus(err, 404, "previous_response_id")
	for body, param := range map[string]string{
		`{"model":"sim/gpt-4o-mini","input":[{"type":"computer_call","id":"x"}]}`:                               "input[0].type",
		`{"model":"sim/gpt-4o-mini","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}`: "input[0].content[0].type",
		`{"model":"sim/gpt-4o-mini","input":"hi","tools":[{"type":"web_search"}]}`:                              "tools[0].type",
		`{"model":"sim/gpt-4o-mini","input":[{"role":"robot","content":"x"}]}`:                                  "input[0].role",
		`{"model":"sim/gpt-4o-mini","input":42}`:                                                                "input",
	} {
		status, raw := call(t, "POST", env.base+"/v1/responses", env.key, body)
		var e struct {
			Error struct {
				Type  string  `json:"type"`
				Param *string `json:"param"`
				Code  *string `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || status != 400 || e.Error.Type != "invalid_request_error" || e.Error.Param == nil || *e.Error.Param != param {
			t.Fatalf("%s: %d %s", body, status, raw)
		}
	}
	// The owner deletes it; then it is gone.
	if err := c.Responses.Delete(context.Background(), r.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.Responses.Get(context.Background(), r.ID, responses.ResponseGetParams{})
	wantStatus(err, 404, "")
	if status, _ := call(t, "PUT", env.base+"/v1/responses/"+r.ID, env.key, "{}"); status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", status)
	}
}

// fakeOpenAIResponses is an OpenAI-type upstream that serves POST /v1/responses natively, so
// the pass-through is observable: it records what it received and answers with fields the
// gateway does not know.
type fakeOpenAIResponses struct {
	mu  sync.Mutex
	got []map[string]json.RawMessage
	seq int
}

func (f *fakeOpenAIResponses) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/responses" || r.Header.Get("Authorization") != "Bearer sk-oai-test" {
		http.Error(w, `{"error":{"message":"nope","type":"invalid_request_error","param":null,"code":null}}`, 404)
		return
	}
	var body map[string]json.RawMessage
	raw, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(raw, &body)
	f.mu.Lock()
	f.got = append(f.got, body)
	f.seq++
	id := "resp_up" + strconv.Itoa(f.seq)
	f.mu.Unlock()
	resp := `{"id":"` + id + `","object":"response","created_at":1,"status":"completed","model":"gpt-4.1-2025-04-14",` +
		`"x_upstream":"kept","output":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"opaque"},` +
		`{"type":"message","id":"msg_up","status":"completed","role":"assistant","content":[{"type":"output_text","text":"native answer","annotations":[]}]}],` +
		`"usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":5},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":27}}`
	if string(body["stream"]) != "true" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, resp)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, ev := range []string{
		`{"type":"response.created","sequence_number":0,"response":{"id":"` + id + `","object":"response","status":"in_progress","output":[]}}`,
		`{"type":"response.in_progress","sequence_number":1,"response":{"id":"` + id + `","object":"response","status":"in_progress","output":[]}}`,
		`{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_up","output_index":1,"content_index":0,"delta":"native answer","x_extra":1}`,
		`{"type":"response.completed","sequence_number":3,"response":` + resp + `}`,
	} {
		var probe struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal([]byte(ev), &probe)
		_, _ = io.WriteString(w, "event: "+probe.Type+"\ndata: "+ev+"\n\n")
		w.(http.Flusher).Flush()
	}
}

// openAIResponsesGateway runs the full chain with provider oai (OpenAI type, answered by
// the fake native Responses upstream) and any extra provider blocks.
func openAIResponsesGateway(t *testing.T, extra string) (base string, c openai.Client, tl *testLedger, fake *fakeOpenAIResponses) {
	t.Helper()
	tl = newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	fake = &fakeOpenAIResponses{}
	fs := httptest.NewServer(fake)
	t.Cleanup(fs.Close)
	base = startGateway(t, tl.withStorage(`btl {
		provider oai openai {
			base_url `+fs.URL+`/v1
			api_key sk-oai-test
		}
		`+extra+`
	}`), fullChain)
	c = openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(tl.ownerKey), option.WithMaxRetries(0))
	return base, c, tl, fake
}

func TestResponsesOpenAIPassThrough(t *testing.T) {
	sim := simulated.New(simulated.Options{})
	ss := httptest.NewServer(sim)
	t.Cleanup(ss.Close)
	base, c, tl, fake := openAIResponsesGateway(t, `provider anth anthropic {
			base_url `+ss.URL+`
			api_key sk-ant-test-key
		}`)

	// Non-stream: unknown fields both ways, model rewritten, usage metered and priced.
	r, err := c.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "oai/gpt-4.1", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
	}, option.WithJSONSet("x_custom", "yes"))
	if err != nil {
		_, raw := call(t, "POST", base+"/v1/responses", tl.ownerKey, `{"model":"oai/gpt-4.1","input":"hi"}`)
		t.Fatalf("%v: %s", err, raw)
	}
	if r.ID != "resp_up1" || r.OutputText() != "native answer" || !strings.Contains(r.RawJSON(), `"x_upstream":"kept"`) ||
		!strings.Contains(r.Usage.RawJSON(), `"cost":`) {
		t.Fatalf("pass-through answer: %s", r.RawJSON())
	}
	if got := fake.got[0]; string(got["model"]) != `"gpt-4.1"` || string(got["x_custom"]) != `"yes"` || string(got["input"]) != `"hi"` {
		t.Fatalf("upstream got %v", got)
	}

	// Stream: events relayed unchanged.
	_, ladder := streamed(t, c, responses.ResponseNewParams{
		Model: "oai/gpt-4.1", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("stream it")}})
	if ladder != "response.created response.in_progress response.output_text.delta response.completed" {
		t.Fatalf("ladder %s", ladder)
	}

	// Chaining across providers: OpenAI turn → Anthropic turn → OpenAI turn.
	second, err := c.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "anth/claude-sonnet-4-5", PreviousResponseID: openai.String("resp_up1"),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("continue please")}})
	if err != nil || !strings.HasPrefix(second.OutputText(), "Simulated answer: continue please") {
		t.Fatalf("anthropic turn after openai: %v %s", err, second.RawJSON())
	}
	third, err := c.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "oai/gpt-4.1", PreviousResponseID: openai.String(second.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("and finally")}})
	if err != nil || third.OutputText() != "native answer" {
		t.Fatalf("openai turn after anthropic: %v", err)
	}
	last := fake.got[len(fake.got)-1]
	var input []map[string]any
	_ = json.Unmarshal(last["input"], &input)
	// hi, reasoning (kept whole), native answer, continue please, simulated answer, and finally.
	if string(last["previous_response_id"]) != "null" || len(input) != 6 || input[1]["type"] != "reasoning" ||
		input[1]["encrypted_content"] != "opaque" || input[0]["id"] != nil {
		t.Fatalf("expanded history sent upstream: %s / %s", last["input"], last["previous_response_id"])
	}
	tot := waitLedger(t, base, tl.ownerKey, 4)
	if tot.Tokens["cache_read"] < 5 || tot.Tokens["reasoning"] < 3 || tot.Cost <= 0 {
		t.Fatalf("ledger %+v", tot)
	}
}
