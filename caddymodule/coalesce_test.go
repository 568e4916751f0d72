package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"path/filepath"
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

// TestCoalescingNonStream: identical requests in flight together make one upstream call; it
// is paid once and the others are recorded as coalesced at zero cost.
func TestCoalescingNonStream(t *testing.T) {
	base, primary, _ := simGateway(t)
	client := sdk(base)
	var wg sync.WaitGroup
	var contents sync.Map
	var failed atomic.Int64
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", Temperature: openai.Float(0),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("the same slow question [sim:ttfb=400ms]")}})
			if err != nil {
				failed.Add(1)
				return
			}
			contents.Store(i, resp.Choices[0].Message.Content)
		}()
	}
	wg.Wait()
	if failed.Load() != 0 || primary.Stats().Requests != 1 {
		t.Fatalf("failed %d, upstream calls %d (want 1)", failed.Load(), primary.Stats().Requests)
	}
	var first string
	contents.Range(func(_, v any) bool {
		if first == "" {
			first = v.(string)
		}
		if v.(string) != first {
			t.Errorf("coalesced answers differ")
		}
		return true
	})
	s := waitSummary(t, base, 10)
	if s.Total.Requests != 10 || num(s.Total.Savings["coalesce"]) <= 0 {
		t.Fatalf("summary: %+v", s.Total)
	}
	// Nine of ten were free: the coalesce lever is nine times what was paid.
	if got, paid := num(s.Total.Savings["coalesce"]), num(s.Total.Cost); got < 8.9*paid || got > 9.1*paid {
		t.Fatalf("coalesce savings %v vs cost %v", got, paid)
	}
}

// TestCoalescedFollowersSurviveLeaderDisconnect: the first caller of a shared stream leaves
// mid-stream; the others still get the whole answer, and the upstream was called once.
func TestCoalescedFollowersSurviveLeaderDisconnect(t *testing.T) {
	base, primary, _ := simGateway(t)
	client := sdk(base)
	params := openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("shared stream [sim:hold=coalesce-leader]")}}
	leaderCtx, leave := context.WithCancel(context.Background())
	leader := client.Chat.Completions.NewStreaming(leaderCtx, params)
	if !leader.Next() {
		t.Fatalf("leader got nothing: %v", leader.Err())
	}
	var wg sync.WaitGroup
	results := make([]string, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := client.Chat.Completions.NewStreaming(context.Background(), params)
			var acc openai.ChatCompletionAccumulator
			for s.Next() {
				acc.AddChunk(s.Current())
			}
			errs[i] = s.Err()
			if len(acc.Choices) > 0 && acc.Choices[0].FinishReason == "stop" {
				results[i] = acc.Choices[0].Message.Content
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the followers have joined the flight
	leave()                            // the leader disconnects mid-stream
	leader.Close()
	time.Sleep(100 * time.Millisecond)
	primary.Release("coalesce-leader")
	wg.Wait()
	for i := range 3 {
		if errs[i] != nil || results[i] == "" || !strings.HasPrefix(results[i], "Simulated answer") {
			t.Fatalf("follower %d: %q %v", i, results[i], errs[i])
		}
	}
	if n := primary.Stats().Requests; n != 1 {
		t.Fatalf("upstream called %d times", n)
	}
}

// TestCoalescingOnlyDeterministic runs the gateway binary against a sampling upstream: six
// concurrent identical requests that ask for a sample (no temperature, temperature 0.7, n=2,
// or a stream) each reach the upstream and get their own answer; six with temperature 0 share
// one call; and a workspace that opted in (coalesce_sampled) shares sampled ones too.
func TestCoalescingOnlyDeterministic(t *testing.T) {
	dsn := pgSchema(t)
	dir := t.TempDir()
	ctx := context.Background()
	store, err := ledger.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, key, err := store.CreateWorkspace(ctx, "default", 100*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	optIn, optInKey, err := store.CreateWorkspace(ctx, "opted-in", 100*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	upstream := simulated.New(simulated.Options{Sampling: true})
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	site := "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tworkspace " + optIn.ID + " {\n\t\t\tcoalesce_sampled\n\t\t}\n\t}\n\tbtl_route\n"
	gw := startProcSite(t, dir, btlBlockFor("postgres "+dsn, filepath.Join(dir, "spool"), "node-a", up.URL+"/v1"), site)

	for i, tc := range []struct {
		name     string
		key      string
		stream   bool
		params   func(p *openai.ChatCompletionNewParams)
		upstream int64 // calls that must reach the upstream for six clients
		sampled  bool  // the upstream draws a fresh answer per call
	}{
		{"no temperature", key, false, func(*openai.ChatCompletionNewParams) {}, 6, true},
		{"temperature 0.7", key, false, func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(0.7) }, 6, true},
		{"n=2", key, false, func(p *openai.ChatCompletionNewParams) { p.N = openai.Int(2) }, 6, true},
		{"n=2, temperature 0", key, false, func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(0); p.N = openai.Int(2) }, 6, false},
		{"top_p 0.9, temperature 0", key, false, func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(0); p.TopP = openai.Float(0.9) }, 6, false},
		{"stream, no temperature", key, true, func(*openai.ChatCompletionNewParams) {}, 6, true},
		{"temperature 0", key, false, func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(0) }, 1, false},
		{"stream, temperature 0", key, true, func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(0) }, 1, false},
		{"opted in, temperature 0.7", optInKey, false, func(p *openai.ChatCompletionNewParams) { p.Temperature = openai.Float(0.7) }, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := fmt.Sprintf("case-%d", i)
			params := openai.ChatCompletionNewParams{Model: "btl-fast", Messages: []openai.ChatCompletionMessageParamUnion{
				openai.UserMessage("Pick a number between one and a million [sim:hold=" + hold + "]")}}
			tc.params(&params)
			client := openai.NewClient(option.WithBaseURL(gw.base+"/v1"), option.WithAPIKey(tc.key), option.WithMaxRetries(0))
			before := upstream.Stats().Requests
			answers := make([]string, 6)
			outcomes := make([]string, 6)
			errs := make([]error, 6)
			var wg sync.WaitGroup
			// Two barriers replace guessing how long six requests take to reach the gateway on
			// a loaded machine: every request written, and for streams every first chunk
			// received (held upstream after it, so a caller that has it joined the flight or
			// made its own call, which the count below sees).
			var wrote, first sync.WaitGroup
			wrote.Add(6)
			first.Add(6)
			for c := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var once sync.Once
					firstDone := func() { once.Do(first.Done) }
					defer firstDone()
					var wroteOnce sync.Once
					defer wroteOnce.Do(wrote.Done)
					rctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wroteOnce.Do(wrote.Done) }})
					var raw *http.Response
					if !tc.stream {
						resp, err := client.Chat.Completions.New(rctx, params, option.WithResponseInto(&raw))
						if errs[c] = err; err == nil {
							answers[c], outcomes[c] = resp.ID+" "+resp.Choices[0].Message.Content, raw.Header.Get("X-Btl-Cache")
						}
						return
					}
					s := client.Chat.Completions.NewStreaming(rctx, params, option.WithResponseInto(&raw))
					var acc openai.ChatCompletionAccumulator
					for s.Next() {
						acc.AddChunk(s.Current())
						firstDone()
					}
					if errs[c] = s.Err(); errs[c] == nil && len(acc.Choices) > 0 {
						answers[c], outcomes[c] = acc.ID+" "+acc.Choices[0].Message.Content, raw.Header.Get("X-Btl-Cache")
					}
				}()
			}
			// Hold the upstream until every call that should reach it has (bounded: a wrong
			// merge must fail the count below, not hang), and give joiners time to join.
			deadline := time.Now().Add(15 * time.Second)
			for int64(upstream.Waiting(hold)) < tc.upstream && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			waitGroupFor(&wrote, time.Until(deadline))
			if tc.stream {
				waitGroupFor(&first, time.Until(deadline))
			}
			// Non-stream joiners are invisible until answered: time for the last written
			// request to pass auth and the meter to the gate.
			time.Sleep(300 * time.Millisecond)
			upstream.Release(hold)
			wg.Wait()
			distinct := map[string]bool{}
			for c := range 6 {
				if errs[c] != nil || answers[c] == "" {
					t.Fatalf("client %d: %v", c, errs[c])
				}
				distinct[answers[c]] = true
			}
			if got := upstream.Stats().Requests - before; got != tc.upstream {
				t.Fatalf("upstream calls %d, want %d (cache outcomes %v)", got, tc.upstream, outcomes)
			}
			if tc.upstream == 6 && tc.sampled && len(distinct) != 6 {
				t.Fatalf("six sampled requests got %d distinct answers: %v", len(distinct), answers)
			}
			if tc.upstream == 1 && len(distinct) != 1 {
				t.Fatalf("coalesced requests got %d different answers: %v", len(distinct), answers)
			}
			coalesced := 0
			for _, o := range outcomes {
				if o == "coalesced" {
					coalesced++
				}
			}
			// Whoever finishes first pays the shared call, so the caller that started it may
			// be marked coalesced too: at least the five others are.
			if sharing := tc.upstream == 1; sharing && coalesced < 5 || !sharing && coalesced != 0 {
				t.Fatalf("%d answers marked coalesced: %v", coalesced, outcomes)
			}
		})
	}
}

// TestCoalescedWaitersOutliveLeadCaller: non-stream callers waiting for an identical call in
// flight get their answers when the caller that made it leaves.
func TestCoalescedWaitersOutliveLeadCaller(t *testing.T) {
	base, primary, _ := simGateway(t)
	client := sdk(base)
	params := openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("shared call [sim:hold=lead-leaves]")}}
	leadCtx, leave := context.WithCancel(context.Background())
	leadDone := make(chan error, 1)
	go func() {
		_, err := client.Chat.Completions.New(leadCtx, params)
		leadDone <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for primary.Waiting("lead-leaves") < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	answers := make([]string, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Chat.Completions.New(context.Background(), params)
			if errs[i] = err; err == nil {
				answers[i] = resp.Choices[0].Message.Content
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the three are waiting for the lead's call
	if n := primary.Stats().Requests; n != 1 {
		t.Fatalf("upstream calls before the lead left: %d, want 1", n)
	}
	leave()
	if err := <-leadDone; err == nil {
		t.Fatal("the departed caller got an answer")
	}
	// The call may go on detached (the gateway bills what the upstream was asked) or end
	// with its caller (the waiters then call themselves): either way they are answered.
	time.Sleep(100 * time.Millisecond)
	primary.Release("lead-leaves")
	wg.Wait()
	for i := range 3 {
		if errs[i] != nil || !strings.HasPrefix(answers[i], "Simulated answer") {
			t.Fatalf("waiter %d: %q %v", i, answers[i], errs[i])
		}
	}
}

// waitGroupFor waits for wg at most d (a wrong merge must fail the test's counts, not hang it).
func waitGroupFor(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
