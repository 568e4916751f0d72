package handlers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/providers/responses"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/cacheplan"
)

// responsesPassThrough is the one place that decides whether a Responses request goes to a
// target as it is (an OpenAI upstream, which speaks the Responses API natively) rather than
// through the chat translation. Every other provider type gets the translation.
func responsesPassThrough(ex *Exchange, tg routing.Target) providers.ResponsesAdapter {
	if ex.responses == nil || ex.responses.req == nil || tg.Provider.Type() != "openai" {
		return nil
	}
	ra, _ := tg.Provider.(providers.ResponsesAdapter)
	return ra
}

// passThroughBody is the caller's body; a previous_response_id resolved from the gateway's
// store is expanded into the input (the upstream does not know the gateway's ids), and under
// cache isolation prompt_cache_key is scoped to the workspace (see cacheplan.ResponsesKey).
func (st *responsesState) passThroughBody(ex *Exchange, tg routing.Target) ([]byte, error) {
	body := st.req.Raw
	if ex.CacheScope != "" {
		derive := tg.Priced && tg.Price.Accepts("prompt_cache_key")
		if key := cacheplan.ResponsesKey(ex.WorkspaceID, ex.CacheScope, st.req.PromptCacheKey, st.req.Instructions, derive); key != "" {
			var err error
			if body, err = providers.SetTopLevel(body, "prompt_cache_key", strconv.AppendQuote(nil, key)); err != nil {
				return nil, err
			}
		}
	}
	if st.req.PreviousResponseID == "" {
		return body, nil
	}
	items := make([]json.RawMessage, 0, len(st.items))
	for _, it := range st.items {
		var m map[string]json.RawMessage
		if json.Unmarshal(it, &m) != nil {
			continue
		}
		switch string(m["type"]) {
		case `"reasoning"`:
			// Kept whole: its id and encrypted content belong together.
		default:
			delete(m, "id") // the gateway's item ids mean nothing upstream
		}
		b, _ := json.Marshal(m)
		items = append(items, b)
	}
	input, _ := json.Marshal(items)
	body, err := providers.SetTopLevel(body, "input", input)
	if err != nil {
		return nil, err
	}
	return providers.SetTopLevel(body, "previous_response_id", nullValue)
}

// attemptResponses makes one pass-through attempt; see Route.attempt.
// cancel ends the attempt's upstream call: a committed stream ends when its client leaves.
func (h *Route) attemptResponses(ctx context.Context, cancel context.CancelFunc, w http.ResponseWriter, r *http.Request, ex *Exchange, tg routing.Target, ra providers.ResponsesAdapter) (bool, *providers.Error) {
	st := ex.responses
	if ex.Optimizer != nil {
		ex.Optimizer.passedThrough()
	}
	body, err := st.passThroughBody(ex, tg)
	if err != nil {
		return false, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	}
	resp, err := ra.Responses(ctx, &providers.ResponsesCall{Body: body, UpstreamModel: tg.Model, Stream: st.req.Stream, Admit: ex.admitFor(tg)})
	var first []byte
	eof := false
	if err == nil && resp.Stream != nil {
		first, err = resp.Stream.Next()
		if err == io.EOF {
			err, eof = nil, true
		}
		if err == nil && !firstByte(ctx) {
			err = context.Canceled // the deadline fired as the first event came in
		}
		if err != nil {
			_ = resp.Stream.Close()
		}
	}
	if err != nil {
		return false, asProviderError(err)
	}
	out := w
	if rw, ok := w.(*responsesWriter); ok {
		rw.passthrough = true // committed: the answer is already in the Responses shape
		out = rw.ResponseWriter
	}
	ex.UpstreamRequestID = resp.UpstreamRequestID
	ex.Status = http.StatusOK
	if resp.Stream != nil {
		defer context.AfterFunc(r.Context(), cancel)()
		h.relayResponses(out, r, ex, resp, first, eof)
		return true, nil
	}
	ex.TTFB = time.Since(ex.Start)
	if resp.Usage != nil {
		ex.Usage, ex.UsageKnown = *resp.Usage, true
	}
	ex.ServedTier = servedTier(resp.Body)
	ex.Complete()
	b := resp.Body
	if span, ok, _ := providers.FindTopLevel(b, "usage"); ok && ex.CostKnown && b[span.Start] == '{' {
		b = providers.AppendToObject(b, span, "cost", []byte(catalog.MicrosToUSD(ex.CostMicros)))
	}
	st.saveUpstream(ex, b)
	hdr := out.Header()
	setUpstreamHeaders(hdr, ex)
	setCostHeaders(hdr, ex)
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	out.WriteHeader(http.StatusOK)
	_, _ = out.Write(b)
	return true, nil
}

// saveUpstream stores an upstream Response object under the upstream's own id, so a later
// previous_response_id naming it works on any provider.
func (st *responsesState) saveUpstream(ex *Exchange, response []byte) {
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(response, &probe) != nil || probe.ID == "" {
		return
	}
	st.meta.ID = probe.ID
	st.save(ex, response)
}

var terminalEvs = map[string]bool{"response.completed": true, "response.incomplete": true, "response.failed": true}

// relayResponses relays a native Responses event stream unchanged, event by event. The
// terminal event's usage is metered (the exchange completes before it is written) and its
// response stored.
func (h *Route) relayResponses(w http.ResponseWriter, r *http.Request, ex *Exchange, resp *providers.Response, first []byte, eof bool) {
	stream := resp.Stream
	defer stream.Close()
	ex.Streamed = true
	hdr := w.Header()
	setUpstreamHeaders(hdr, ex)
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	buf := getRelayBuf()
	defer func() { putRelayBuf(buf) }()
	pender, _ := stream.(providers.Pender)
	ended := false
	for payload := first; !eof; {
		var typ string
		if span, ok, _ := providers.FindTopLevel(payload, "type"); ok {
			_ = json.Unmarshal(payload[span.Start:span.End], &typ)
		}
		if terminalEvs[typ] {
			ended = true
			if span, ok, _ := providers.FindTopLevel(payload, "response"); ok {
				r := payload[span.Start:span.End]
				if us, ok, _ := providers.FindTopLevel(r, "usage"); ok {
					var u providers.ResponsesUsage
					if json.Unmarshal(r[us.Start:us.End], &u) == nil {
						ex.Usage, ex.UsageKnown = u.Normal(), true
					}
				}
				ex.ServedTier = servedTier(r)
				ex.Complete()
				if typ != "response.failed" {
					ex.responses.saveUpstream(ex, r)
				}
			}
		}
		if ex.TTFB == 0 {
			ex.TTFB = time.Since(ex.Start)
		}
		buf = append(buf[:0], "event: "...)
		buf = append(buf, typ...)
		buf = append(buf, '\n')
		buf = sse.AppendData(buf, payload)
		if _, err := w.Write(buf); err != nil {
			h.abandon(ex)
			return
		}
		ex.DeliveredTextBytes += responses.EventTextBytes(typ, payload)
		// As in relayStream: events that arrived together leave in one write.
		if pender == nil || !pender.Pending() {
			if err := rc.Flush(); err != nil {
				h.abandon(ex)
				return
			}
		}
		var err error
		payload, err = stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if r.Context().Err() != nil {
				h.abandon(ex) // the client left and its going cancelled the upstream read
				return
			}
			pe := asProviderError(err)
			ex.Partial, ex.ErrorCode = true, pe.Code
			if !ex.UsageKnown {
				estimateUsage(ex)
			}
			if c := h.logger.Check(zapcore.WarnLevel, "upstream responses stream failed after first byte"); c != nil {
				c.Write(zap.String("request_id", ex.ID), zap.String("provider", ex.Provider), zap.Error(pe.Internal))
			}
			ev, _ := json.Marshal(map[string]any{"type": "error", "code": pe.Code, "message": pe.Message, "param": nil})
			_, _ = w.Write(sse.AppendData([]byte("event: error\n"), ev))
			_ = rc.Flush()
			return
		}
	}
	_ = rc.Flush()
	if !ended {
		ex.Partial, ex.ErrorCode = true, "upstream_stream_truncated"
	}
	if !ex.UsageKnown {
		estimateUsage(ex)
	}
}
