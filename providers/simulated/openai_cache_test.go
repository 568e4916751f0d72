package simulated

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// cachedShare sends n requests, one every gap, with the same long system prompt and a
// different user message each, under prompt_cache_key keyOf(i), and returns the share of
// requests after the first that read the prefix from the cache.
func cachedShare(t *testing.T, mode OpenAICache, n int, gap time.Duration, keyOf func(i int) string) float64 {
	t.Helper()
	now := time.Unix(1_800_000_000, 0)
	_, ts := newTest(t, Options{OpenAICache: mode, Now: func() time.Time { return now }})
	system := strings.Repeat("The refund policy covers annual plans and monthly plans alike. ", 120)
	hits := 0
	for i := range n {
		now = now.Add(gap)
		extra := ""
		if k := keyOf(i); k != "" {
			extra = `"prompt_cache_key":"` + k + `"`
		}
		c, _ := complete(t, ts, "sk-org", chatBody(extra, "system", system, "user", fmt.Sprintf("question %d", i)))
		if i > 0 && c.Usage.PromptTokensDetails.CachedTokens >= 1024 {
			hits++
		}
	}
	return float64(hits) / float64(n-1)
}

func TestOpenAICacheModels(t *testing.T) {
	none := func(int) string { return "" }
	one := func(int) string { return "k" }
	fourShards := func(i int) string { return fmt.Sprintf("k-s%d", i%4) }
	cases := []struct {
		name     string
		mode     OpenAICache
		gap      time.Duration
		key      func(int) string
		min, max float64
	}{
		{"by key: busy prefix stays warm", CacheByKey, time.Second, one, 0.99, 1},
		{"by key: every shard starts cold", CacheByKey, time.Second, fourShards, 0.9, 0.98},
		{"overflow: a quiet route stays warm", CacheOverflow, 10 * time.Second, one, 0.99, 1},
		{"overflow: a busy route spills", CacheOverflow, time.Second, one, 0, 0.5},
		{"overflow: no key spills too", CacheOverflow, time.Second, none, 0, 0.5},
		{"overflow: shards under the rate stay warm", CacheOverflow, 5 * time.Second, fourShards, 0.9, 1},
		{"overflow ignoring the key: shards do not help", CacheOverflowIgnoresKey, time.Second, fourShards, 0, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := cachedShare(t, c.mode, 120, c.gap, c.key); got < c.min || got > c.max {
				t.Fatalf("cached share %.2f, want %.2f..%.2f", got, c.min, c.max)
			}
		})
	}
}

func TestRecallAnswersFromTheNewestCopy(t *testing.T) {
	_, ts := newTest(t, Options{})
	body := chatBody("", "user", "Note: the code for vault 7 is 4417.", "assistant", "ok",
		"user", "Update: the code for vault 7 is 9902.", "assistant", "ok",
		"user", "Again: the code for vault 7 is 4417. What is it? [sim:recall=the code for vault 7 is]")
	c, _ := complete(t, ts, "k", body)
	if got := *c.Choices[0].Message.Content; got != "Simulated answer: the code for vault 7 is 4417." {
		t.Fatalf("%q", got)
	}
	body = chatBody("", "user", "What is the code for vault 9? [sim:recall=the code for vault 9 is]")
	if c, _ := complete(t, ts, "k", body); !strings.Contains(*c.Choices[0].Message.Content, "not found") {
		t.Fatalf("%q", *c.Choices[0].Message.Content)
	}
}

func TestRunawayAnswer(t *testing.T) {
	_, ts := newTest(t, Options{})
	c, _ := complete(t, ts, "k", chatBody("", "user", "Write it all out. [sim:answer_tokens=30000]"))
	if c.Usage.CompletionTokens != 30000 || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("uncapped: %d %s", c.Usage.CompletionTokens, c.Choices[0].FinishReason)
	}
	c, _ = complete(t, ts, "k", chatBody(`"max_tokens":4096`, "user", "Write it all out. [sim:answer_tokens=30000]"))
	if c.Usage.CompletionTokens != 4096 || c.Choices[0].FinishReason != "length" {
		t.Fatalf("capped: %d %s", c.Usage.CompletionTokens, c.Choices[0].FinishReason)
	}
}
