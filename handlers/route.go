package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/budget"
)

// Route sends chat completions to an upstream: it resolves the requested model to candidate
// targets, tries them in order (failing over only before the first byte reaches the client),
// and relays the answer, streaming events as they arrive. It also serves GET /v1/models and
// GET /v1/providers. Every other request goes to the next handler.
type Route struct {
	// MaxBodyBytes bounds a request body. Default: 32 MiB.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// Retries is how many times a transient failure (429, 5xx, timeouts) is retried on the
	// same upstream, with backoff and jitter honouring Retry-After, before failing over.
	// Default: 2.
	Retries int `json:"retries,omitempty"`
	// Deadline bounds the whole request until its first byte: every retry and failover
	// together. Default: 120s.
	Deadline caddy.Duration `json:"deadline,omitempty"`

	rt       Runtime
	logger   *zap.Logger
	coalesce *coalescer
}

// CaddyModule returns the Caddy module information.
func (Route) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_route", New: func() caddy.Module { return new(Route) }}
}

// Provision finds the btl app.
func (h *Route) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	rt, err := runtimeFrom(ctx, "btl_route")
	if err != nil {
		return err
	}
	h.rt = rt
	if h.MaxBodyBytes <= 0 {
		h.MaxBodyBytes = DefaultMaxBody
	}
	h.coalesce = new(coalescer)
	if h.Retries == 0 {
		h.Retries = 2
	}
	if h.Retries < 0 {
		h.Retries = 0
	}
	if h.Deadline <= 0 {
		h.Deadline = caddy.Duration(120 * time.Second)
	}
	return nil
}

// postRoute returns the handler of a POST endpoint the route handler serves — each an entry
// into the same chat pipeline (or, for count_tokens, a local answer) — or nil.
func (h *Route) postRoute(path string) func(http.ResponseWriter, *http.Request, *Exchange) {
	switch path {
	case PathChat:
		return h.serveChat
	case PathMessages:
		return h.serveMessages
	case PathCountTokens:
		return h.serveCountTokens
	case PathResponses:
		return h.serveResponses
	case PathEmbeddings, PathCompletions, PathModerations:
		return h.serveChat // the same pipeline; the exchange knows its endpoint
	}
	return nil
}

// Paths owned by the route handler.
const (
	PathChat      = "/v1/chat/completions"
	PathModels    = "/v1/models"
	PathProviders = "/v1/providers"
)

func (h *Route) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if serve := h.postRoute(r.URL.Path); serve != nil {
		ex := ExchangeFrom(r)
		if r.Method != http.MethodPost {
			methodNotAllowed(w, ex, http.MethodPost)
			return nil
		}
		serve(w, r, ex)
		return nil
	}
	switch r.URL.Path {
	case PathModels:
		return h.serveModels(w, r)
	case PathProviders:
		return h.serveProviders(w, r)
	case PathHealth:
		serveHealth(w, r, ExchangeFrom(r))
		return nil
	case PathReady:
		h.serveReady(w, r, ExchangeFrom(r))
		return nil
	case PathOpenAPI:
		serveOpenAPI(w, r, ExchangeFrom(r))
		return nil
	}
	if strings.HasPrefix(r.URL.Path, PathResponses+"/") {
		h.serveStoredResponse(w, r, ExchangeFrom(r))
		return nil
	}
	if strings.HasPrefix(r.URL.Path, PathModels+"/") {
		h.serveModel(w, r)
		return nil
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		// The API namespace is ours: an unknown route is an API error, not an empty page.
		writeError(w, ExchangeFrom(r), unknownURL(r.Method, r.URL.Path))
		return nil
	}
	// Other paths go on (to btl_dashboard, a file server …); if nothing after us answers,
	// the client gets a 404 envelope naming the URL rather than Caddy's empty 200.
	tw := &writeTracker{ResponseWriter: w}
	if err := next.ServeHTTP(tw, r); err != nil || tw.wrote {
		return err
	}
	writeError(w, ExchangeFrom(r), unknownURL(r.Method, r.URL.Path))
	return nil
}

func (h *Route) serveChat(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	req, perr := ex.LoadChatRequest(r, h.MaxBodyBytes)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	features := requestFeatures(ex, req)
	if s := r.Header.Get("X-Btl-Route"); s != "" {
		if !routing.ValidStrategy(s) {
			writeError(w, ex, providers.Errorf(http.StatusBadRequest, "invalid_value", "x-btl-route",
				"x-btl-route must be cheapest, fastest, ordered or weighted"))
			return
		}
		features.Strategy = s
	}
	plan, perr := h.rt.Routes().Plan(req.Model, features)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	ex.RouteReason, ex.RouteStrategy = plan.Reason, plan.Strategy
	if plan.Default.Priced {
		ex.DefaultPrice, ex.HasDefaultPrice = *plan.Default.Price, true
	}
	base, perr := isolate(r.Context(), h.rt, ex, req)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	// Upstream calls are detached from the client: a client that leaves does not cancel a call
	// the upstream is already paid for, so its usage is learned and billed. The deadline
	// still bounds them until the first byte. A stream stops reading once its client is gone
	// (attempt).
	ctx, dl := withFirstByteDeadline(context.WithoutCancel(base), time.Duration(h.Deadline))
	defer dl.release()
	var lastErr *providers.Error
	for i, tg := range plan.Targets {
		if i > 0 {
			ex.RouteReason = plan.Reason + "_failover"
		}
		// A target whose breaker is open is skipped while others remain.
		if !tg.Health().Allow(routing.DefaultBreaker) && i < len(plan.Targets)-1 {
			continue
		}
		for try := 0; ; try++ {
			ex.Attempts++
			ex.Provider, ex.ProviderType, ex.UpstreamModel = tg.Provider.Name(), tg.Provider.Type(), tg.Model
			started := time.Now()
			span := upstreamSpan(r, ex.Provider, ex.UpstreamModel, ex.Attempts)
			done, err := h.attempt(ctx, w, r, ex, tg, req)
			endSpan(span, attemptStatus(err))
			if done {
				h.rt.Routes().Observe(tg, features, err == nil || !upstreamFault(err), ex.TTFB-started.Sub(ex.Start), time.Since(started), ex.Usage)
				return
			}
			lastErr = err
			if gatewayRefusal(err) {
				break // no call was made: nothing to observe, and no other upstream changes that
			}
			h.rt.Routes().Observe(tg, features, !upstreamFault(err), 0, 0, providers.Usage{})
			h.logAttempt(ex, tg, lastErr)
			if r.Context().Err() != nil {
				break // the client left: nobody waits for another attempt
			}
			if lastErr.Class != providers.ClassRetryable || try >= h.Retries || ctx.Err() != nil {
				break
			}
			wait := backoff(try, lastErr.RetryAfter)
			if time.Until(dl.at) < wait {
				break // cannot wait that long: fail over now
			}
			if wait > maxRetryWait {
				break // Retry-After beyond what a caller should wait: try another upstream
			}
			select {
			case <-ctx.Done():
			case <-r.Context().Done():
			case <-time.After(wait):
			}
			if ctx.Err() != nil || r.Context().Err() != nil {
				break
			}
		}
		if lastErr.Class != providers.ClassRetryable && lastErr.Class != providers.ClassFailover {
			break
		}
		if ctx.Err() != nil || r.Context().Err() != nil {
			break
		}
	}
	if r.Context().Err() != nil && lastErr != nil && !gatewayRefusal(lastErr) {
		// Nobody reads the answer; the row says why the request ended.
		ex.Status, ex.ErrorCode = statusClientClosed, "client_closed_request"
		return
	}
	if lastErr == nil {
		lastErr = &providers.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_available_provider",
			Message: "every upstream for this model is currently failing; retry shortly", RetryAfter: time.Second}
	}
	if dl.expired() && r.Context().Err() == nil && lastErr.Status != http.StatusGatewayTimeout {
		lastErr = &providers.Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_timeout",
			Message: "no upstream answered within the request deadline", Class: providers.ClassRetryable, Internal: lastErr}
	}
	writeError(w, ex, lastErr)
}

// attempt makes one upstream call. done reports that the response was written to the client
// (successfully or with an in-band error): nothing may be retried after that.
func (h *Route) attempt(ctx context.Context, w http.ResponseWriter, r *http.Request, ex *Exchange, tg routing.Target, req *providers.ChatRequest) (done bool, _ *providers.Error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if ex.Endpoint != "" {
		return h.attemptEndpoint(ctx, w, ex, tg)
	}
	if ra := responsesPassThrough(ex, tg); ra != nil {
		return h.attemptResponses(ctx, cancel, w, r, ex, tg, ra)
	}
	var body []byte
	if ex.PerTarget != nil {
		body = ex.PerTarget(tg)
	} else {
		body = ex.OutboundBody()
	}
	call := &providers.Call{Request: req, Body: body, UpstreamModel: tg.Model, Stream: req.Stream, Affinity: ex.Conversation,
		Admit: ex.admitFor(tg)}
	var resp *providers.Response
	var err error
	if o := ex.Optimizer; o != nil && o.Coalesce && (o.CoalesceSampled || o.Deterministic) {
		resp, err = h.coalesce.call(ctx, ex, tg, call)
		defer ex.releaseBill()
	} else {
		resp, err = tg.Provider.Chat(ctx, call)
	}
	if err == nil && resp.Stream != nil {
		// Pull the first chunk before committing: a stream that fails before its first event
		// can still be retried or fail over.
		first, ferr := resp.Stream.Next()
		if (ferr == nil || ferr == io.EOF) && !firstByte(ctx) {
			ferr = context.Canceled // the deadline fired as the first event came in
		}
		if ferr == nil || ferr == io.EOF {
			// Committed: from here a client that leaves ends the stream (and the upstream
			// call with it); what was delivered is billed. The deadline no longer applies:
			// an answer that streams longer is not cut (the adapters' idle timeout still
			// ends a stalled one).
			defer context.AfterFunc(r.Context(), cancel)()
			h.relayStream(w, r, ex, resp, first, ferr == io.EOF)
			return true, nil
		}
		_ = resp.Stream.Close()
		err = ferr
	}
	if err == nil {
		h.writeCompletion(w, ex, resp)
		return true, nil
	}
	return false, asProviderError(err)
}

// firstByteDeadline bounds an exchange until its first byte reaches the client (Route.Deadline):
// every attempt, retry and failover until then, but not the body of a stream that has begun.
// context.WithTimeout would also cut a long answer that is streaming well.
type firstByteDeadline struct {
	at        time.Time
	timer     *time.Timer
	cancel    context.CancelFunc
	fired     atomic.Bool
	committed atomic.Bool
}

type firstByteDeadlineKey struct{}

// withFirstByteDeadline returns a context cancelled d from now unless firstByte is called on
// it before; dl.release releases it.
func withFirstByteDeadline(parent context.Context, d time.Duration) (context.Context, *firstByteDeadline) {
	ctx, cancel := context.WithCancel(parent)
	dl := &firstByteDeadline{at: time.Now().Add(d), cancel: cancel}
	dl.timer = time.AfterFunc(d, func() {
		dl.fired.Store(true)
		cancel()
	})
	return context.WithValue(ctx, firstByteDeadlineKey{}, dl), dl
}

// release stops the timer and cancels the context. The timer must be stopped: left to run
// out, every request's timer stayed queued for the whole deadline (120s by default), holding
// its context, which cost about 100 µs of CPU per request at load.
func (dl *firstByteDeadline) release() {
	dl.timer.Stop()
	dl.cancel()
}

// expired reports that the deadline passed before the first byte.
func (dl *firstByteDeadline) expired() bool { return dl.fired.Load() }

// firstByte lifts the deadline of ctx once an answer's first byte is ready to be relayed. It
// reports false when the deadline already fired: the call is being cancelled, and the attempt
// fails as a timeout rather than relay a stream about to be cut.
func firstByte(ctx context.Context) bool {
	dl, _ := ctx.Value(firstByteDeadlineKey{}).(*firstByteDeadline)
	if dl == nil || dl.committed.Load() {
		return true
	}
	if dl.timer.Stop() {
		dl.committed.Store(true)
		return true
	}
	return false
}

// attemptStatus is the HTTP status an attempt ended with, for its span.
func attemptStatus(err *providers.Error) int {
	if err != nil {
		return err.Status
	}
	return http.StatusOK
}

// upstreamFault reports whether an error counts against the upstream's health (the caller's
// own 4xx do not).
func upstreamFault(err *providers.Error) bool {
	return err != nil && err.Class != providers.ClassClient
}

// maxRetryWait bounds one wait before retrying the same upstream.
const maxRetryWait = 10 * time.Second

// backoff is exponential with full jitter (100ms, 200ms, 400ms … capped at 5s), and never
// shorter than the upstream's Retry-After.
func backoff(try int, retryAfter time.Duration) time.Duration {
	d := min(100*time.Millisecond<<try, 5*time.Second)
	d = time.Duration(mrand.Int64N(int64(d) + 1))
	return max(d, retryAfter)
}

// requestFeatures estimates what routing needs from the raw body without decoding it.
func requestFeatures(ex *Exchange, req *providers.ChatRequest) routing.Features {
	f := routing.Features{
		InputTokens: int64(ex.OutboundLen()) / 4,
		OutputCap:   req.OutputCap(),
		Tools:       len(req.Tools) > 2, // more than "[]"
		Vision:      bytes.Contains(req.Messages, imageURLKey),
		JSONSchema:  bytes.Contains(req.ResponseFormat, jsonSchemaKey),
		Endpoint:    ex.Endpoint,
	}
	f.Conversation = conversationKey(ex.WorkspaceID, req)
	ex.Conversation = f.Conversation
	return f
}

var (
	imageURLKey   = []byte(`"image_url"`)
	jsonSchemaKey = []byte(`"json_schema"`)
)

// conversationKey identifies a conversation for cache-warm stickiness: the caller's
// prompt_cache_key, else a hash of the stable head of the conversation (everything up to and
// including the first user message), scoped to the workspace.
func conversationKey(workspace string, req *providers.ChatRequest) uint64 {
	h := fnv.New64a()
	h.Write([]byte(workspace))
	h.Write([]byte{0})
	if req.PromptCacheKey != "" {
		h.Write([]byte(req.PromptCacheKey))
		return h.Sum64() | 1
	}
	end := 0
	_ = providers.EachElement(req.Messages, func(i int, m []byte) bool {
		end += len(m)
		h.Write(m)
		return !bytes.Contains(m, userRole)
	})
	if end == 0 {
		return 0
	}
	return h.Sum64() | 1
}

var userRole = []byte(`"user"`)

func asProviderError(err error) *providers.Error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe
	}
	return &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
		Message: "the upstream provider failed", Class: providers.ClassRetryable, Internal: err}
}

func (h *Route) logAttempt(ex *Exchange, tg routing.Target, e *providers.Error) {
	if c := h.logger.Check(zapcore.WarnLevel, "upstream attempt failed"); c != nil {
		c.Write(zap.String("request_id", ex.ID), zap.String("provider", tg.Provider.Name()),
			zap.String("upstream_model", tg.Model), zap.Int("status", e.Status), zap.String("class", e.Class.String()),
			zap.String("upstream_request_id", e.UpstreamRequestID), zap.Error(e.Internal))
	}
}

// setUpstreamHeaders publishes which upstream served the request.
func setUpstreamHeaders(hdr http.Header, ex *Exchange) {
	hdr.Set("X-Btl-Route-Reason", ex.RouteReason)
	hdr.Set("X-Btl-Provider", ex.Provider)
	hdr.Set("X-Btl-Upstream-Model", ex.UpstreamModel)
	hdr.Set("X-Btl-Attempts", strconv.Itoa(ex.Attempts))
	if ex.UpstreamRequestID != "" {
		hdr.Set("X-Btl-Upstream-Request-Id", ex.UpstreamRequestID)
	}
	hdr.Set("X-Btl-Cache", ex.cacheOutcome())
	if o := ex.Optimizer; o != nil {
		if o.Breakers != "" {
			hdr.Set("X-Btl-Cache-Breakers", o.Breakers)
		}
		if o.Shadow {
			hdr.Set("X-Btl-Optimize", "shadow")
			hdr.Set("X-Btl-Shadow-Saved-Tokens", strconv.FormatInt(o.DedupeTokens+o.DedupeHistoryTokens+o.CompressionTokens, 10))
		}
	}
}

func (h *Route) writeCompletion(w http.ResponseWriter, ex *Exchange, resp *providers.Response) {
	ex.UpstreamRequestID = resp.UpstreamRequestID
	ex.TTFB = time.Since(ex.Start)
	body := resp.Body
	span, hasUsage, _ := providers.FindTopLevel(body, "usage")
	switch {
	case resp.Usage != nil:
		ex.Usage, ex.UsageKnown = *resp.Usage, true
	case hasUsage:
		ex.Usage, ex.UsageKnown = providers.ParseOpenAIUsage(body[span.Start:span.End])
	}
	ex.Status = http.StatusOK
	ex.ServedTier = servedTier(body)
	if ex.CaptureUpstream != nil {
		ex.CaptureUpstream(body)
	}
	// Under a gateway-set cap the finish reason is evidence (and an answer it cut is flagged);
	// known before completion, so the meter and the optimizer see it.
	if o := ex.Optimizer; o != nil && o.BudgetCap > 0 {
		o.Finish = finishReason(body)
		o.EmptyLength = o.Finish == "length" && emptyLengthAnswer(body)
		o.emptyContent = o.EmptyLength
	}
	ex.Complete()
	if ex.CostKnown && hasUsage && body[span.Start] == '{' {
		body = providers.AppendToObject(body, span, "cost", []byte(catalog.MicrosToUSD(ex.CostMicros)))
	}
	hdr := w.Header()
	setUpstreamHeaders(hdr, ex)
	setCostHeaders(hdr, ex)
	if o := ex.Optimizer; o != nil && o.BudgetCap > 0 && o.Finish == "length" {
		hdr.Set(cappedHeader, "true")
		if o.EmptyLength {
			hdr.Set(emptyLengthHeader, "true")
		}
	}
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	// The answer is complete (its row is spooled, ex.Complete above): send it now rather
	// than when every handler has returned, so what they do after next (the optimizer's
	// evidence and cache, metrics) is not in the client's latency. net/http would make the
	// same write at the end of the request; it has nothing left to send then.
	_ = http.NewResponseController(w).Flush()
}

func setCostHeaders(hdr http.Header, ex *Exchange) {
	if !ex.CostKnown {
		return
	}
	hdr.Set("X-Btl-Cost-Usd", catalog.MicrosToUSD(ex.CostMicros))
	hdr.Set("X-Btl-Baseline-Usd", catalog.MicrosToUSD(ex.BaselineMicros))
}

var (
	usageKey   = []byte(`"usage":`)
	nullValue  = []byte("null")
	emptyArray = []byte("[]")
	doneEvent  = []byte("data: [DONE]\n\n")
)

// relayStream writes the stream to the client event by event, flushing each one. The upstream
// always reports usage; the usage chunk is shown to the client only if it asked for it.
func (h *Route) relayStream(w http.ResponseWriter, r *http.Request, ex *Exchange, resp *providers.Response, first []byte, eof bool) {
	stream := resp.Stream
	defer stream.Close()
	ex.Streamed = true
	ex.UpstreamRequestID = resp.UpstreamRequestID
	ex.Status = http.StatusOK
	wantUsage := ex.Request.WantsUsage()

	hdr := w.Header()
	setUpstreamHeaders(hdr, ex)
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	// A stream's headers are gone before its finish reason is known, so the empty-length
	// flag travels as a trailer.
	var lengthWatch *emptyLengthWatch
	if o := ex.Optimizer; o != nil && o.BudgetCap > 0 {
		lengthWatch = &emptyLengthWatch{report: o}
		hdr.Set("Trailer", emptyLengthHeader+", "+cappedHeader)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)

	buf := getRelayBuf()
	defer func() { putRelayBuf(buf) }()
	pender, _ := stream.(providers.Pender)
	chunk := first
	for !eof {
		out := chunk
		if ex.CaptureChunk != nil {
			ex.CaptureChunk(chunk)
		}
		if lengthWatch != nil {
			lengthWatch.observe(chunk)
		}
		if providers.HasObjectValue(chunk, usageKey) {
			out = h.captureUsage(ex, stream, chunk, wantUsage)
		}
		if out != nil {
			if ex.TTFB == 0 {
				ex.TTFB = time.Since(ex.Start)
			}
			buf = sse.AppendData(buf[:0], out)
			if _, err := w.Write(buf); err != nil {
				h.abandon(ex)
				return
			}
			// Billed by the text it carried, once relayed (never by its JSON envelope).
			ex.DeliveredTextBytes += providers.ChunkTextBytes(chunk)
			// Flush unless the next event is already here: events that arrived together
			// leave together, and nothing waits on a flush that more data would follow.
			if pender == nil || !pender.Pending() {
				if err := rc.Flush(); err != nil {
					h.abandon(ex)
					return
				}
			}
		}
		var err error
		chunk, err = stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if r.Context().Err() != nil {
				h.abandon(ex) // the client left and its going cancelled the upstream read
				return
			}
			h.streamFailed(w, rc, ex, err)
			return
		}
	}
	if !ex.UsageKnown {
		estimateUsage(ex)
	}
	ex.Complete()
	_, _ = w.Write(doneEvent)
	if lengthWatch != nil && ex.Optimizer.Finish == "length" {
		hdr.Set(cappedHeader, "true")
		if ex.Optimizer.EmptyLength {
			hdr.Set(emptyLengthHeader, "true")
		}
	}
	_ = rc.Flush()
}

// relayBufs are the buffers events are framed in on their way to the client, one per stream
// at a time: allocating one per stream was the relay's largest garbage.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getRelayBuf() []byte { return (*relayBufs.Get().(*[]byte))[:0] }

// putRelayBuf returns a buffer; one grown by a huge event is left to the collector.
func putRelayBuf(b []byte) {
	if cap(b) <= 64<<10 {
		b = b[:0]
		relayBufs.Put(&b)
	}
}

const (
	emptyLengthHeader = "X-Btl-Empty-Length"
	// cappedHeader flags an answer that stopped at the output cap the gateway set.
	cappedHeader = "X-Btl-Capped"
)

var (
	lengthFinish   = []byte(`"finish_reason":"length"`)
	contentPresent = []byte(`"content":"`)
	toolCallsKey   = []byte(`"tool_calls"`)
)

// emptyLengthWatch follows a stream for the empty-length case (the gateway's cap reached
// before any content or tool call): byte tests on each chunk, no decoding. A reasoning model
// that spent the whole budget thinking streams reasoning deltas and no content.
type emptyLengthWatch struct {
	report     *OptimizerReport
	hasContent bool
}

func (w *emptyLengthWatch) observe(chunk []byte) {
	if f := finishReason(chunk); f != "" {
		w.report.Finish = f
	}
	if !w.hasContent {
		if bytes.Contains(chunk, toolCallsKey) {
			w.hasContent = true
		} else if i := bytes.Index(chunk, contentPresent); i >= 0 && i+len(contentPresent) < len(chunk) && chunk[i+len(contentPresent)] != '"' {
			w.hasContent = true
		}
	}
	if !w.hasContent && bytes.Contains(chunk, lengthFinish) {
		w.report.EmptyLength = true
		w.report.emptyContent = true
	}
}

var finishKey = []byte(`"finish_reason":"`)

// finishReason is the first finish_reason string in an answer or chunk ("" when none): byte
// tests, no decoding. Every OpenAI-shaped answer the adapters produce writes it this way.
func finishReason(b []byte) string {
	i := bytes.Index(b, finishKey)
	if i < 0 {
		return ""
	}
	v := b[i+len(finishKey):]
	if j := bytes.IndexByte(v, '"'); j > 0 && j <= 32 {
		return string(v[:j])
	}
	return ""
}

// captureUsage records the usage of a chunk that carries it and returns what the client should
// see: the chunk with usage.cost added when it asked for usage, otherwise the chunk without
// usage (nil to drop a usage-only chunk).
func (h *Route) captureUsage(ex *Exchange, stream providers.ChunkStream, chunk []byte, wantUsage bool) []byte {
	span, ok, err := providers.FindTopLevel(chunk, "usage")
	if err != nil || !ok || bytes.Equal(chunk[span.Start:span.End], nullValue) {
		return chunk
	}
	if u, ok := providers.ParseOpenAIUsage(chunk[span.Start:span.End]); ok {
		ex.Usage, ex.UsageKnown = u, true
	}
	ex.ServedTier = servedTier(chunk)
	// Adapters that know more than the OpenAI usage object can carry (cache-write TTLs)
	// report it directly.
	if ur, ok := stream.(providers.UsageReporter); ok {
		if u := ur.Usage(); !u.IsZero() {
			ex.Usage = u
		}
	}
	if !wantUsage {
		if cs, ok, _ := providers.FindTopLevel(chunk, "choices"); !ok || bytes.Equal(chunk[cs.Start:cs.End], emptyArray) || bytes.Equal(chunk[cs.Start:cs.End], nullValue) {
			ex.Complete()
			return nil
		}
		return providers.Replace(chunk, span, nullValue)
	}
	// The cost is known only once usage is: complete the exchange (the meter prices and
	// records it) before the client can see the end of the stream.
	ex.Complete()
	if ex.CostKnown && chunk[span.Start] == '{' {
		return providers.AppendToObject(chunk, span, "cost", []byte(catalog.MicrosToUSD(ex.CostMicros)))
	}
	return chunk
}

// streamFailed reports an upstream failure after the first byte: in-band, as OpenAI-style
// servers do, never by retrying (the client has already seen part of an answer).
func (h *Route) streamFailed(w http.ResponseWriter, rc *http.ResponseController, ex *Exchange, err error) {
	pe := asProviderError(err)
	ex.Partial = true
	ex.ErrorCode = pe.Code
	if !ex.UsageKnown {
		estimateUsage(ex)
	}
	if c := h.logger.Check(zapcore.WarnLevel, "upstream stream failed after first byte"); c != nil {
		c.Write(zap.String("request_id", ex.ID), zap.String("provider", ex.Provider), zap.Error(pe.Internal))
	}
	_, _ = w.Write(sse.AppendData(nil, pe.Envelope()))
	_ = rc.Flush()
}

// abandon handles a client that went away mid-stream: stop reading the upstream and record
// what was used so far.
func (h *Route) abandon(ex *Exchange) {
	ex.Partial = true
	ex.ErrorCode = "client_closed_request"
	if !ex.UsageKnown {
		estimateUsage(ex)
	}
}

// statusClientClosed is the status a row records for a request whose client left before any
// answer (nginx's 499; no response is written).
const statusClientClosed = 499

// estimateUsage fills usage when the upstream never reported it (the stream was cut or the
// client left): the prompt sent, at the model's calibrated estimate, and the text delivered
// (ex.DeliveredTextBytes) as output tokens at the model's calibrated rate, so a cut stream
// is billed for what it delivered, neither for its JSON envelopes nor for nothing.
func estimateUsage(ex *Exchange) {
	ex.Usage = providers.Usage{
		InputUncached: calibratedPrompt(ex.WorkspaceID, ex.UpstreamModel, ex.OutboundLen()),
		Output:        calibratedOutput(ex.WorkspaceID, ex.UpstreamModel, ex.DeliveredTextBytes),
	}
	ex.UsageKnown, ex.UsageEstimated = true, true
}

// admitFor is the Call.Admit for an attempt on tg: the meter's admission, when there is one.
func (ex *Exchange) admitFor(tg routing.Target) func(providers.Bounds) error {
	if ex.admit == nil {
		return nil
	}
	return func(b providers.Bounds) error { return ex.admit(tg, b) }
}

// servedTier is the service_tier an OpenAI answer (a completion, a chunk or a Response
// object) says it was served in, "" when it names none.
func servedTier(body []byte) string {
	if !bytes.Contains(body, serviceTierKey) {
		return ""
	}
	tier, _ := providers.StringMember(body, "service_tier")
	return tier
}

var serviceTierKey = []byte(`"service_tier"`)

// Interface guards
var (
	_ caddy.Provisioner           = (*Route)(nil)
	_ caddyhttp.MiddlewareHandler = (*Route)(nil)
)

// emptyLengthAnswer reports a completion cut by its output cap before any content: the sign
// of a budget too small for a reasoning model (its reasoning used the whole cap).
func emptyLengthAnswer(body []byte) bool {
	if !bytes.Contains(body, []byte(`"length"`)) {
		return false
	}
	var c struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
			Message      struct {
				Content   *string         `json:"content"`
				ToolCalls json.RawMessage `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(body, &c) != nil || len(c.Choices) == 0 {
		return false
	}
	ch := c.Choices[0]
	content := ""
	if ch.Message.Content != nil {
		content = *ch.Message.Content
	}
	return len(ch.Message.ToolCalls) == 0 && budget.EmptyLength(ch.FinishReason, content)
}
