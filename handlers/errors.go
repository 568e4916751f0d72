package handlers

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/anthropic"
)

func asMaxBytes(err error, target **http.MaxBytesError) bool { return errors.As(err, target) }

// writeError answers with the OpenAI error envelope. The btl handlers write errors themselves
// rather than returning caddyhttp errors because API clients need the JSON envelope, not an
// error page.
func writeError(w http.ResponseWriter, ex *Exchange, e *providers.Error) {
	if ex != nil {
		ex.Status = e.Status
		ex.ErrorCode = e.Code
		if e.UpstreamRequestID != "" {
			w.Header().Set("X-Btl-Upstream-Request-Id", e.UpstreamRequestID)
		}
	}
	if ex != nil && ex.Ingress == ingressAnthropic {
		if _, translating := w.(*anthropicWriter); !translating {
			hdr := w.Header()
			hdr.Set("Content-Type", "application/json")
			if e.RetryAfter > 0 {
				hdr.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
			}
			w.WriteHeader(e.Status)
			_, _ = w.Write(anthropic.ErrorEnvelope(e))
			return
		}
	}
	providers.WriteError(w, e)
}

func methodNotAllowed(w http.ResponseWriter, ex *Exchange, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, ex, providers.Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "", "method not allowed; use %s", allow))
}

// errNotUpstream marks an error the gateway raised about a call it did not make (a refused
// admission): it says nothing about the upstream's health and is never retried elsewhere.
var errNotUpstream = errors.New("refused by the gateway before the upstream call")

// notUpstream marks e as raised by the gateway itself (see errNotUpstream).
func notUpstream(e *providers.Error) *providers.Error {
	e.Class = providers.ClassClient
	e.Internal = errNotUpstream
	return e
}

// gatewayRefusal reports whether e was raised by the gateway before any upstream call.
func gatewayRefusal(e *providers.Error) bool {
	return e != nil && errors.Is(e.Internal, errNotUpstream)
}
