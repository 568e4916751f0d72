package handlers

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Tracing: with Caddy's `tracing` directive on the site, each request carries a recording
// OpenTelemetry span, and the btl stages add child spans from the same tracer provider —
// btl.auth, btl.reserve, btl.optimize, one btl.upstream per attempt — and btl.request around
// the metered work, which ends with the model, provider, tokens, cost and cache outcome as
// attributes. Without the directive the request's span does not record and nothing is
// created: one interface call per stage.

const tracerName = "github.com/badtheorylabs/btl-runtime"

// startSpan starts a child of the request's span when that span is recording. It returns the
// request with the child in its context (the same request and a nil span when not tracing).
// Callers add attributes only when the span is not nil, so an untraced request builds none.
func startSpan(r *http.Request, name string) (*http.Request, trace.Span) {
	parent := trace.SpanFromContext(r.Context())
	if !parent.IsRecording() {
		return r, nil
	}
	ctx, span := parent.TracerProvider().Tracer(tracerName).Start(r.Context(), name)
	return r.WithContext(ctx), span
}

// endSpan ends span (nil: not tracing), marking it failed when status is an error.
func endSpan(span trace.Span, status int) {
	if span == nil {
		return
	}
	if status >= 400 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// exchangeAttributes are the facts of a completed exchange, for its btl.request span.
func exchangeAttributes(ex *Exchange) []attribute.KeyValue {
	requested := ""
	if ex.Request != nil {
		requested = ex.Request.Model
	}
	u := ex.Usage
	out := []attribute.KeyValue{
		attribute.String("btl.request_id", ex.ID),
		attribute.String("btl.model", requested),
		attribute.String("btl.provider", ex.Provider),
		attribute.String("btl.upstream_model", ex.UpstreamModel),
		attribute.String("btl.cache", ex.cacheOutcome()),
		attribute.Int("btl.attempts", ex.Attempts),
		attribute.Int64("btl.tokens.input_uncached", u.InputUncached),
		attribute.Int64("btl.tokens.cache_read", u.CacheRead),
		attribute.Int64("btl.tokens.cache_write", u.CacheWrite5m+u.CacheWrite1h),
		attribute.Int64("btl.tokens.output", u.Output),
		attribute.Int("http.response.status_code", ex.Status),
	}
	if ex.CostKnown {
		out = append(out, attribute.String("btl.cost_usd", catalog.MicrosToUSD(ex.CostMicros)),
			attribute.String("btl.baseline_usd", catalog.MicrosToUSD(ex.BaselineMicros)))
	}
	if ex.Endpoint != "" {
		out = append(out, attribute.String("btl.endpoint", ex.Endpoint))
	}
	return out
}

// optimizerAttributes are what btl_optimize did, for its btl.optimize span.
func optimizerAttributes(o *OptimizerReport) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.Int64("btl.optimize.dedupe_tokens", o.DedupeTokens+o.DedupeHistoryTokens),
		attribute.Int64("btl.optimize.compression_tokens", o.CompressionTokens),
		attribute.Bool("btl.optimize.shadow", o.Shadow),
	}
}

// upstreamSpan starts the btl.upstream span of one attempt (nil when not tracing).
func upstreamSpan(r *http.Request, provider, model string, attempt int) trace.Span {
	_, span := startSpan(r, "btl.upstream")
	if span != nil {
		span.SetAttributes(attribute.String("btl.provider", provider), attribute.String("btl.upstream_model", model),
			attribute.Int("btl.attempt", attempt))
	}
	return span
}
