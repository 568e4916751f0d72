package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// deadlineGateway is the full chain with btl_route's deadline set to 1s, in front of one
// simulated upstream.
func deadlineGateway(t *testing.T) (string, *simulated.Server, *testLedger) {
	t.Helper()
	tl := newTestLedger(t, 100*ledger.Credit)
	testKey = tl.ownerKey
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	block := `btl {
		provider sim openai_compatible {
			base_url ` + srv.URL + `/v1
			api_key sim-key
			models gpt-4o-mini
		}
	}`
	site := "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize\n\tbtl_route {\n\t\tdeadline 1s\n\t\tretries 0\n\t}\n"
	return startGateway(t, tl.withStorage(block), site), sim, tl
}

// TestRouteDeadlineBoundsFirstByteOnly: btl_route's deadline bounds the time to an answer's
// first byte, not its length. A stream that starts at once and runs three times the deadline
// is relayed whole and billed on the upstream's usage; an upstream that sends nothing within
// the deadline still gets a 504.
func TestRouteDeadlineBoundsFirstByteOnly(t *testing.T) {
	base, sim, tl := deadlineGateway(t)
	client := sdk(base)
	store := moneyLedger(t, tl)

	t.Run("long stream completes", func(t *testing.T) {
		// Eight content chunks 400ms apart: about 3s, three times the deadline.
		params := openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", Temperature: openai.Float(0),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a slow story [sim:chunk_delay=400ms]")}}
		started := time.Now()
		s := client.Chat.Completions.NewStreaming(context.Background(), params)
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for s.Next() {
			acc.AddChunk(s.Current())
			chunks++
		}
		elapsed := time.Since(started)
		if err := s.Err(); err != nil {
			t.Fatalf("stream after %v: %v", elapsed, err)
		}
		if elapsed < 2500*time.Millisecond {
			t.Fatalf("the stream took %v: the test needs it to outlast the 1s deadline", elapsed)
		}
		if len(acc.Choices) != 1 || acc.Choices[0].FinishReason != "stop" || acc.Choices[0].Message.Content == "" {
			t.Fatalf("truncated answer after %d chunks: %+v", chunks, acc.Choices)
		}
		row := rowFor(t, store, tl.workspace, "sim/gpt-4o-mini")
		if row.Status != http.StatusOK || row.ErrorCode != "" || !row.Stream || row.CostMicros <= 0 || row.Output == 0 {
			t.Fatalf("row: %+v", row)
		}
		// Billed on the upstream's own usage, not on an estimate of a cut stream.
		if want := sim.Stats().CompletionTokens; want == 0 || row.Output != want {
			t.Fatalf("row bills %d output tokens, the upstream reported %d", row.Output, want)
		}
	})

	t.Run("no first byte within the deadline", func(t *testing.T) {
		params := openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", Temperature: openai.Float(0),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Too slow to start [sim:ttfb=3s]")}}
		started := time.Now()
		s := client.Chat.Completions.NewStreaming(context.Background(), params)
		for s.Next() {
		}
		elapsed := time.Since(started)
		var apiErr *openai.Error
		if err := s.Err(); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusGatewayTimeout || !strings.Contains(apiErr.Code, "timeout") {
			t.Fatalf("after %v: %v", elapsed, err)
		}
		if elapsed > 2500*time.Millisecond {
			t.Fatalf("the 504 took %v with a 1s deadline", elapsed)
		}
	})
}
