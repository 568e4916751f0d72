package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/sse"
)

// Responses relays a Responses API request to {base_url}/responses: the body goes as the
// caller wrote it with only "model" rewritten, and the answer comes back unchanged.
func (a *Adapter) Responses(ctx context.Context, call *providers.ResponsesCall) (*providers.Response, error) {
	model, _ := json.Marshal(call.UpstreamModel)
	body, err := providers.SetTopLevel(call.Body, "model", model)
	if err != nil {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	}
	if err := providers.Admit(call.Admit, providers.ResponsesBounds(body)); err != nil {
		return nil, err
	}
	endpoint := strings.TrimSuffix(a.endpoint, "/chat/completions") + "/responses"
	resp, cancel, perr := a.roundTrip(ctx, endpoint, body, call.Stream, 0)
	if perr != nil {
		return nil, perr
	}
	out := &providers.Response{Status: resp.StatusCode, Header: keepHeaders(resp.Header), UpstreamRequestID: requestID(resp.Header)}
	if call.Stream && isEventStream(resp.Header) {
		out.Stream = newResponsesStream(resp.Body, cancel, a.timeouts.Idle)
		return out, nil
	}
	defer cancel()
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, TransportError(ctx, err)
	}
	if len(raw) > maxBody || call.Stream {
		return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_bad_response",
			Message: "the upstream answer was not usable", Class: providers.ClassRetryable}
	}
	out.Body = raw
	if span, ok, _ := providers.FindTopLevel(raw, "usage"); ok {
		var u providers.ResponsesUsage
		if json.Unmarshal(raw[span.Start:span.End], &u) == nil {
			n := u.Normal()
			out.Usage = &n
		}
	}
	return out, nil
}

// responsesStream yields Responses event payloads. The Responses API has no [DONE]: the
// stream ends with the body, after a terminal event.
type responsesStream struct {
	body   io.ReadCloser
	rd     *sse.Reader
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
	idled  atomic.Bool
	done   bool
}

func newResponsesStream(body io.ReadCloser, cancel context.CancelFunc, idle time.Duration) *responsesStream {
	s := &responsesStream{body: body, rd: sse.NewReader(body), cancel: cancel, idle: idle}
	s.timer = time.AfterFunc(idle, func() {
		s.idled.Store(true)
		cancel()
	})
	return s
}

func (s *responsesStream) Next() ([]byte, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		ev, err := s.rd.Next()
		if err != nil {
			s.done = true
			switch {
			case err == io.EOF:
				return nil, io.EOF
			case s.idled.Load():
				return nil, &providers.Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_idle_timeout",
					Message: "the upstream stream went silent", Class: providers.ClassRetryable, Internal: err}
			case errors.Is(err, context.Canceled):
				return nil, err
			}
			return nil, &providers.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_stream_error",
				Message: "the upstream stream failed", Class: providers.ClassRetryable, Internal: err}
		}
		s.timer.Reset(s.idle)
		if len(ev.Data) == 0 || bytes.Equal(ev.Data, doneMarker) {
			continue
		}
		return ev.Data, nil
	}
}

// Pending reports whether the next event has already arrived (providers.Pender).
func (s *responsesStream) Pending() bool { return !s.done && s.rd.Buffered() > 0 }

func (s *responsesStream) Close() error {
	s.timer.Stop()
	s.cancel()
	err := s.body.Close()
	s.done = true
	s.rd.Release()
	return err
}

var _ providers.ResponsesAdapter = (*Adapter)(nil)
