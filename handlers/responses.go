package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/responses"
)

// OpenAI Responses API (POST /v1/responses) over every provider. The request is translated
// into a chat-completions body when it is first read (LoadChatRequest), so the meter, the
// optimizer and the router handle it exactly like a chat completion: one code path. The
// answer is translated back by responsesWriter, a ResponseWriter wrapper that turns the
// chat.completion JSON into a Response object and the chat.completion.chunk stream into the
// Responses event ladder. Responses are stored per workspace (store, default true) so that
// GET/DELETE /v1/responses/{id}, its input_items and previous_response_id work on any
// provider: the conversation is rebuilt from stored inputs and outputs.
const PathResponses = "/v1/responses"

// DefaultResponsesRetention is how long stored responses are kept when the config says
// nothing (OpenAI keeps them 30 days).
const DefaultResponsesRetention = 30 * 24 * time.Hour

// responsesRetainer is implemented by a Runtime with a configured retention.
type responsesRetainer interface {
	ResponsesRetention() time.Duration
}

// responsesState is one Responses request: the request, its effective input (inherited
// conversation plus its own items) and where to store the result.
type responsesState struct {
	store     ledger.Store
	retention time.Duration
	logger    *zap.Logger

	req   *responses.Request
	items []json.RawMessage
	meta  responses.Meta
}

// startResponses marks the exchange as a Responses request; the first handler to see it
// (meter or route) does it, before the body is read.
func (ex *Exchange) startResponses(rt Runtime, logger *zap.Logger) {
	if ex.responses != nil {
		return
	}
	st := &responsesState{retention: DefaultResponsesRetention, logger: logger}
	if l := rt.Ledger(); l != nil {
		st.store = l.Store
	}
	if rr, ok := rt.(responsesRetainer); ok && rr.ResponsesRetention() > 0 {
		st.retention = rr.ResponsesRetention()
	}
	st.meta = responses.Meta{ID: "resp_" + strings.TrimPrefix(ex.ID, "req_"), CreatedAt: ex.Start.Unix()}
	ex.responses = st
}

// load reads the Responses body and returns its chat translation. previous_response_id is
// resolved in the caller's workspace.
func (st *responsesState) load(r *http.Request, ex *Exchange, maxBody int64) (*providers.ChatRequest, *providers.Error) {
	body, perr := readBody(r, maxBody)
	if perr != nil {
		return nil, perr
	}
	req, err := responses.Parse(body)
	if err != nil {
		return nil, asProviderError(err)
	}
	st.req, st.meta.Request = req, req
	items, err := responses.InputItems(req.Input)
	if err != nil {
		return nil, asProviderError(err)
	}
	var history []json.RawMessage
	if req.PreviousResponseID != "" {
		if history, perr = st.history(r.Context(), ex.WorkspaceID, req.PreviousResponseID); perr != nil {
			return nil, perr
		}
	}
	chatBody, err := req.ChatBody(history, items)
	if err != nil {
		return nil, asProviderError(err)
	}
	chat, err := providers.ParseChatRequest(chatBody)
	if err != nil {
		return nil, asProviderError(err)
	}
	st.items = append(history, withIDs(items, st.meta.ID)...)
	return chat, nil
}

// history is the conversation of a stored response: its effective input, then its output.
func (st *responsesState) history(ctx context.Context, ws, id string) ([]json.RawMessage, *providers.Error) {
	if st.store == nil || ws == "" {
		return nil, notFoundResponse(id, "previous_response_id")
	}
	sr, err := st.store.GetResponse(ctx, ws, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, notFoundResponse(id, "previous_response_id")
	}
	if err != nil {
		return nil, storeUnavailable(st.logger, err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(sr.InputItems, &items); err != nil {
		return nil, storeUnavailable(st.logger, err)
	}
	out, err := responses.OutputItems(sr.Response)
	if err != nil {
		return nil, storeUnavailable(st.logger, err)
	}
	return append(items, out...), nil
}

func notFoundResponse(id, param string) *providers.Error {
	return providers.Errorf(http.StatusNotFound, "response_not_found", param, "Response with id '%s' not found.", id)
}

func storeUnavailable(logger *zap.Logger, err error) *providers.Error {
	if logger != nil {
		if c := logger.Check(zapcore.ErrorLevel, "response store failed"); c != nil {
			c.Write(zap.Error(err))
		}
	}
	e := providers.Errorf(http.StatusServiceUnavailable, "service_unavailable", "", "stored responses are unavailable right now; retry shortly")
	e.RetryAfter = 2 * time.Second
	return e
}

// withIDs gives every input item an id (input_items lists them by id), derived from the
// response id and the item's position so that it is stable.
func withIDs(items []json.RawMessage, respID string) []json.RawMessage {
	suffix := strings.TrimPrefix(respID, "resp_")
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		out[i] = it
		if _, ok, err := providers.FindTopLevel(it, "id"); ok || err != nil {
			continue
		}
		prefix := "msg_"
		if span, ok, _ := providers.FindTopLevel(it, "type"); ok {
			switch string(it[span.Start:span.End]) {
			case `"function_call_output"`:
				prefix = "fco_"
			case `"function_call"`:
				prefix = "fc_"
			case `"message"`:
			default:
				prefix = "item_"
			}
		}
		id, _ := json.Marshal(prefix + suffix + "_" + strconv.Itoa(i))
		if b, err := providers.SetTopLevel(it, "id", id); err == nil {
			out[i] = b
		}
	}
	return out
}

var lastPurge atomic.Int64

// save stores the finished response when the request asked for it (the default). It runs
// before the client sees the response, so a follow-up with previous_response_id finds it.
func (st *responsesState) save(ex *Exchange, body []byte) {
	if st.req == nil || !st.req.Stores() || st.store == nil || ex.WorkspaceID == "" {
		return
	}
	items, _ := json.Marshal(st.items)
	if st.items == nil {
		items = []byte("[]")
	}
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := st.store.PutResponse(ctx, ledger.StoredResponse{ID: st.meta.ID, WorkspaceID: ex.WorkspaceID,
		Response: body, InputItems: items, CreatedAt: now, ExpiresAt: now.Add(st.retention)})
	if err != nil && st.logger != nil {
		st.logger.Error("stored response not saved", zap.String("request_id", ex.ID), zap.String("response_id", st.meta.ID), zap.Error(err))
	}
	// Expired rows are invisible already; purge them about hourly, off the request path.
	if last := lastPurge.Load(); now.Unix()-last > 3600 && lastPurge.CompareAndSwap(last, now.Unix()) {
		store, logger := st.store, st.logger
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := store.PurgeResponses(ctx, time.Now()); err != nil && logger != nil {
				logger.Warn("purging expired responses failed", zap.Error(err))
			}
		}()
	}
}

// serveResponses answers POST /v1/responses through the chat pipeline.
func (h *Route) serveResponses(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	ex.startResponses(h.rt, h.logger)
	if _, perr := ex.LoadChatRequest(r, h.MaxBodyBytes); perr != nil {
		writeError(w, ex, perr)
		return
	}
	rw, finish := ex.answerWriter(w)
	h.serveChat(rw, r, ex)
	finish()
}

// serveStoredResponse answers GET/DELETE /v1/responses/{id} and GET …/{id}/input_items.
func (h *Route) serveStoredResponse(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	id, sub, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, PathResponses+"/"), "/")
	if id == "" || (sub != "" && sub != "input_items") {
		writeError(w, ex, providers.Errorf(http.StatusNotFound, "unknown_url", "", "Unknown request URL: %s %s", r.Method, r.URL.Path))
		return
	}
	allow := http.MethodGet + ", " + http.MethodDelete
	if sub != "" {
		allow = http.MethodGet
	}
	if r.Method != http.MethodGet && (sub != "" || r.Method != http.MethodDelete) {
		methodNotAllowed(w, ex, allow)
		return
	}
	l := h.rt.Ledger()
	if l == nil || l.Store == nil || ex.WorkspaceID == "" {
		writeError(w, ex, notFoundResponse(id, ""))
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	if r.Method == http.MethodDelete {
		err := l.Store.DeleteResponse(ctx, ex.WorkspaceID, id)
		if errors.Is(err, ledger.ErrNotFound) {
			writeError(w, ex, notFoundResponse(id, ""))
			return
		}
		if err != nil {
			writeError(w, ex, storeUnavailable(h.logger, err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "response", "deleted": true})
		return
	}
	sr, err := l.Store.GetResponse(ctx, ex.WorkspaceID, id)
	if errors.Is(err, ledger.ErrNotFound) {
		writeError(w, ex, notFoundResponse(id, ""))
		return
	}
	if err != nil {
		writeError(w, ex, storeUnavailable(h.logger, err))
		return
	}
	if sub == "" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(sr.Response)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(sr.Response)
		return
	}
	list, perr := listInputItems(sr.InputItems, r)
	if perr != nil {
		writeError(w, ex, perr)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

type itemList struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	FirstID *string           `json:"first_id"`
	LastID  *string           `json:"last_id"`
	HasMore bool              `json:"has_more"`
}

// listInputItems pages the stored input items as OpenAI does: order desc by default, limit
// 1–100 (20), after an item id.
func listInputItems(raw []byte, r *http.Request) (*itemList, *providers.Error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, storeUnavailable(nil, err)
	}
	q := r.URL.Query()
	switch q.Get("order") {
	case "", "desc":
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	case "asc":
	default:
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", "order", "order must be asc or desc")
	}
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", "limit", "limit must be between 1 and 100")
		}
		limit = n
	}
	if after := q.Get("after"); after != "" {
		for i, it := range items {
			if itemID(it) == after {
				items = items[i+1:]
				break
			}
		}
	}
	list := &itemList{Object: "list", Data: items}
	if len(items) > limit {
		list.Data, list.HasMore = items[:limit], true
	}
	if list.Data == nil {
		list.Data = []json.RawMessage{}
	}
	if n := len(list.Data); n > 0 {
		first, last := itemID(list.Data[0]), itemID(list.Data[n-1])
		list.FirstID, list.LastID = &first, &last
	}
	return list, nil
}

func itemID(it json.RawMessage) string {
	var v struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(it, &v)
	return v.ID
}

// responsesWriter translates the chat pipeline's output into Responses API output. Errors
// (the OpenAI envelope, which the Responses API shares) pass through; a completion body is
// translated when the pipeline is done (finish); a chunk stream is translated event by
// event as it is written, never buffered beyond one partial event.
type responsesWriter struct {
	http.ResponseWriter
	ex      *Exchange
	st      *responsesState
	status  int
	stream  *responses.Stream
	pending []byte
	body    []byte
	out     []byte
	// passthrough: an OpenAI upstream answered in the Responses shape, written directly.
	passthrough bool
}

func (rw *responsesWriter) WriteHeader(code int) {
	if rw.status != 0 {
		return
	}
	rw.status = code
	hdr := rw.ResponseWriter.Header()
	switch {
	case code != http.StatusOK:
		rw.ResponseWriter.WriteHeader(code)
	case strings.HasPrefix(hdr.Get("Content-Type"), "text/event-stream"):
		hdr.Del("Content-Length")
		rw.stream = responses.NewStream(&rw.st.meta)
		rw.ResponseWriter.WriteHeader(code)
		rw.out = rw.stream.Start(rw.out[:0])
		_, _ = rw.ResponseWriter.Write(rw.out)
	default:
		hdr.Del("Content-Length") // the translated body has another length; set in finish
	}
}

func (rw *responsesWriter) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	switch {
	case rw.status != http.StatusOK:
		return rw.ResponseWriter.Write(p)
	case rw.stream == nil:
		rw.body = append(rw.body, p...)
		return len(p), nil
	}
	rw.pending = append(rw.pending, p...)
	rw.out = rw.out[:0]
	for {
		i := bytes.Index(rw.pending, eventEnd)
		if i < 0 {
			break
		}
		rw.event(rw.pending[:i])
		rw.pending = rw.pending[i+len(eventEnd):]
	}
	if len(rw.pending) == 0 {
		rw.pending = rw.pending[:0:cap(rw.pending)]
	}
	if len(rw.out) > 0 {
		if _, err := rw.ResponseWriter.Write(rw.out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

var (
	eventEnd   = []byte("\n\n")
	dataPrefix = []byte("data:")
	doneData   = []byte("[DONE]")
)

// event translates one SSE event of the chat stream.
func (rw *responsesWriter) event(ev []byte) {
	var data []byte
	for line := range bytes.SplitSeq(ev, []byte("\n")) {
		if d, ok := bytes.CutPrefix(line, dataPrefix); ok {
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(d, []byte(" "))...)
		}
	}
	switch {
	case len(data) == 0 || rw.stream.Ended():
	case bytes.Equal(data, doneData):
		var resp *responses.Response
		rw.out, resp = rw.stream.Finish(rw.out)
		if b, err := json.Marshal(resp); err == nil {
			rw.st.save(rw.ex, b)
		}
		rw.out = rw.stream.Terminal(rw.out, resp)
	case bytes.HasPrefix(data, []byte(`{"error"`)):
		rw.out = rw.stream.Fail(rw.out, inBandError(data))
	default:
		rw.out = rw.stream.Chunk(rw.out, data)
	}
}

// FlushError flushes translated stream events; a buffered completion has nothing to flush.
func (rw *responsesWriter) FlushError() error {
	if rw.status == http.StatusOK && rw.stream == nil {
		return nil
	}
	return http.NewResponseController(rw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *responsesWriter) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// finish writes the translated completion (non-stream answers only).
func (rw *responsesWriter) finish() {
	if rw.passthrough || rw.status != http.StatusOK || rw.stream != nil {
		return
	}
	resp, err := responses.FromCompletion(&rw.st.meta, rw.body, time.Now().Unix())
	var out []byte
	if err == nil {
		out, err = json.Marshal(resp)
	}
	hdr := rw.ResponseWriter.Header()
	if err != nil {
		e := providers.Errorf(http.StatusBadGateway, "upstream_bad_response", "", "the upstream answer could not be translated")
		e.Internal = err
		rw.ex.Status, rw.ex.ErrorCode = e.Status, e.Code
		providers.WriteError(rw.ResponseWriter, e)
		return
	}
	rw.st.save(rw.ex, out)
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	rw.ResponseWriter.WriteHeader(http.StatusOK)
	_, _ = rw.ResponseWriter.Write(out)
}

// inBandError reads the error envelope the chat relay writes when the upstream fails
// mid-stream.
func inBandError(data []byte) *providers.Error {
	var env struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &env)
	return &providers.Error{Status: http.StatusBadGateway, Code: env.Error.Code, Message: env.Error.Message}
}
