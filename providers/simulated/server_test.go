package simulated

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Structs mirroring the OpenAI spec (providers.md §1.2, §1.3).
type oaUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func (u *oaUsage) cached() int {
	if u == nil || u.PromptTokensDetails == nil {
		return -1
	}
	return u.PromptTokensDetails.CachedTokens
}

type oaToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string  `json:"name"`
		Arguments *string `json:"arguments"`
	} `json:"function"`
}

type oaCompletion struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	ServiceTier       string `json:"service_tier"`
	Choices           []struct {
		Index   int `json:"index"`
		Message struct {
			Role      string       `json:"role"`
			Content   *string      `json:"content"`
			Refusal   *string      `json:"refusal"`
			ToolCalls []oaToolCall `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaUsage `json:"usage"`
}

type oaChunk struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index int `json:"index"`
		Delta struct {
			Role      string       `json:"role"`
			Content   *string      `json:"content"`
			ToolCalls []oaToolCall `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage       *oaUsage `json:"usage"`
	Obfuscation *string  `json:"obfuscation"`
}

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(t testing.TB, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixedNow }
	}
	s := New(opts)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func post(t testing.TB, ts *httptest.Server, path, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func complete(t testing.TB, ts *httptest.Server, key, body string) (oaCompletion, []byte) {
	t.Helper()
	resp := post(t, ts, "/v1/chat/completions", key, body)
	b := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var c oaCompletion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	return c, b
}

// sse reads data payloads until EOF; done reports whether [DONE] was seen.
func sse(t testing.TB, r io.Reader) (events []string, done bool, err error) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected SSE line %q", line)
		}
		if done {
			t.Fatalf("event after [DONE]: %q", data)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		events = append(events, data)
	}
	return events, done, sc.Err()
}

func msgs(pairs ...string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		c, _ := json.Marshal(pairs[i+1])
		fmt.Fprintf(&b, `{"role":%q,"content":%s}`, pairs[i], c)
	}
	b.WriteByte(']')
	return b.String()
}

func chatBody(extra string, pairs ...string) string {
	if extra != "" {
		extra = "," + extra
	}
	return `{"model":"sim-fast","messages":` + msgs(pairs...) + extra + `}`
}

func TestNonStreamShape(t *testing.T) {
	_, ts := newTest(t, Options{})
	resp := post(t, ts, "/v1/chat/completions", "k1", chatBody("", "system", "Be terse.", "user", "What is the capital of France?"))
	b := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	if id := resp.Header.Get("x-request-id"); !strings.HasPrefix(id, "req_sim_") {
		t.Errorf("x-request-id %q", id)
	}
	for _, h := range []string{"x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-limit-requests", "x-ratelimit-reset-requests"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("missing header %s", h)
		}
	}
	var c oaCompletion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.ID, "chatcmpl-sim-") || c.Object != "chat.completion" || c.Created != fixedNow.Unix() || c.Model != "sim-fast" {
		t.Errorf("head: %+v", c)
	}
	if c.ServiceTier != "default" || c.SystemFingerprint == "" {
		t.Errorf("tier/fingerprint: %q %q", c.ServiceTier, c.SystemFingerprint)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Role != "assistant" || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("choices: %s", b)
	}
	content := *c.Choices[0].Message.Content
	if !strings.HasPrefix(content, "Simulated answer: What is the capital of France") {
		t.Errorf("content %q", content)
	}
	u := c.Usage
	// "system\nBe terse.\n" (17) + "user\nWhat is the capital of France?\n" (36) = 53 bytes → 14 + 2·3.
	if u.PromptTokens != 20 {
		t.Errorf("prompt_tokens %d, want 20", u.PromptTokens)
	}
	if u.CompletionTokens != (len(content)+3)/4 || u.TotalTokens != u.PromptTokens+u.CompletionTokens || u.cached() != 0 {
		t.Errorf("usage %+v content %d bytes", u, len(content))
	}
	// Keys that must be present even when null.
	var raw map[string]any
	_ = json.Unmarshal(b, &raw)
	choice := raw["choices"].([]any)[0].(map[string]any)
	msg := choice["message"].(map[string]any)
	for _, k := range []string{"refusal", "content", "annotations"} {
		if _, ok := msg[k]; !ok {
			t.Errorf("message lacks %q", k)
		}
	}
	if _, ok := choice["logprobs"]; !ok {
		t.Error("choice lacks logprobs")
	}
	// Both base paths.
	c2, _ := complete(t, ts, "k1", chatBody("", "system", "Be terse.", "user", "What is the capital of France?"))
	_ = c2
	resp = post(t, ts, "/chat/completions", "k1", chatBody("", "user", "hi"))
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Errorf("/chat/completions status %d", resp.StatusCode)
	}
}

func TestStreamShape(t *testing.T) {
	for _, tc := range []struct {
		name         string
		streamOpts   string
		wantUsage    bool
		wantObfusc   bool
		chunksOption int
	}{
		{"no stream_options", "", false, true, 0},
		{"include_usage", `"stream_options":{"include_usage":true}`, true, true, 0},
		{"include_usage false", `"stream_options":{"include_usage":false}`, false, true, 0},
		{"no obfuscation", `"stream_options":{"include_usage":true,"include_obfuscation":false}`, true, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ts := newTest(t, Options{ChunksPerAnswer: tc.chunksOption})
			extra := `"stream":true`
			if tc.streamOpts != "" {
				extra += "," + tc.streamOpts
			}
			pairs := []string{"user", "Tell me a story about a gateway"}
			nonStream, _ := complete(t, ts, "k", chatBody("", pairs...))
			resp := post(t, ts, "/v1/chat/completions", "k", chatBody(extra, pairs...))
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("content-type %q", ct)
			}
			events, done, err := sse(t, resp.Body)
			resp.Body.Close()
			if err != nil || !done {
				t.Fatalf("err %v done %v", err, done)
			}
			wantChunks := tc.chunksOption
			if wantChunks == 0 {
				wantChunks = 8
			}
			// role + content chunks + finish (+ usage)
			want := 1 + wantChunks + 1
			if tc.wantUsage {
				want++
			}
			if len(events) != want {
				t.Fatalf("%d events, want %d:\n%s", len(events), want, strings.Join(events, "\n"))
			}
			var text strings.Builder
			var first oaChunk
			for i, e := range events {
				var c oaChunk
				if err := json.Unmarshal([]byte(e), &c); err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				var raw map[string]json.RawMessage
				_ = json.Unmarshal([]byte(e), &raw)
				if i == 0 {
					first = c
				}
				if c.ID != first.ID || c.Created != first.Created || c.Model != "sim-fast" || c.Object != "chat.completion.chunk" {
					t.Errorf("chunk %d head mismatch: %s", i, e)
				}
				if (c.Obfuscation != nil) != tc.wantObfusc {
					t.Errorf("chunk %d obfuscation presence %v", i, c.Obfuscation != nil)
				}
				isUsage := tc.wantUsage && i == len(events)-1
				u, hasUsage := raw["usage"]
				switch {
				case isUsage:
					if len(c.Choices) != 0 || c.Usage == nil || string(raw["choices"]) != "[]" {
						t.Errorf("usage chunk: %s", e)
					}
					if c.Usage.PromptTokens != nonStream.Usage.PromptTokens || c.Usage.CompletionTokens != nonStream.Usage.CompletionTokens {
						t.Errorf("stream usage %+v vs %+v", c.Usage, nonStream.Usage)
					}
					continue
				case tc.wantUsage:
					if !hasUsage || string(u) != "null" {
						t.Errorf("chunk %d: want usage:null, got %s", i, e)
					}
				default:
					if hasUsage {
						t.Errorf("chunk %d: usage present without include_usage: %s", i, e)
					}
				}
				if len(c.Choices) != 1 {
					t.Fatalf("chunk %d choices: %s", i, e)
				}
				ch := c.Choices[0]
				switch {
				case i == 0:
					if ch.Delta.Role != "assistant" || ch.Delta.Content == nil || *ch.Delta.Content != "" || ch.FinishReason != nil {
						t.Errorf("role chunk: %s", e)
					}
				case i == 1+wantChunks:
					if ch.FinishReason == nil || *ch.FinishReason != "stop" || string(raw["choices"]) == "" || ch.Delta.Content != nil {
						t.Errorf("finish chunk: %s", e)
					}
				default:
					if ch.Delta.Content == nil || ch.FinishReason != nil || ch.Delta.Role != "" {
						t.Errorf("content chunk %d: %s", i, e)
					} else {
						text.WriteString(*ch.Delta.Content)
					}
				}
			}
			if text.String() != *nonStream.Choices[0].Message.Content {
				t.Errorf("stream text %q != %q", text.String(), *nonStream.Choices[0].Message.Content)
			}
			if first.ID != nonStream.ID {
				t.Errorf("stream id %s != non-stream id %s", first.ID, nonStream.ID)
			}
		})
	}
}

func longPrompt(words int, salt string) string {
	var b strings.Builder
	b.WriteString(salt)
	for i := range words {
		fmt.Fprintf(&b, " word%d", i%97)
	}
	return b.String()
}

func isBoundary(n int) bool { return n >= 1024 && (n-1024)%128 == 0 }

func TestPrefixCache(t *testing.T) {
	clk := &clock{t: fixedNow}
	s, ts := newTest(t, Options{Now: clk.Now, CacheTTL: time.Minute})
	sys := longPrompt(1200, "You are a helpful assistant.") // ~7.6k bytes ≈ 1.9k tokens
	body := chatBody("", "system", sys, "user", "first question")

	c1, _ := complete(t, ts, "keyA", body)
	if c1.Usage.PromptTokens < 1024 {
		t.Fatalf("prompt too short: %d", c1.Usage.PromptTokens)
	}
	if got := c1.Usage.cached(); got != 0 {
		t.Fatalf("first call cached %d", got)
	}
	c2, _ := complete(t, ts, "keyA", body)
	got := c2.Usage.cached()
	if !isBoundary(got) || got > c2.Usage.PromptTokens || c2.Usage.PromptTokens-got >= 128 {
		t.Fatalf("second call cached %d of %d", got, c2.Usage.PromptTokens)
	}
	if c2.Usage.PromptTokens != c1.Usage.PromptTokens {
		t.Errorf("prompt_tokens must include cached: %d vs %d", c2.Usage.PromptTokens, c1.Usage.PromptTokens)
	}

	// Same prefix, different last message: hit on the shared prefix only.
	c3, _ := complete(t, ts, "keyA", chatBody("", "system", sys, "user", "a different second question that is longer"))
	if g := c3.Usage.cached(); !isBoundary(g) || g > got {
		t.Errorf("shared-prefix call cached %d (full hit was %d)", g, got)
	}

	// Another key: its own cache.
	c4, _ := complete(t, ts, "keyB", body)
	if g := c4.Usage.cached(); g != 0 {
		t.Errorf("other key cached %d", g)
	}
	// No key at all is a key of its own too.
	c5, _ := complete(t, ts, "", body)
	if g := c5.Usage.cached(); g != 0 {
		t.Errorf("no key cached %d", g)
	}

	// Changed first message: nothing shared.
	c6, _ := complete(t, ts, "keyA", chatBody("", "system", "X"+sys, "user", "first question"))
	if g := c6.Usage.cached(); g != 0 {
		t.Errorf("changed first message cached %d", g)
	}

	// Short prompts never cache.
	complete(t, ts, "keyA", chatBody("", "user", "short"))
	c7, _ := complete(t, ts, "keyA", chatBody("", "user", "short"))
	if g := c7.Usage.cached(); g != 0 {
		t.Errorf("short prompt cached %d", g)
	}

	// Growing conversation keeps hitting the old prefix.
	grown := chatBody("", "system", sys, "user", "first question", "assistant", "an answer", "user", longPrompt(200, "more"))
	c8, _ := complete(t, ts, "keyA", grown)
	if g := c8.Usage.cached(); g < got-128 || !isBoundary(g) {
		t.Errorf("grown conversation cached %d, earlier full hit %d", g, got)
	}

	// Expiry: after the TTL the entry is gone.
	clk.Advance(2 * time.Minute)
	c9, _ := complete(t, ts, "keyA", body)
	if g := c9.Usage.cached(); g != 0 {
		t.Errorf("expired entry still cached %d", g)
	}

	st := s.Stats()
	if st.Keys["keyA"].CachedTokens == 0 || st.Keys["keyB"].CachedTokens != 0 || st.CachedTokens == 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestPrefixCacheEviction(t *testing.T) {
	s := New(Options{CacheMaxEntries: 64, Now: func() time.Time { return fixedNow }})
	for i := range 40 {
		body := chatBody("", "user", longPrompt(1000, fmt.Sprint("salt", i)))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body)))
		if rec.Code != 200 {
			t.Fatal(rec.Body.String())
		}
	}
	if n := s.cache.len(); n > 64 {
		t.Errorf("cache grew to %d entries, cap 64", n)
	}
}

func TestPrefixBoundsMatchCount(t *testing.T) {
	// Every boundary ≤ prompt tokens is produced exactly once, ascending.
	for _, n := range []int{100, 1020, 4096, 4097, 5000, 9001} {
		body := chatBody(`"tools":[{"type":"function","function":{"name":"f"}}]`, "system", strings.Repeat("a", n), "user", strings.Repeat("b", n/3))
		var st reqState
		var p parsed
		if err := parse([]byte(body), &st, &p); err != nil {
			t.Fatal(err)
		}
		bs, _ := prefixBounds(nil, st.canon, st.msgStarts, p.promptToks)
		want := 0
		if p.promptToks >= 1024 {
			want = (p.promptToks-1024)/128 + 1
		}
		if len(bs) != want {
			t.Errorf("n=%d tokens=%d: %d bounds, want %d", n, p.promptToks, len(bs), want)
		}
		for i, b := range bs {
			if b.tokens != 1024+128*i {
				t.Errorf("bound %d = %d", i, b.tokens)
			}
		}
	}
}

func TestTokenCount(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int
	}{
		// "user\nabcd\n" = 10 bytes → 3 + 3
		{chatBody("", "user", "abcd"), 6},
		// text parts concatenate: "user\nabcd\n" again
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"ab"},{"type":"text","text":"cd"}]}]}`, 6},
		// an image adds 85 tokens
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, 6 + 85},
		// escapes count decoded bytes: "user\n\"q\"\n" = 9 → 3 + 3
		{`{"model":"m","messages":[{"role":"user","content":"\"q\""}]}`, 6},
	} {
		var st reqState
		var p parsed
		if err := parse([]byte(tc.body), &st, &p); err != nil {
			t.Fatal(err)
		}
		if p.promptToks != tc.want {
			t.Errorf("%s: %d tokens, want %d", tc.body, p.promptToks, tc.want)
		}
	}
}

func TestDeterminism(t *testing.T) {
	_, ts1 := newTest(t, Options{Seed: 7})
	_, ts2 := newTest(t, Options{Seed: 7})
	body := chatBody(`"temperature":0.3`, "user", "Explain prefix caching in two sentences.")
	_, a := complete(t, ts1, "k", body)
	_, b := complete(t, ts1, "k", body)
	_, c := complete(t, ts2, "k", body)
	if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Errorf("not deterministic:\n%s\n%s\n%s", a, b, c)
	}
	_, d := complete(t, ts1, "k", chatBody("", "user", "Something else entirely."))
	if bytes.Equal(a, d) {
		t.Error("different prompts gave identical answers")
	}
	// Model echo and id depend on the model.
	e, _ := complete(t, ts1, "k", strings.Replace(body, "sim-fast", "openai/gpt-5", 1))
	if e.Model != "openai/gpt-5" {
		t.Errorf("model %q", e.Model)
	}
}

// TestSampling: with Options.Sampling, a sampled request draws a fresh answer per call, as a
// real model does; temperature 0 keeps the one deterministic answer.
func TestSampling(t *testing.T) {
	_, ts := newTest(t, Options{Sampling: true})
	for _, tc := range []struct {
		extra   string
		sampled bool
	}{{"", true}, {`"temperature":null`, true}, {`"temperature":0.7`, true}, {`"temperature":0`, false}, {`"temperature":0.0`, false}} {
		body := chatBody(tc.extra, "user", "Pick a number and explain it.")
		a, _ := complete(t, ts, "k", body)
		b, _ := complete(t, ts, "k", body)
		differ := a.ID != b.ID && *a.Choices[0].Message.Content != *b.Choices[0].Message.Content
		if differ != tc.sampled {
			t.Errorf("%q: two calls differ = %v, want %v (%q vs %q)", tc.extra, differ, tc.sampled, *a.Choices[0].Message.Content, *b.Choices[0].Message.Content)
		}
	}
}

func TestMaxTokens(t *testing.T) {
	_, ts := newTest(t, Options{})
	for _, field := range []string{"max_tokens", "max_completion_tokens"} {
		c, _ := complete(t, ts, "k", chatBody(`"`+field+`":3`, "user", "Write a long essay about everything."))
		if c.Choices[0].FinishReason != "length" || c.Usage.CompletionTokens > 3 || len(*c.Choices[0].Message.Content) > 12 {
			t.Errorf("%s: finish %q usage %+v content %q", field, c.Choices[0].FinishReason, c.Usage, *c.Choices[0].Message.Content)
		}
	}
	c, _ := complete(t, ts, "k", chatBody(`"max_tokens":1000`, "user", "short"))
	if c.Choices[0].FinishReason != "stop" {
		t.Errorf("finish %q", c.Choices[0].FinishReason)
	}
	// Streaming too.
	resp := post(t, ts, "/v1/chat/completions", "k", chatBody(`"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}`, "user", "Write a long essay."))
	events, done, _ := sse(t, resp.Body)
	resp.Body.Close()
	if !done || !strings.Contains(events[len(events)-2], `"finish_reason":"length"`) || !strings.Contains(events[len(events)-1], `"completion_tokens":2`) {
		t.Errorf("stream length: %v", events)
	}
}

const weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"units":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1},"detail":{"type":"object","properties":{"hourly":{"type":"boolean"},"fields":{"type":"array","items":{"type":"string"}}},"required":["hourly","fields"]}},"required":["city","units","days","detail"]}}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"tz":{"type":"string"}},"required":["tz"]}}}]`

func TestToolRound(t *testing.T) {
	_, ts := newTest(t, Options{})
	c, _ := complete(t, ts, "k", chatBody(weatherTools, "user", "Weather in Paris?"))
	ch := c.Choices[0]
	if ch.FinishReason != "tool_calls" || ch.Message.Content != nil || len(ch.Message.ToolCalls) != 1 {
		t.Fatalf("tool call answer: %+v", ch)
	}
	tc := ch.Message.ToolCalls[0]
	if !strings.HasPrefix(tc.ID, "call_") || tc.Type != "function" || tc.Function.Name != "get_weather" {
		t.Errorf("tool call %+v", tc)
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(*tc.Function.Arguments), &args); err != nil {
		t.Fatalf("arguments %q: %v", *tc.Function.Arguments, err)
	}
	if args["city"] != "sample" || args["units"] != "celsius" || args["days"] != 1.0 {
		t.Errorf("args %v", args)
	}
	if d, ok := args["detail"].(map[string]any); !ok || d["hourly"] != true || d["fields"] == nil {
		t.Errorf("nested args %v", args)
	}

	// Named tool choice.
	c2, _ := complete(t, ts, "k", chatBody(weatherTools+`,"tool_choice":{"type":"function","function":{"name":"get_time"}}`, "user", "time?"))
	if c2.Choices[0].Message.ToolCalls[0].Function.Name != "get_time" {
		t.Errorf("named tool: %+v", c2.Choices[0].Message.ToolCalls)
	}
	// tool_choice none → text.
	c3, _ := complete(t, ts, "k", chatBody(weatherTools+`,"tool_choice":"none"`, "user", "hi"))
	if c3.Choices[0].Message.Content == nil || c3.Choices[0].FinishReason != "stop" {
		t.Errorf("tool_choice none: %+v", c3.Choices[0])
	}
	// Parallel.
	c4, _ := complete(t, ts, "k", chatBody(weatherTools, "user", "Do both in parallel please"))
	if n := len(c4.Choices[0].Message.ToolCalls); n != 2 || c4.Choices[0].Message.ToolCalls[0].ID == c4.Choices[0].Message.ToolCalls[1].ID {
		t.Errorf("parallel: %+v", c4.Choices[0].Message.ToolCalls)
	}
	c5, _ := complete(t, ts, "k", chatBody(weatherTools+`,"parallel_tool_calls":false`, "user", "Do both in parallel please"))
	if n := len(c5.Choices[0].Message.ToolCalls); n != 1 {
		t.Errorf("parallel_tool_calls false gave %d calls", n)
	}

	// Tool result round.
	argsJSON, _ := json.Marshal(*tc.Function.Arguments)
	round := `{"model":"sim-fast",` + weatherTools + `,"messages":[{"role":"user","content":"Weather in Paris?"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"` + tc.ID + `","type":"function","function":{"name":"get_weather","arguments":` + string(argsJSON) + `}}]},` +
		`{"role":"tool","tool_call_id":"` + tc.ID + `","content":"{\"temp\":21,\"sky\":\"clear\"}"}]}`
	c6, _ := complete(t, ts, "k", round)
	if c6.Choices[0].FinishReason != "stop" || c6.Choices[0].Message.Content == nil || !strings.Contains(*c6.Choices[0].Message.Content, `{"temp":21,"sky":"clear"}`) {
		t.Errorf("tool result answer: %+v", c6.Choices[0])
	}

	// Mismatched tool_call_id.
	bad := strings.Replace(round, `"tool_call_id":"`+tc.ID, `"tool_call_id":"call_nope`, 1)
	expectError(t, post(t, ts, "/v1/chat/completions", "k", bad), 400, "invalid_request_error", "messages.[2].tool_call_id")
	// Tool message without a preceding tool call.
	orphan := `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"call_1","content":"r"}]}`
	expectError(t, post(t, ts, "/v1/chat/completions", "k", orphan), 400, "invalid_request_error", "messages.[1].role")
	// Tool call left unanswered.
	unanswered := `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"user","content":"y"}]}`
	expectError(t, post(t, ts, "/v1/chat/completions", "k", unanswered), 400, "invalid_request_error", "messages.[1].role")
}

func TestStreamToolCalls(t *testing.T) {
	_, ts := newTest(t, Options{})
	resp := post(t, ts, "/v1/chat/completions", "k", chatBody(weatherTools+`,"stream":true`, "user", "Run them in parallel"))
	events, done, _ := sse(t, resp.Body)
	resp.Body.Close()
	if !done {
		t.Fatal("no [DONE]")
	}
	type acc struct{ id, name, args string }
	calls := map[int]*acc{}
	var finish string
	for i, e := range events {
		var c oaChunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if c.Choices[0].Delta.Role != "assistant" {
				t.Errorf("first chunk %s", e)
			}
			continue
		}
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
		}
		for _, tc := range c.Choices[0].Delta.ToolCalls {
			if tc.Index == nil {
				t.Fatalf("fragment without index: %s", e)
			}
			a := calls[*tc.Index]
			if a == nil {
				if tc.ID == "" || tc.Type != "function" || tc.Function.Name == "" || tc.Function.Arguments == nil || *tc.Function.Arguments != "" {
					t.Errorf("first fragment: %s", e)
				}
				a = &acc{id: tc.ID, name: tc.Function.Name}
				calls[*tc.Index] = a
				continue
			}
			if tc.ID != "" || tc.Function.Name != "" {
				t.Errorf("later fragment repeats id/name: %s", e)
			}
			a.args += *tc.Function.Arguments
		}
	}
	if finish != "tool_calls" || len(calls) != 2 {
		t.Fatalf("finish %q calls %d", finish, len(calls))
	}
	for i, a := range calls {
		if !json.Valid([]byte(a.args)) {
			t.Errorf("call %d args %q", i, a.args)
		}
	}
}

func TestResponseFormat(t *testing.T) {
	_, ts := newTest(t, Options{})
	schema := `{"type":"object","properties":{"title":{"type":"string"},"score":{"type":"number"},"tags":{"type":"array","items":{"type":"string"}},"kind":{"enum":["a","b"]},"meta":{"$ref":"#/$defs/Meta"},"opt":{"type":"string"}},"required":["title","score","tags","kind","meta"],"$defs":{"Meta":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}}`
	c, _ := complete(t, ts, "k", chatBody(`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":`+schema+`,"strict":true}}`, "user", "Rate it"))
	var obj map[string]any
	if err := json.Unmarshal([]byte(*c.Choices[0].Message.Content), &obj); err != nil {
		t.Fatalf("content %q: %v", *c.Choices[0].Message.Content, err)
	}
	for _, k := range requiredKeys([]byte(schema)) {
		if _, ok := obj[k]; !ok {
			t.Errorf("missing required key %q in %v", k, obj)
		}
	}
	if obj["kind"] != "a" || obj["meta"].(map[string]any)["ok"] != true {
		t.Errorf("values %v", obj)
	}
	if _, ok := obj["opt"]; ok {
		t.Error("optional key generated")
	}
	c2, _ := complete(t, ts, "k", chatBody(`"response_format":{"type":"json_object"}`, "user", "Answer in JSON"))
	var o2 struct {
		Answer string `json:"answer"`
	}
	if err := json.Unmarshal([]byte(*c2.Choices[0].Message.Content), &o2); err != nil || !strings.HasPrefix(o2.Answer, "Simulated answer:") {
		t.Errorf("json_object content %q", *c2.Choices[0].Message.Content)
	}
}

func expectError(t *testing.T, resp *http.Response, status int, typ, param string) map[string]any {
	t.Helper()
	b := readAll(t, resp)
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	var env struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.Error == nil {
		t.Fatalf("envelope %s", b)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := env.Error[k]; !ok {
			t.Errorf("envelope lacks %q: %s", k, b)
		}
	}
	if env.Error["type"] != typ {
		t.Errorf("type %v, want %s: %s", env.Error["type"], typ, b)
	}
	if param != "*" {
		var want any
		if param != "" {
			want = param
		}
		if env.Error["param"] != want {
			t.Errorf("param %v, want %q: %s", env.Error["param"], param, b)
		}
	}
	return env.Error
}

func TestValidation(t *testing.T) {
	_, ts := newTest(t, Options{})
	for _, tc := range []struct {
		name, body, param string
	}{
		{"invalid json", `{"model":`, ""},
		{"not an object", `[1,2]`, ""},
		{"empty body", ``, ""},
		{"missing model", `{"messages":[{"role":"user","content":"x"}]}`, ""},
		{"missing messages", `{"model":"m"}`, "messages"},
		{"empty messages", `{"model":"m","messages":[]}`, "messages"},
		{"message not object", `{"model":"m","messages":["hi"]}`, "messages[0]"},
		{"bad role", `{"model":"m","messages":[{"role":"wizard","content":"x"}]}`, "messages[0].role"},
		{"missing role", `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role"},
		{"missing content", `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content"},
		{"bad content type", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"bad part type", `{"model":"m","messages":[{"role":"user","content":[{"type":"video"}]}]}`, "messages[0].content[0].type"},
		{"stream wrong type", `{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}`, "stream"},
		{"stream_options without stream", `{"model":"m","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`, "stream_options"},
		{"max_tokens zero", `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, "max_tokens"},
		{"tool_choice without tools", `{"model":"m","tool_choice":"auto","messages":[{"role":"user","content":"x"}]}`, "tool_choice"},
		{"unknown named tool", `{"model":"m",` + weatherTools + `,"tool_choice":{"type":"function","function":{"name":"nope"}},"messages":[{"role":"user","content":"x"}]}`, "tool_choice"},
		{"bad response_format", `{"model":"m","response_format":{"type":"xml"},"messages":[{"role":"user","content":"x"}]}`, "response_format.type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, post(t, ts, "/v1/chat/completions", "k", tc.body), 400, "invalid_request_error", tc.param)
		})
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/chat/completions", nil)
	resp, _ := ts.Client().Do(req)
	expectError(t, resp, 405, "invalid_request_error", "")
	expectError(t, post(t, ts, "/v1/nope", "k", "{}"), 404, "invalid_request_error", "")
}

func TestBodyTooLarge(t *testing.T) {
	_, ts := newTest(t, Options{MaxBodyBytes: 100})
	expectError(t, post(t, ts, "/v1/chat/completions", "k", chatBody("", "user", strings.Repeat("x", 200))), 413, "invalid_request_error", "")
	complete(t, ts, "k", chatBody("", "user", "x"))
}

func TestRequireKey(t *testing.T) {
	_, ts := newTest(t, Options{RequireKey: true})
	expectError(t, post(t, ts, "/v1/chat/completions", "", chatBody("", "user", "x")), 401, "invalid_request_error", "")
	complete(t, ts, "sk-1", chatBody("", "user", "x"))
}

func TestModels(t *testing.T) {
	_, ts := newTest(t, Options{})
	resp, err := ts.Client().Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
			Created             int64
		} `json:"data"`
	}
	if err := json.Unmarshal(readAll(t, resp), &list); err != nil || list.Object != "list" || len(list.Data) < 2 || list.Data[0].Object != "model" || list.Data[0].Created == 0 {
		t.Errorf("models: %+v %v", list, err)
	}
}

func TestStatusDirectives(t *testing.T) {
	s, ts := newTest(t, Options{})
	for _, tc := range []struct {
		directive  string
		status     int
		typ, code  string
		retryAfter string
	}{
		{"[sim:status=500]", 500, "server_error", "", ""},
		{"[sim:status=503]", 503, "server_error", "", ""},
		{"[sim:status=400]", 400, "invalid_request_error", "invalid_value", ""},
		{"[sim:status=401]", 401, "invalid_request_error", "invalid_api_key", ""},
		{"[sim:status=404]", 404, "invalid_request_error", "model_not_found", ""},
		{"[sim:status=429,retry_after=2]", 429, "requests", "rate_limit_exceeded", "2"},
		{"[sim:status=429, retry_after=1500ms]", 429, "requests", "rate_limit_exceeded", "2"},
		{"[sim:status=429,code=insufficient_quota]", 429, "insufficient_quota", "insufficient_quota", ""},
	} {
		t.Run(tc.directive, func(t *testing.T) {
			for _, stream := range []string{"", `"stream":true`} {
				resp := post(t, ts, "/v1/chat/completions", "k", chatBody(stream, "user", "hello "+tc.directive+" world"))
				if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
				}
				e := expectError(t, resp, tc.status, tc.typ, "")
				if tc.code != "" && e["code"] != tc.code {
					t.Errorf("code %v, want %s", e["code"], tc.code)
				}
			}
		})
	}
	if st := s.Stats(); st.ErrorsInjected != 16 || st.Faults["status_429"] != 6 || st.Answered != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAnswerDirective(t *testing.T) {
	_, ts := newTest(t, Options{})
	c, _ := complete(t, ts, "k", chatBody(weatherTools, "user", "ignored [sim:answer=Hello, world! {x}]"))
	if got := *c.Choices[0].Message.Content; got != "Hello, world! {x}" {
		t.Errorf("answer %q", got)
	}
	c2, _ := complete(t, ts, "k", chatBody("", "user", "[sim:ttfb=1ms,answer=42]"))
	if got := *c2.Choices[0].Message.Content; got != "42" || c2.Usage.CompletionTokens != 1 {
		t.Errorf("answer %q usage %+v", got, c2.Usage)
	}
	// Directives do not leak into the echo.
	c3, _ := complete(t, ts, "k", chatBody("", "user", "alpha [sim:ttfb=1ms] beta"))
	if got := *c3.Choices[0].Message.Content; strings.Contains(got, "sim:") || !strings.Contains(got, "alpha beta") {
		t.Errorf("echo %q", got)
	}
}

func TestTimingDirectives(t *testing.T) {
	_, ts := newTest(t, Options{})
	start := time.Now()
	complete(t, ts, "k", chatBody("", "user", "[sim:ttfb=150ms]"))
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("ttfb took %v", d)
	}
	start = time.Now()
	resp := post(t, ts, "/v1/chat/completions", "k", chatBody(`"stream":true`, "user", "[sim:chunk_delay=20ms] tell me"))
	_, done, _ := sse(t, resp.Body)
	resp.Body.Close()
	// 8 content chunks + finish: at least 8 delays.
	if d := time.Since(start); !done || d < 8*20*time.Millisecond {
		t.Errorf("chunk_delay stream took %v done=%v", d, done)
	}
}

func TestCutAfter(t *testing.T) {
	s, ts := newTest(t, Options{})
	resp := post(t, ts, "/v1/chat/completions", "k", chatBody(`"stream":true`, "user", "[sim:cut_after=3] go"))
	events, done, err := sse(t, resp.Body)
	resp.Body.Close()
	if done || err == nil {
		t.Errorf("cut stream: done=%v err=%v", done, err)
	}
	if len(events) != 4 { // role + 3 content chunks
		t.Errorf("%d events before the cut: %v", len(events), events)
	}
	// Non-stream: truncated body.
	resp = post(t, ts, "/v1/chat/completions", "k", chatBody("", "user", "[sim:cut_after=0] go"))
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || json.Valid(b) {
		t.Errorf("cut non-stream: err=%v body=%q", err, b)
	}
	if st := s.Stats(); st.Faults["cut"] != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestStreamErrorAfter(t *testing.T) {
	_, ts := newTest(t, Options{})
	resp := post(t, ts, "/v1/chat/completions", "k", chatBody(`"stream":true`, "user", "[sim:stream_error_after=2] go"))
	events, done, err := sse(t, resp.Body)
	resp.Body.Close()
	if done || err != nil || len(events) != 4 {
		t.Fatalf("done=%v err=%v events=%v", done, err, events)
	}
	var e struct {
		Error map[string]any `json:"error"`
	}
	if json.Unmarshal([]byte(events[3]), &e) != nil || e.Error["type"] != "server_error" || len(e.Error) != 4 {
		t.Errorf("error event %s", events[3])
	}
}

func TestHoldRelease(t *testing.T) {
	s, ts := newTest(t, Options{})
	resp := post(t, ts, "/v1/chat/completions", "k", chatBody(`"stream":true`, "user", "[sim:hold=h1] go"))
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvent := func() string {
		var ev string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if line == "\n" {
				return ev
			}
			ev += line
		}
	}
	if !strings.Contains(readEvent(), `"role":"assistant"`) {
		t.Fatal("no role chunk")
	}
	if !strings.Contains(readEvent(), `"content":"`) {
		t.Fatal("no first content chunk")
	}
	// The server is now holding: the next event must not arrive.
	deadline := time.Now().Add(2 * time.Second)
	for s.Waiting("h1") != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s.Waiting("h1") != 1 {
		t.Fatal("not held")
	}
	got := make(chan string, 1)
	go func() { got <- readEvent() }()
	select {
	case ev := <-got:
		t.Fatalf("event arrived during hold: %s", ev)
	case <-time.After(50 * time.Millisecond):
	}
	s.Release("h1")
	select {
	case ev := <-got:
		if !strings.Contains(ev, `"content"`) {
			t.Errorf("after release: %s", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("release did not resume the stream")
	}
	rest, _ := io.ReadAll(br)
	if !bytes.HasSuffix(rest, []byte("data: [DONE]\n\n")) {
		t.Errorf("tail %q", rest)
	}

	// Non-stream hold: nothing until release; release before arrival is not lost.
	s.Release("early")
	complete(t, ts, "k", chatBody("", "user", "[sim:hold=early] x"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		complete(t, ts, "k", chatBody("", "user", "[sim:hold=h2] x"))
	}()
	for s.Waiting("h2") != 1 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("non-stream answered during hold")
	default:
	}
	s.Release("h2")
	<-done
}

func TestClientCancelStopsStream(t *testing.T) {
	s, ts := newTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(chatBody(`"stream":true`, "user", "[sim:hold=c1] x")))
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	for s.Waiting("c1") != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(2 * time.Second)
	for s.Waiting("c1") != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s.Waiting("c1") != 0 {
		t.Error("handler still holding after client left")
	}
}

func TestRandomFaults(t *testing.T) {
	s, ts := newTest(t, Options{Seed: 1})
	resp := post(t, ts, "/_sim/faults", "", `{"error_rate":1,"error_status":503}`)
	readAll(t, resp)
	for range 3 {
		expectError(t, post(t, ts, "/v1/chat/completions", "k", chatBody("", "user", "x")), 503, "server_error", "")
	}
	s.SetFaults(Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second})
	resp = post(t, ts, "/v1/chat/completions", "k", chatBody("", "user", "x"))
	if resp.Header.Get("Retry-After") != "3" {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	expectError(t, resp, 429, "requests", "")
	s.SetFaults(Faults{CutRate: 1})
	resp = post(t, ts, "/v1/chat/completions", "k", chatBody(`"stream":true`, "user", "x"))
	_, done, _ := sse(t, resp.Body)
	resp.Body.Close()
	if done {
		t.Error("cut_rate 1 stream completed")
	}
	// Rates about right, and reproducible for a seed.
	s.SetFaults(Faults{ErrorRate: 0.25})
	errs := 0
	for range 200 {
		resp := post(t, ts, "/v1/chat/completions", "k", chatBody("", "user", "x"))
		readAll(t, resp)
		if resp.StatusCode != 200 {
			errs++
		}
	}
	if errs < 25 || errs > 80 {
		t.Errorf("%d/200 errors at rate 0.25", errs)
	}
	resp, _ = ts.Client().Get(ts.URL + "/_sim/stats")
	var st Stats
	if err := json.Unmarshal(readAll(t, resp), &st); err != nil || st.ErrorsInjected != int64(3+1+1+errs) || st.Faults["status_503"] != 3 {
		t.Errorf("stats %+v %v", st, err)
	}
	expectError(t, post(t, ts, "/_sim/faults", "", `{"error_rate":2}`), 400, "invalid_request_error", "")
}

func TestStatsCounts(t *testing.T) {
	s, ts := newTest(t, Options{})
	c1, _ := complete(t, ts, "a", chatBody("", "user", "one"))
	resp := post(t, ts, "/v1/chat/completions", "b", chatBody(`"stream":true,"stream_options":{"include_usage":true}`, "user", "two"))
	readAll(t, resp)
	expectError(t, post(t, ts, "/v1/chat/completions", "b", `{}`), 400, "invalid_request_error", "")
	st := s.Stats()
	if st.Requests != 3 || st.StreamRequests != 1 || st.Answered != 2 || st.Rejected != 1 {
		t.Errorf("stats %+v", st)
	}
	if st.Keys["a"].PromptTokens != int64(c1.Usage.PromptTokens) || st.Keys["a"].Requests != 1 || st.Keys["b"].Requests != 1 {
		t.Errorf("keys %+v", st.Keys)
	}
	s.Reset()
	if st := s.Stats(); st.Requests != 0 || len(st.Keys) != 0 {
		t.Errorf("after reset %+v", st)
	}
}

func TestListenAndServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ListenAndServe(ctx, "127.0.0.1:0", Options{}) }()
	cancel()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not return")
	}
}

func TestJSONString(t *testing.T) {
	for _, s := range []string{"plain", "quote\" back\\ nl\n tab\t ctl\x01", "ünïcödé ✓ 😀", "bad \xff utf8", "\u2028sep"} {
		got := appendJSONString(nil, s)
		want, _ := json.Marshal(s)
		var back, wantBack string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: invalid JSON %s", s, got)
		}
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: round trip %q want %q", s, back, wantBack)
		}
	}
}

// requiredKeys lists the required property names of an object schema .
func requiredKeys(raw []byte) []string {
	var s struct {
		Required []string `json:"required"`
	}
	_ = json.Unmarshal(raw, &s)
	sort.Strings(s.Required)
	return s.Required
}

func TestConcurrent(t *testing.T) {
	s, ts := newTest(t, Options{Seed: 3})
	s.SetFaults(Faults{ErrorRate: 0.1})
	long := longPrompt(1100, "shared prefix")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				extra := ""
				if i%2 == 0 {
					extra = `"stream":true,"stream_options":{"include_usage":true}`
				}
				resp := post(t, ts, "/v1/chat/completions", fmt.Sprint("key", g%3), chatBody(extra, "system", long, "user", fmt.Sprint("q", i)))
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Requests != 160 || st.Answered+st.ErrorsInjected != 160 || st.CachedTokens == 0 {
		t.Errorf("stats %+v", st)
	}
}
