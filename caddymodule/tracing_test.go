package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

type exportedSpan struct {
	Name        string
	SpanContext struct{ TraceID string }
	Parent      struct{ SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
	Status struct{ Code string }
}

func (s exportedSpan) attr(key string) (any, bool) {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.Value, true
		}
	}
	return nil, false
}

// TestTracingSpans runs the binary with Caddy's `tracing` directive and its console exporter
// (OTEL_TRACES_EXPORTER=console, the standard OpenTelemetry variable Caddy honours): each
// gateway stage is a span of the request's trace, and btl.request carries the model,
// provider, tokens, cost and cache outcome.
func TestTracingSpans(t *testing.T) {
	bin := gatewayBinary(t)
	dir := t.TempDir()
	tl := newTestLedger(t, 10*ledger.Credit)
	port := freePort(t)
	cf := fmt.Sprintf(`{
	admin off
	persist_config off
	%s
}
http://127.0.0.1:%d {
	tracing {
		span gateway
	}
%s}
`, tl.withStorage("btl {\n\t\tprovider sim simulated {\n\t\t\tmodels gpt-4o-mini\n\t\t}\n\t}"), port, fullChain)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "spans.jsonl")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir,
		"OTEL_TRACES_EXPORTER=console", "OTEL_BSP_SCHEDULE_DELAY=50")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &log
	p := startCmd(t, cmd, port, &log)
	status, raw := call(t, "POST", p.base+"/v1/chat/completions", tl.ownerKey,
		`{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"Trace me"}]}`)
	if status != 200 {
		t.Fatalf("%d %s", status, raw)
	}
	spans := map[string]exportedSpan{}
	for deadline := time.Now().Add(10 * time.Second); len(spans) < 6 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		f, err := os.Open(outPath)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var s exportedSpan
			if json.Unmarshal(sc.Bytes(), &s) == nil && (strings.HasPrefix(s.Name, "btl.") || s.Name == "gateway") {
				spans[s.Name] = s
			}
		}
		f.Close()
	}
	root, ok := spans["gateway"]
	if !ok {
		t.Fatalf("no request span among %v", spans)
	}
	for _, name := range []string{"btl.auth", "btl.request", "btl.reserve", "btl.optimize", "btl.upstream"} {
		s, ok := spans[name]
		if !ok || s.SpanContext.TraceID != root.SpanContext.TraceID {
			t.Fatalf("%s missing or in another trace: %+v", name, s)
		}
	}
	req := spans["btl.request"]
	for key, want := range map[string]any{"btl.model": "sim/gpt-4o-mini", "btl.provider": "sim", "btl.upstream_model": "gpt-4o-mini", "btl.cache": "bypass"} {
		if got, _ := req.attr(key); got != want {
			t.Errorf("btl.request %s = %v, want %v", key, got, want)
		}
	}
	for _, key := range []string{"btl.cost_usd", "btl.baseline_usd", "btl.tokens.input_uncached", "btl.tokens.output"} {
		if v, ok := req.attr(key); !ok || v == "0.000000" || v == float64(0) {
			t.Errorf("btl.request %s = %v", key, v)
		}
	}
	if got, _ := spans["btl.upstream"].attr("btl.provider"); got != "sim" {
		t.Errorf("btl.upstream provider %v", got)
	}
}
