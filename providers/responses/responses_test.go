package responses

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
)

func translate(t testing.TB, body string, history ...string) ([]byte, error) {
	t.Helper()
	r, err := Parse([]byte(body))
	if err != nil {
		return nil, err
	}
	items, err := InputItems(r.Input)
	if err != nil {
		return nil, err
	}
	var hist []json.RawMessage
	for _, h := range history {
		hist = append(hist, json.RawMessage(h))
	}
	return r.ChatBody(hist, items)
}

func TestChatBody(t *testing.T) {
	tests := []struct {
		name, body string
		history    []string
		want       string
	}{
		{"string input and instructions",
			`{"model":"m","input":"hi","instructions":"be brief","max_output_tokens":50,"temperature":0.2,"top_p":0.9}`, nil,
			`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_completion_tokens":50,"temperature":0.2,"top_p":0.9}`},
		{"stream asks for usage",
			`{"model":"m","input":"hi","stream":true}`, nil,
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{"parts, image and assistant history",
			`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"https://x/y.png","detail":"low"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a cat"}]},{"role":"developer","content":"terse"}]}`, nil,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]},{"role":"assistant","content":"a cat"},{"role":"developer","content":"terse"}]}`},
		{"function calls merge into the assistant turn, reasoning dropped",
			`{"model":"m","input":[{"role":"user","content":"weather?"},{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"checking"}]},{"type":"function_call","call_id":"c1","name":"w","arguments":"{\"city\":\"A\"}"},{"type":"function_call","call_id":"c2","name":"w","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"sunny"},{"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"rain"}]}]}`, nil,
			`{"model":"m","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":"checking","tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{\"city\":\"A\"}"}},{"id":"c2","type":"function","function":{"name":"w","arguments":"{}"}}]},{"role":"tool","content":"sunny","tool_call_id":"c1"},{"role":"tool","content":"rain","tool_call_id":"c2"}]}`},
		{"history comes before the new input, after instructions",
			`{"model":"m","input":"and now?","instructions":"sys","previous_response_id":"resp_1"}`,
			[]string{`{"type":"message","role":"user","content":[{"type":"input_text","text":"first"}],"id":"msg_1"}`, `{"id":"msg_2","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"one","annotations":[]}]}`},
			`{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"first"},{"role":"assistant","content":"one"},{"role":"user","content":"and now?"}]}`},
		{"tools, tool_choice, json schema, reasoning",
			`{"model":"m","input":"x","tools":[{"type":"function","name":"f","description":"d","parameters":{"type":"object"},"strict":true}],"tool_choice":{"type":"function","name":"f"},"parallel_tool_calls":false,"text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}},"reasoning":{"effort":"low"}}`, nil,
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"},"strict":true}}],"tool_choice":{"function":{"name":"f"},"type":"function"},"parallel_tool_calls":false,"response_format":{"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"},"strict":true}},"reasoning_effort":"low"}`},
		{"json_object and string tool_choice",
			`{"model":"m","input":"x","text":{"format":{"type":"json_object"}},"tool_choice":"none"}`, nil,
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"none","response_format":{"type":"json_object"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := translate(t, tc.body, tc.history...)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if _, err := providers.ParseCanonical(got); err != nil {
				t.Fatalf("not a valid chat body: %v", err)
			}
		})
	}
}

func TestChatBodyErrors(t *testing.T) {
	tests := []struct{ body, param string }{
		{`{"input":"x"}`, "model"},
		{`{"model":"m"}`, "input"},
		{`{"model":"m","input":7}`, "input"},
		{`{"model":"m","input":[1]}`, "input[0]"},
		{`{"model":"m","input":[{"type":"computer_call"}]}`, "input[0].type"},
		{`{"model":"m","input":[{"type":"item_reference","id":"x"}]}`, "input[0].type"},
		{`{"model":"m","input":[{"content":"x"}]}`, "input[0].type"},
		{`{"model":"m","input":[{"role":"bot","content":"x"}]}`, "input[0].role"},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]}`, "input[0].content[0].file_id"},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_file"}]}]}`, "input[0].content[0].type"},
		{`{"model":"m","input":[{"type":"function_call","name":"f"}]}`, "input[0].call_id"},
		{`{"model":"m","input":[{"type":"function_call_output","call_id":"c"}]}`, "input[0].output"},
		{`{"model":"m","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{`{"model":"m","input":"x","tools":[{"type":"function"}]}`, "tools[0].name"},
		{`{"model":"m","input":"x","tool_choice":{"type":"file_search"}}`, "tool_choice.type"},
		{`{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"n"}}}`, "text.format.schema"},
		{`{"model":"m","input":"x","max_output_tokens":0}`, "max_output_tokens"},
		{`{"model":"m","input":"x","background":true}`, "background"},
	}
	for _, tc := range tests {
		_, err := translate(t, tc.body)
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Status != 400 || pe.Param != tc.param || pe.Type != "invalid_request_error" {
			t.Errorf("%s: want 400 param %q, got %v (%+v)", tc.body, tc.param, err, pe)
		}
	}
}

func meta(body string) *Meta {
	r, _ := Parse([]byte(body))
	return &Meta{ID: "resp_1", CreatedAt: 100, Request: r}
}

func TestFromCompletion(t *testing.T) {
	chat := `{"id":"c","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2},"cost":0.5}}`
	r, err := FromCompletion(meta(`{"model":"m","input":"x","store":false,"max_output_tokens":9}`), []byte(chat), 200)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "completed" || r.Model != "up" || r.Store || *r.MaxOutputTokens != 9 || len(r.Output) != 2 {
		t.Fatalf("%+v", r)
	}
	if !strings.Contains(string(r.Output[0]), `"type":"output_text","text":"hi"`) || !strings.Contains(string(r.Output[1]), `"call_id":"call_1"`) {
		t.Fatalf("output %s", r.Output)
	}
	u := r.Usage
	if u.InputTokens != 10 || u.InputTokensDetails.CachedTokens != 4 || u.OutputTokens != 5 || u.OutputTokensDetails.ReasoningTokens != 2 || u.TotalTokens != 15 || string(u.Cost) != "0.5" {
		t.Fatalf("usage %+v", u)
	}
	for finish, want := range map[string]string{"length": "max_output_tokens", "content_filter": "content_filter"} {
		r, _ := FromCompletion(meta(`{"model":"m","input":"x"}`), []byte(`{"choices":[{"message":{"content":"x"},"finish_reason":"`+finish+`"}]}`), 1)
		if r.Status != "incomplete" || r.IncompleteDetails.Reason != want {
			t.Fatalf("%s: %+v", finish, r)
		}
	}
}

type sseEvent struct {
	typ  string
	data map[string]any
}

func parseEvents(t *testing.T, b []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	for _, ev := range strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n") {
		name, data, ok := strings.Cut(ev, "\ndata: ")
		if !ok || !strings.HasPrefix(name, "event: ") {
			t.Fatalf("bad event %q", ev)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("bad data %q: %v", data, err)
		}
		if m["type"] != name[len("event: "):] {
			t.Fatalf("type %v != event %s", m["type"], name)
		}
		out = append(out, sseEvent{name[len("event: "):], m})
	}
	for i, e := range out {
		if int(e.data["sequence_number"].(float64)) != i {
			t.Fatalf("sequence_number of event %d: %v", i, e.data["sequence_number"])
		}
	}
	return out
}

func TestStreamLadder(t *testing.T) {
	s := NewStream(meta(`{"model":"m","input":"x","stream":true}`))
	b := s.Start(nil)
	for _, c := range []string{
		`{"model":"up","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"Hel"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"lo"}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"cost":0.1}}`,
		`not json`,
	} {
		b = s.Chunk(b, []byte(c))
	}
	b, resp := s.Finish(b)
	b = s.Terminal(b, resp)
	var types []string
	for _, e := range parseEvents(t, b) {
		types = append(types, e.typ)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added " +
		"response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done response.output_item.done " +
		"response.output_item.added response.function_call_arguments.delta response.function_call_arguments.delta " +
		"response.function_call_arguments.done response.output_item.done response.output_item.added response.function_call_arguments.delta " +
		"response.function_call_arguments.done response.output_item.done response.completed"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("ladder\ngot  %s\nwant %s", got, want)
	}
	if resp.Status != "completed" || len(resp.Output) != 3 || resp.Usage.TotalTokens != 7 || resp.Model != "up" {
		t.Fatalf("final %+v", resp)
	}
	if !strings.Contains(string(resp.Output[1]), `"arguments":"{\"a\":1}"`) {
		t.Fatalf("args %s", resp.Output[1])
	}
	if !s.Ended() {
		t.Fatal("not ended")
	}
}

func TestStreamIncompleteAndFailed(t *testing.T) {
	s := NewStream(meta(`{"model":"m","input":"x"}`))
	b := s.Start(nil)
	b = s.Chunk(b, []byte(`{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}`))
	b, resp := s.Finish(b)
	b = s.Terminal(b, resp)
	evs := parseEvents(t, b)
	if evs[len(evs)-1].typ != "response.incomplete" || resp.IncompleteDetails.Reason != "max_output_tokens" {
		t.Fatalf("incomplete: %v", evs[len(evs)-1])
	}

	s = NewStream(meta(`{"model":"m","input":"x"}`))
	b = s.Start(nil)
	b = s.Chunk(b, []byte(`{"choices":[{"index":0,"delta":{"content":"a"}}]}`))
	b = s.Fail(b, &providers.Error{Code: "upstream_stream_error", Message: "boom"})
	evs = parseEvents(t, b)
	last := evs[len(evs)-1]
	r := last.data["response"].(map[string]any)
	if last.typ != "response.failed" || r["status"] != "failed" || r["error"].(map[string]any)["code"] != "upstream_stream_error" {
		t.Fatalf("failed: %v", last)
	}
	if b2 := s.Fail(nil, nil); len(b2) != 0 {
		t.Fatal("second terminal event")
	}
}

// FuzzChatBody: any body either fails with a 400 naming a parameter, or translates into a
// chat body the canonical parser accepts.
func FuzzChatBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi"}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"data:image/png;base64,AA=="}]}],"tools":[{"type":"function","name":"f"}],"tool_choice":"required"}`,
		`{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"x"}],"text":{"format":{"type":"json_schema","name":"n","schema":{}}}}`,
		`{"model":"m","input":[{"type":"reasoning","id":"r"}]}`,
		`{"model":"m","input":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := translate(t, string(body))
		if err != nil {
			var pe *providers.Error
			if !errors.As(err, &pe) || pe.Status != 400 {
				t.Fatalf("non-400 error: %v", err)
			}
			return
		}
		if _, err := providers.ParseChatRequest(out); err != nil {
			t.Fatalf("translated body rejected: %v\n%s\n%s", err, body, out)
		}
	})
}

func TestEventTextBytes(t *testing.T) {
	cases := []struct {
		typ, payload string
		want         int64
	}{
		{"response.output_text.delta", `{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi \u00e9","sequence_number":4}`, 5},
		{"response.function_call_arguments.delta", `{"type":"response.function_call_arguments.delta","delta":"{\"a\":1}"}`, 7},
		{"response.reasoning_summary_text.delta", `{"type":"response.reasoning_summary_text.delta","delta":"hmm"}`, 3},
		{"response.audio.delta", `{"type":"response.audio.delta","delta":"AAAA"}`, 0},
		{"response.output_text.done", `{"type":"response.output_text.done","text":"Hi there"}`, 0},
		{"response.completed", `{"type":"response.completed","response":{"output":[{"content":[{"text":"x"}]}]}}`, 0},
	}
	for _, c := range cases {
		if got := EventTextBytes(c.typ, []byte(c.payload)); got != c.want {
			t.Errorf("%s: %d, want %d", c.typ, got, c.want)
		}
	}
}

// TestMoneyResponsesCaseVariantsRefused: the pass-through forwards the body as written, so a
// case variant of a field the gateway reads (MAX_OUTPUT_TOKENS, reserved for by the gateway
// while the upstream reads max_output_tokens) is a 400, as on the chat path; so is a number
// outside its range.
func TestMoneyResponsesCaseVariantsRefused(t *testing.T) {
	for _, c := range []struct{ body, param string }{
		{`{"model":"gpt-4o","input":"hi","max_output_tokens":100000,"MAX_OUTPUT_TOKENS":16}`, "MAX_OUTPUT_TOKENS"},
		{`{"model":"gpt-4o","input":"hi","Service_Tier":"priority"}`, "Service_Tier"},
		{`{"MODEL":"x","model":"gpt-4o","input":"hi"}`, "MODEL"},
		{`{"model":"gpt-4o","input":"hi","reasoning":{"EFFORT":"high"}}`, "reasoning.EFFORT"},
		{`{"model":"gpt-4o","input":"hi","max_output_tokens":9223372036854775807}`, "max_output_tokens"},
		{`{"model":"gpt-4o","input":"hi","top_logprobs":50}`, "top_logprobs"},
	} {
		_, err := Parse([]byte(c.body))
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Status != 400 || pe.Param != c.param {
			t.Errorf("%s: got %v, want a 400 on %s", c.body, err, c.param)
		}
	}
	r, err := Parse([]byte(`{"model":"gpt-4o","input":"hi","max_output_tokens":16,"service_tier":"flex"}`))
	if err != nil || *r.MaxOutputTokens != 16 || r.ServiceTier != "flex" {
		t.Fatalf("%v %+v", err, r)
	}
	chat, err := r.ChatBody(nil, []json.RawMessage{json.RawMessage(`{"role":"user","content":"hi"}`)})
	if err != nil || !strings.Contains(string(chat), `"service_tier":"flex"`) {
		t.Fatalf("translation drops the tier: %v %s", err, chat)
	}
}
