package caddymodule

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
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
			resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini",
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
	params := openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini",
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
