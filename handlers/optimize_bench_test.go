package handlers

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	btlmetrics "github.com/badtheorylabs/btl-runtime/metrics"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/budget"
	"github.com/badtheorylabs/btl-runtime/tokenopt/cacheplan"
	"github.com/badtheorylabs/btl-runtime/tokenopt/compress"
	"github.com/badtheorylabs/btl-runtime/tokenopt/dedupe"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
)

type anthLike struct{ cannedAdapter }

func (anthLike) Name() string { return "anth" }
func (anthLike) Type() string { return "anthropic" }

// optimizeBody is a conversation of about tokens tokens: a system prompt, retrieved chunks,
// an agent's tool calls and outputs.
func optimizeBody(tokens int) []byte {
	var msgs []string
	msgs = append(msgs, fmt.Sprintf(`{"role":"system","content":%q}`, strings.Repeat("Policy text for the assistant. ", 20)))
	size := 700
	reps := max(min(tokens/2500, 40), 4) // steps of ~1.5k bytes for small bodies, ~5k for large
	for i := 0; size < tokens*4; i++ {
		id := fmt.Sprintf("call_%d", i)
		out := strings.Repeat(fmt.Sprintf("log line %d: request served in 12ms from region eu-west; ", i), reps)
		doc := strings.Repeat("Refunds are issued within 14 days. ", reps/2)
		msgs = append(msgs,
			fmt.Sprintf(`{"role":"user","content":%q}`, fmt.Sprintf("step %d: <document source=\"kb/%d\">%s</document>", i, i%7, doc)),
			fmt.Sprintf(`{"role":"assistant","content":null,"tool_calls":[{"id":%q,"type":"function","function":{"name":"q","arguments":"{}"}}]}`, id),
			fmt.Sprintf(`{"role":"tool","tool_call_id":%q,"content":%q}`, id, out))
		size += len(out) + len(doc) + 250
	}
	msgs = append(msgs, `{"role":"user","content":"summarise"}`)
	return []byte(`{"model":"btl-anth","max_tokens":500,"messages":[` + strings.Join(msgs, ",") + `]}`)
}

// nextTurn returns body with a newest message never seen before, as each turn of a real
// conversation has (a benchmark that repeated one body would measure only memo hits): a
// question with a retrieved document, which dedupe must compare with the whole history.
func nextTurn(body []byte, turn int) string {
	doc := strings.Repeat("Refunds are issued within 14 days. ", 20)
	return strings.Replace(string(body), `"content":"summarise"}]}`,
		`"content":"turn `+strconv.Itoa(turn)+`: summarise <document source=\"kb/3\">`+doc+`</document>"}]}`, 1)
}

// BenchmarkParse is the request parse every chat request pays, with or without the optimizer;
// BenchmarkOptimize minus it is what the optimizer adds. Both build a new turn's body first.
func BenchmarkParse(b *testing.B) {
	for _, tokens := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("%dk_tokens", tokens/1000), func(b *testing.B) {
			body := optimizeBody(tokens)
			b.SetBytes(int64(len(body)))
			turn := 0
			for b.Loop() {
				turn++
				r, _ := http.NewRequest(http.MethodPost, PathChat, strings.NewReader(nextTurn(body, turn)))
				r.Header.Set("Content-Type", "application/json")
				r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
				if _, err := ExchangeFrom(r).LoadChatRequest(r, DefaultMaxBody); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOptimize is btl_optimize's whole work on one request: dedupe over the conversation,
// compression, and the per-target prompt-cache plan and budget for an Anthropic target.
// Each iteration is a new turn, and also runs the bare parse that every request pays without
// the optimizer; "optimizer-us" is the difference, measured interleaved so the machine's
// drift cancels (the target: under 50 µs at 1k tokens, under 2 ms at 100k); "optimizer-p50-us"
// is the difference of the two medians, which a stray GC cycle or descheduling does not move.
// "optimizer-B" is the bytes it allocates beyond that parse, "optimizer-cpu-us" the process
// CPU time (GC included) it adds.
//
// The no_max_tokens case leaves the cap to the output budget. The first_turn case forgets
// the dedupe memo and index before each request: a conversation the gateway has not seen
// before (its history arrives whole).
func BenchmarkOptimize(b *testing.B) {
	for _, c := range []struct {
		tokens      int
		cold, noCap bool
	}{{1_000, false, false}, {10_000, false, false}, {100_000, false, false}, {100_000, false, true}, {100_000, true, false}} {
		tokens := c.tokens
		name := fmt.Sprintf("%dk_tokens", tokens/1000)
		if c.cold {
			name += "_first_turn"
		}
		if c.noCap {
			name += "_no_max_tokens"
		}
		b.Run(name, func(b *testing.B) {
			ad := &anthLike{}
			table, err := routing.New([]providers.Adapter{ad}, nil,
				[]routing.SlugConfig{{Name: "btl-anth", Candidates: []string{"anth/claude-sonnet-4-5"}}}, nil, catalog.Default(), routing.Options{})
			if err != nil {
				b.Fatal(err)
			}
			// The evidence record on, as in production: the plan consults it and the
			// completion feeds it.
			ev := evidence.New()
			h := &Optimize{rt: &benchRuntime{routes: table, prices: catalog.Default()}, logger: zap.NewNop(),
				plans: &cacheplan.Planner{Evidence: ev}, ev: ev, metrics: btlmetrics.Default()}
			targets, _ := table.Resolve("btl-anth")
			body := optimizeBody(tokens)
			if c.noCap { // the output budget sets one
				body = bytes.Replace(body, []byte(`"max_tokens":500,`), nil, 1)
			}
			b.SetBytes(int64(len(body)))
			b.ReportMetric(float64(len(body))/4, "tokens")
			b.ReportAllocs()
			newRequest := func(turn int) *http.Request {
				r, _ := http.NewRequest(http.MethodPost, PathChat, strings.NewReader(nextTurn(body, turn)))
				r.Header.Set("Content-Type", "application/json")
				return r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
			}
			var optimized, parsed time.Duration
			var optimizedEach, parsedEach []time.Duration // for the medians
			var optimizedBytes, parsedBytes uint64
			var optimizedCPU, parsedCPU time.Duration
			turn := 0
			for b.Loop() {
				turn++
				r := newRequest(-turn) // a body of the same size, parsed only
				start, startBytes, startCPU := time.Now(), heapAllocated(), processCPU()
				if _, err := ExchangeFrom(r).LoadChatRequest(r, DefaultMaxBody); err != nil {
					b.Fatal(err)
				}
				parsedEach = append(parsedEach, time.Since(start))
				parsed += parsedEach[len(parsedEach)-1]
				parsedBytes += heapAllocated() - startBytes
				parsedCPU += processCPU() - startCPU

				r = newRequest(turn)
				if c.cold {
					forgetConversations()
				}
				start, startBytes, startCPU = time.Now(), heapAllocated(), processCPU()
				var ex *Exchange
				_ = h.ServeHTTP(&discardWriter{h: http.Header{}}, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
					ex = ExchangeFrom(r)
					return nil
				}))
				_ = ex.PerTarget(targets[0])
				ex.Usage, ex.UsageKnown, ex.Provider = providers.Usage{InputUncached: 200, CacheRead: int64(tokens), Output: 150}, true, "anth"
				ex.Optimizer.Finish = "stop"
				ex.Complete()
				optimizedEach = append(optimizedEach, time.Since(start))
				optimized += optimizedEach[len(optimizedEach)-1]
				optimizedBytes += heapAllocated() - startBytes
				optimizedCPU += processCPU() - startCPU
			}
			b.ReportMetric(float64((optimized-parsed).Microseconds())/float64(b.N), "optimizer-us")
			b.ReportMetric(float64((median(optimizedEach)-median(parsedEach)).Nanoseconds())/1e3, "optimizer-p50-us")
			b.ReportMetric((float64(optimizedBytes)-float64(parsedBytes))/float64(b.N), "optimizer-B")
			b.ReportMetric(float64((optimizedCPU-parsedCPU).Microseconds())/float64(b.N), "optimizer-cpu-us")
		})
	}
}

// BenchmarkOptimizerParts splits BenchmarkOptimize's 100k-token case by technique, to see
// which one to work on.
func BenchmarkOptimizerParts(b *testing.B) {
	body := optimizeBody(100_000)
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			_, _ = providers.ParseChatRequest(body)
		}
	})
	// dedupe is one new turn; dedupe_first_turn a conversation the gateway has never seen,
	// whose whole history is indexed.
	for _, cold := range []bool{false, true} {
		name := "dedupe"
		if cold {
			name += "_first_turn"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			turn := 0
			for b.Loop() {
				b.StopTimer()
				turn++
				next, err := providers.ParseChatRequest([]byte(nextTurn(body, turn)))
				if err != nil {
					b.Fatal(err)
				}
				if cold {
					forgetConversations()
				}
				b.StartTimer()
				dedupeConversation(next)
			}
		})
	}
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

// median is the middle of ds (ds is sorted).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// heapAllocated is the bytes allocated on the heap so far by the whole process (the
// benchmark runs alone, so a difference is what the code between two reads allocated).
func heapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// processCPU is the process's user+system CPU time, which on a shared, oversubscribed
// machine stays meaningful where wall-clock time mostly measures waiting for a core.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// forgetConversations empties the dedupe memo and index.
func forgetConversations() {
	dedupeMemo.mu.Lock()
	clear(dedupeMemo.m)
	dedupeMemo.mu.Unlock()
	dedupeIndex = dedupe.NewIndexCache(64 << 20)
}

// BenchmarkOptimizeShortChat is btl_optimize on the request bench/load sends: a short chat
// call that opens a new conversation every time (a system prompt and one distinct question,
// a caller's max_tokens), for an OpenAI-compatible target, with the default levers and with
// every lever off. Each iteration builds and parses its request too, so the difference of
// the two is what the levers cost on most traffic, where they find nothing to do.
func BenchmarkOptimizeShortChat(b *testing.B) {
	b.Run("defaults", func(b *testing.B) { benchShortChat(b, nil) })
	b.Run("levers_off", func(b *testing.B) {
		benchShortChat(b, []string{TechPromptCache, TechOutputBudget, TechDedupe, TechCompression, TechResponseCache, TechCoalesce})
	})
}

func benchShortChat(b *testing.B, disable []string) {
	table, err := routing.New([]providers.Adapter{&cannedAdapter{}}, nil,
		[]routing.SlugConfig{{Name: "btl-bench", Candidates: []string{"canned/gpt-4o-mini"}}}, nil, catalog.Default(), routing.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ev := evidence.New()
	h := &Optimize{rt: &benchRuntime{routes: table, prices: catalog.Default()}, logger: zap.NewNop(),
		plans: &cacheplan.Planner{Evidence: ev}, ev: ev, metrics: btlmetrics.Default(), CacheIsolation: CacheIsolationWorkspace, Disable: disable}
	targets, _ := table.Resolve("btl-bench")
	b.ReportAllocs()
	turn := 0
	for b.Loop() {
		turn++
		body := `{"model":"btl-bench","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Question ` +
			strconv.Itoa(turn) + `: give me one sentence about load testing gateways."}],"max_tokens":64}`
		r, _ := http.NewRequest(http.MethodPost, PathChat, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
		ex := ExchangeFrom(r)
		ex.WorkspaceID = "ws_bench"
		if _, err := ex.LoadChatRequest(r, DefaultMaxBody); err != nil {
			b.Fatal(err)
		}
		_ = h.ServeHTTP(&discardWriter{h: http.Header{}}, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
		if ex.PerTarget != nil {
			_ = ex.PerTarget(targets[0])
		}
		ex.Usage, ex.UsageKnown, ex.Provider = providers.Usage{InputUncached: 30, Output: 20}, true, "canned"
		ex.Optimizer.Finish = "stop"
		ex.Complete()
	}
}
