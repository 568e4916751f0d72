package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

type summaryTotals struct {
	Total struct {
		Requests int64       `json:"requests"`
		Cost     json.Number `json:"cost_usd"`
		Baseline json.Number `json:"baseline_usd"`
		Savings  map[string]json.Number
		Saved    json.Number `json:"saved_usd"`
	} `json:"total"`
}

func waitSummary(t *testing.T, base string, n int64) summaryTotals {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var s struct {
			Total struct {
				Requests int64                  `json:"requests"`
				Cost     json.Number            `json:"cost_usd"`
				Baseline json.Number            `json:"baseline_usd"`
				Saved    json.Number            `json:"saved_usd"`
				Savings  map[string]json.Number `json:"savings_usd"`
			} `json:"total"`
		}
		raw := getRaw(t, base+"/v1/usage/summary", testKey)
		_ = json.Unmarshal(raw, &s)
		if s.Total.Requests >= n || time.Now().After(deadline) {
			var out summaryTotals
			out.Total.Requests, out.Total.Cost, out.Total.Baseline, out.Total.Saved, out.Total.Savings =
				s.Total.Requests, s.Total.Cost, s.Total.Baseline, s.Total.Saved, s.Total.Savings
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func num(n json.Number) float64 { f, _ := n.Float64(); return f }

// TestResponseCache: an identical deterministic request is answered from memory (no upstream
// call, no cost, the whole call credited to the response_cache lever), as JSON and replayed
// as a valid stream.
func TestResponseCache(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	sim := simulated.New(simulated.Options{})
	up := httptest.NewServer(sim)
	defer up.Close()
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			base_url `+up.URL+`/v1
			models gpt-4o-mini
		}
	}`), "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tresponse_cache {\n\t\t\tttl 1m\n\t\t}\n\t}\n\tbtl_route\n")
	body := `{"model":"sim/gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"What is 2+2?"}]}`
	st1, h1, _, first := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	st2, h2, _, second := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if st1 != 200 || st2 != 200 || h1.Get("X-Btl-Cache") != "miss" || h2.Get("X-Btl-Cache") != "hit" {
		t.Fatalf("cache outcomes %s / %s (%d %d)", h1.Get("X-Btl-Cache"), h2.Get("X-Btl-Cache"), st1, st2)
	}
	if sim.Stats().Requests != 1 || h2.Get("X-Btl-Cost-Usd") != "0.000000" {
		t.Fatalf("hit called the upstream (%d calls) or cost %s", sim.Stats().Requests, h2.Get("X-Btl-Cost-Usd"))
	}
	var a, b struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	_ = json.Unmarshal(first, &a)
	_ = json.Unmarshal(second, &b)
	if a.Choices[0].Message.Content == "" || a.Choices[0].Message.Content != b.Choices[0].Message.Content {
		t.Fatalf("replayed answer differs")
	}
	// The same request as a stream replays the cached answer as a valid SSE stream.
	client := sdk(base)
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "sim/gpt-4o-mini", Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is 2+2?")},
	})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if stream.Err() != nil || acc.Choices[0].Message.Content != a.Choices[0].Message.Content || acc.Choices[0].FinishReason != "stop" {
		t.Fatalf("stream replay: %v %+v", stream.Err(), acc.Choices)
	}
	if sim.Stats().Requests != 1 {
		t.Fatalf("stream replay called the upstream")
	}
	s := waitSummary(t, base, 3)
	if num(s.Total.Savings["response_cache"]) <= 0 || num(s.Total.Baseline) <= num(s.Total.Cost) {
		t.Fatalf("savings not attributed: %+v", s.Total)
	}
	// A sampled request is not cached without the explicit opt-in.
	sampled := `{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"a poem"}]}`
	postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(sampled))
	_, h3, _, _ := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(sampled))
	if h3.Get("X-Btl-Cache") == "hit" {
		t.Fatal("a sampled request was served from the cache")
	}
}

// TestPromptCachingBreakpoints: for an Anthropic upstream the gateway adds cache breakpoints to
// a long stable prefix, the second call reads the cache, and the saving is attributed; a
// caller's own markers are never overridden.
func TestPromptCachingBreakpoints(t *testing.T) {
	base, sim := anthGateway(t)
	system := strings.Repeat("You are a meticulous assistant for the billing team; cite policy numbers. ", 80)
	send := func(user string, extra string) (http.Header, []byte) {
		body := fmt.Sprintf(`{"model":"anth/claude-sonnet-4-5","max_tokens":200,"messages":[{"role":"system","content":%q%s},{"role":"user","content":%q}]}`, system, extra, user)
		st, hdr, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if st != 200 {
			t.Fatalf("%d %s", st, raw)
		}
		return hdr, raw
	}
	send("first question", "")
	last, _ := sim.LastAnthropicRequest()
	if len(last.Breakpoints) == 0 {
		t.Fatalf("no breakpoints reached the upstream: %s", last.Body)
	}
	hdr, raw := send("second question", "")
	var resp struct {
		Usage struct {
			Details struct {
				Cached int64 `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	_ = json.Unmarshal(raw, &resp)
	if resp.Usage.Details.Cached == 0 {
		t.Fatalf("second call read no cache: %s", raw)
	}
	if num(json.Number(hdr.Get("X-Btl-Baseline-Usd"))) <= num(json.Number(hdr.Get("X-Btl-Cost-Usd"))) {
		t.Fatalf("baseline %s not above cost %s", hdr.Get("X-Btl-Baseline-Usd"), hdr.Get("X-Btl-Cost-Usd"))
	}
	s := waitSummary(t, base, 2)
	if num(s.Total.Savings["prompt_cache"]) <= 0 {
		t.Fatalf("prompt_cache lever: %+v", s.Total.Savings)
	}
	// The caller's own marker stands alone.
	body := fmt.Sprintf(`{"model":"anth/claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"system","content":[{"type":"text","text":%q,"cache_control":{"type":"ephemeral","ttl":"1h"}}]},{"role":"user","content":"hi"}]}`, system)
	if st, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body)); st != 200 {
		t.Fatalf("%d %s", st, raw)
	}
	last, _ = sim.LastAnthropicRequest()
	if len(last.Breakpoints) != 1 || last.Breakpoints[0].TTL != "1h" {
		t.Fatalf("caller markers overridden: %+v", last.Breakpoints)
	}
}

// TestDedupeAndBudgetReachUpstream: a re-pasted retrieval chunk is replaced in the newest
// message, a missing output cap is set, "x-btl-optimize: off" sends the request untouched,
// and shadow mode reports without changing anything.
func TestDedupeAndBudgetReachUpstream(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = b
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":900,"completion_tokens":2,"total_tokens":902}}`)
	}))
	defer up.Close()
	base, _ := gatewayBefore(t, up.URL, "gpt-4o-mini")
	doc := "<document source=\"wiki/refunds\">Refunds are issued within 14 days of a written request. The finance team reviews every refund above 500 dollars and records the decision in the ledger. Customers on annual plans receive a prorated refund for unused months, calculated from the renewal date.</document>"
	msgs := fmt.Sprintf(`[{"role":"system","content":"Answer from the documents."},{"role":"user","content":%q},{"role":"assistant","content":"Noted."},{"role":"user","content":%q}]`,
		"Context:\n"+doc+"\nWhat is the refund window?", "Context again:\n"+doc+"\nAnd for annual plans?")
	body := `{"model":"up/gpt-4o-mini","messages":` + msgs + `}`
	sendWith := func(header string) []byte {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		if header != "" {
			req.Header.Set("X-Btl-Optimize", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if header == "shadow" && (resp.Header.Get("X-Btl-Optimize") != "shadow" || resp.Header.Get("X-Btl-Shadow-Saved-Tokens") == "0") {
			t.Fatalf("shadow headers: %v", resp.Header)
		}
		mu.Lock()
		defer mu.Unlock()
		return append([]byte(nil), got...)
	}
	optimized := sendWith("")
	if !strings.Contains(string(optimized), "[duplicate of") || !strings.Contains(string(optimized), `"max_tokens":`) {
		t.Fatalf("upstream did not get the deduped, capped request: %s", optimized)
	}
	if strings.Count(string(optimized), "Refunds are issued within 14 days") != 1 {
		t.Fatalf("the earlier copy must stay, the newest must be replaced: %s", optimized)
	}
	off := sendWith("off")
	if want := strings.Replace(body, `"up/gpt-4o-mini"`, `"gpt-4o-mini"`, 1); string(off) != want {
		t.Fatalf("x-btl-optimize: off changed the request:\n%s\n%s", off, want)
	}
	if shadow := sendWith("shadow"); string(shadow) != string(off) {
		t.Fatalf("shadow mode changed the request: %s", shadow)
	}
	s := waitSummary(t, base, 3)
	if num(s.Total.Savings["dedupe"]) <= 0 {
		t.Fatalf("dedupe lever: %+v", s.Total.Savings)
	}
}

// TestEmptyLengthFlagged: when the gateway set the output cap and the answer hit it with no
// content, the response says so.
func TestEmptyLengthFlagged(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","created":1,"model":"o4-mini","choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"length"}],"usage":{"prompt_tokens":10,"completion_tokens":32768,"total_tokens":32778,"completion_tokens_details":{"reasoning_tokens":32768}}}`)
	}))
	defer up.Close()
	base, _ := gatewayBefore(t, up.URL, "o4-mini")
	st, hdr, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"up/o4-mini","messages":[{"role":"user","content":"think hard"}]}`))
	if st != 200 || hdr.Get("X-Btl-Empty-Length") != "true" {
		t.Fatalf("%d %v %s", st, hdr, raw)
	}
	// With the caller's own cap the gateway does not flag it: the cap was theirs.
	_, hdr, _, _ = postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"up/o4-mini","max_completion_tokens":100,"messages":[{"role":"user","content":"think hard"}]}`))
	if hdr.Get("X-Btl-Empty-Length") != "" {
		t.Fatal("flagged a caller-capped answer")
	}
}

// TestEmptyLengthFlaggedInStream: a stream's headers are sent before its finish reason is
// known, so the flag arrives as a trailer, and only when no content came before the cap.
func TestEmptyLengthFlaggedInStream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		delta := `{"reasoning_content":"hmm"}`
		if strings.Contains(string(b), "answer briefly") {
			delta = `{"content":"Sure"}`
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`{"id":"c","object":"chat.completion.chunk","created":1,"model":"o4-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
			`{"id":"c","object":"chat.completion.chunk","created":1,"model":"o4-mini","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}`,
			`{"id":"c","object":"chat.completion.chunk","created":1,"model":"o4-mini","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
			`{"id":"c","object":"chat.completion.chunk","created":1,"model":"o4-mini","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":32768,"total_tokens":32778}}`,
		} {
			io.WriteString(w, "data: "+ev+"\n\n")
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	base, _ := gatewayBefore(t, up.URL, "o4-mini")
	trailer := func(prompt string) (http.Header, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(`{"model":"up/o4-mini","stream":true,"messages":[{"role":"user","content":"`+prompt+`"}]}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "[DONE]") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		return resp.Trailer, string(body)
	}
	if tr, body := trailer("think hard"); tr.Get("X-Btl-Empty-Length") != "true" {
		t.Fatalf("trailer %v, body %s", tr, body)
	}
	if tr, _ := trailer("answer briefly"); tr.Get("X-Btl-Empty-Length") != "" {
		t.Fatalf("flagged a stream that had content: %v", tr)
	}
}

// TestWorkspaceOptimizerPolicy: one workspace runs the optimizer in shadow mode; another
// keeps the defaults.
func TestWorkspaceOptimizerPolicy(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = b
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}`)
	}))
	defer up.Close()
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	base := startGateway(t, tl.withStorage(`btl {
		provider up openai_compatible {
			base_url `+up.URL+`/v1
			models gpt-4o-mini
		}
	}`), "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tworkspace "+tl.workspace+" {\n\t\t\tdisable output_budget\n\t\t}\n\t}\n\tbtl_route\n")
	st, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"up/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	if st != 200 {
		t.Fatalf("%d %s", st, raw)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(string(got), "max_tokens") || strings.Contains(string(got), "max_completion_tokens") {
		t.Fatalf("the workspace disabled the output budget, yet the upstream got a cap: %s", got)
	}
}
