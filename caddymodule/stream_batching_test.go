package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// flushCounter is a test-only handler placed first in the route: it counts the flushes that
// reach the connection, each one a network write of what the handlers below buffered.
type flushCounter struct{}

var flushes atomic.Int64

func (flushCounter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_flush_counter", New: func() caddy.Module { return new(flushCounter) }}
}

func (flushCounter) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(&countingWriter{ResponseWriter: w}, r)
}

type countingWriter struct{ http.ResponseWriter }

func (c *countingWriter) FlushError() error {
	flushes.Add(1)
	return http.NewResponseController(c.ResponseWriter).Flush()
}
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func init() {
	caddy.RegisterModule(flushCounter{})
	httpcaddyfile.RegisterHandlerDirective("test_flush_counter", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return flushCounter{}, nil
	})
}

// burstUpstream serves the simulator's answers in one write, as an upstream whose events
// arrive together (a fast model, or a proxy that buffers) does.
func burstUpstream(sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// TestStreamBurstIsOneWrite: a stream whose events all arrived together leaves the gateway in
// one write (plus at most the final flush), through every wrapper: a direct relay, the
// coalescer's shared flight, an Anthropic upstream's translation, Anthropic ingress and the
// Responses translation.
func TestStreamBurstIsOneWrite(t *testing.T) {
	tl := newTestLedger(t, 100*ledger.Credit)
	up := httptest.NewServer(burstUpstream(simulated.New(simulated.Options{ChunksPerAnswer: 12})))
	t.Cleanup(up.Close)
	block := `btl {
		provider sim openai_compatible {
			base_url ` + up.URL + `/v1
			models gpt-4o-mini
		}
		provider anth anthropic {
			base_url ` + up.URL + `
			api_key sim-key
			models claude-sonnet-4-5
		}
	}`
	site := "\troute {\n\t\ttest_flush_counter\n\t\tbtl_auth\n\t\tbtl_meter\n\t\tbtl_optimize\n\t\tbtl_route\n\t}\n"
	base := startGateway(t, tl.withStorage(block), site)
	testKey = tl.ownerKey
	client := sdk(base)
	ctx := context.Background()
	chat := func(model string, params openai.ChatCompletionNewParams) func() (int, error) {
		return func() (int, error) {
			params.Model = model
			params.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story about batching writes in a gateway.")}
			s := client.Chat.Completions.NewStreaming(ctx, params)
			n := 0
			for s.Next() {
				n++
			}
			return n, s.Err()
		}
	}
	for _, tc := range []struct {
		name string
		run  func() (events int, err error)
	}{
		{"chat, direct relay", chat("sim/gpt-4o-mini", openai.ChatCompletionNewParams{})},
		{"chat, coalescer flight", chat("sim/gpt-4o-mini", openai.ChatCompletionNewParams{Temperature: openai.Float(0)})},
		{"chat, with usage", chat("sim/gpt-4o-mini", openai.ChatCompletionNewParams{StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})},
		{"chat, Anthropic upstream", chat("anth/claude-sonnet-4-5", openai.ChatCompletionNewParams{})},
		{"Anthropic ingress", func() (int, error) {
			ac := anthropic.NewClient(aoption.WithBaseURL(base), aoption.WithAPIKey(tl.ownerKey), aoption.WithMaxRetries(0))
			s := ac.Messages.NewStreaming(ctx, anthropic.MessageNewParams{Model: "sim/gpt-4o-mini", MaxTokens: 256,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Tell me a story about batching writes."))}})
			n := 0
			for s.Next() {
				n++
			}
			return n, s.Err()
		}},
		{"Responses translation", func() (int, error) {
			s := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "sim/gpt-4o-mini",
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Tell me a story about batching writes.")}})
			n := 0
			for s.Next() {
				n++
			}
			return n, s.Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := flushes.Load()
			events, err := tc.run()
			if err != nil {
				t.Fatal(err)
			}
			got := flushes.Load() - before
			if events < 10 || got > 2 {
				t.Fatalf("%d events left in %d flushes; want one write per burst (≤ 2 flushes)", events, got)
			}
		})
	}
}
