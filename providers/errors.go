package providers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Class says what the gateway may do after an upstream failure (reference providers.md §9).
type Class int

const (
	// ClassClient is the caller's fault: return it, never retry or fail over.
	ClassClient Class = iota
	// ClassRetryable is transient: retry the same target with backoff, then fail over.
	ClassRetryable
	// ClassFailover means this target cannot serve the call (credentials, quota, model missing):
	// try the next target, never the same one again.
	ClassFailover
	// ClassConfig is a gateway-side bug such as a bad signature: 502, no retry.
	ClassConfig
)

func (c Class) String() string {
	switch c {
	case ClassRetryable:
		return "retryable"
	case ClassFailover:
		return "failover"
	case ClassConfig:
		return "config"
	default:
		return "client"
	}
}

// Error is an OpenAI-style error with what the gateway needs to act on it. Message is safe to
// show the client; Internal is for the log only (upstream bodies, dial errors).
type Error struct {
	Status     int
	Type       string
	Code       string
	Param      string
	Message    string
	Class      Class
	RetryAfter time.Duration
	// UpstreamRequestID is the provider's own request id, surfaced in a response header.
	UpstreamRequestID string
	Internal          error
}

func (e *Error) Error() string {
	if e.Internal != nil {
		return fmt.Sprintf("%d %s: %s (%v)", e.Status, e.Type, e.Message, e.Internal)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

func (e *Error) Unwrap() error { return e.Internal }

// Errorf builds a client-facing error with the OpenAI type that matches the status.
func Errorf(status int, code, param, format string, args ...any) *Error {
	return &Error{Status: status, Type: TypeForStatus(status), Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// TypeForStatus is OpenAI's error type for a status code.
func TypeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed, http.StatusUnprocessableEntity:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusPaymentRequired:
		return "insufficient_quota"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	default:
		return "server_error"
	}
}

type envelope struct {
	Error envelopeBody `json:"error"`
}

type envelopeBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Envelope renders the OpenAI error body with all four keys present.
func (e *Error) Envelope() []byte {
	b, _ := json.Marshal(envelope{Error: envelopeBody{
		Message: e.Message, Type: e.Type, Param: nullable(e.Param), Code: nullable(e.Code),
	}})
	return b
}

// WriteError writes the error as an OpenAI envelope with its status and Retry-After.
func WriteError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.Envelope())
}

// ParseRetryAfter reads Retry-After (seconds or HTTP date) and OpenAI's retry-after-ms.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	if ms := h.Get("Retry-After-Ms"); ms != "" {
		if f, err := strconv.ParseFloat(ms, 64); err == nil && f > 0 {
			return time.Duration(f * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
