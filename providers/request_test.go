package providers

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
)

func TestParseChatRequest(t *testing.T) {
	cases := []struct {
		body   string
		status int
		param  string
	}{
		{`{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 0, ""},
		{`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":5}`, 0, ""},
		{``, 400, ""},
		{`null`, 400, ""},
		{`{"model":"m","messages":[]}`, 400, "messages"},
		{`{"model":"m","messages":[1]}`, 400, "messages[0]"},
		{`{"model":["m"],"messages":[{}]}`, 400, "model"},
		{`{"model":"m","messages":[{}],"max_tokens":"10"}`, 400, "max_tokens"},
		{`{"model":"m","messages":[{}],"max_tokens":-1}`, 400, "max_tokens"},
		{`{"model":"m","messages":[{}],"n":0}`, 400, "n"},
		{`{"model":"m","messages":[{}],"stream_options":5}`, 400, "stream_options"},
		{`{"model":"m","messages":[{}]} trailing`, 400, ""},
		// encoding/json would read these case variants as the real fields; providers would not.
		{`{"model":"m","modeL":"0","messAges":[{}]}`, 400, "modeL"},
		{`{"model":"m","messages":[{}],"max_tokens":100000,"Max_Tokens":1}`, 400, "Max_Tokens"},
		{`{"model":"m","messages":[{}],"Stream":true}`, 400, "Stream"},
	}
	for _, c := range cases {
		req, err := ParseChatRequest([]byte(c.body))
		if c.status == 0 {
			if err != nil {
				t.Fatalf("%s: %v", c.body, err)
			}
			if req.Model != "m" {
				t.Fatalf("%s: model %q", c.body, req.Model)
			}
			continue
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Status != c.status || pe.Param != c.param {
			t.Fatalf("%s: got %#v want %d param %q", c.body, err, c.status, c.param)
		}
	}
}

func TestFindAndSetTopLevel(t *testing.T) {
	doc := []byte(` { "a" : {"model":"inner"}, "model" : "x\"y", "s":"}{" , "model":"last" } `)
	s, ok, err := FindTopLevel(doc, "model")
	if err != nil || !ok || string(doc[s.Start:s.End]) != `"last"` {
		t.Fatalf("%v %v %q", ok, err, doc[s.Start:s.End])
	}
	out, err := SetTopLevel([]byte(`{"a":1}`), "model", []byte(`"m"`))
	if err != nil || string(out) != `{"model":"m","a":1}` {
		t.Fatalf("%s %v", out, err)
	}
	out, _ = SetTopLevel([]byte(`{}`), "k", []byte(`1`))
	if string(out) != `{"k":1}` {
		t.Fatalf("%s", out)
	}
	esc := []byte(`{"mod\u0065l":"q"}`)
	if s, ok, _ := FindTopLevel(esc, "model"); !ok || string(esc[s.Start:s.End]) != `"q"` {
		t.Fatal("escaped key not matched")
	}
	u := []byte(`{"usage":{"prompt_tokens":1}}`)
	s, _, _ = FindTopLevel(u, "usage")
	if got := AppendToObject(u, s, "cost", []byte("0.1")); string(got) != `{"usage":{"prompt_tokens":1,"cost":0.1}}` {
		t.Fatalf("%s", got)
	}
	e := []byte(`{"usage":{}}`)
	s, _, _ = FindTopLevel(e, "usage")
	if got := AppendToObject(e, s, "cost", []byte("0")); string(got) != `{"usage":{"cost":0}}` {
		t.Fatalf("%s", got)
	}
	for _, bad := range []string{`[]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":"x`, `{"a":[1}`, `{`} {
		if _, _, err := FindTopLevel([]byte(bad), "a"); err == nil {
			t.Fatalf("%s: no error", bad)
		}
	}
}

func TestUsageNormal(t *testing.T) {
	u, ok := ParseOpenAIUsage([]byte(`{"prompt_tokens":2000,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":1536},"completion_tokens_details":{"reasoning_tokens":20}}`))
	if !ok || u.InputUncached != 464 || u.CacheRead != 1536 || u.Output != 50 || u.Reasoning != 20 || u.PromptTokens() != 2000 {
		t.Fatalf("%+v", u)
	}
	if _, ok := ParseOpenAIUsage([]byte("null")); ok {
		t.Fatal("null usage parsed")
	}
}

func TestErrorEnvelope(t *testing.T) {
	e := Errorf(http.StatusNotFound, "model_not_found", "model", "no %s", "x")
	var env map[string]map[string]any
	if err := json.Unmarshal(e.Envelope(), &env); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := env["error"][k]; !ok {
			t.Fatalf("missing %s", k)
		}
	}
	if env["error"]["type"] != "invalid_request_error" {
		t.Fatal(env)
	}
}

// FuzzParseChatRequest: any input yields a request or a 4xx *Error, never a panic, and a
// parsed request's model can always be located and replaced by the byte scanner.
func FuzzParseChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{}],"x":[1,{"y":"\"}"}]}`))
	f.Add([]byte(`{"mod\u0065l":"m","messages":[{}]}`))
	f.Add([]byte("{\"model\":\"\xb2\",\"messages\":[{}]}")) // invalid UTF-8 is decoded as U+FFFD
	// The scalar fields' shapes that skip encoding/json, and their neighbours that do not.
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream":null,"max_tokens":-0,"max_tokens":70,"n":3,"max_completion_tokens":16000}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"stream_options":{"include_usage":false,"include_obfuscation":true}}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true},"stream_options":{"x":1,"include_usage":null}}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true},"stream_options":{"include_obfuscation":false}}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{}}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include\u005fusage":true,"include_usage":false},"n":2,"n":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseChatRequest(body)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Status < 400 || pe.Status >= 500 {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		// The field-by-field parse reads what a whole-body encoding/json decode reads.
		var whole ChatRequest
		if err := json.Unmarshal(body, &whole); err != nil {
			t.Fatalf("accepted a body encoding/json rejects: %v", err)
		}
		whole.Body, whole.MessagesAt = req.Body, req.MessagesAt
		if !reflect.DeepEqual(normalised(&whole), normalised(req)) {
			t.Fatalf("parse differs from encoding/json:\n%+v\n%+v", normalised(&whole), normalised(req))
		}
		if string(body[req.MessagesAt:req.MessagesAt+len(req.Messages)]) != string(req.Messages) {
			t.Fatalf("MessagesAt %d does not locate messages", req.MessagesAt)
		}
		out, serr := SetTopLevel(req.Body, "model", []byte(`"upstream"`))
		if serr != nil {
			t.Fatalf("scanner rejected a document encoding/json accepted: %v", serr)
		}
		again, err := ParseChatRequest(out)
		if err != nil || again.Model != "upstream" {
			t.Fatalf("model rewrite broke the body: %v %q", err, out)
		}
	})
}

// normalised makes raw fields comparable: encoding/json keeps a JSON null as "null".
func normalised(r *ChatRequest) ChatRequest {
	c := *r
	for _, f := range []*json.RawMessage{&c.Messages, &c.Tools, &c.ResponseFormat} {
		if len(*f) == 0 {
			*f = nil
		}
	}
	return c
}

func BenchmarkParseChatRequest(b *testing.B) {
	body := []byte(`{"model":"btl-fast","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways and the cost of tokens, please."}],"temperature":0.2,"max_tokens":256,"stream":false}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseChatRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetModel(b *testing.B) {
	body := []byte(`{"model":"btl-fast","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways."}],"temperature":0.2}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SetTopLevel(body, "model", []byte(`"gpt-4o-mini"`)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMoneyNumericRangesRefused: every number the gateway reads is range-checked with a 400
// naming the parameter, so no absurd value reaches the reservation's arithmetic.
func TestMoneyNumericRangesRefused(t *testing.T) {
	const msgs = `"model":"m","messages":[{"role":"user","content":"hi"}]`
	cases := []struct {
		extra, param string
	}{
		{`"max_tokens":9223372036854775807`, "max_tokens"},
		{`"max_completion_tokens":16777217`, "max_completion_tokens"},
		{`"max_tokens":0`, "max_tokens"},
		{`"max_tokens":18446744073709551616`, "max_tokens"},
		{`"n":129`, "n"},
		{`"n":0`, "n"},
		{`"top_logprobs":21`, "top_logprobs"},
		{`"top_logprobs":-1`, "top_logprobs"},
		{`"temperature":1e308`, "temperature"},
		{`"top_p":-0.5`, "top_p"},
		{`"presence_penalty":3`, "presence_penalty"},
		{`"top_k":1e300`, "top_k"},
		{`"temperature":"hot"`, "temperature"},
	}
	for _, c := range cases {
		_, err := ParseChatRequest([]byte(`{` + msgs + `,` + c.extra + `}`))
		var pe *Error
		if !errors.As(err, &pe) || pe.Status != 400 || pe.Param != c.param {
			t.Errorf("%s: got %v, want a 400 on %s", c.extra, err, c.param)
		}
	}
	for _, ok := range []string{`"max_tokens":16777216`, `"n":128`, `"top_logprobs":20`, `"temperature":2`, `"top_p":null`, `"seed":-9223372036854775808`} {
		if _, err := ParseChatRequest([]byte(`{` + msgs + `,` + ok + `}`)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}

// TestMoneyCaseVariantsRefused: a case variant of any field the gateway reads (at the top
// level, or inside stream_options) is a 400: encoding/json would read it as the field, the
// upstream would not.
func TestMoneyCaseVariantsRefused(t *testing.T) {
	const msgs = `"model":"m","messages":[{"role":"user","content":"hi"}]`
	for _, c := range []struct{ extra, param string }{
		{`"Service_Tier":"priority"`, "Service_Tier"},
		{`"REASONING_EFFORT":"high"`, "REASONING_EFFORT"},
		{`"Temperature":0.5`, "Temperature"},
		{`"ma\u0078_tokens":5,"MAX_TOKENS":5`, "MAX_TOKENS"},
		{"\"max_to\u212aens\":5", "max_to\u212aens"}, // KELVIN SIGN folds to k
		{`"stream_options":{"Include_Usage":true}`, "stream_options.Include_Usage"},
	} {
		_, err := ParseChatRequest([]byte(`{` + msgs + `,` + c.extra + `}`))
		var pe *Error
		if !errors.As(err, &pe) || pe.Status != 400 || pe.Param != c.param {
			t.Errorf("%s: got %v, want a 400 on %s", c.extra, err, c.param)
		}
	}
	req, err := ParseChatRequest([]byte(`{` + msgs + `,"service_tier":"flex","stop":["x"],"user":"u","stream_options":{"include_usage":true,"include_obfuscation":false}}`))
	if err != nil || req.ServiceTier != "flex" || !req.WantsUsage() {
		t.Fatalf("%v %+v", err, req)
	}
}

func TestJSONNumber(t *testing.T) {
	for _, lit := range []string{"0", "2", "-2", "0.7", "1.9999999999999999", "2.0000000000000001", "1e308", "1e999", "-0.5", "123456789012345678901", "0.000000000000000000000000001"} {
		var want float64
		werr := json.Unmarshal([]byte(lit), &want)
		got, ok := jsonNumber([]byte(lit))
		if werr == nil && (!ok || got != want) {
			t.Errorf("%s: %v %v, want %v", lit, got, ok, want)
		}
	}
	for _, bad := range []string{`"1"`, "true", "null", "{}", ""} {
		if _, ok := jsonNumber([]byte(bad)); ok {
			t.Errorf("%s read as a number", bad)
		}
	}
}
