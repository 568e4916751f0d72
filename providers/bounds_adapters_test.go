package providers_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
	_ "github.com/badtheorylabs/btl-runtime/providers/anthropic"
	_ "github.com/badtheorylabs/btl-runtime/providers/bedrock"
	_ "github.com/badtheorylabs/btl-runtime/providers/gemini"
	_ "github.com/badtheorylabs/btl-runtime/providers/openai"
)

// TestMoneyAdaptersAdmitWhatTheySend: every adapter reports the bounds of the request it
// built — after its own rewrites, such as Anthropic's thinking budget added to max_tokens —
// before it sends anything, and a refusal means no upstream call at all.
func TestMoneyAdaptersAdmitWhatTheySend(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, `{"error":{"message":"unexpected"}}`, http.StatusTeapot)
	}))
	defer up.Close()
	cases := []struct {
		cfg   providers.Config
		model string
		body  string
		want  providers.Bounds
	}{
		{providers.Config{Name: "o", Type: "openai", BaseURL: up.URL + "/v1", APIKey: "k"}, "gpt-4o",
			`{"model":"x","messages":[{"role":"user","content":"hi"}],"max_tokens":50,"n":3,"service_tier":"priority"}`, providers.Bounds{MaxTokens: 50, Choices: 3, ServiceTier: "priority"}},
		{providers.Config{Name: "c", Type: "openai_compatible", BaseURL: up.URL + "/v1"}, "llama",
			`{"model":"x","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":7}`, providers.Bounds{MaxTokens: 7, Choices: 1}},
		{providers.Config{Name: "a", Type: "anthropic", BaseURL: up.URL, APIKey: "k"}, "claude-sonnet-4-5",
			`{"model":"x","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"reasoning_effort":"high"}`, providers.Bounds{MaxTokens: 16385, Choices: 1}},
		{providers.Config{Name: "a", Type: "anthropic", BaseURL: up.URL, APIKey: "k"}, "claude-sonnet-4-5",
			`{"model":"x","messages":[{"role":"user","content":"hi"}]}`, providers.Bounds{MaxTokens: 8192, Choices: 1}},
		{providers.Config{Name: "b", Type: "bedrock", BaseURL: up.URL, Options: map[string]string{"region": "us-east-1", "access_key_id": "AKID", "secret_access_key": "secret"}},
			"anthropic.claude-sonnet-4-5-20250929-v1:0", `{"model":"x","messages":[{"role":"user","content":"hi"}],"max_tokens":40}`, providers.Bounds{MaxTokens: 40, Choices: 1}},
		{providers.Config{Name: "g", Type: "gemini", BaseURL: up.URL, APIKey: "k"}, "gemini-2.5-flash",
			`{"model":"x","messages":[{"role":"user","content":"hi"}]}`, providers.Bounds{Choices: 1}},
	}
	refused := errors.New("refused")
	for _, c := range cases {
		a, err := providers.New(c.cfg, up.Client())
		if err != nil {
			t.Fatalf("%s: %v", c.cfg.Type, err)
		}
		req, perr := providers.ParseChatRequest([]byte(c.body))
		if perr != nil {
			t.Fatal(perr)
		}
		var got providers.Bounds
		calls := 0
		_, err = a.Chat(context.Background(), &providers.Call{Request: req, Body: req.Body, UpstreamModel: c.model,
			Admit: func(b providers.Bounds) error { got, calls = b, calls+1; return refused }})
		if !errors.Is(err, refused) || calls != 1 || got != c.want {
			t.Errorf("%s %s: err %v, %d admissions of %+v, want one of %+v", c.cfg.Type, c.body, err, calls, got, c.want)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d upstream calls made although admission was refused", n)
	}
	// The Responses pass-through reports the body as sent.
	a, _ := providers.New(providers.Config{Name: "o", Type: "openai", BaseURL: up.URL + "/v1", APIKey: "k"}, up.Client())
	var got providers.Bounds
	_, err := a.(providers.ResponsesAdapter).Responses(context.Background(), &providers.ResponsesCall{
		Body: []byte(`{"model":"x","input":"hi","max_output_tokens":64,"service_tier":"flex"}`), UpstreamModel: "o3",
		Admit: func(b providers.Bounds) error { got = b; return refused }})
	if !errors.Is(err, refused) || got != (providers.Bounds{MaxTokens: 64, Choices: 1, ServiceTier: "flex"}) || hits.Load() != 0 {
		t.Fatalf("responses: %v %+v %d", err, got, hits.Load())
	}
}
