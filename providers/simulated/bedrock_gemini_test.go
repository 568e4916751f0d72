package simulated

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/eventstream"
	"github.com/badtheorylabs/btl-runtime/providers/googleauth"
	"github.com/badtheorylabs/btl-runtime/providers/sigv4"
)

func bedrockCall(t *testing.T, srv *httptest.Server, secret, model, op, body string) *http.Response {
	t.Helper()
	path, raw := sigv4.ModelPath(model, op)
	u, _ := url.Parse(srv.URL)
	u.Path, u.RawPath = path, raw
	req, _ := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	s := &sigv4.Signer{Credentials: sigv4.Credentials{AccessKeyID: "AKID", SecretAccessKey: secret}, Region: "us-east-1", Service: "bedrock"}
	if err := s.Sign(req, []byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestBedrockSimulator(t *testing.T) {
	sim := New(Options{})
	sim.SetAWSCredentials("us-east-1", "AKID", "secret", "")
	srv := httptest.NewServer(sim)
	defer srv.Close()
	const model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
	ok := `{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":256}}`

	resp := bedrockCall(t, srv, "wrong", model, "converse", ok)
	if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("X-Amzn-ErrorType"), "InvalidSignatureException:") {
		t.Fatalf("bad signature: %d %v", resp.StatusCode, resp.Header)
	}
	resp = bedrockCall(t, srv, "secret", model, "converse", ok)
	var out struct {
		Output struct {
			Message struct {
				Content []struct{ Text string } `json:"content"`
			} `json:"message"`
		} `json:"output"`
		StopReason string         `json:"stopReason"`
		Usage      map[string]int `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.StopReason != "end_turn" ||
		!strings.HasPrefix(out.Output.Message.Content[0].Text, "Simulated answer: Hello") || out.Usage["inputTokens"] == 0 {
		t.Fatalf("converse: %d %+v %v", resp.StatusCode, out, err)
	}

	for name, body := range map[string]string{
		"assistant first": `{"messages":[{"role":"assistant","content":[{"text":"x"}]}]}`,
		"not alternating": `{"messages":[{"role":"user","content":[{"text":"a"}]},{"role":"user","content":[{"text":"b"}]}]}`,
		"blank text":      `{"messages":[{"role":"user","content":[{"text":" "}]}]}`,
		"unknown field":   `{"messages":[{"role":"user","content":[{"text":"a"}]}],"max_tokens":5}`,
		"tool w/o config": `{"messages":[{"role":"user","content":[{"text":"a"}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"f","input":{}}}]}]}`,
		"temperature":     `{"messages":[{"role":"user","content":[{"text":"a"}]}],"inferenceConfig":{"temperature":1.5}}`,
	} {
		resp := bedrockCall(t, srv, "secret", model, "converse", body)
		if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("X-Amzn-ErrorType"), "ValidationException") {
			t.Errorf("%s: %d", name, resp.StatusCode)
		}
	}

	// The stream decodes frame by frame; metadata follows messageStop.
	resp = bedrockCall(t, srv, "secret", model, "converse-stream", ok)
	if resp.Header.Get("Content-Type") != "application/vnd.amazon.eventstream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	dec := eventstream.NewDecoder(resp.Body)
	var types []string
	for {
		m, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, m.EventType())
	}
	got := strings.Join(types, ",")
	if !strings.HasPrefix(got, "messageStart,contentBlockDelta") || !strings.HasSuffix(got, "contentBlockStop,messageStop,metadata") {
		t.Fatalf("events %s", got)
	}
}

func TestGeminiSimulator(t *testing.T) {
	sim := New(Options{})
	sim.SetGeminiAPIKey("k")
	srv := httptest.NewServer(sim)
	defer srv.Close()
	post := func(path, auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if strings.HasPrefix(auth, "ya29") {
			req.Header.Set("Authorization", "Bearer "+auth)
		} else if auth != "" {
			req.Header.Set("X-Goog-Api-Key", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	hello := `{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}`
	if code, body := post("/v1beta/models/gemini-2.5-flash:generateContent", "nope", hello); code != 400 || !strings.Contains(body, "API_KEY_INVALID") {
		t.Fatalf("bad key: %d %s", code, body)
	}
	if code, _ := post("/v1beta/models/gemini-2.5-flash:generateContent", "", hello); code != 403 {
		t.Fatalf("no key: %d", code)
	}
	code, body := post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "k", hello)
	if code != 200 || !strings.Contains(body, "\r\n\r\n") || strings.Contains(body, "[DONE]") || !strings.Contains(body, `"finishReason":"STOP"`) {
		t.Fatalf("stream: %d %s", code, body)
	}
	// Gemini 3: a replayed function call without its thought signature is refused.
	replay := `{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"x":1}}}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}]}`
	if code, body := post("/v1beta/models/gemini-3-pro:generateContent", "k", replay); code != 400 || !strings.Contains(body, "thought_signature") {
		t.Fatalf("missing signature: %d %s", code, body)
	}
	if code, _ := post("/v1beta/models/gemini-2.5-pro:generateContent", "k", replay); code != 200 {
		t.Fatalf("2.5 replay: %d", code)
	}
	if code, body := post("/v1beta/models/gemini-2.5-flash:generateContent", "k", `{"contents":[{"role":"user","parts":[{"text":"x [sim:blocked]"}]}]}`); code != 200 ||
		!strings.Contains(body, `"blockReason":"SAFETY"`) || strings.Contains(body, "candidates") {
		t.Fatalf("blocked: %s", body)
	}
	if code, body := post("/v1beta/models/gemini-2.5-flash:generateContent", "k", `{"contents":[{"role":"user","parts":[{"text":"x [sim:status=429,retry_after=3]"}]}]}`); code != 429 ||
		!strings.Contains(body, `"retryDelay":"3s"`) {
		t.Fatalf("429: %s", body)
	}

	// Vertex: tokens from /token only, function call ids refused.
	vpath := "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
	if code, _ := post(vpath, "ya29.forged", hello); code != 401 {
		t.Fatalf("forged token: %d", code)
	}
	raw, err := sim.GoogleServiceAccount(srv.URL + "/token")
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := googleauth.ParseServiceAccount(raw)
	src, err := googleauth.NewSource(sa, googleauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(vpath, tok, hello); code != 200 {
		t.Fatalf("vertex: %d %s", code, body)
	}
	withID := strings.Replace(replay, `"functionCall":{"name"`, `"functionCall":{"id":"c1","name"`, 1)
	if code, _ := post(vpath, tok, withID); code != 400 {
		t.Fatalf("vertex accepted a function call id: %d", code)
	}
	sim.SetGoogleTokenTTL(time.Minute)
	sim.RevokeGoogleTokens()
	if code, _ := post(vpath, tok, hello); code != 401 {
		t.Fatalf("revoked token: %d", code)
	}
	// A key the simulator did not make is refused at /token.
	other, _ := New(Options{}).GoogleServiceAccount(srv.URL + "/token")
	osa, _ := googleauth.ParseServiceAccount(other)
	osrc, _ := googleauth.NewSource(osa, googleauth.Options{})
	if _, err := osrc.Token(t.Context()); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("foreign key: %v", err)
	}
	if issued, refused := sim.GoogleTokenGrants(); issued != 1 || refused != 1 {
		t.Fatalf("grants %d/%d", issued, refused)
	}
}
