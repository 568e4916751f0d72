package handlers

import (
	"strings"
	"testing"
)

func TestUnknownURLHints(t *testing.T) {
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/chat/completions", "add /v1 to your client's base URL (did you mean /v1/chat/completions?)"},
		{"GET", "/models/gpt-4o", "did you mean /v1/models/gpt-4o?"},
		{"POST", "/V1/Chat/Completions", "lower-case and start with a single /v1/ (did you mean /v1/chat/completions?)"},
		{"POST", "//v1//embeddings", "did you mean /v1/embeddings?"},
		{"GET", "/favicon.ico", "Unknown request URL: GET /favicon.ico."},
		{"GET", "/v1/nothing", "Unknown request URL: GET /v1/nothing."},
	} {
		e := unknownURL(c.method, c.path)
		if e.Status != 404 || e.Code != "unknown_url" || e.Type != "invalid_request_error" || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s %s: %+v", c.method, c.path, e)
		}
	}
	if strings.Contains(unknownURL("GET", "/favicon.ico").Message, "did you mean") {
		t.Error("a hint for a path that is no API path")
	}
}
