package catalog

import (
	"fmt"
	"math"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
)

func TestLookupAndCost(t *testing.T) {
	c := Default()
	for _, m := range []string{"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"} {
		p, ok := c.Lookup(m)
		if !ok || p.Input != 150_000 || p.Output != 600_000 {
			t.Fatalf("%s: %+v %v", m, p, ok)
		}
	}
	if _, ok := c.Lookup("no-such-model"); ok {
		t.Fatal("unknown model priced")
	}
	p, _ := c.Lookup("claude-sonnet-4-5")
	// 50k each of uncached ($3), cache read ($0.30), write ($3.75) and output ($15).
	u := providers.Usage{InputUncached: 50_000, CacheRead: 50_000, CacheWrite5m: 50_000, Output: 50_000}
	if got := p.Cost(u); got != 150_000+15_000+187_500+750_000 {
		t.Fatalf("cost %d", got)
	}
	// Long-context tier applies above 200k prompt tokens.
	if got := p.Cost(providers.Usage{InputUncached: 300_000}); got != 1_800_000 {
		t.Fatalf("long cost %d", got)
	}
	// Rounding: 1 token of gpt-4o-mini input is 0.15 µ$ → rounds to 0; 4 tokens → 0.6 → 1.
	mini, _ := c.Lookup("gpt-4o-mini")
	if mini.Cost(providers.Usage{InputUncached: 1}) != 0 || mini.Cost(providers.Usage{InputUncached: 4}) != 1 {
		t.Fatal("rounding")
	}
}

// Above the long-context threshold every rate moves: Anthropic's cache-write multipliers
// (1.25× and 2×) stack on its long-context input price, and OpenAI's GPT-5.4/5.5 bill 2× input
// (cached input too) and 1.5× output for the whole request.
func TestLongContextRates(t *testing.T) {
	c := Default()
	long := func(u providers.Usage) providers.Usage { u.InputUncached += 300_000; return u }
	for _, tc := range []struct {
		model string
		usage providers.Usage
		want  Micros
	}{
		// 300k uncached at $6 = 1.8; 100k 5m writes at $7.50; 100k 1h writes at $12.
		{"claude-sonnet-4-6", long(providers.Usage{CacheWrite5m: 100_000, CacheWrite1h: 100_000}), 1_800_000 + 750_000 + 1_200_000},
		// 300k at $10, 100k cached at $1, 10k output at $45.
		{"gpt-5.5", long(providers.Usage{CacheRead: 100_000, Output: 10_000}), 3_000_000 + 100_000 + 450_000},
		// 300k at $5, 100k cached at $0.50, 10k output at $22.50.
		{"gpt-5.4", long(providers.Usage{CacheRead: 100_000, Output: 10_000}), 1_500_000 + 50_000 + 225_000},
		// Gemini 2.5 Pro writes at the input rate: $2.50 above 200k.
		{"gemini-2.5-pro", long(providers.Usage{CacheWrite5m: 100_000}), 750_000 + 250_000},
	} {
		p, ok := c.Lookup(tc.model)
		if !ok {
			t.Fatalf("%s not priced", tc.model)
		}
		if got := p.Cost(tc.usage); got != tc.want {
			t.Errorf("%s: cost %d, want %d", tc.model, got, tc.want)
		}
		if b := p.Bound(tc.usage.PromptTokens(), tc.usage.Output); b < p.Cost(tc.usage) {
			t.Errorf("%s: bound %d below the cost %d", tc.model, b, p.Cost(tc.usage))
		}
	}
}

func TestMicrosToUSD(t *testing.T) {
	for m, want := range map[Micros]string{0: "0.000000", 1: "0.000001", 1_500_000: "1.500000", -25: "-0.000025",
		-1_000_001: "-1.000001", 123_456_789_012: "123456.789012", math.MaxInt64: "9223372036854.775807",
		math.MinInt64: "-9223372036854.775808"} {
		if got := MicrosToUSD(m); got != want {
			t.Fatalf("%d: %s, want %s", m, got, want)
		}
	}
}

func FuzzMicrosToUSD(f *testing.F) {
	f.Add(int64(0))
	f.Add(int64(-999_999))
	f.Fuzz(func(t *testing.T, m int64) {
		if m == math.MinInt64 {
			return // its negation does not fit in an int64; checked above
		}
		a := max(m, -m)
		sign := ""
		if m < 0 {
			sign = "-"
		}
		if got, want := MicrosToUSD(m), fmt.Sprintf("%s%d.%06d", sign, a/1_000_000, a%1_000_000); got != want {
			t.Fatalf("%d: %s, want %s", m, got, want)
		}
	})
}

func TestLookupSpellings(t *testing.T) {
	c := Default()
	for _, m := range []string{"claude-sonnet-4-5", "anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
		"claude-sonnet-4-5@20250929", "anthropic/claude-sonnet-4.5", "claude-sonnet-4-5-20250929"} {
		p, ok := c.Lookup(m)
		if !ok || p.Model != "claude-sonnet-4-5" {
			t.Fatalf("%s → %+v %v", m, p.Model, ok)
		}
	}
	if p, ok := c.Lookup("gpt-4.1"); !ok || p.Model != "gpt-4.1" {
		t.Fatal("gpt-4.1")
	}
	if !c.Equivalent("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5") || c.Equivalent("gpt-4o", "gpt-4o-mini") {
		t.Fatal("equivalence")
	}
	p, _ := c.Lookup("claude-haiku-4-5")
	if p.CacheMinTokens != 4096 || !p.Caps.Tools {
		t.Fatalf("%+v", p)
	}
	if len(c.Slugs()) < 4 {
		t.Fatal("shipped slugs missing")
	}
}

// A misspelt id must be unknown, never priced as a shorter model it happens to start with:
// sim/gpt-4o-mni was priced as gpt-4o (16× gpt-4o-mini) while the lookup trimmed at each "-".
func TestLookupNeverTrimsToAnotherModel(t *testing.T) {
	c := Default()
	for _, typo := range []string{"gpt-4o-mni", "sim/gpt-4o-mni", "gpt-4o-mini-fast", "gpt-4.1-mini-x", "claude-sonnet-4-5-turbo",
		"gpt-5-2", "claude-opus-4-9", "gemini-2.5-pro-ultra", "text-embedding-3-smal"} {
		if p, ok := c.Lookup(typo); ok {
			t.Errorf("%s priced as %s", typo, p.Model)
		}
	}
	for spelling, want := range map[string]string{
		"gpt-4o-mini-2024-07-18":          "gpt-4o-mini",
		"gpt-4o-2024-08-06":               "gpt-4o",
		"claude-3-5-haiku-latest":         "claude-3-5-haiku",
		"claude-3-5-haiku-20241022":       "claude-3-5-haiku",
		"amazon.titan-embed-text-v2:0":    "titan-embed-text-v2",
		"cohere.embed-english-v3":         "embed-english-v3",
		"omni-moderation-latest":          "omni-moderation",
		"omni-moderation-2024-09-26":      "omni-moderation",
		"openai/text-embedding-3-small":   "text-embedding-3-small",
		"google/gemini-2.5-flash":         "gemini-2.5-flash",
		"us.anthropic.claude-opus-4-5-v1": "claude-opus-4-5",
	} {
		if p, ok := c.Lookup(spelling); !ok || p.Model != want {
			t.Errorf("%s → %q %v, want %s", spelling, p.Model, ok, want)
		}
	}
}

func TestEmbeddingKindsAndEntries(t *testing.T) {
	c := Default()
	p, ok := c.Lookup("text-embedding-3-small")
	if !ok || p.Kind != KindEmbedding || p.Input != 20_000 || p.Output != 0 || p.Dimensions != 1536 || p.Caps.Tools {
		t.Fatalf("%+v", p)
	}
	if p, _ := c.Lookup("gpt-4o-mini"); p.Kind != KindChat {
		t.Fatalf("chat kind %q", p.Kind)
	}
	// 1,000 input tokens at $0.02 per 1M: 20 µ$.
	if got := p.Cost(providers.Usage{InputUncached: 1000}); got != 20 {
		t.Fatalf("cost %d", got)
	}
	ext, err := c.WithEntries(map[string]Entry{"llama-3.1-8b": {Input: 0.05, Output: 0.08}})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := ext.Lookup("local/llama-3.1-8b"); !ok || p.Input != 50_000 || p.Output != 80_000 || p.Kind != KindChat {
		t.Fatalf("%+v %v", p, ok)
	}
	if _, ok := c.Lookup("llama-3.1-8b"); ok {
		t.Fatal("WithEntries modified the base catalog")
	}
	if _, err := c.WithEntries(map[string]Entry{"x": {Kind: "speech"}}); err == nil {
		t.Fatal("unknown kind accepted")
	}
	slugs := map[string]bool{}
	for _, s := range c.Slugs() {
		slugs[s.Name] = true
	}
	if !slugs["btl-embed"] {
		t.Fatal("btl-embed not shipped")
	}
}

// TestMoneyServiceTierPriced: a processing tier is billed at its own rates; a tier the
// catalog does not price for a model is not priced at all (the gateway refuses it).
func TestMoneyServiceTierPriced(t *testing.T) {
	c := Default()
	std, _ := c.Lookup("gpt-4o-mini")
	u := providers.Usage{InputUncached: 1_000_000, Output: 1_000_000}
	for _, tier := range []string{"", "auto", "default", "standard"} {
		p, ok := std.ForTier(tier)
		if !ok || p.Cost(u) != 750_000 {
			t.Fatalf("%q: %v %d", tier, ok, p.Cost(u))
		}
	}
	pri, ok := std.ForTier("priority")
	if !ok || pri.Cost(u) != 1_250_000 || pri.Cost(providers.Usage{CacheRead: 1_000_000}) != 125_000 {
		t.Fatalf("priority: %v %d", ok, pri.Cost(u))
	}
	if _, ok := std.ForTier("flex"); ok {
		t.Fatal("gpt-4o-mini has no flex tier, yet it was priced")
	}
	o3, _ := c.Lookup("o3-2025-04-16")
	if flex, ok := o3.ForTier("flex"); !ok || flex.Cost(u) != 5_000_000 {
		t.Fatalf("o3 flex: %v %d", ok, flex.Cost(u))
	}
	if _, ok := o3.ForTier("scale"); ok {
		t.Fatal("scale priced")
	}
	if got := o3.Tiers(); len(got) != 2 || got[0] != "flex" || got[1] != "priority" {
		t.Fatalf("tiers %v", got)
	}
	if _, err := Parse([]byte(`{"models":{"m":{"input":1,"output":1,"tiers":{"default":{"input":1,"output":1}}}}}`)); err == nil {
		t.Fatal("a tier named like the standard one was accepted")
	}
	if _, err := Parse([]byte(`{"models":{"m":{"input":1,"output":1,"tiers":{"priority":{"input":0,"output":1}}}}}`)); err == nil {
		t.Fatal("a free tier was accepted")
	}
}

// TestMoneyCostSaturates: absurd usage saturates the cost at MaxInt64 instead of wrapping to
// a small or negative amount.
func TestMoneyCostSaturates(t *testing.T) {
	p, _ := Default().Lookup("claude-opus-4-1")
	huge := providers.Usage{Output: math.MaxInt64 / 2, InputUncached: math.MaxInt64 / 3}
	if got := p.Cost(huge); got <= 0 || got != math.MaxInt64/1_000_000 {
		t.Fatalf("cost %d", got)
	}
	for _, c := range []struct{ a, b, mul, add int64 }{
		{3, 4, 12, 7},
		{math.MaxInt64, 2, math.MaxInt64, math.MaxInt64},
		{1 << 32, 1 << 32, math.MaxInt64, 1 << 33},
		{-5, 7, 0, 7},
	} {
		if MulSat(c.a, c.b) != c.mul || AddSat(c.a, c.b) != c.add {
			t.Fatalf("%d,%d: mul %d add %d", c.a, c.b, MulSat(c.a, c.b), AddSat(c.a, c.b))
		}
	}
}

func TestMoneyBound(t *testing.T) {
	p, _ := Default().Lookup("claude-sonnet-4-5") // $3 in ($6 long, $12 long 1h write), $15 out ($22.50 long)
	for _, c := range []struct {
		in, out int64
		want    Micros
	}{
		{0, 0, 0},
		{1, 0, 12},
		{1_000_000, 1_000_000, 12_000_000 + 22_500_000},
		{0, math.MaxInt64, math.MaxInt64 / 1_000_000},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64 / 1_000_000},
	} {
		if got := p.Bound(c.in, c.out); got != c.want {
			t.Errorf("Bound(%d, %d) = %d, want %d", c.in, c.out, got, c.want)
		}
	}
}
