package handlers

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/payments"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// cannedAdapter answers every call from memory, so benchmarks measure the gateway alone.
type cannedAdapter struct {
	body   []byte
	chunks [][]byte
}

func (a *cannedAdapter) Name() string { return "canned" }
func (a *cannedAdapter) Type() string { return "openai_compatible" }
func (a *cannedAdapter) Chat(_ context.Context, call *providers.Call) (*providers.Response, error) {
	if call.Stream {
		return &providers.Response{Status: 200, Stream: &cannedStream{chunks: a.chunks}}, nil
	}
	return &providers.Response{Status: 200, Body: a.body}, nil
}

type cannedStream struct {
	chunks [][]byte
	i      int
}

func (s *cannedStream) Next() ([]byte, error) {
	if s.i >= len(s.chunks) {
		return nil, io.EOF
	}
	s.i++
	return s.chunks[s.i-1], nil
}
func (s *cannedStream) Close() error { return nil }

type benchRuntime struct {
	routes *routing.Table
	prices *catalog.Catalog
}

func (b *benchRuntime) Routes() *routing.Table            { return b.routes }
func (b *benchRuntime) Prices() *catalog.Catalog          { return b.prices }
func (b *benchRuntime) PricesFor(string) *catalog.Catalog { return b.prices }
func (b *benchRuntime) Ledger() *Ledger                   { return nil }
func (b *benchRuntime) Payments() *payments.Stripe        { return nil }

const benchChunk = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"hello world "},"finish_reason":null}],"usage":null,"obfuscation":"abc"}`

func newBenchRoute(b *testing.B) *Route {
	chunks := make([][]byte, 0, 10)
	for range 8 {
		chunks = append(chunks, []byte(benchChunk))
	}
	chunks = append(chunks, []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`))
	chunks = append(chunks, []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":24,"total_tokens":44,"prompt_tokens_details":{"cached_tokens":0}}}`))
	ad := &cannedAdapter{
		body:   []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22}}`),
		chunks: chunks,
	}
	table, err := routing.New([]providers.Adapter{ad}, map[string][]string{"canned": {"gpt-4o-mini"}},
		[]routing.SlugConfig{{Name: "btl-fast", Candidates: []string{"canned/gpt-4o-mini"}}}, nil, catalog.Default(), routing.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return &Route{rt: &benchRuntime{routes: table, prices: catalog.Default()}, logger: zap.NewNop(), MaxBodyBytes: DefaultMaxBody,
		Retries: 2, Deadline: caddy.Duration(time.Minute), coalesce: new(coalescer)}
}

// discardWriter is a ResponseWriter that counts bytes and supports flushing.
type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

func benchRequest(body string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, PathChat, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx)
}

var nextNop = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// BenchmarkRouteNonStream is the whole route handler for one non-stream request: body read
// and parse, model resolution, upstream call (canned), usage capture and the response write.
func BenchmarkRouteNonStream(b *testing.B) {
	h := newBenchRoute(b)
	body := `{"model":"btl-fast","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64}`
	b.ReportAllocs()
	for b.Loop() {
		w := &discardWriter{h: http.Header{}}
		if err := h.ServeHTTP(w, benchRequest(body), nextNop); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRouteStream relays a 10-event stream; ns/op divided by 10 is the per-event cost.
func BenchmarkRouteStream(b *testing.B) {
	h := newBenchRoute(b)
	body := `{"model":"btl-fast","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64}`
	b.ReportAllocs()
	for b.Loop() {
		w := &discardWriter{h: http.Header{}}
		if err := h.ServeHTTP(w, benchRequest(body), nextNop); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveSlug(b *testing.B) {
	h := newBenchRoute(b)
	table := h.rt.Routes()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := table.Resolve("btl-fast"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCaptureUsageChunk(b *testing.B) {
	h := newBenchRoute(b)
	chunk := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":24,"total_tokens":44}}`)
	req, _ := providers.ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	b.ReportAllocs()
	for b.Loop() {
		ex := &Exchange{Request: req}
		h.captureUsage(ex, nil, chunk, true)
	}
}
