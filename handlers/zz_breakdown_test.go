package handlers

import (
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/tokenopt/budget"
	"github.com/badtheorylabs/btl-runtime/tokenopt/cacheplan"
	"github.com/badtheorylabs/btl-runtime/tokenopt/compress"
)

func BenchmarkZZBreakdown(b *testing.B) {
	body := optimizeBody(100_000)
	req, err := providers.ParseChatRequest(body)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			_, _ = providers.ParseChatRequest(body)
		}
	})
	b.Run("dedupe", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dedupeConversation(req)
		}
	})
	b.Run("compress", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _, _ = compress.Compress(body, compress.Options{DisableMask: true, KeepToolOutputs: 4, ContextWindow: 200000})
		}
	})
	p, _ := catalog.Default().Lookup("claude-sonnet-4-5")
	pl := cacheplan.NewPlanner()
	b.Run("cacheplan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _, _ = pl.Plan(body, cacheplan.Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Workspace: "w", Price: p})
		}
	})
	b.Run("budget", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _, _ = budget.Apply(body, budget.Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Price: p})
		}
	})
}

func BenchmarkZZScan(b *testing.B) {
	body := optimizeBody(100_000)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		_, _ = providers.SkipValue(body, 0)
	}
}
