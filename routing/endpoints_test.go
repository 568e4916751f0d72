package routing

import (
	"context"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// embedAdapter is an adapter that also serves embeddings and other OpenAI endpoints.
type embedAdapter struct{ fakeAdapter }

func (embedAdapter) Embed(context.Context, *providers.EmbedCall) (*providers.Response, error) {
	return nil, nil
}

func (embedAdapter) Forward(context.Context, string, []byte, string) (*providers.Response, error) {
	return nil, nil
}

func TestEndpointsRouteToModelsOfTheirKind(t *testing.T) {
	ads := []providers.Adapter{embedAdapter{fakeAdapter{"oai"}}, embedAdapter{fakeAdapter{"mirror"}}, fakeAdapter{"chatonly"}}
	models := map[string][]string{
		"oai":      {"gpt-4o-mini", "text-embedding-3-small", "omni-moderation-latest"},
		"mirror":   {"amazon.titan-embed-text-v2:0", "text-embedding-3-small"},
		"chatonly": {"claude-haiku-4-5"},
	}
	tab, err := New(ads, models, nil, nil, catalog.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		model, endpoint string
		want            []string // target keys, or nil for an error containing errWant
		errWant         string
	}{
		// btl-embed: the first embedding model in the catalog's order that is declared, on
		// every host of that model and no other model.
		{"btl-embed", providers.EndpointEmbeddings, []string{"oai/text-embedding-3-small", "mirror/text-embedding-3-small"}, ""},
		{"mirror/amazon.titan-embed-text-v2:0", providers.EndpointEmbeddings, []string{"mirror/amazon.titan-embed-text-v2:0"}, ""},
		{"btl-embed", "", nil, "needs a chat model"},
		{"btl-fast", providers.EndpointEmbeddings, nil, "needs an embedding model"},
		{"chatonly/some-embedder", providers.EndpointEmbeddings, nil, "needs an embedding model"},
		{"oai/gpt-4o-mini", providers.EndpointCompletions, []string{"oai/gpt-4o-mini"}, ""},
		{"chatonly/claude-haiku-4-5", providers.EndpointCompletions, nil, "OpenAI-style provider"},
		{"oai/text-embedding-3-small", providers.EndpointCompletions, nil, "completion model"},
		{"omni-moderation-latest", providers.EndpointModerations, []string{"oai/omni-moderation-latest"}, ""},
		{"oai/gpt-4o-mini", providers.EndpointModerations, nil, "moderation model"},
	}
	for _, c := range cases {
		plan, perr := tab.Plan(c.model, Features{Endpoint: c.endpoint, Strategy: StrategyOrdered})
		if c.want == nil {
			if perr == nil || perr.Status != 400 || !strings.Contains(perr.Message, c.errWant) {
				t.Errorf("%s on %q: %v, want an error with %q", c.model, c.endpoint, perr, c.errWant)
			}
			continue
		}
		if perr != nil || strings.Join(keys(plan), " ") != strings.Join(c.want, " ") {
			t.Errorf("%s on %q: %v %v, want %v", c.model, c.endpoint, keys(plan), perr, c.want)
		}
	}
	// Shipped slugs nobody can serve are listed with what they need, and a request says so.
	var unserved []string
	for _, s := range tab.Unserved() {
		unserved = append(unserved, s.Name)
	}
	if !strings.Contains(strings.Join(unserved, " "), "btl-frontier") {
		t.Fatalf("unserved %v", unserved)
	}
	if _, perr := tab.Plan("btl-frontier", Features{}); perr == nil || perr.Status != 404 || !strings.Contains(perr.Message, "claude-opus-4-5, gpt-5.5") {
		t.Fatalf("%v", perr)
	}
}
