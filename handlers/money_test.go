package handlers

import (
	"context"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
)

// slowAdapter answers after the caller's client has gone, reporting whether its context was
// cancelled meanwhile.
type slowAdapter struct {
	cannedAdapter
	release   chan struct{}
	cancelled bool
}

func (a *slowAdapter) Chat(ctx context.Context, call *providers.Call) (*providers.Response, error) {
	<-a.release
	if ctx.Err() != nil {
		a.cancelled = true
		return nil, &providers.Error{Status: 502, Code: "upstream_error", Class: providers.ClassRetryable, Internal: ctx.Err()}
	}
	return a.cannedAdapter.Chat(ctx, call)
}

func moneyRoute(t *testing.T, ad providers.Adapter) *Route {
	t.Helper()
	table, err := routing.New([]providers.Adapter{ad}, map[string][]string{"canned": {"gpt-4o-mini"}}, nil, nil, catalog.Default(), routing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Route{rt: &benchRuntime{routes: table, prices: catalog.Default()}, logger: zap.NewNop(), MaxBodyBytes: DefaultMaxBody,
		Retries: 2, Deadline: caddy.Duration(time.Minute), coalesce: new(coalescer)}
}

// TestMoneyClientAbortCompletesUpstreamCall (item 8): the upstream call of a non-stream
// request outlives its client, so its usage is known and billed, and the abort is neither an
// upstream failure nor retried.
func TestMoneyClientAbortCompletesUpstreamCall(t *testing.T) {
	ad := &slowAdapter{release: make(chan struct{})}
	ad.body = []byte(`{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22}}`)
	h := moneyRoute(t, ad)
	r := benchRequest(`{"model":"canned/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	ctx, leave := context.WithCancel(r.Context())
	r = r.WithContext(ctx)
	ex := ExchangeFrom(r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.ServeHTTP(&discardWriter{h: http.Header{}}, r, nextNop)
	}()
	leave()
	time.Sleep(10 * time.Millisecond) // the client is gone before the upstream answers
	close(ad.release)
	<-done
	if ad.cancelled || !ex.UsageKnown || ex.Usage.Output != 2 || ex.Status != http.StatusOK || ex.Attempts != 1 {
		t.Fatalf("cancelled %v, usage %+v known %v, status %d, attempts %d", ad.cancelled, ex.Usage, ex.UsageKnown, ex.Status, ex.Attempts)
	}
	if got := h.rt.Routes().HealthOf("canned"); got != "closed" {
		t.Fatalf("health %s", got)
	}
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	discardWriter
	n int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("client gone")
	}
	f.n--
	return f.discardWriter.Write(p)
}

// TestMoneyAbandonedStreamBilledByDelivered (item 7): a stream whose client leaves is billed
// for the text relayed before it left: four bytes a token, not the envelopes' bytes / 16.
func TestMoneyAbandonedStreamBilledByDelivered(t *testing.T) {
	chunk := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-abandon","choices":[{"index":0,"delta":{"content":"0123456789abcdef"},"finish_reason":null}],"usage":null}`)
	ad := &cannedAdapter{chunks: [][]byte{chunk, chunk, chunk, chunk, chunk, chunk}}
	h := moneyRoute(t, ad)
	r := benchRequest(`{"model":"canned/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	ex := ExchangeFrom(r)
	_ = h.ServeHTTP(&failingWriter{discardWriter: discardWriter{h: http.Header{}}, n: 3}, r, nextNop)
	if ex.ErrorCode != "client_closed_request" || ex.DeliveredTextBytes != 3*16 || !ex.UsageEstimated || ex.Usage.Output != 12 {
		t.Fatalf("code %q, delivered %d, usage %+v (estimated %v)", ex.ErrorCode, ex.DeliveredTextBytes, ex.Usage, ex.UsageEstimated)
	}
}

// TestMoneyReservationBound (items 9, 11, 13): the reservation multiplies the output cap by
// n, prices the service tier asked for, and saturates instead of wrapping.
func TestMoneyReservationBound(t *testing.T) {
	h := moneyRoute(t, &cannedAdapter{})
	m := &Meter{rt: h.rt, DefaultOutputReserve: 4096}
	targets, perr := h.rt.Routes().Resolve("canned/gpt-4o-mini")
	if perr != nil {
		t.Fatal(perr)
	}
	reserve := func(body string) int64 {
		req, err := providers.ParseChatRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		amount, _ := m.estimate(&Exchange{Request: req}, req, targets)
		return amount
	}
	const msgs = `"model":"canned/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]`
	one := reserve(`{` + msgs + `,"max_tokens":1000}`)
	many := reserve(`{` + msgs + `,"max_tokens":1000,"n":128}`)
	priority := reserve(`{` + msgs + `,"max_tokens":1000,"service_tier":"priority"}`)
	// gpt-4o-mini: 1,000 output tokens at $0.60/1M = 600 µ$, plus a few µ$ of input.
	if one < 600 || one > 620 || many < 128*600 || many > 128*600+20 || priority < 1000 || priority > 1020 {
		t.Fatalf("reservations: one %d, n=128 %d, priority %d", one, many, priority)
	}
	// Tokens-per-minute counts the same bound (money2 item 5): n times the cap, plus the prompt.
	req, _ := providers.ParseChatRequest([]byte(`{` + msgs + `,"max_tokens":1000,"n":8}`))
	if _, tokens := m.estimate(&Exchange{Request: req}, req, targets); tokens < 8*1000 || tokens > 8*1000+100 {
		t.Fatalf("n=8 × 1,000: %d tokens counted", tokens)
	}
	req, _ = providers.ParseChatRequest([]byte(`{` + msgs + `}`))
	huge := int64(math.MaxInt64 / 4)
	req.MaxTokens, req.N = &huge, &huge
	if got, _ := m.estimate(&Exchange{Request: req}, req, targets); got != math.MaxInt64/1_000_000 {
		t.Fatalf("absurd bounds reserved %d µ$, want saturation", got)
	}
}

// TestCoalescedFlightBillIsPerFlight (money2 item 2): a new flight for the same key gets a bill
// of its own even while a caller of an earlier, finished flight still holds that one's: the
// earlier bill is already paid, and inheriting it would record the new call as paid by
// someone else.
func TestCoalescedFlightBillIsPerFlight(t *testing.T) {
	chunk := []byte(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	ad := &cannedAdapter{chunks: [][]byte{chunk}}
	h := moneyRoute(t, ad)
	targets, perr := h.rt.Routes().Resolve("canned/gpt-4o-mini")
	if perr != nil {
		t.Fatal(perr)
	}
	req, err := providers.ParseChatRequest([]byte(`{"model":"canned/gpt-4o-mini","temperature":0,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	run := func() *Exchange {
		ex := &Exchange{WorkspaceID: "ws", Request: req}
		resp, err := h.coalesce.call(context.Background(), ex, targets[0], &providers.Call{Request: req, Body: req.Body, UpstreamModel: "gpt-4o-mini", Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := resp.Stream.Next(); err != nil {
				break
			}
		}
		ex.UsageKnown = true
		return ex
	}
	first := run() // still holds its bill: its release has not run
	if !first.settleBill() {
		t.Fatal("the first flight's caller did not pay")
	}
	second := run()
	if second.bill == first.bill || !second.settleBill() {
		t.Fatal("a new flight's call was recorded as paid by the earlier flight's caller")
	}
	first.releaseBill()
	second.releaseBill()
	if n := len(h.coalesce.bills); n != 0 {
		t.Fatalf("%d bills left after every caller released", n)
	}
}
