package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// TestChoicesAreBilled: with n > 1 the upstream generates and bills n answers (the simulator
// does as OpenAI does), and so must the gateway — complete or cut, stream or not: the row
// holds every choice's output at the catalog price, and what the client is told matches it.
func TestChoicesAreBilled(t *testing.T) {
	base, _, _, tl := simGatewayLedger(t)
	c := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(tl.ownerKey), option.WithMaxRetries(0))
	ctx := context.Background()
	store, err := ledger.OpenSQLite(ctx, tl.db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	price, _ := catalog.Default().Lookup("gpt-4o-mini")
	var ids []string
	row := func(id string) ledger.Row {
		t.Helper()
		ids = append(ids, id)
		for _, r := range waitRows(t, store, tl.workspace, len(ids), 10*time.Second) {
			if r.RequestID == id {
				u := providers.Usage(r.Usage)
				if int64(r.CostMicros) != price.Cost(u) {
					t.Fatalf("row %s: cost %d, catalog price of its usage %d", id, r.CostMicros, price.Cost(u))
				}
				return r
			}
		}
		t.Fatalf("no row for %s", id)
		return ledger.Row{}
	}
	params := func(n int64, text string) openai.ChatCompletionNewParams {
		return openai.ChatCompletionNewParams{Model: "sim/gpt-4o-mini", N: openai.Int(n), Temperature: openai.Float(1),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}}
	}

	// Cut streams first, before a completed stream calibrates the output estimate: three
	// choices cut at the same piece deliver three times the text, and are billed for it.
	cut := func(n int64) ledger.Row {
		t.Helper()
		var resp *http.Response
		s := c.Chat.Completions.NewStreaming(ctx, params(n, "cut me [sim:cut_after=3]"), option.WithResponseInto(&resp))
		for s.Next() {
		}
		_ = s.Close()
		return row(resp.Header.Get("X-Btl-Request-Id"))
	}
	one, three := cut(1), cut(3)
	if one.Output <= 0 || three.Output < 3*one.Output-2 || three.Output > 3*one.Output+2 {
		t.Fatalf("cut stream billed %d output tokens for three choices, %d for one", three.Output, one.Output)
	}

	// Non-stream: n answers, n × the output.
	var resp *http.Response
	single, err := c.Chat.Completions.New(ctx, params(1, "how many"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	row(resp.Header.Get("X-Btl-Request-Id"))
	multi, err := c.Chat.Completions.New(ctx, params(3, "how many"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	r := row(resp.Header.Get("X-Btl-Request-Id"))
	if len(multi.Choices) != 3 || multi.Usage.CompletionTokens != 3*single.Usage.CompletionTokens || r.Output != multi.Usage.CompletionTokens {
		t.Fatalf("n=3: %d choices, %d completion tokens (one answer: %d), row output %d",
			len(multi.Choices), multi.Usage.CompletionTokens, single.Usage.CompletionTokens, r.Output)
	}
	if got := micros(t, json.Number(resp.Header.Get("X-Btl-Cost-Usd"))); got != int64(r.CostMicros) {
		t.Fatalf("x-btl-cost-usd %d µ$, row %d µ$", got, r.CostMicros)
	}

	// Stream: every choice's chunks, usage for all of them.
	p := params(3, "how many")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s := c.Chat.Completions.NewStreaming(ctx, p, option.WithResponseInto(&resp))
	seen := map[int64]bool{}
	var usage openai.CompletionUsage
	for s.Next() {
		for _, ch := range s.Current().Choices {
			seen[ch.Index] = true
		}
		if s.Current().Usage.CompletionTokens > 0 {
			usage = s.Current().Usage
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	r = row(resp.Header.Get("X-Btl-Request-Id"))
	if len(seen) != 3 || usage.CompletionTokens != 3*single.Usage.CompletionTokens || r.Usage != (ledger.Usage{InputUncached: usage.PromptTokens, Output: usage.CompletionTokens}) {
		t.Fatalf("stream n=3: choices %v, usage %+v, row %+v", seen, usage, r.Usage)
	}
}
