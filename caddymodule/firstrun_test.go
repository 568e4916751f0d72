package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// exampleConfig is Caddyfile.example on a free port, with the admin API off.
func exampleConfig(t *testing.T) (string, int) {
	t.Helper()
	raw, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cf := strings.Replace(string(raw), ":8080 {", fmt.Sprintf(":%d {", port), 1)
	cf = strings.Replace(cf, "admin localhost:2019", "admin off", 1)
	if cf == string(raw) {
		t.Fatal("Caddyfile.example no longer has the lines this test rewrites")
	}
	return cf, port
}

// exampleEnv is the environment of a first run: no provider keys, Caddy's data in dir.
func exampleEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENAI_API_KEY=") && !strings.HasPrefix(kv, "OPENROUTER_API_KEY=") {
			env = append(env, kv)
		}
	}
	return append(env, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
}

// TestFirstFiveMinutesWithCaddyfileExample runs the real binary on Caddyfile.example as
// `make run` does: caddy validate passes (and fails on a misspelt model, naming file and
// line), every slug the README names answers through the official client with the built-in
// simulator, and the second call of the README's shared-system-prompt demo costs less than
// its baseline, which the usage summary (the dashboard's savings panel) shows.
func TestFirstFiveMinutesWithCaddyfileExample(t *testing.T) {
	bin := gatewayBinary(t)
	dir := t.TempDir()
	cf, port := exampleConfig(t)
	cfgPath := filepath.Join(dir, "Caddyfile.example")
	if err := os.WriteFile(cfgPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = dir, exampleEnv(dir)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("validate", "--config", cfgPath, "--adapter", "caddyfile"); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	typo := strings.Replace(cf, "models gpt-4o-mini gpt-4.1-mini", "models gpt-4o-mni gpt-4.1-mini", 1)
	typoPath := filepath.Join(dir, "Caddyfile.typo")
	if err := os.WriteFile(typoPath, []byte(typo), 0o600); err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(typo[:strings.Index(typo, "gpt-4o-mni")], "\n")
	out, err := run("validate", "--config", typoPath, "--adapter", "caddyfile")
	if err == nil || !strings.Contains(out, fmt.Sprintf("Caddyfile.typo:%d", line)) || !strings.Contains(out, "gpt-4o-mni") {
		t.Fatalf("validate accepted a misspelt model or did not say where (line %d): %v\n%s", line, err, out)
	}

	out, err = run("btl", "workspace", "create", "--config", cfgPath, "--adapter", "caddyfile", "--name", "demo", "--credits", "25")
	var ws struct {
		APIKey string `json:"api_key"`
	}
	if err != nil || json.Unmarshal([]byte(out[strings.LastIndex(out, "{\"api_key\""):]), &ws) != nil {
		t.Fatalf("workspace create: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Dir, cmd.Env = dir, exampleEnv(dir)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	p := startCmd(t, cmd, port, &log)
	client := openai.NewClient(option.WithBaseURL(p.base+"/v1"), option.WithAPIKey(ws.APIKey), option.WithMaxRetries(0))
	ctx := context.Background()
	for _, slug := range []string{"btl-frontier", "btl-balanced", "btl-fast", "btl-reasoning"} {
		resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    slug,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello!")},
		})
		if err != nil || len(resp.Choices) == 0 || resp.Choices[0].Message.Content == "" {
			t.Fatalf("%s: %v", slug, err)
		}
	}
	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "btl-embed",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}}})
	if err != nil || len(emb.Data) != 2 {
		t.Fatalf("btl-embed: %v", err)
	}

	// The README's demo: one long system prompt, two questions.
	system := strings.Repeat("You are the support assistant for Acme Corp: answer politely, cite the handbook, never invent prices. ", 60)
	var cost, baseline [2]string
	for i, q := range []string{"Where is my order?", "Can I return a gift?"} {
		var raw *http.Response
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "btl-balanced",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(q)},
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		cost[i], baseline[i] = raw.Header.Get("X-Btl-Cost-Usd"), raw.Header.Get("X-Btl-Baseline-Usd")
	}
	if usdToMicros(t, cost[1])*2 >= usdToMicros(t, baseline[1]) {
		t.Fatalf("the second call saved less than half: cost %s, baseline %s (first: %s / %s)", cost[1], baseline[1], cost[0], baseline[0])
	}
	t.Logf("demo: first call cost %s (baseline %s), second %s (baseline %s)", cost[0], baseline[0], cost[1], baseline[1])
	for deadline := time.Now().Add(10 * time.Second); ; {
		status, raw := call(t, http.MethodGet, p.base+"/v1/usage/summary", ws.APIKey, "")
		var sum struct {
			Total struct {
				SavedUSD float64 `json:"saved_usd"`
			} `json:"total"`
		}
		_ = json.Unmarshal(raw, &sum)
		if status == 200 && sum.Total.SavedUSD > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage summary shows no saving: %d %s", status, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startCmd starts a gateway command and waits until it listens on port.
func startCmd(t *testing.T, cmd *exec.Cmd, port int, log *bytes.Buffer) *gatewayProc {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &gatewayProc{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), log: log}
	t.Cleanup(p.stop)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway did not start")
		}
		time.Sleep(25 * time.Millisecond)
	}
}
