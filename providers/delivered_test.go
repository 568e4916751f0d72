package providers

import (
	"encoding/json"
	"testing"
)

func TestChunkTextBytes(t *testing.T) {
	cases := []struct {
		chunk string
		want  int64
	}{
		{`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`, 0},
		{`{"id":"c","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}`, 5},
		{`{"choices":[{"delta":{"content":"a\nb\"c\u00e9\ud83d\ude00"}}]}`, 1 + 1 + 1 + 1 + 1 + 2 + 4},
		{`{"choices":[{"delta":{"reasoning_content":"think"}},{"index":1,"delta":{"content":"xy"}}]}`, 7},
		{`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]}}]}`, 3},
		{`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}`, 8},
		{`{"choices":[{"delta":{"refusal":"no"}}]}`, 2},
		{`{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}`, 0},
		{`{"choices":[{"delta":{},"finish_reason":"stop"}]}`, 0},
		{`{"choices":[{"delta":{"content":null}}]}`, 0},
		{`{"choices":"x"}`, 0},
		{`not json`, 0},
		{`{"choices":[{"delta":{"content":"\ud83d"}}]}`, 3}, // a lone surrogate decodes to U+FFFD
	}
	for _, c := range cases {
		if got := ChunkTextBytes([]byte(c.chunk)); got != c.want {
			t.Errorf("%s: %d, want %d", c.chunk, got, c.want)
		}
	}
	// StringBytes agrees with encoding/json's decoding.
	for _, lit := range []string{`"plain"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00x"`, `"\\\/\b\f\n\r\t"`, `"\udc00"`, `"\ud83dx"`, `"é中😀"`} {
		var s string
		if err := json.Unmarshal([]byte(lit), &s); err != nil {
			t.Fatal(lit, err)
		}
		if got := StringBytes([]byte(lit)); got != int64(len(s)) {
			t.Errorf("%s: %d, encoding/json decodes %d bytes", lit, got, len(s))
		}
	}
}

func TestChunkTextBytesDoesNotAllocate(t *testing.T) {
	chunk := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello, w\u00f6rld","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}`)
	if a := testing.AllocsPerRun(100, func() { ChunkTextBytes(chunk) }); a != 0 {
		t.Fatalf("%v allocations per chunk", a)
	}
}

func TestBounds(t *testing.T) {
	cases := []struct {
		body string
		want Bounds
	}{
		{`{"model":"m","messages":[]}`, Bounds{Choices: 1}},
		{`{"model":"m","max_tokens":50,"n":3,"service_tier":"priority"}`, Bounds{50, 3, "priority"}},
		{`{"max_completion_tokens":7,"max_tokens":50}`, Bounds{7, 1, ""}},
		{`{"max_tokens":50,"max_tokens":60}`, Bounds{60, 1, ""}},
		{`{"max_tokens":9223372036854775807000}`, Bounds{1 << 62, 1, ""}},
		{`{"max_tokens":null,"service_tier":"fl\u0065x"}`, Bounds{0, 1, "flex"}},
	}
	for _, c := range cases {
		if got := ChatBounds([]byte(c.body)); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.body, got, c.want)
		}
	}
	if got := ResponsesBounds([]byte(`{"model":"m","input":"x","max_output_tokens":99,"service_tier":"flex","n":4}`)); got != (Bounds{99, 1, "flex"}) {
		t.Fatalf("%+v", got)
	}
}

func BenchmarkChunkTextBytes(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello there, how"},"logprobs":null,"finish_reason":null}],"usage":null}`)
	b.ReportAllocs()
	for b.Loop() {
		ChunkTextBytes(chunk)
	}
}

func TestChunkTextBytesIgnoresQuotedDeltaKeys(t *testing.T) {
	// "delta": inside a string (escaped) is text, not a key.
	chunk := `{"choices":[{"delta":{"content":"say \"delta\":{\"content\":\"x\"} and \\\\"}}]}`
	var probe struct {
		Choices []struct {
			Delta struct{ Content string } `json:"delta"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(chunk), &probe); err != nil {
		t.Fatal(err)
	}
	if got, want := ChunkTextBytes([]byte(chunk)), int64(len(probe.Choices[0].Delta.Content)); got != want {
		t.Fatalf("%d, want %d", got, want)
	}
}
