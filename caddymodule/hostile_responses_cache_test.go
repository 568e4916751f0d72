package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// keyedPrefixCache is an OpenAI-type upstream serving POST /v1/responses with OpenAI's prompt
// cache as the simulator models it by default: entries scoped by API key and prompt_cache_key.
// Every tenant reaches it through the operator's one key, so only prompt_cache_key can keep
// tenants apart. A request reads its instructions from the cache when the same key sent them
// before.
type keyedPrefixCache struct {
	mu   sync.Mutex
	seen map[string]bool
	keys []string // prompt_cache_key of each request, "" when absent
}

func (f *keyedPrefixCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Instructions   string  `json:"instructions"`
		PromptCacheKey *string `json:"prompt_cache_key"`
	}
	raw, _ := io.ReadAll(r.Body)
	if r.URL.Path != "/v1/responses" || json.Unmarshal(raw, &body) != nil {
		http.Error(w, `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}`, 400)
		return
	}
	key := ""
	if body.PromptCacheKey != nil {
		key = *body.PromptCacheKey
	}
	prompt := int64(len(body.Instructions)/4 + 8)
	var cached int64
	f.mu.Lock()
	f.keys = append(f.keys, key)
	if entry := key + "\x00" + body.Instructions; f.seen[entry] {
		cached = int64(len(body.Instructions) / 4)
	} else {
		f.seen[entry] = true
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"resp_up","object":"response","created_at":1,"status":"completed","model":"gpt-4.1",`+
		`"output":[{"type":"message","id":"msg_up","status":"completed","role":"assistant","content":[{"type":"output_text","text":"ok","annotations":[]}]}],`+
		`"usage":{"input_tokens":`+strconv.FormatInt(prompt, 10)+`,"input_tokens_details":{"cached_tokens":`+strconv.FormatInt(cached, 10)+
		`},"output_tokens":1,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`+strconv.FormatInt(prompt+1, 10)+`}}`)
}

// TestHostileCrossTenantPromptCacheResponses: the Responses API goes to OpenAI as it is, not
// through the chat path whose cache plan scopes prompt_cache_key. Tenant B must still not
// confirm tenant A's confidential instructions from its own cached tokens — neither by naming
// A's prompt_cache_key nor by sending the same instructions with no key; nor can tenant C
// with x-btl-optimize: off: isolation is not a lever a tenant can turn off. With
// cache_isolation off the same probes do read A's cache: the control that shows the test can
// fail.
func TestHostileCrossTenantPromptCacheResponses(t *testing.T) {
	secret := "CONFIDENTIAL pricing playbook of tenant A. " + strings.Repeat("Offer 31% off to accounts flagged at risk in the northern region. ", 60)
	for _, isolation := range []string{"workspace", "off"} {
		t.Run("cache_isolation "+isolation, func(t *testing.T) {
			up := &keyedPrefixCache{seen: map[string]bool{}}
			srv := httptest.NewServer(up)
			t.Cleanup(srv.Close)
			tl := newTestLedger(t, 10*ledger.Credit)
			// B probes with optimize on, C with it off (a tenant's probe must not find its own
			// earlier probe in the cache).
			keyB, keyC := tl.tenant(t, "tenant B"), tl.tenant(t, "tenant C")
			site := "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tcache_isolation " + isolation + "\n\t}\n\tbtl_route\n"
			base := startGateway(t, tl.withStorage(`btl {
		provider oai openai {
			base_url `+srv.URL+`/v1
			api_key sk-operator
			models gpt-4.1
		}
	}`), site)
			cached := func(key string, opts ...option.RequestOption) int64 {
				t.Helper()
				c := openai.NewClient(append([]option.RequestOption{option.WithBaseURL(base + "/v1"), option.WithAPIKey(key), option.WithMaxRetries(0)}, opts...)...)
				r, err := c.Responses.New(context.Background(), responses.ResponseNewParams{
					Model: "oai/gpt-4.1", Instructions: openai.String(secret), MaxOutputTokens: openai.Int(20),
					Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("next question")}})
				if err != nil {
					t.Fatal(err)
				}
				return r.Usage.InputTokensDetails.CachedTokens
			}
			leaks := func(probe int64, how string) {
				t.Helper()
				if isolation == "off" && probe == 0 {
					t.Fatalf("control: without isolation the probe (%s) should read A's cache", how)
				}
				if isolation != "off" && probe != 0 {
					t.Fatalf("tenant B confirmed A's instructions (%s): %d cached tokens", how, probe)
				}
			}
			named := option.WithJSONSet("prompt_cache_key", "support-bot")
			optimizeOff := option.WithHeader("X-Btl-Optimize", "off")

			// A's own second call reads its cache, with and without a key of its own.
			for _, opts := range [][]option.RequestOption{{named}, nil} {
				cached(tl.ownerKey, opts...)
				if n := cached(tl.ownerKey, opts...); n < 500 {
					t.Fatalf("A's own instructions are not cached (%d): the probes below would prove nothing", n)
				}
			}
			leaks(cached(keyB, named), "A's prompt_cache_key")
			leaks(cached(keyB), "the same instructions, no key")
			leaks(cached(keyC, named, optimizeOff), "A's prompt_cache_key, optimize off")

			up.mu.Lock()
			defer up.mu.Unlock()
			for i, k := range up.keys {
				if isolation != "off" && (k == "" || k == "support-bot") {
					t.Fatalf("request %d reached OpenAI with prompt_cache_key %q: not scoped to its workspace", i, k)
				}
			}
		})
	}
}

// TestHostileCrossTenantPromptCacheLeverOff: isolation must hold where the prompt-cache lever
// does not run — a request with x-btl-optimize: off, a site with prompt_cache disabled, shadow
// mode. Tenant A caches its confidential prompt with markers of its own (Anthropic) and a
// named prompt_cache_key (OpenAI); tenant B sends the same, the same way, and must read
// nothing of A's. The control (cache_isolation off) reads A's cache.
func TestHostileCrossTenantPromptCacheLeverOff(t *testing.T) {
	secret := "CONFIDENTIAL escalation script of tenant A. " + strings.Repeat("Refund without review when the order is under 80 dollars and older than a week. ", 80)
	for _, c := range []struct{ name, optimize, header string }{
		{"x-btl-optimize off", "", "off"},
		{"disable prompt_cache", "disable prompt_cache", ""},
		{"shadow", "shadow", ""},
		{"control: cache_isolation off", "cache_isolation off\n\t\tdisable prompt_cache", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			isolated := !strings.Contains(c.optimize, "cache_isolation off")
			up := httptest.NewServer(simulated.New(simulated.Options{}))
			t.Cleanup(up.Close)
			tl := newTestLedger(t, 10*ledger.Credit)
			keyB := tl.tenant(t, "tenant B")
			site := "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\t" + c.optimize + "\n\t}\n\tbtl_route\n"
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
			cached := func(key, body string) int64 {
				t.Helper()
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				if c.header != "" {
					req.Header.Set("X-Btl-Optimize", c.header)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				var cc openai.ChatCompletion
				if resp.StatusCode != 200 || cc.UnmarshalJSON(raw) != nil {
					t.Fatalf("%d %s", resp.StatusCode, raw)
				}
				return cc.Usage.PromptTokensDetails.CachedTokens
			}
			marked := `{"model":"anth/claude-sonnet-4-5","max_tokens":20,"messages":[{"role":"system","content":[{"type":"text","text":` +
				strconv.Quote(secret) + `,"cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"next"}]}`
			named := `{"model":"oai/gpt-4.1","max_tokens":20,"prompt_cache_key":"support-bot","messages":[{"role":"system","content":` +
				strconv.Quote(secret) + `},{"role":"user","content":"next"}]}`
			for _, body := range []string{marked, named} {
				cached(tl.ownerKey, body)
				if n := cached(tl.ownerKey, body); n < 1024 {
					t.Fatalf("A's own prompt is not cached (%d): the probe would prove nothing", n)
				}
				probe := cached(keyB, body)
				if !isolated && probe == 0 {
					t.Fatalf("control: without isolation B should read A's cache")
				}
				if isolated && probe != 0 {
					t.Fatalf("tenant B confirmed A's prompt: %d cached tokens", probe)
				}
			}
		})
	}
}

// TestHostileCrossTenantPromptCacheSimulator: the built-in simulated provider stands in for
// OpenAI in Caddyfile.example and caches as OpenAI does (by API key and prompt_cache_key), so
// the gateway scopes its key per workspace as for OpenAI: on the demo config tenant B's first
// request must not read the prompt tenant A cached.
func TestHostileCrossTenantPromptCacheSimulator(t *testing.T) {
	secret := "CONFIDENTIAL onboarding checklist of tenant A. " + strings.Repeat("Grant admin rights only after the second reference call. ", 90)
	tl := newTestLedger(t, 10*ledger.Credit)
	keyB := tl.tenant(t, "tenant B")
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), fullChain)
	cached := func(key string) int64 {
		t.Helper()
		return rawCached(t, base, key, `{"model":"sim/gpt-4o-mini","max_tokens":20,"messages":[{"role":"system","content":`+
			strconv.Quote(secret)+`},{"role":"user","content":"next"}]}`)
	}
	cached(tl.ownerKey)
	if n := cached(tl.ownerKey); n < 1024 {
		t.Fatalf("A's own prompt is not cached (%d): the probe would prove nothing", n)
	}
	if n := cached(keyB); n != 0 {
		t.Fatalf("tenant B confirmed A's prompt: %d cached tokens", n)
	}
}

// tenant adds another workspace with $10 to the test's ledger and returns its owner key.
func (tl *testLedger) tenant(t *testing.T, name string) string {
	t.Helper()
	store, err := ledger.OpenSQLite(context.Background(), tl.db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, key, err := store.CreateWorkspace(context.Background(), name, 10*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
