package handlers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// TestCountTokensStopsWhenTheClientLeaves: a count whose request context is done (the client
// left, or the server is shutting down) stops instead of finishing the work for nobody.
func TestCountTokensStopsWhenTheClientLeaves(t *testing.T) {
	h := &Route{rt: &benchRuntime{prices: catalog.Default()}, MaxBodyBytes: DefaultMaxBody}
	body := `{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{"role":"user","content":"` + strings.Repeat("x", 1<<20) + `"}]}`
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodPost, PathCountTokens, strings.NewReader(body)).WithContext(ctx)
	rec := httptest.NewRecorder()
	h.serveCountTokens(rec, req, &Exchange{ID: "req_test"})
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "request_cancelled") {
		t.Errorf("cancelled count: %d %s", rec.Code, rec.Body)
	}

	req = httptest.NewRequest(http.MethodPost, PathCountTokens, strings.NewReader(body))
	rec = httptest.NewRecorder()
	h.serveCountTokens(rec, req, &Exchange{ID: "req_test"})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"input_tokens"`) {
		t.Errorf("count: %d %s", rec.Code, rec.Body)
	}
}
