package caddymodule

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/badtheorylabs/btl-runtime/tokenopt/respcache"
)

// TestResponsesGetTheTokenLevers: a /v1/responses request served by translation (here to
// Claude) gets what a chat completion gets: automatic cache breakpoints, so the second call
// with the same long instructions reads them from the provider's cache, and the response
// cache, whose replay is a Response object that later turns chain on.
func TestResponsesGetTheTokenLevers(t *testing.T) {
	env := responsesGateway(t)
	c := env.client(env.key)
	claude := respModels[1]
	instructions := strings.Repeat("You are the support assistant of a bicycle shop; answer briefly and politely. ", 200)

	t.Run("prompt caching", func(t *testing.T) {
		var cached []int64
		for i, q := range []string{"Do you repair tubeless tyres?", "Are you open on Sundays?"} {
			r := runResponse(t, c, responses.ResponseNewParams{Model: claude, Instructions: openai.String(instructions),
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(q)}}, i == 1)
			cached = append(cached, r.Usage.InputTokensDetails.CachedTokens)
		}
		if cached[0] != 0 || cached[1] < 1000 {
			t.Fatalf("cached input tokens per call: %v; the second call should read the instructions from the cache", cached)
		}
	})

	t.Run("response cache", func(t *testing.T) {
		params := responses.ResponseNewParams{Model: claude, Temperature: openai.Float(0), Instructions: openai.String("Be brief."),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Name a primary colour.")}}
		var first, second *http.Response
		a, err := c.Responses.New(context.Background(), params, option.WithResponseInto(&first))
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Responses.New(context.Background(), params, option.WithResponseInto(&second))
		if err != nil {
			t.Fatal(err)
		}
		if first.Header.Get("X-Btl-Cache") == respcache.HeaderHit || second.Header.Get("X-Btl-Cache") != respcache.HeaderHit {
			t.Fatalf("x-btl-cache: %q then %q", first.Header.Get("X-Btl-Cache"), second.Header.Get("X-Btl-Cache"))
		}
		if b.ID == a.ID || b.OutputText() != a.OutputText() || b.Object != "response" || b.Status != "completed" {
			t.Fatalf("replayed response:\n%s\nfirst:\n%s", b.RawJSON(), a.RawJSON())
		}
		streamedHit, _ := streamed(t, c, params)
		if streamedHit.OutputText() != a.OutputText() {
			t.Fatalf("streamed replay %q, want %q", streamedHit.OutputText(), a.OutputText())
		}
		// The replay is stored like any answer: the next turn chains on it.
		next := runResponse(t, c, responses.ResponseNewParams{Model: claude, PreviousResponseID: openai.String(b.ID),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("And another?")}}, false)
		if next.PreviousResponseID != b.ID || !strings.HasPrefix(next.OutputText(), "Simulated answer: And another") {
			t.Fatalf("turn after a replay: %s", next.RawJSON())
		}
		items, err := c.Responses.InputItems.List(context.Background(), next.ID, responses.InputItemListParams{Limit: openai.Int(100)})
		if err != nil || len(items.Data) != 3 {
			t.Fatalf("input items after a replay: %v %v", err, items)
		}
	})
}

// TestResponsesPassThroughClaimsNoRewrites: a Responses request passed through to an OpenAI
// upstream goes as the caller wrote it, so the ledger credits none of the rewrites the
// optimizer made on its chat translation (here a dedupe of a re-pasted document).
func TestResponsesPassThroughClaimsNoRewrites(t *testing.T) {
	base, c, _, fake := openAIResponsesGateway(t, "")
	doc := "<document source=\"wiki/refunds\">Refunds are issued within 14 days of a written request. The finance team reviews every refund above 500 dollars and records the decision in the ledger. Customers on annual plans receive a prorated refund for unused months, calculated from the renewal date.</document>"
	user := func(s string) responses.ResponseInputItemUnionParam {
		return responses.ResponseInputItemParamOfMessage(s, responses.EasyInputMessageRoleUser)
	}
	_, err := c.Responses.New(context.Background(), responses.ResponseNewParams{Model: "oai/gpt-4.1",
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			user("Context:\n" + doc + "\nWhat is the refund window?"),
			responses.ResponseInputItemParamOfMessage("Noted.", responses.EasyInputMessageRoleAssistant),
			user("Context again:\n" + doc + "\nAnd for annual plans?"),
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(fake.got[0]["input"]); strings.Count(got, "Refunds are issued within 14 days") != 2 {
		t.Fatalf("the upstream did not get the caller's input: %s", got)
	}
	s := waitSummary(t, base, 1)
	for lever, v := range s.Total.Savings {
		if num(v) != 0 {
			t.Fatalf("lever %s credited %v on a pass-through request: %+v", lever, v, s.Total.Savings)
		}
	}
}
