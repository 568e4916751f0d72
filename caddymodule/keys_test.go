package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// keysEnv is a gateway with two simulated models behind two slugs, for the key record's
// limits: btl-fast → sim/gpt-4o-mini, btl-big → sim/gpt-4o.
type keysEnv struct {
	base string
	tl   *testLedger
}

func startKeysEnv(t *testing.T, credits ledger.Micros, site string) *keysEnv {
	t.Helper()
	if site == "" {
		site = fullChain
	}
	tl := newTestLedger(t, credits)
	up := httptest.NewServer(simulated.New(simulated.Options{}))
	t.Cleanup(up.Close)
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			base_url `+up.URL+`/v1
			models gpt-4o-mini gpt-4o
		}
		model btl-fast {
			candidates sim/gpt-4o-mini
		}
		model btl-big {
			candidates sim/gpt-4o
		}
	}`), site)
	return &keysEnv{base: base, tl: tl}
}

// keyClient is the official SDK with the given key and no retries (a 429 must surface).
func keyClient(base, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func chatWith(client openai.Client, model string, maxTokens int64) (*openai.ChatCompletion, *http.Response, error) {
	var raw *http.Response
	params := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")}}
	if maxTokens > 0 {
		params.MaxTokens = openai.Int(maxTokens)
	}
	resp, err := client.Chat.Completions.New(context.Background(), params, option.WithResponseInto(&raw))
	return resp, raw, err
}

func apiErrorOf(t *testing.T, err error, status int) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) || e.StatusCode != status {
		t.Fatalf("want a %d API error, got %v", status, err)
	}
	return e
}

type keyJSON struct {
	ID           string     `json:"id"`
	Key          string     `json:"key"`
	ExpiresAt    *time.Time `json:"expires_at"`
	ParentID     *string    `json:"parent_id"`
	Models       []string   `json:"models"`
	RPM          int64      `json:"rpm"`
	TPM          int64      `json:"tpm"`
	BudgetUSD    *float64   `json:"budget_usd"`
	BudgetPeriod *string    `json:"budget_period"`
}

func mintKey(t *testing.T, base, parent, body string) keyJSON {
	t.Helper()
	status, raw := call(t, http.MethodPost, base+"/v1/api-keys", parent, body)
	if status != http.StatusCreated {
		t.Fatalf("create key %s: %d %s", body, status, raw)
	}
	var k keyJSON
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	return k
}

type errorFields struct {
	Message, Type, Param, Code string
}

func errorBody(t *testing.T, raw []byte) errorFields {
	t.Helper()
	var e struct {
		Error errorFields `json:"error"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error envelope: %s", raw)
	}
	return e.Error
}

// TestHostileChildKeyOutlivesParent: a short-lived key used to mint children that never
// expired. A child now expires no later than its parent (asked for later: 400; asked for
// nothing: the parent's expiry), and revoking the parent makes the children unusable.
func TestHostileChildKeyOutlivesParent(t *testing.T) {
	env := startKeysEnv(t, 10*ledger.Credit, "")
	base, owner := env.base, env.tl.ownerKey
	parent := mintKey(t, base, owner, `{"name":"ci","scopes":["inference","keys:write"],"expires_in":3600}`)
	if parent.ParentID != nil {
		t.Fatalf("a key minted by the owner key is a root key: parent %v", *parent.ParentID)
	}
	for _, body := range []string{
		`{"scopes":["inference"],"expires_in":86400}`,
		`{"scopes":["inference"],"expires_at":"` + time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339) + `"}`,
	} {
		status, raw := call(t, http.MethodPost, base+"/v1/api-keys", parent.Key, body)
		e := errorBody(t, raw)
		if status != http.StatusBadRequest || !strings.Contains(e.Message, "outlive") || !strings.HasPrefix(e.Param, "expires_") {
			t.Fatalf("child outliving its parent (%s): %d %s", body, status, raw)
		}
	}
	child := mintKey(t, base, parent.Key, `{"name":"job","scopes":["inference"]}`)
	if child.ExpiresAt == nil || !child.ExpiresAt.Equal(*parent.ExpiresAt) || child.ParentID == nil || *child.ParentID != parent.ID {
		t.Fatalf("child without an expiry: expires %v (parent %v), parent id %v", child.ExpiresAt, parent.ExpiresAt, child.ParentID)
	}
	grandchild := mintKey(t, base, parent.Key, `{"scopes":["inference","keys:write"],"expires_in":60}`)
	leaf := mintKey(t, base, grandchild.Key, `{"scopes":["inference"]}`)
	if leaf.ExpiresAt == nil || leaf.ExpiresAt.After(*grandchild.ExpiresAt) {
		t.Fatalf("a grandchild outlives its parent: %v vs %v", leaf.ExpiresAt, grandchild.ExpiresAt)
	}
	for _, k := range []string{child.Key, leaf.Key} {
		if _, _, err := chatWith(keyClient(base, k), "btl-fast", 0); err != nil {
			t.Fatalf("a fresh child key: %v", err)
		}
	}
	// Revoking the parent (with the owner key) revokes everything it minted, at once.
	if status, raw := call(t, http.MethodDelete, base+"/v1/api-keys/"+parent.ID, owner, ""); status != 200 {
		t.Fatalf("revoke parent: %d %s", status, raw)
	}
	for name, k := range map[string]string{"child": child.Key, "leaf": leaf.Key, "parent": parent.Key} {
		_, _, err := chatWith(keyClient(base, k), "btl-fast", 0)
		if e := apiErrorOf(t, err, http.StatusUnauthorized); !strings.Contains(e.Message, "revoked") {
			t.Fatalf("%s after revoking the parent: %v", name, e.Message)
		}
	}
	// The listing shows the cascade.
	_, raw := call(t, http.MethodGet, base+"/v1/api-keys", owner, "")
	var list struct {
		Data []struct {
			ID        string     `json:"id"`
			RevokedAt *time.Time `json:"revoked_at"`
		} `json:"data"`
	}
	_ = json.Unmarshal(raw, &list)
	revoked := 0
	for _, k := range list.Data {
		if k.RevokedAt != nil {
			revoked++
		}
	}
	if revoked != 4 {
		t.Fatalf("%d keys revoked, want the parent and its three descendants: %s", revoked, raw)
	}
}

// TestHostileRevokeOwnerKey: a keys:write-only key could revoke the owner key and lock the
// workspace out. A key may only revoke keys whose scopes it holds, and the last owner key
// (every scope, no expiry) cannot be revoked by anyone.
func TestHostileRevokeOwnerKey(t *testing.T) {
	env := startKeysEnv(t, 10*ledger.Credit, "")
	base, owner := env.base, env.tl.ownerKey
	_, raw := call(t, http.MethodGet, base+"/v1/api-keys", owner, "")
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(raw, &list)
	ownerID := list.Data[0].ID
	admin := mintKey(t, base, owner, `{"name":"key-admin","scopes":["keys:write"]}`)
	status, raw := call(t, http.MethodDelete, base+"/v1/api-keys/"+ownerID, admin.Key, "")
	if e := errorBody(t, raw); status != http.StatusForbidden || !strings.Contains(e.Message, "scope") {
		t.Fatalf("keys:write key revoking the owner: %d %s", status, raw)
	}
	if status, _ := call(t, http.MethodGet, base+"/v1/usage/summary", owner, ""); status != 200 {
		t.Fatalf("the owner key stopped working: %d", status)
	}
	// It may revoke what it covers.
	peer := mintKey(t, base, owner, `{"scopes":["keys:write"]}`)
	if status, raw := call(t, http.MethodDelete, base+"/v1/api-keys/"+peer.ID, admin.Key, ""); status != 200 {
		t.Fatalf("revoking a key with the same scopes: %d %s", status, raw)
	}
	reader := mintKey(t, base, owner, `{"scopes":["usage:read"]}`)
	if status, _ := call(t, http.MethodDelete, base+"/v1/api-keys/"+reader.ID, admin.Key, ""); status != http.StatusForbidden {
		t.Fatalf("revoking a usage:read key without usage:read: %d", status)
	}
	// Not even the owner can remove the last owner key.
	status, raw = call(t, http.MethodDelete, base+"/v1/api-keys/"+ownerID, owner, "")
	if e := errorBody(t, raw); status != http.StatusConflict || e.Code != "last_owner_key" {
		t.Fatalf("revoking the last owner key: %d %s", status, raw)
	}
	// Rotation: a second owner key, then the first can go; the keys the first minted stay.
	owner2 := mintKey(t, base, owner, `{"name":"owner 2","scopes":["inference","usage:read","keys:write"]}`)
	if status, raw := call(t, http.MethodDelete, base+"/v1/api-keys/"+ownerID, owner2.Key, ""); status != 200 {
		t.Fatalf("rotating the owner key: %d %s", status, raw)
	}
	if status, _ := call(t, http.MethodGet, base+"/v1/api-keys", admin.Key, ""); status != 200 {
		t.Fatalf("a key minted by the rotated owner key stopped working: %d", status)
	}
	if status, _ := call(t, http.MethodDelete, base+"/v1/api-keys/"+owner2.ID, owner2.Key, ""); status != http.StatusConflict {
		t.Fatalf("revoking the new last owner key: %d", status)
	}
}

// TestCreateKeyValidation: every field of POST /v1/api-keys is validated with a 400 that
// names it, unknown fields included; the overflowing expires_in of issue 13 is refused.
func TestCreateKeyValidation(t *testing.T) {
	env := startKeysEnv(t, 10*ledger.Credit, "")
	base, owner := env.base, env.tl.ownerKey
	cases := map[string]struct{ body, param string }{
		"unknown field":       {`{"scopes":["inference"],"budget":5}`, "budget"},
		"misspelled models":   {`{"model":["btl-fast"]}`, "model"},
		"expires_in overflow": {`{"expires_in":9223372036854775807}`, "expires_in"},
		"expires_in too long": {`{"expires_in":315360001}`, "expires_in"},
		"expires_in zero":     {`{"expires_in":0}`, "expires_in"},
		"expires_at past":     {`{"expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
		"both expiries":       {`{"expires_in":60,"expires_at":"2099-01-01T00:00:00Z"}`, "expires_in"},
		"budget not a number": {`{"budget_usd":"ten"}`, "budget_usd"},
		"budget negative":     {`{"budget_usd":-1}`, "budget_usd"},
		"budget sub-micro":    {`{"budget_usd":0.0000001}`, "budget_usd"},
		"budget exponent":     {`{"budget_usd":1e3}`, "budget_usd"},
		"budget too large":    {`{"budget_usd":1000000001}`, "budget_usd"},
		"period unknown":      {`{"budget_usd":5,"budget_period":"week"}`, "budget_period"},
		"period alone":        {`{"budget_period":"day"}`, "budget_period"},
		"rpm negative":        {`{"rpm":-1}`, "rpm"},
		"tpm fraction":        {`{"tpm":1.5}`, "tpm"},
		"models not a list":   {`{"models":"btl-fast"}`, "models"},
	}
	for name, c := range cases {
		status, raw := call(t, http.MethodPost, base+"/v1/api-keys", owner, c.body)
		if e := errorBody(t, raw); status != http.StatusBadRequest || e.Param != c.param {
			t.Errorf("%s: %d %s (want 400 naming %s)", name, status, raw, c.param)
		}
	}
	status, raw := call(t, http.MethodPost, base+"/v1/api-keys", owner, `{"models":["=HYPERLINK(1)"]}`)
	if status != http.StatusBadRequest || !strings.Contains(string(raw), "HYPERLINK") {
		t.Errorf("a model entry outside the charset: %d %s", status, raw)
	}
	k := mintKey(t, base, owner, `{"name":"all","scopes":["inference"],"models":["btl-fast","sim/*"],"rpm":60,"tpm":10000,"budget_usd":12.5,"budget_period":"month","expires_in":315360000}`)
	if !slices.Equal(k.Models, []string{"btl-fast", "sim/*"}) || k.RPM != 60 || k.TPM != 10000 || k.BudgetUSD == nil || *k.BudgetUSD != 12.5 ||
		k.BudgetPeriod == nil || *k.BudgetPeriod != "month" || k.ExpiresAt == nil || k.ExpiresAt.Before(time.Now().Add(9*365*24*time.Hour)) {
		t.Fatalf("created key: %+v", k)
	}
}

// TestModelAllowList: a key's models admit only what they list (a slug, provider/model,
// provider/*), refuse anything else with a 403 that names the model, and shape /v1/models.
func TestModelAllowList(t *testing.T) {
	env := startKeysEnv(t, 10*ledger.Credit, "")
	base, owner := env.base, env.tl.ownerKey
	modelsOf := func(key string) []string {
		c := keyClient(base, key)
		page, err := c.Models.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		return ids
	}
	fast := mintKey(t, base, owner, `{"scopes":["inference","keys:write"],"models":["btl-fast"]}`)
	client := keyClient(base, fast.Key)
	if _, _, err := chatWith(client, "btl-fast", 0); err != nil {
		t.Fatalf("allowed slug: %v", err)
	}
	for _, model := range []string{"btl-big", "sim/gpt-4o", "sim/gpt-4o-mini", "gpt-4o"} {
		_, _, err := chatWith(client, model, 0)
		e := apiErrorOf(t, err, http.StatusForbidden)
		if !strings.Contains(e.Message, "'"+model+"'") || e.Code != "model_not_allowed" || e.Param != "model" {
			t.Fatalf("%s outside the allow-list: %+v", model, e)
		}
	}
	if got := modelsOf(fast.Key); !slices.Equal(got, []string{"btl-fast"}) {
		t.Fatalf("models listed for a btl-fast key: %v", got)
	}

	// A provider pattern admits that provider's models, pinned or behind a slug.
	sim := mintKey(t, base, owner, `{"scopes":["inference"],"models":["sim/*"]}`)
	for _, model := range []string{"btl-fast", "btl-big", "sim/gpt-4o", "gpt-4o-mini"} {
		if _, _, err := chatWith(keyClient(base, sim.Key), model, 0); err != nil {
			t.Fatalf("%s with sim/*: %v", model, err)
		}
	}
	listed := modelsOf(sim.Key)
	for _, want := range []string{"btl-fast", "btl-big", "sim/gpt-4o", "sim/gpt-4o-mini"} {
		if !slices.Contains(listed, want) {
			t.Fatalf("sim/* key's models %v lack %s", listed, want)
		}
	}

	// A child cannot widen its parent's list, and inherits it when it names none.
	status, raw := call(t, http.MethodPost, base+"/v1/api-keys", fast.Key, `{"scopes":["inference"],"models":["btl-big"]}`)
	if status != http.StatusBadRequest || !strings.Contains(string(raw), "btl-big") {
		t.Fatalf("a child widening the allow-list: %d %s", status, raw)
	}
	child := mintKey(t, base, fast.Key, `{"scopes":["inference"]}`)
	if !slices.Equal(child.Models, []string{"btl-fast"}) {
		t.Fatalf("child's models: %v", child.Models)
	}
	_, _, err := chatWith(keyClient(base, child.Key), "btl-big", 0)
	apiErrorOf(t, err, http.StatusForbidden)

	// The Anthropic and Responses ingresses are held to the same list.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(`{"model":"btl-big","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("x-api-key", fast.Key)
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("messages with a model outside the list: %d", resp.StatusCode)
	}
	if _, err := client.Responses.New(context.Background(), responses.ResponseNewParams{Model: "btl-big",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}); err == nil {
		t.Fatal("responses with a model outside the list was served")
	} else {
		apiErrorOf(t, err, http.StatusForbidden)
	}
}

// TestKeyBudget: a key's budget_usd is enforced with the credit reservation: 402
// insufficient_quota naming the cap once spent plus in-flight reservations would pass it; the
// key's ledger rows never add up to more than the cap, even with concurrent requests.
func TestKeyBudget(t *testing.T) {
	env := startKeysEnv(t, 10*ledger.Credit, "")
	base, owner := env.base, env.tl.ownerKey
	k := mintKey(t, base, owner, `{"name":"capped","scopes":["inference","keys:write"],"budget_usd":0.0004,"budget_period":"day"}`)
	client := keyClient(base, k.Key)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refused []*openai.Error
	served := 0
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := chatWith(client, "btl-big", 16)
			mu.Lock()
			defer mu.Unlock()
			var e *openai.Error
			switch {
			case err == nil:
				served++
			case errors.As(err, &e) && e.StatusCode == http.StatusPaymentRequired:
				refused = append(refused, e)
			default:
				t.Errorf("unexpected: %v", err)
			}
		}()
	}
	wg.Wait()
	if served == 0 || len(refused) == 0 {
		t.Fatalf("served %d, refused %d: the cap should admit some and refuse the rest", served, len(refused))
	}
	if e := refused[0]; e.Code != "insufficient_quota" || !strings.Contains(e.Message, "$0.000400 per day") || !strings.Contains(e.Message, "this API key's budget") {
		t.Fatalf("402 message: %+v", e)
	}
	// A child's spend counts against its parent's cap.
	child := mintKey(t, base, k.Key, `{"scopes":["inference"]}`)
	_, _, err := chatWith(keyClient(base, child.Key), "btl-big", 16)
	if e := apiErrorOf(t, err, http.StatusPaymentRequired); !strings.Contains(e.Message, k.ID) {
		t.Fatalf("child under a spent parent budget: %v", e.Message)
	}
	// Other keys of the workspace are untouched.
	if _, _, err := chatWith(keyClient(base, owner), "btl-big", 16); err != nil {
		t.Fatalf("owner key after another key's budget ran out: %v", err)
	}
	store, err := ledger.OpenSQLite(context.Background(), env.tl.db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Rows first, then the spend: read the other way round, a batch committed between
		// the two reads showed every row and none of their cost.
		rows, _ := store.Summary(context.Background(), env.tl.workspace, time.Time{}, time.Time{}, "key")
		var keyRows int64
		for _, g := range rows.Groups {
			if g.Key == k.ID {
				keyRows = g.Requests
			}
		}
		spend, err := store.KeySpend(context.Background(), env.tl.workspace, k.ID, time.Time{}, "")
		if err != nil {
			t.Fatal(err)
		}
		total := spend.Node + spend.Others
		if total > 400 {
			t.Fatalf("the key spent $%s, over its $0.0004 cap", total)
		}
		if keyRows >= int64(served+len(refused)) {
			if total == 0 {
				t.Fatal("served requests cost nothing")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows for the key: %d of %d", keyRows, served+len(refused))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awayFromMinuteEdge waits for the next UTC minute when little of this one is left, so a test
// that exhausts a per-minute limit is not split across two windows.
func awayFromMinuteEdge(t *testing.T, need time.Duration) {
	t.Helper()
	now := time.Now()
	if left := now.Truncate(time.Minute).Add(time.Minute).Sub(now); left < need {
		time.Sleep(left + 50*time.Millisecond)
	}
}

// TestRateLimits: requests and tokens per minute per key, per workspace (set by the owner)
// and for count_tokens, answered like OpenAI: 429, Retry-After and x-ratelimit-* headers.
func TestRateLimits(t *testing.T) {
	env := startKeysEnv(t, 10*ledger.Credit, "\tbtl_auth {\n\t\tcount_tokens_rpm 2\n\t}\n\tbtl_meter\n\tbtl_optimize\n\tbtl_route\n")
	base, owner := env.base, env.tl.ownerKey
	awayFromMinuteEdge(t, 20*time.Second)

	k := mintKey(t, base, owner, `{"scopes":["inference"],"rpm":3}`)
	client := keyClient(base, k.Key)
	for i := range 3 {
		_, raw, err := chatWith(client, "btl-fast", 0)
		if err != nil {
			t.Fatalf("request %d under the limit: %v", i, err)
		}
		if raw.Header.Get("X-Ratelimit-Limit-Requests") != "3" || raw.Header.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(2-i) ||
			raw.Header.Get("X-Ratelimit-Reset-Requests") == "" {
			t.Fatalf("request %d headers: %v", i, raw.Header)
		}
	}
	_, _, err := chatWith(client, "btl-fast", 0)
	e := apiErrorOf(t, err, http.StatusTooManyRequests)
	retry, _ := strconv.Atoi(e.Response.Header.Get("Retry-After"))
	if e.Code != "rate_limit_exceeded" || e.Type != "requests" || retry < 1 || retry > 60 ||
		e.Response.Header.Get("X-Ratelimit-Remaining-Requests") != "0" || !strings.Contains(e.Message, "3 requests per minute") {
		t.Fatalf("429: %+v %v", e, e.Response.Header)
	}
	// Another key of the workspace is not affected.
	if _, _, err := chatWith(keyClient(base, owner), "btl-fast", 0); err != nil {
		t.Fatalf("owner after another key's limit: %v", err)
	}

	// Tokens per minute: a request that alone exceeds the limit, then a budget of tokens used up.
	tk := mintKey(t, base, owner, `{"scopes":["inference"],"tpm":200}`)
	tclient := keyClient(base, tk.Key)
	_, _, err = chatWith(tclient, "btl-fast", 1000)
	if e := apiErrorOf(t, err, http.StatusTooManyRequests); e.Type != "tokens" || !strings.Contains(e.Message, "too large") {
		t.Fatalf("a request over the TPM limit by itself: %+v", e)
	}
	var tokensLeft []string
	for i := 0; ; i++ {
		_, raw, err := chatWith(tclient, "btl-fast", 40)
		if err != nil {
			e := apiErrorOf(t, err, http.StatusTooManyRequests)
			if e.Type != "tokens" || e.Response.Header.Get("Retry-After") == "" {
				t.Fatalf("TPM 429: %+v", e)
			}
			break
		}
		tokensLeft = append(tokensLeft, raw.Header.Get("X-Ratelimit-Remaining-Tokens"))
		if i > 20 {
			t.Fatalf("200 tokens per minute admitted %d requests of up to 40 output tokens: %v", i, tokensLeft)
		}
	}
	if len(tokensLeft) == 0 || tokensLeft[0] == "" {
		t.Fatalf("no x-ratelimit-remaining-tokens: %v", tokensLeft)
	}

	// Workspace limits: read by keys:write keys, set only by the owner, binding every key.
	admin := mintKey(t, base, owner, `{"scopes":["keys:write"]}`)
	if status, raw := call(t, http.MethodPost, base+"/v1/account/limits", admin.Key, `{"rpm":2}`); status != http.StatusForbidden {
		t.Fatalf("a non-owner set workspace limits: %d %s", status, raw)
	}
	if status, raw := call(t, http.MethodPost, base+"/v1/account/limits", owner, `{"rpm":2,"burst":1}`); status != http.StatusBadRequest {
		t.Fatalf("unknown field in limits: %d %s", status, raw)
	}
	if status, raw := call(t, http.MethodPost, base+"/v1/account/limits", owner, `{"rpm":2}`); status != 200 || !strings.Contains(string(raw), `"rpm":2`) {
		t.Fatalf("owner sets limits: %d %s", status, raw)
	}
	if status, raw := call(t, http.MethodGet, base+"/v1/account/limits", admin.Key, ""); status != 200 || !strings.Contains(string(raw), `"rpm":2`) {
		t.Fatalf("read limits: %d %s", status, raw)
	}
	awayFromMinuteEdge(t, 10*time.Second)
	free := mintKey(t, base, owner, `{"scopes":["inference"]}`)
	admitted := 0
	for range 4 {
		if _, _, err := chatWith(keyClient(base, free.Key), "btl-fast", 0); err == nil {
			admitted++
		} else if e := apiErrorOf(t, err, http.StatusTooManyRequests); !strings.Contains(e.Message, "workspace") {
			t.Fatalf("workspace 429: %v", e.Message)
		}
	}
	// The owner's own earlier requests this minute count too, so at most 2 (maybe fewer).
	if admitted > 2 {
		t.Fatalf("a workspace limited to 2 RPM admitted %d", admitted)
	}
	if status, _ := call(t, http.MethodPost, base+"/v1/account/limits", owner, `{"rpm":0}`); status != 200 {
		t.Fatal("clearing the workspace limit")
	}

	// count_tokens: bounded per key even without a key limit (btl_auth count_tokens_rpm 2).
	ct := mintKey(t, base, owner, `{"scopes":["inference"]}`)
	codes := []int{}
	for range 3 {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages/count_tokens", strings.NewReader(`{"model":"btl-fast","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("x-api-key", ct.Key)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Fatalf("count_tokens with a limit of 2 per minute: %v", codes)
	}
}
