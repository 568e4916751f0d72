// Package handlers holds the four btl HTTP handlers (auth, meter, optimize, route) and the
// customer API routes they own. The handlers are thin: parsing, routing, pricing and storage
// live in Caddy-free packages. One *Exchange per request carries what each handler learns.
package handlers

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/anthropic"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
)

// exchangeVar is the Caddy request var holding the *Exchange. A var (not a context value) so
// outer handlers see what inner ones set after next returns.
const exchangeVar = "btl.exchange"

// DefaultMaxBody bounds a request body when no handler config says otherwise.
const DefaultMaxBody = 32 << 20

// Exchange is the per-request state shared by the btl handlers. Each field group has one
// writer: auth writes identity; the first reader of the body writes Request; optimize writes
// the final body and savings; route writes the upstream facts and usage; meter writes money.
type Exchange struct {
	ID    string
	Start time.Time

	// Identity (auth).
	WorkspaceID string
	KeyID       string
	Scopes      []ledger.Scope
	// Key is the caller's key record with its limits and its ancestors' (zero without auth).
	Key ledger.Key
	// The workspace's limits, read once (workspaceLimits).
	wsLimits     ledger.WorkspaceLimits
	wsLimitsRead bool

	// The parsed request (read once by whichever handler needs it first).
	Request    *providers.ChatRequest
	requestErr *providers.Error
	loaded     bool
	// The requested model's candidates, resolved once for the meter and the optimizer.
	candidates      []routing.Target
	candidatesErr   *providers.Error
	candidatesModel string
	resolved        bool

	// Body to send upstream, when the optimizer rewrote it (nil: Request.Body, unless a
	// rewrite is pending). Read it with OutboundBody.
	Body []byte
	// rewrite is the optimizer's rewrite of the messages when it is not written yet: the body
	// is written once, per upstream target with that target's edits (PerTarget), unless
	// something reads it whole first (OutboundBody).
	rewrite      *pendingRewrite
	CacheOutcome string
	// Optimizer reports what btl_optimize did; PerTarget, when set, returns the body for one
	// upstream target (prompt-cache markers, output cap), from OutboundBody or the pending
	// rewrite.
	Optimizer *OptimizerReport
	PerTarget func(tg routing.Target) []byte
	// CacheScope is the workspace's cache-isolation salt when btl_optimize isolates provider
	// caches ("" otherwise): the Responses pass-through scopes prompt_cache_key with it.
	CacheScope string
	// CaptureUpstream and CaptureChunk, when set, see the upstream's answer as it was
	// received (before the gateway adds usage.cost): for the response cache.
	CaptureUpstream func(body []byte)
	CaptureChunk    func(chunk []byte)
	// Coalesced is set when the request joined another caller's in-flight upstream call.
	Coalesced   bool
	bill        *flightBill
	releaseBill func()
	// paidElsewhere is set when another caller of the same coalesced call paid for it.
	paidElsewhere bool
	// Ingress names a non-OpenAI API the request arrived through ("anthropic"), so errors
	// are written in that API's shape.
	Ingress string
	// Endpoint is the non-chat API being served (providers.EndpointEmbeddings …; "" for
	// chat); Embedding is an embeddings request's typed view.
	Endpoint  string
	Embedding *providers.EmbeddingRequest

	// Upstream facts (route).
	// Conversation identifies the conversation for cache-warm stickiness (0: none).
	Conversation      uint64
	RouteReason       string
	RouteStrategy     string
	DefaultPrice      catalog.Price
	HasDefaultPrice   bool
	Provider          string
	ProviderType      string
	UpstreamModel     string
	UpstreamRequestID string
	Attempts          int
	Usage             providers.Usage
	UsageKnown        bool
	// UsageEstimated marks usage the gateway estimated because the upstream never reported it.
	UsageEstimated bool
	Status         int
	ErrorCode      string
	TTFB           time.Duration
	Streamed       bool
	// Partial is set when a stream ended early (client left or upstream cut).
	Partial bool
	// DeliveredTextBytes is the text relayed to the client so far (content, reasoning,
	// refusals, tool names and arguments): what a stream cut before its usage is billed by.
	DeliveredTextBytes int64
	// Sent is what the adapter of the last admitted attempt said it sent (output cap, n,
	// service tier); ServedTier the service tier the upstream's answer names ("" if none).
	Sent       providers.Bounds
	ServedTier string
	// admit, set by the meter, re-reserves for what an adapter is about to send to a target;
	// the route hands it to every upstream call as Call.Admit.
	admit func(tg routing.Target, b providers.Bounds) error

	// Money (meter), in micro-dollars.
	CostMicros     int64
	BaselineMicros int64
	// Savings is what each lever saved, in micro-dollars (baseline − cost, split).
	Savings   LeverSavings
	CostKnown bool

	onComplete []func(*Exchange)
	completed  bool

	// responses is set for POST /v1/responses: the body is a Responses request and Request
	// its chat translation (responses.go).
	responses *responsesState
}

// ExchangeFrom returns the request's exchange, creating it (and its id) on first use.
func ExchangeFrom(r *http.Request) *Exchange {
	if ex, ok := caddyhttp.GetVar(r.Context(), exchangeVar).(*Exchange); ok {
		return ex
	}
	ex := &Exchange{ID: newRequestID(), Start: time.Now()}
	if strings.HasPrefix(r.URL.Path, PathMessages) {
		ex.Ingress = ingressAnthropic
	}
	caddyhttp.SetVar(r.Context(), exchangeVar, ex)
	return ex
}

// idEncoding's alphabet is in ascending ASCII order, so encoded ids sort like their bytes.
var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newRequestID makes a 128-bit id: 48 bits of Unix milliseconds, big-endian, then 80 random
// bits. Request ids are the ledger's primary key, and time-ordered keys keep inserts at the
// right edge of the index (random ones slow every insert as the table grows). They need
// uniqueness, not secrecy, so the runtime's per-thread ChaCha8 generator is enough and costs
// no syscall.
func newRequestID() string { return requestIDAt(time.Now()) }

func requestIDAt(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16|rand.Uint64()&0xffff)
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return "req_" + idEncoding.EncodeToString(b[:])
}

// OnComplete registers fn to run once when the exchange completes: just before the final
// bytes of a successful answer are written, or after the handler chain returns otherwise.
func (ex *Exchange) OnComplete(fn func(*Exchange)) { ex.onComplete = append(ex.onComplete, fn) }

// Complete runs the completion hooks once.
func (ex *Exchange) Complete() {
	if ex.completed {
		return
	}
	ex.completed = true
	for _, fn := range ex.onComplete {
		fn(ex)
	}
}

// Completed reports whether Complete has run.
func (ex *Exchange) Completed() bool { return ex.completed }

// pendingRewrite is a rewrite of the request body not yet written: the body's view and the
// change to its messages.
type pendingRewrite struct {
	view *conv.View
	ch   conv.Change
	len  int // of the rewritten body
}

// OutboundBody is the body to send upstream (before the per-target edits), written now if
// the optimizer's rewrite is pending.
func (ex *Exchange) OutboundBody() []byte {
	if ex.rewrite != nil {
		ex.Body, _ = ex.rewrite.view.Rewrite(ex.rewrite.ch, false)
		ex.rewrite = nil
	}
	if ex.Body != nil {
		return ex.Body
	}
	return ex.Request.Body
}

// OutboundLen is len(OutboundBody()), without writing a pending rewrite.
func (ex *Exchange) OutboundLen() int {
	if ex.rewrite != nil {
		return ex.rewrite.len
	}
	return len(ex.OutboundBody())
}

// LoadChatRequest reads and parses the chat body once; later calls return the same result.
func (ex *Exchange) LoadChatRequest(r *http.Request, maxBody int64) (*providers.ChatRequest, *providers.Error) {
	if ex.loaded {
		return ex.Request, ex.requestErr
	}
	ex.loaded = true
	if ex.responses != nil {
		ex.Request, ex.requestErr = ex.responses.load(r, ex, maxBody)
		return ex.Request, ex.requestErr
	}
	if ex.Endpoint = endpointOf(r.URL.Path); ex.Endpoint != "" {
		ex.Request, ex.requestErr = ex.loadEndpointRequest(r, maxBody)
		return ex.Request, ex.requestErr
	}
	ex.Request, ex.requestErr = readChatRequest(r, maxBody)
	return ex.Request, ex.requestErr
}

func readChatRequest(r *http.Request, maxBody int64) (*providers.ChatRequest, *providers.Error) {
	body, perr := readBody(r, maxBody)
	if perr != nil {
		return nil, perr
	}
	if r.URL.Path == PathMessages {
		// Anthropic ingress: everything downstream sees the OpenAI chat equivalent.
		translated, _, perr := anthropic.IngressToOpenAI(body)
		if perr != nil {
			return nil, perr
		}
		body = translated
	}
	req, err := providers.ParseChatRequest(body)
	if err != nil {
		return nil, err.(*providers.Error)
	}
	return req, nil
}

// readBody reads a JSON request body within the limit.
func readBody(r *http.Request, maxBody int64) ([]byte, *providers.Error) {
	// The SDKs send exactly "application/json"; only anything else is parsed.
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != "text/json") {
			return nil, providers.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "",
				"unsupported Content-Type %q: send application/json", ct)
		}
	}
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	if r.ContentLength > maxBody {
		return nil, tooLarge(maxBody)
	}
	// Size the buffer from Content-Length when there is one, plus a byte so the read that
	// sees EOF needs no room (io.ReadAll's doubling from 512 bytes, or bytes.Buffer's 512-byte
	// read reserve, would copy a large body again), but not beyond 1 MiB up front: a client's
	// claim alone must not make the gateway allocate.
	body := make([]byte, 0, min(max(r.ContentLength, 0), maxBody, 1<<20)+1)
	limited := io.LimitReader(r.Body, maxBody+1)
	for {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
		n, err := limited.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if asMaxBytes(err, &mbe) {
				return nil, tooLarge(mbe.Limit)
			}
			if errors.Is(err, errBodyTimeout) {
				return nil, providers.Errorf(http.StatusRequestTimeout, "request_timeout", "", "the request body did not arrive within the body timeout")
			}
			return nil, providers.Errorf(http.StatusBadRequest, "invalid_request_body", "", "could not read the request body")
		}
	}
	if int64(len(body)) > maxBody {
		return nil, tooLarge(maxBody)
	}
	return body, nil
}

func tooLarge(limit int64) *providers.Error {
	return providers.Errorf(http.StatusRequestEntityTooLarge, "request_too_large", "",
		"request body is larger than the limit of %d bytes", limit)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// LeverSavings splits a request's savings by lever, in micro-dollars.
type LeverSavings struct {
	PromptCache, ResponseCache, Coalesce, Compression, Dedupe, OutputBudget, Routing int64
}

// Candidates resolves the requested model once per request: the meter prices over the
// candidates and the optimizer reads their context windows. The slice is shared: read only.
func (ex *Exchange) Candidates(t *routing.Table, model string) ([]routing.Target, *providers.Error) {
	if !ex.resolved || ex.candidatesModel != model {
		ex.candidates, ex.candidatesErr = t.Resolve(model)
		ex.candidatesModel, ex.resolved = model, true
	}
	return ex.candidates, ex.candidatesErr
}
