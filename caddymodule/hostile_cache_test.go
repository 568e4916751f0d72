package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// TestHostileCrossTenantPromptCache: every workspace reaches the providers through the
// operator's one upstream key, and providers cache per key. Tenant B must not be able to
// confirm tenant A's confidential system prompt from the cached tokens its own request
// reports — not through the markers the gateway adds (Anthropic), not with markers of its own,
// and not by naming A's prompt_cache_key (OpenAI). Each probe is a tenant's first request to
// that provider, so it can only read what another tenant wrote. With cache_isolation off (a single-tenant
// deployment) the same probe does read A's cache: the control that shows the test can fail.
func TestHostileCrossTenantPromptCache(t *testing.T) {
	secret := "CONFIDENTIAL underwriting rules of tenant A. " + strings.Repeat("Approve when the debt ratio stays under 0.31 and the region is not flagged. ", 90)
	for _, isolation := range []string{"workspace", "off"} {
		t.Run("cache_isolation "+isolation, func(t *testing.T) {
			sim := simulated.New(simulated.Options{})
			up := httptest.NewServer(sim)
			t.Cleanup(up.Close)
			tl := newTestLedger(t, 10*ledger.Credit)
			// B probes with the gateway's markers, C with markers of its own (a tenant's probe
			// must not find its own earlier probe in the cache).
			keyB, keyC := tl.tenant(t, "tenant B"), tl.tenant(t, "tenant C")
			site := "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tcache_isolation " + isolation + "\n\t}\n\tbtl_route\n"
			base := startGateway(t, tl.withStorage(`btl {
		provider anth anthropic {
			base_url `+up.URL+`
			api_key sk-ant-operator
		}
		provider oai openai {
			base_url `+up.URL+`/v1
			api_key sk-operator
			models gpt-4.1
		}
	}`), site)
			cached := func(key, model, user string, extra ...option.RequestOption) int64 {
				t.Helper()
				c := openai.NewClient(append([]option.RequestOption{option.WithBaseURL(base + "/v1"), option.WithAPIKey(key), option.WithMaxRetries(0)}, extra...)...)
				resp, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(20),
					Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(secret), openai.UserMessage(user)}})
				if err != nil {
					t.Fatal(err)
				}
				return resp.Usage.PromptTokensDetails.CachedTokens
			}
			leaks := func(probe int64, how string) {
				t.Helper()
				if isolation == "off" && probe == 0 {
					t.Fatalf("control: without isolation the probe (%s) should read A's cache", how)
				}
				if isolation != "off" && probe != 0 {
					t.Fatalf("tenant B confirmed A's system prompt (%s): %d cached tokens", how, probe)
				}
			}

			// Anthropic: A's prompt is cached by the gateway's markers (A's own second call reads it).
			cached(tl.ownerKey, "anth/claude-sonnet-4-5", "first question")
			if n := cached(tl.ownerKey, "anth/claude-sonnet-4-5", "second question"); n < 1024 {
				t.Fatalf("A's own prompt is not cached (%d): the probe below would prove nothing", n)
			}
			leaks(cached(keyB, "anth/claude-sonnet-4-5", "probe"), "gateway markers")
			// C's own marker on the guessed prompt.
			probe := fmt.Sprintf(`{"model":"anth/claude-sonnet-4-5","max_tokens":20,"messages":[{"role":"system","content":[{"type":"text","text":%q,"cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"probe"}]}`, secret)
			leaks(rawCached(t, base, keyC, probe), "caller markers")

			// OpenAI: automatic caching routed by prompt_cache_key; B names the key A used.
			withKey := option.WithJSONSet("prompt_cache_key", "support-bot")
			cached(tl.ownerKey, "oai/gpt-4.1", "first question", withKey)
			if n := cached(tl.ownerKey, "oai/gpt-4.1", "second question", withKey); n < 1024 {
				t.Fatalf("A's own OpenAI prompt is not cached (%d)", n)
			}
			leaks(cached(keyB, "oai/gpt-4.1", "probe", withKey), "A's prompt_cache_key")
		})
	}
}

// rawCached posts a raw chat body and returns the cached tokens it reports.
func rawCached(t *testing.T, base, key, body string) int64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var c openai.ChatCompletion
	if resp.StatusCode != 200 || c.UnmarshalJSON(raw) != nil {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	return c.Usage.PromptTokensDetails.CachedTokens
}

// TestHostileCalibrationStaysInItsWorkspace: the prompt calibration that bills a stream cut
// before its usage arrived (and bounds credit reservations) is learned per workspace. Tenant A
// sends prompts its upstream counts at twice the gateway's estimate; tenant B's cut stream on
// the same model is then billed at B's own rate, not at what A's traffic taught.
func TestHostileCalibrationStaysInItsWorkspace(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		prompt := len(b) / 4
		if strings.Contains(string(b), "DENSE") {
			prompt = len(b) / 2 // tenant A's prompts tokenize densely
		}
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"calib-ws-model","choices":[{"index":0,"delta":{"role":"assistant","content":"partial"},"finish_reason":null}]}`+"\n\n")
			return // cut: no finish, no usage
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","created":1,"model":"calib-ws-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":1,"total_tokens":%d}}`, prompt, prompt+1)
	}))
	defer up.Close()
	base, tl := gatewayBefore(t, up.URL, "calib-ws-model")
	store, err := ledger.OpenSQLite(context.Background(), tl.db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	wsB, keyB, err := store.CreateWorkspace(context.Background(), "tenant B", 10*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	post := func(key, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	dense := `{"model":"up/calib-ws-model","max_tokens":50,"messages":[{"role":"user","content":"DENSE ` + strings.Repeat("How are refunds issued for annual plans? ", 40) + `"}]}`
	for range 5 {
		post(tl.ownerKey, dense)
	}
	stream := `{"model":"up/calib-ws-model","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("How are refunds issued for annual plans? ", 40) + `"}]}`
	post(keyB, stream)
	rows := waitRows(t, store, wsB.ID, 1, 5*time.Second)
	if len(rows) != 1 {
		t.Fatalf("%d rows for B", len(rows))
	}
	naive := int64(len(stream)+3) / 4
	if got := rows[0].InputUncached; got > naive*12/10 {
		t.Fatalf("B's cut stream billed %d input tokens, at A's learned rate; B's own estimate is about %d", got, naive)
	}
}
