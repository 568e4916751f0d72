package routing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

type fakeAdapter struct{ name string }

func (f fakeAdapter) Name() string { return f.name }
func (f fakeAdapter) Type() string { return "openai_compatible" }
func (f fakeAdapter) Chat(context.Context, *providers.Call) (*providers.Response, error) {
	return nil, nil
}

var testSeq int

// newTable builds a table whose health and stickiness keys are unique to the test.
func newTable(t testing.TB, slugs []SlugConfig, models map[string][]string, opts Options) *Table {
	t.Helper()
	testSeq++
	var ads []providers.Adapter
	renamed := map[string][]string{}
	for _, name := range []string{"anthropic", "bedrock", "openai", "cheapco", "small"} {
		ads = append(ads, fakeAdapter{name: name})
		renamed[name] = models[name]
	}
	tab, err := New(ads, renamed, slugs, nil, catalog.Default(), opts)
	if err != nil {
		t.Fatal(err)
	}
	// Isolate process-wide health between tests.
	for _, s := range tab.slugs {
		for i := range s.Candidates {
			s.Candidates[i].health = healthFor(fmt.Sprintf("test%d|%s", testSeq, s.Candidates[i].key), tab.now)
		}
	}
	return tab
}

func keys(p Plan) []string {
	var out []string
	for _, t := range p.Targets {
		out = append(out, t.key)
	}
	return out
}

func TestCheapestAndCapabilities(t *testing.T) {
	tab := newTable(t, []SlugConfig{{Name: "btl-mix", Strategy: StrategyCheapest,
		Candidates: []string{"anthropic/claude-sonnet-4-5", "openai/gpt-4o", "cheapco/gpt-4o-mini"}}}, nil, Options{})
	p, err := tab.Plan("btl-mix", Features{InputTokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(p); got[0] != "cheapco/gpt-4o-mini" || got[2] != "anthropic/claude-sonnet-4-5" || p.Reason != "cheapest" {
		t.Fatalf("order %v reason %s", got, p.Reason)
	}
	// A 150k-token prompt never goes to a 128k-context model.
	p, err = tab.Plan("btl-mix", Features{InputTokens: 150_000})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(p) {
		if k == "cheapco/gpt-4o-mini" || k == "openai/gpt-4o" {
			t.Fatalf("150k prompt planned onto a 128k model: %v", keys(p))
		}
	}
	if _, err := tab.Plan("btl-mix", Features{InputTokens: 5_000_000}); err == nil || err.Code != "context_length_exceeded" {
		t.Fatalf("oversized prompt: %v", err)
	}
}

// A cache-heavy conversation stays where its cache is warm when that is cheaper overall,
// even though another candidate's list price is lower.
func TestCheapestKeepsWarmCache(t *testing.T) {
	tab := newTable(t, []SlugConfig{{Name: "btl-claude", Strategy: StrategyCheapest,
		Candidates: []string{"anthropic/claude-sonnet-4-5", "cheapco/claude-haiku-4-5"}}}, nil, Options{})
	f := Features{InputTokens: 100_000, OutputCap: 500, Conversation: 42 + uint64(testSeq)<<32}
	p, _ := tab.Plan("btl-claude", f)
	if p.Targets[0].key != "cheapco/claude-haiku-4-5" {
		t.Fatalf("cold: %v", keys(p))
	}
	// The conversation's last turn ran on sonnet (say, pinned by a fallback) and warmed it.
	sonnet := p.Targets[1]
	tab.Observe(sonnet, f, true, 100*time.Millisecond, time.Second, providers.Usage{InputUncached: 100_000, Output: 500})
	p, _ = tab.Plan("btl-claude", f)
	// Warm sonnet: 100k × $0.30 + 500 × $15 = $0.0375; cold haiku: 100k × $1 + 500 × $5 = $0.1025.
	if p.Targets[0].key != "anthropic/claude-sonnet-4-5" || p.Reason != "cheapest_warm_cache" {
		t.Fatalf("warm: %v %s", keys(p), p.Reason)
	}
	// A small turn where a cold cheap model is cheaper than the warm one moves.
	small := Features{InputTokens: 2_000, OutputCap: 4000, Conversation: f.Conversation}
	p, _ = tab.Plan("btl-claude", small)
	if p.Targets[0].key != "cheapco/claude-haiku-4-5" {
		t.Fatalf("small turn: %v", keys(p))
	}
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	h := newHealth(clock)
	p := DefaultBreaker
	for range 9 {
		h.Record(false, p)
	}
	if !h.Healthy() {
		t.Fatal("opened before MinRequests")
	}
	h.Record(false, p)
	if h.Healthy() || h.Allow(p) || h.State() != "open" {
		t.Fatal("did not open at 100% errors over 10 calls")
	}
	now = now.Add(p.Cooldown)
	if !h.Allow(p) || h.State() != "half_open" {
		t.Fatal("no half-open probe after the cooldown")
	}
	if h.Allow(p) {
		t.Fatal("two probes at once")
	}
	h.Record(false, p) // the probe fails: open again, longer
	now = now.Add(p.Cooldown)
	if h.Allow(p) {
		t.Fatal("cooldown did not double")
	}
	now = now.Add(p.Cooldown)
	if !h.Allow(p) {
		t.Fatal("no probe after the doubled cooldown")
	}
	h.Record(true, p)
	if !h.Healthy() || h.State() != "closed" {
		t.Fatal("did not close after a good probe")
	}
}

func TestUnhealthyTargetsGoLast(t *testing.T) {
	tab := newTable(t, []SlugConfig{{Name: "btl-o", Candidates: []string{"openai/gpt-4o-mini", "bedrock/gpt-4o-mini"}}}, nil, Options{})
	first := tab.slugs["btl-o"].Candidates[0]
	for range 20 {
		first.health.Record(false, tab.breaker)
	}
	p, _ := tab.Plan("btl-o", Features{InputTokens: 10})
	if p.Targets[0].key != "bedrock/gpt-4o-mini" || p.Reason != "ordered_breaker_open" {
		t.Fatalf("%v %s", keys(p), p.Reason)
	}
}

func TestWeightedSpreads(t *testing.T) {
	tab := newTable(t, []SlugConfig{{Name: "btl-w", Strategy: StrategyWeighted, Weights: []int{3, 1},
		Candidates: []string{"openai/gpt-4o-mini", "bedrock/gpt-4o-mini"}}}, nil, Options{})
	first := map[string]int{}
	for range 4000 {
		p, _ := tab.Plan("btl-w", Features{})
		first[p.Targets[0].key]++
	}
	if r := float64(first["openai/gpt-4o-mini"]) / 4000; r < 0.7 || r > 0.8 {
		t.Fatalf("weight 3:1 gave %.2f", r)
	}
}

func TestShippedSlugsAndPins(t *testing.T) {
	tab := newTable(t, nil, map[string][]string{
		"anthropic": {"claude-sonnet-4-5-20250929"},
		"bedrock":   {"anthropic.claude-sonnet-4-5-20250929-v1:0"},
		"openai":    {"gpt-4o-mini"},
	}, Options{})
	p, err := tab.Plan("btl-balanced", Features{InputTokens: 100})
	if err != nil || len(p.Targets) != 2 {
		t.Fatalf("shipped btl-balanced over Claude on two hosts: %v %v", keys(p), err)
	}
	p, err = tab.Plan("btl-fast", Features{})
	if err != nil || keys(p)[0] != "openai/gpt-4o-mini" {
		t.Fatalf("btl-fast: %v %v", keys(p), err)
	}
	p, err = tab.Plan("anthropic/claude-haiku-4-5", Features{})
	if err != nil || len(p.Targets) != 1 || p.Reason != "pinned" {
		t.Fatalf("pin: %v %v", p, err)
	}
	if _, err := tab.Plan("nobody/x", Features{}); err == nil || err.Status != 404 {
		t.Fatalf("unknown provider: %v", err)
	}
}

func BenchmarkPlanCheapest(b *testing.B) {
	tab := newTable(b, []SlugConfig{{Name: "btl-mix", Strategy: StrategyCheapest,
		Candidates: []string{"anthropic/claude-sonnet-4-5", "bedrock/claude-sonnet-4-5", "openai/gpt-4.1", "cheapco/gpt-4o-mini"}}}, nil, Options{})
	f := Features{InputTokens: 3000, OutputCap: 500, Conversation: 7}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tab.Plan("btl-mix", f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlanOrdered(b *testing.B) {
	tab := newTable(b, []SlugConfig{{Name: "btl-o", Candidates: []string{"openai/gpt-4o-mini", "bedrock/gpt-4o-mini"}}}, nil, Options{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tab.Plan("btl-o", Features{InputTokens: 100}); err != nil {
			b.Fatal(err)
		}
	}
}
