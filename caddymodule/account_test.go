package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/payments"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// fakeStripe is a local stand-in for the payment API: it records checkout sessions.
type fakeStripe struct {
	srv      *httptest.Server
	sessions atomic.Int64
}

func newFakeStripe(t *testing.T) *fakeStripe {
	f := &fakeStripe{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/checkout/sessions" || r.Header.Get("Authorization") != "Bearer sk_test_123" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		n := f.sessions.Add(1)
		io.WriteString(w, `{"id":"cs_test_`+string(rune('0'+n))+`","url":"https://checkout.example/pay"}`)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

type accountEnv struct {
	base       string
	tl         *testLedger
	otherWS    string
	otherOwner string
	sim        *simulated.Server
	stripe     *fakeStripe
}

func startAccountEnv(t *testing.T, credits ledger.Micros) *accountEnv {
	t.Helper()
	env := &accountEnv{tl: newTestLedger(t, credits), sim: simulated.New(simulated.Options{}), stripe: newFakeStripe(t)}
	store, err := ledger.OpenSQLite(context.Background(), env.tl.db)
	if err != nil {
		t.Fatal(err)
	}
	ws, secret, err := store.CreateWorkspace(context.Background(), "other", 5*ledger.Credit)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	env.otherWS, env.otherOwner = ws.ID, secret
	up := httptest.NewServer(env.sim)
	t.Cleanup(up.Close)
	env.base = startGateway(t, env.tl.withStorage(`btl {
		provider sim simulated {
			base_url `+up.URL+`/v1
			models gpt-4o-mini
		}
		model btl-fast {
			candidates sim/gpt-4o-mini
		}
		payments stripe {
			secret_key sk_test_123
			webhook_secret whsec_test_456
			base_url `+env.stripe.srv.URL+`
		}
	}`), fullChain)
	return env
}

func call(t *testing.T, method, url, key, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func createKey(t *testing.T, base, ownerKey string, body string) (id, secret string) {
	t.Helper()
	status, raw := call(t, http.MethodPost, base+"/v1/api-keys", ownerKey, body)
	if status != http.StatusCreated {
		t.Fatalf("create key %s: %d %s", body, status, raw)
	}
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	_ = json.Unmarshal(raw, &k)
	return k.ID, k.Key
}

// TestAuthMatrix: every scope × every route × {valid, revoked, expired, unknown, other
// workspace's} key.
func TestAuthMatrix(t *testing.T) {
	env := startAccountEnv(t, 50*ledger.Credit)
	base, owner := env.base, env.tl.ownerKey
	chat := `{"model":"btl-fast","messages":[{"role":"user","content":"hi"}]}`
	type route struct {
		name, method, path, body string
		anyOf                    []string
		ok                       int
	}
	routes := []route{
		{"chat", "POST", "/v1/chat/completions", chat, []string{"inference"}, 200},
		{"models", "GET", "/v1/models", "", []string{"inference", "usage:read"}, 200},
		{"providers", "GET", "/v1/providers", "", []string{"inference", "usage:read"}, 200},
		{"usage", "GET", "/v1/usage/summary", "", []string{"usage:read"}, 200},
		{"pricing", "GET", "/v1/account/pricing", "", []string{"usage:read"}, 200},
		{"list keys", "GET", "/v1/api-keys", "", []string{"keys:write"}, 200},
		{"create key", "POST", "/v1/api-keys", `{"scopes":["%s"]}`, []string{"keys:write"}, 201},
		{"top-up", "POST", "/v1/account/top-ups", `{"amount_usd":10}`, []string{"keys:write"}, 201},
		{"unknown v1 route", "GET", "/v1/nope", "", nil, 404},
	}
	scopes := []string{"inference", "usage:read", "keys:write"}
	valid := map[string]string{}
	for _, s := range scopes {
		_, valid[s] = createKey(t, base, owner, `{"name":"`+s+`","scopes":["`+s+`"]}`)
	}
	revokedID, revoked := createKey(t, base, owner, `{"scopes":["inference","usage:read","keys:write"]}`)
	// Use it once so it is cached, then revoke: the cache must not keep it alive.
	if status, raw := call(t, "GET", base+"/v1/models", revoked, ""); status != 200 {
		t.Fatalf("fresh key: %d %s", status, raw)
	}
	if status, raw := call(t, "DELETE", base+"/v1/api-keys/"+revokedID, owner, ""); status != 200 {
		t.Fatalf("revoke: %d %s", status, raw)
	}
	_, expiring := createKey(t, base, owner, `{"scopes":["inference","usage:read","keys:write"],"expires_in":1}`)
	time.Sleep(1100 * time.Millisecond)

	for _, rt := range routes {
		for _, s := range scopes {
			body := strings.Replace(rt.body, "%s", s, 1)
			want := http.StatusForbidden
			if rt.anyOf == nil {
				want = rt.ok
			}
			for _, a := range rt.anyOf {
				if a == s {
					want = rt.ok
				}
			}
			status, raw := call(t, rt.method, base+rt.path, valid[s], body)
			if status != want {
				t.Errorf("%s with %s key: %d want %d: %s", rt.name, s, status, want, raw)
			}
		}
		for name, key := range map[string]string{"revoked": revoked, "expired": expiring, "unknown": "btl_" + strings.Repeat("A", 43), "missing": ""} {
			status, raw := call(t, rt.method, base+rt.path, key, strings.Replace(rt.body, "%s", "inference", 1))
			if status != http.StatusUnauthorized || !bytes.Contains(raw, []byte(`"code":"invalid_api_key"`)) {
				t.Errorf("%s with %s key: %d %s", rt.name, name, status, raw)
			}
		}
	}

	// Another workspace's owner key works, but only on its own data.
	status, raw := call(t, "GET", base+"/v1/usage/summary", env.otherOwner, "")
	if status != 200 || !bytes.Contains(raw, []byte(env.otherWS)) || bytes.Contains(raw, []byte(env.tl.workspace)) {
		t.Fatalf("other workspace summary: %d %s", status, raw)
	}
	myKeyID, _ := createKey(t, base, owner, `{"scopes":["inference"]}`)
	if status, raw := call(t, "DELETE", base+"/v1/api-keys/"+myKeyID, env.otherOwner, ""); status != 404 {
		t.Fatalf("other workspace revoked my key: %d %s", status, raw)
	}
	_, list := call(t, "GET", base+"/v1/api-keys", env.otherOwner, "")
	if bytes.Contains(list, []byte(myKeyID)) || bytes.Contains(list, []byte(`"key":"btl_`)) {
		t.Fatalf("key list leaks: %s", list)
	}
	// A key cannot mint scopes it does not hold.
	if status, _ := call(t, "POST", base+"/v1/api-keys", valid["keys:write"], `{"scopes":["inference"]}`); status != 403 {
		t.Fatalf("scope escalation allowed: %d", status)
	}
}

// TestCreditsAndLedger: requests are charged exactly; the balance equals grants minus the
// ledger's costs; a workspace that cannot cover a request gets 402.
func TestCreditsAndLedger(t *testing.T) {
	env := startAccountEnv(t, 1*ledger.Credit)
	base, owner := env.base, env.tl.ownerKey
	for i := range 5 {
		body := `{"model":"btl-fast","max_tokens":64,"messages":[{"role":"user","content":"question ` + string(rune('a'+i)) + `"}]}`
		if status, raw := call(t, "POST", base+"/v1/chat/completions", owner, body); status != 200 {
			t.Fatalf("chat %d: %d %s", i, status, raw)
		}
	}
	stream := `{"model":"btl-fast","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"stream please"}]}`
	if status, raw := call(t, "POST", base+"/v1/chat/completions", owner, stream); status != 200 || !bytes.Contains(raw, []byte("[DONE]")) {
		t.Fatalf("stream: %d %s", status, raw)
	}
	var sum struct {
		Balance json.Number `json:"balance_usd"`
		Total   struct {
			Requests int64       `json:"requests"`
			Cost     json.Number `json:"cost_usd"`
			Tokens   struct {
				Output int64 `json:"output"`
			} `json:"tokens"`
		} `json:"total"`
		Groups []struct {
			Key      string `json:"key"`
			Requests int64  `json:"requests"`
		} `json:"groups"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, raw := call(t, "GET", base+"/v1/usage/summary?group_by=model", owner, "")
		_ = json.Unmarshal(raw, &sum)
		if sum.Total.Requests == 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sum.Total.Requests != 6 || sum.Total.Tokens.Output == 0 || len(sum.Groups) != 1 || sum.Groups[0].Key != "btl-fast" {
		t.Fatalf("summary: %+v", sum)
	}
	cost, _ := sum.Total.Cost.Float64()
	bal, _ := sum.Balance.Float64()
	if cost <= 0 || bal+cost < 0.999999 || bal+cost > 1.000001 {
		t.Fatalf("balance %v + cost %v != 1 credit", bal, cost)
	}

	// A request whose worst case exceeds the balance is refused before it reaches the upstream.
	before := env.sim.Stats().Requests
	big := `{"model":"btl-fast","max_tokens":16000000,"messages":[{"role":"user","content":"expensive"}]}`
	status, raw := call(t, "POST", base+"/v1/chat/completions", owner, big)
	if status != http.StatusPaymentRequired || !bytes.Contains(raw, []byte(`"code":"insufficient_quota"`)) {
		t.Fatalf("402 expected: %d %s", status, raw)
	}
	if env.sim.Stats().Requests != before {
		t.Fatal("a refused request reached the upstream")
	}

	// Pricing shows the slug's rates and the balance.
	_, raw = call(t, "GET", base+"/v1/account/pricing", owner, "")
	if !bytes.Contains(raw, []byte(`"model":"btl-fast"`)) || !bytes.Contains(raw, []byte(`"input_per_1m_usd":0.150000`)) || !bytes.Contains(raw, []byte(`"balance_usd"`)) {
		t.Fatalf("pricing: %s", raw)
	}
}

// TestTopUpAndWebhook: a checkout is created at the payment API; a signed webhook credits the
// workspace once; a replay and a forged signature change nothing.
func TestTopUpAndWebhook(t *testing.T) {
	env := startAccountEnv(t, 0)
	base, owner := env.base, env.tl.ownerKey
	status, raw := call(t, "POST", base+"/v1/account/top-ups", owner, `{"amount_usd":12.5}`)
	if status != 201 || !bytes.Contains(raw, []byte(`"url":"https://checkout.example/pay"`)) || env.stripe.sessions.Load() != 1 {
		t.Fatalf("top-up: %d %s", status, raw)
	}
	if status, _ := call(t, "POST", base+"/v1/account/top-ups", owner, `{"amount_usd":-3}`); status != 400 {
		t.Fatalf("negative top-up: %d", status)
	}
	event := []byte(`{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"id":"cs_1","payment_status":"paid","amount_total":1250,"currency":"usd","client_reference_id":"` + env.tl.workspace + `","metadata":{"workspace_id":"` + env.tl.workspace + `"}}}}`)
	post := func(sig string) (int, []byte) {
		req, _ := http.NewRequest("POST", base+"/v1/billing/webhook", bytes.NewReader(event))
		req.Header.Set("Stripe-Signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if status, raw := post(payments.Sign("whsec_wrong", event, time.Now())); status != 400 {
		t.Fatalf("forged webhook: %d %s", status, raw)
	}
	var wg sync.WaitGroup
	for range 5 { // the provider retries; concurrently, even
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, raw := post(payments.Sign("whsec_test_456", event, time.Now())); status != 200 {
				t.Errorf("webhook: %d %s", status, raw)
			}
		}()
	}
	wg.Wait()
	_, raw = call(t, "GET", base+"/v1/account/pricing", owner, "")
	if !bytes.Contains(raw, []byte(`"balance_usd":12.500000`)) {
		t.Fatalf("balance after top-up: %s", raw)
	}
}

// TestWebhookCreditsOncePerPayment (issue 13 item 15): the provider sends several events for
// one checkout (completed, async_payment_succeeded, a re-send with a new event id); the
// workspace is credited once. An amount_total that overflows is a 400 and credits nothing.
func TestWebhookCreditsOncePerPayment(t *testing.T) {
	env := startAccountEnv(t, 0)
	base, owner, ws := env.base, env.tl.ownerKey, env.tl.workspace
	post := func(event string) (int, []byte) {
		req, _ := http.NewRequest("POST", base+"/v1/billing/webhook", strings.NewReader(event))
		req.Header.Set("Stripe-Signature", payments.Sign("whsec_test_456", []byte(event), time.Now()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	session := `{"id":"cs_77","payment_status":"paid","amount_total":2000,"currency":"usd","payment_intent":"pi_77","metadata":{"workspace_id":"` + ws + `"}}`
	for _, ev := range []string{
		`{"id":"evt_1","type":"checkout.session.completed","data":{"object":` + session + `}}`,
		`{"id":"evt_2","type":"checkout.session.async_payment_succeeded","data":{"object":` + session + `}}`,
		`{"id":"evt_3","type":"checkout.session.completed","data":{"object":` + session + `}}`,
	} {
		if status, raw := post(ev); status != 200 {
			t.Fatalf("webhook: %d %s", status, raw)
		}
	}
	for _, amount := range []string{"922337203685477", "99999999999999999999999"} {
		ev := `{"id":"evt_big` + amount[:3] + `","type":"checkout.session.completed","data":{"object":{"id":"cs_big","payment_status":"paid","amount_total":` + amount + `,"currency":"usd","metadata":{"workspace_id":"` + ws + `"}}}}`
		if status, raw := post(ev); status != 400 || !bytes.Contains(raw, []byte(`"error"`)) {
			t.Fatalf("amount_total %s: %d %s", amount, status, raw)
		}
	}
	_, raw := call(t, "GET", base+"/v1/account/pricing", owner, "")
	if !bytes.Contains(raw, []byte(`"balance_usd":20.000000`)) {
		t.Fatalf("one payment of $20 must credit $20 once: %s", raw)
	}
}

// TestWorkspacePrices: a workspace with negotiated prices pays them; others pay list.
func TestWorkspacePrices(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	file := filepath.Join(tl.dir, "acme-prices.json")
	if err := os.WriteFile(file, []byte(`{"as_of":"2026-11-01","models":{"gpt-4o-mini":{"input":0.10,"cached_input":0.05,"output":0.40,"context":128000,"max_output":16384}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(simulated.New(simulated.Options{}))
	defer up.Close()
	base := startGateway(t, tl.withStorage(`btl {
		workspace_prices `+tl.workspace+` `+file+`
		provider sim simulated {
			base_url `+up.URL+`/v1
			models gpt-4o-mini
		}
	}`), fullChain)
	status, raw := call(t, "GET", base+"/v1/account/pricing", tl.ownerKey, "")
	if status != 200 || !bytes.Contains(raw, []byte(`"input_per_1m_usd":0.100000`)) || !bytes.Contains(raw, []byte(`"output_per_1m_usd":0.400000`)) {
		t.Fatalf("negotiated pricing: %d %s", status, raw)
	}
	st, hdr, _, body := postRaw(t, base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"price me"}]}`))
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	var resp struct {
		Usage struct {
			Prompt     int64 `json:"prompt_tokens"`
			Completion int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	_ = json.Unmarshal(body, &resp)
	want := (resp.Usage.Prompt*100_000 + resp.Usage.Completion*400_000 + 500_000) / 1_000_000
	if got := usdToMicros(t, hdr.Get("X-Btl-Cost-Usd")); int64(got) != want {
		t.Fatalf("cost %d µ$, want %d at negotiated prices", got, want)
	}
}
