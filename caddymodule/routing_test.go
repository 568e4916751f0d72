package caddymodule

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// multiSim starts n simulated providers p0…pn-1 serving gpt-4o-mini and a gateway whose
// extra btl lines are appended.
func multiSim(t *testing.T, n int, extra string) (string, []*simulated.Server) {
	t.Helper()
	tl := newTestLedger(t, 1000*ledger.Credit)
	testKey = tl.ownerKey
	var sims []*simulated.Server
	var b strings.Builder
	b.WriteString("btl {\n")
	for i := range n {
		s := simulated.New(simulated.Options{})
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		sims = append(sims, s)
		fmt.Fprintf(&b, "\t\tprovider p%d openai_compatible {\n\t\t\tbase_url %s/v1\n\t\t\tapi_key k%d\n\t\t\tmodels gpt-4o-mini\n\t\t}\n", i, srv.URL, i)
	}
	b.WriteString(extra)
	b.WriteString("\t}")
	return startGateway(t, tl.withStorage(b.String()), fullChain), sims
}

// TestEveryRequestSucceedsWhileAnyCandidateIsHealthy: two of three upstreams fail half their
// calls at random; every request, stream or not, still succeeds.
func TestEveryRequestSucceedsWhileAnyCandidateIsHealthy(t *testing.T) {
	base, sims := multiSim(t, 3, "\t\tmodel btl-any {\n\t\t\tcandidates p0/gpt-4o-mini p1/gpt-4o-mini p2/gpt-4o-mini\n\t\t\tstrategy weighted\n\t\t}\n")
	sims[0].SetFaults(simulated.Faults{ErrorRate: 0.5, ErrorStatus: 503})
	sims[1].SetFaults(simulated.Faults{RateLimitRate: 0.5})
	client := sdk(base)
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 120 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			params := openai.ChatCompletionNewParams{Model: "btl-any",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("request %d", i))}}
			if i%2 == 0 {
				stream := client.Chat.Completions.NewStreaming(context.Background(), params)
				var acc openai.ChatCompletionAccumulator
				for stream.Next() {
					acc.AddChunk(stream.Current())
				}
				if stream.Err() != nil || len(acc.Choices) == 0 || acc.Choices[0].FinishReason != "stop" {
					failed.Add(1)
				}
				return
			}
			if _, err := client.Chat.Completions.New(context.Background(), params); err != nil {
				failed.Add(1)
				t.Log(err)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 120 requests failed although p2 was healthy", failed.Load())
	}
	t.Logf("faults injected: p0 %d, p1 %d; p2 served %d", sims[0].Stats().ErrorsInjected, sims[1].Stats().ErrorsInjected, sims[2].Stats().Requests)
}

// TestRetryAfterHonoured: a 429 with Retry-After: 1 is retried on the same upstream no sooner
// than a second later.
func TestRetryAfterHonoured(t *testing.T) {
	var calls atomic.Int64
	var times [2]time.Time
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n <= 2 {
			times[n-1] = time.Now()
		}
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
	}))
	defer up.Close()
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	base := startGateway(t, tl.withStorage(`btl {
		price m {
			input 0
			output 0
		}
		provider rl openai_compatible {
			base_url `+up.URL+`/v1
		}
	}`), fullChain)
	status, hdr, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"rl/m","messages":[{"role":"user","content":"hi"}]}`))
	if status != 200 || hdr.Get("X-Btl-Attempts") != "2" {
		t.Fatalf("%d %v %s", status, hdr, raw)
	}
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Fatalf("retried after %v, before Retry-After", gap)
	}
}

// TestNoRetryAfterFirstByte: a stream cut mid-way is reported in-band, never replayed.
func TestNoRetryAfterFirstByte(t *testing.T) {
	base, sims := multiSim(t, 2, "\t\tmodel btl-two {\n\t\t\tcandidates p0/gpt-4o-mini p1/gpt-4o-mini\n\t\t}\n")
	body := `{"model":"btl-two","stream":true,"messages":[{"role":"user","content":"cut [sim:cut_after=2]"}]}`
	status, hdr, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if status != 200 || hdr.Get("X-Btl-Attempts") != "1" || !strings.Contains(string(raw), `"error":{`) {
		t.Fatalf("%d %v %s", status, hdr, raw)
	}
	if sims[0].Stats().Requests != 1 || sims[1].Stats().Requests != 0 {
		t.Fatalf("the cut stream was replayed: p0 %d, p1 %d", sims[0].Stats().Requests, sims[1].Stats().Requests)
	}
}

// TestBreakerOpensAndRecoversThroughGateway: a failing upstream stops receiving traffic once
// its breaker opens and gets it back after a successful half-open probe.
func TestBreakerOpensAndRecoversThroughGateway(t *testing.T) {
	base, sims := multiSim(t, 2, "\t\tmodel btl-two {\n\t\t\tcandidates p0/gpt-4o-mini p1/gpt-4o-mini\n\t\t}\n")
	sims[0].SetFaults(simulated.Faults{ErrorRate: 1, ErrorStatus: 500})
	send := func() http.Header {
		status, hdr, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"btl-two","messages":[{"role":"user","content":"hi"}]}`))
		if status != 200 {
			t.Fatalf("%d %s", status, raw)
		}
		return hdr
	}
	for range 4 { // 3 failed attempts each: the breaker needs 10 outcomes
		send()
	}
	before := sims[0].Stats().Requests
	hdr := send()
	if sims[0].Stats().Requests != before || hdr.Get("X-Btl-Provider") != "p1" || !strings.Contains(hdr.Get("X-Btl-Route-Reason"), "breaker_open") {
		t.Fatalf("breaker did not open: p0 got %d more, headers %v", sims[0].Stats().Requests-before, hdr)
	}
	sims[0].SetFaults(simulated.Faults{})
	time.Sleep(5100 * time.Millisecond) // the first cooldown
	hdr = send()                        // the half-open probe succeeds on p0
	if hdr.Get("X-Btl-Provider") != "p0" {
		t.Fatalf("no recovery: %v", hdr)
	}
	if hdr = send(); hdr.Get("X-Btl-Provider") != "p0" || hdr.Get("X-Btl-Route-Reason") != "ordered" {
		t.Fatalf("not closed after recovery: %v", hdr)
	}
}

// TestStickyRoutingRaisesCacheReads: the same multi-turn conversations, routed by the
// gateway's weighted strategy (sticky once a conversation's cache is warm) versus a client
// choosing a provider at random each turn. Cache reads are counted by the simulators.
func TestStickyRoutingRaisesCacheReads(t *testing.T) {
	base, sims := multiSim(t, 3, "\t\tmodel btl-any {\n\t\t\tcandidates p0/gpt-4o-mini p1/gpt-4o-mini p2/gpt-4o-mini\n\t\t\tstrategy weighted\n\t\t}\n")
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(testKey), option.WithMaxRetries(0))
	cached := func() int64 {
		var n int64
		for _, s := range sims {
			n += s.Stats().CachedTokens
		}
		return n
	}
	run := func(model func(turn int) string, tag string) int64 {
		start := cached()
		rng := rand.New(rand.NewPCG(1, 2))
		for c := range 12 {
			system := fmt.Sprintf("%s conversation %d. ", tag, c) + strings.Repeat("You are a careful assistant who answers briefly. ", 120)
			msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system)}
			for turn := range 5 {
				msgs = append(msgs, openai.UserMessage(fmt.Sprintf("question %d", turn)))
				m := model(rng.IntN(3))
				resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: m, Messages: msgs})
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, resp.Choices[0].Message.ToParam())
			}
		}
		return cached() - start
	}
	random := run(func(p int) string { return fmt.Sprintf("p%d/gpt-4o-mini", p) }, "random")
	sticky := run(func(int) string { return "btl-any" }, "sticky")
	t.Logf("cached prompt tokens over 12 conversations × 5 turns: sticky %d, random %d (%.1fx)", sticky, random, float64(sticky)/float64(max(random, 1)))
	if sticky <= random*3/2 {
		t.Fatalf("sticky routing did not raise cache reads: sticky %d, random %d", sticky, random)
	}
}

// TestKeyPoolSpreadsAndSticks: a provider with several API keys spreads conversations over
// them by weight and keeps each conversation on its key.
func TestKeyPoolSpreadsAndSticks(t *testing.T) {
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	base := startGateway(t, tl.withStorage(`btl {
		provider pool openai_compatible {
			base_url `+srv.URL+`/v1
			api_key key-a
			api_keys key-b key-c
			key_weights 2 1 1
			models gpt-4o-mini
		}
	}`), fullChain)
	// 240 conversations: with 60, a key of weight 1 fell under its bound (half its expected
	// share) in about one run in forty; now the bound is 4.5 standard deviations away.
	const conversations = 240
	for c := range conversations {
		for turn := range 2 {
			body := fmt.Sprintf(`{"model":"pool/gpt-4o-mini","messages":[{"role":"user","content":"conversation %d"},{"role":"assistant","content":"ok"},{"role":"user","content":"turn %d"}]}`, c, turn)
			if status, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body)); status != 200 {
				t.Fatalf("%d %s", status, raw)
			}
		}
	}
	keys := sim.Stats().Keys
	a, b, c := keys["key-a"].Requests, keys["key-b"].Requests, keys["key-c"].Requests
	// The same bounds as a share of the requests: a third for the weight-2 key, an eighth each
	// for the others (expected: half and a quarter).
	if n := int64(2 * conversations); a+b+c != n || a < n/3 || b < n/8 || c < n/8 {
		t.Fatalf("spread over keys a=%d b=%d c=%d (weights 2:1:1)", a, b, c)
	}
	// Every conversation made two requests on one key: all counts are even.
	if a%2 != 0 || b%2 != 0 || c%2 != 0 {
		t.Fatalf("a conversation changed keys: a=%d b=%d c=%d", a, b, c)
	}
}
