package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// scrape reads a Prometheus text exposition and sums samples by metric name and by
// name{label="value"} for each single label, e.g. sums["btl_tokens_total"] and
// sums[`btl_tokens_total{kind="output"}`].
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %d", resp.StatusCode)
	}
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("scrape line %q: %v", line, err)
		}
		series := line[:sp]
		name, labels, _ := strings.Cut(series, "{")
		sums[name] += v
		for _, l := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			if l != "" {
				sums[name+"{"+l+"}"] += v
			}
		}
	}
	return sums
}

func micros(t *testing.T, n json.Number) int64 {
	t.Helper()
	whole, frac, _ := strings.Cut(n.String(), ".")
	frac = (frac + "000000")[:6]
	w, err1 := strconv.ParseInt(whole, 10, 64)
	f, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("not a dollar amount: %s", n)
	}
	return w*1_000_000 + f
}

type ledgerTotals struct {
	Requests int64
	Tokens   map[string]int64
	Cost     int64
}

// waitLedger polls the usage summary until the workspace has want rows, and returns totals.
func waitLedger(t *testing.T, base, key string, want int64) ledgerTotals {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, raw := call(t, "GET", base+"/v1/usage/summary", key, "")
		if status != 200 {
			t.Fatalf("summary: %d %s", status, raw)
		}
		var s struct {
			Total struct {
				Requests int64            `json:"requests"`
				Tokens   map[string]int64 `json:"tokens"`
				Cost     json.Number      `json:"cost_usd"`
			} `json:"total"`
		}
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if err := dec.Decode(&s); err != nil {
			t.Fatal(err)
		}
		if s.Total.Requests >= want || time.Now().After(deadline) {
			if s.Total.Requests != want {
				t.Fatalf("ledger has %d rows, want %d", s.Total.Requests, want)
			}
			return ledgerTotals{Requests: s.Total.Requests, Tokens: s.Total.Tokens, Cost: micros(t, s.Total.Cost)}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsAndAccessLog runs metered traffic through a real Caddy, scrapes Caddy's metrics
// handler and checks the btl counters move exactly as the ledger does (requests, tokens by
// kind, cost), keep counting across a config reload, and that the access log carries the
// btl fields without the key's secret.
func TestMetricsAndAccessLog(t *testing.T) {
	tl := newTestLedger(t, 100*ledger.Credit)
	store, err := ledger.OpenSQLite(context.Background(), tl.db)
	if err != nil {
		t.Fatal(err)
	}
	poor, poorKey, err := store.CreateWorkspace(context.Background(), "poor", 0)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	sim := simulated.New(simulated.Options{})
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	logFile := filepath.Join(t.TempDir(), "access.log")
	block := func(extraModel string) string {
		return tl.withStorage(`btl {
		provider sim simulated {
			base_url ` + up.URL + `/v1
			models gpt-4o-mini
		}
		model btl-fast {
			candidates sim/gpt-4o-mini
		}` + extraModel + `
	}`)
	}
	site := "\thandle /metrics {\n\t\tmetrics\n\t}\n\tlog {\n\t\toutput file " + logFile + "\n\t\tformat json\n\t}\n" + fullChain
	base := startGateway(t, block(""), site)

	traffic := func(round int) (n int64) {
		bodies := []string{
			`{"model":"btl-fast","max_tokens":32,"messages":[{"role":"user","content":"hello %d"}]}`,
			`{"model":"sim/gpt-4o-mini","max_tokens":32,"messages":[{"role":"user","content":"pinned %d"}]}`,
			`{"model":"btl-fast","stream":true,"max_tokens":32,"messages":[{"role":"user","content":"stream %d"}]}`,
			`{"model":"no-such-model","messages":[{"role":"user","content":"missing %d"}]}`,
		}
		for i := range 3 {
			for _, b := range bodies {
				status, raw := call(t, "POST", base+"/v1/chat/completions", tl.ownerKey, fmt.Sprintf(b, round*100+i))
				if status != 200 && status != 404 {
					t.Fatalf("chat: %d %s", status, raw)
				}
				n++
			}
		}
		return n
	}

	before := scrape(t, base+"/metrics")
	n := traffic(1)
	// A workspace without credits gets 402, which is metered (its own ledger row) and counted.
	if status, raw := call(t, "POST", base+"/v1/chat/completions", poorKey, `{"model":"btl-fast","messages":[{"role":"user","content":"x"}]}`); status != 402 {
		t.Fatalf("poor workspace: %d %s", status, raw)
	}
	got := waitLedger(t, base, tl.ownerKey, n)
	waitLedger(t, base, poorKey, 1)
	after := scrape(t, base+"/metrics")
	delta := func(name string) int64 { return int64(after[name] - before[name]) }
	check := func(what string, gotN, want int64) {
		t.Helper()
		if gotN != want {
			t.Errorf("%s: metrics say %d, ledger says %d", what, gotN, want)
		}
	}
	check("requests", delta("btl_requests_total"), n+1)
	if _, ok := after[`btl_upstream_breaker_state{provider="sim"}`]; !ok {
		t.Errorf("no breaker state for the configured provider")
	}
	check("402 requests", delta(`btl_requests_total{status_class="4xx"}`), 3+1)
	check("refused reservations", delta("btl_credit_reservations_refused_total"), 1)
	check("pinned requests", delta(`btl_requests_total{model_class="pinned"}`), 3+3) // sim/… and the unknown model
	check("slug requests", delta(`btl_requests_total{model_class="btl-fast"}`), 6+1)
	for kind, v := range got.Tokens {
		check("tokens "+kind, delta(`btl_tokens_total{kind="`+kind+`"}`), v)
	}
	check("cost µ$", delta("btl_cost_microdollars_total"), got.Cost)
	if got.Cost <= 0 || got.Tokens["output"] <= 0 {
		t.Fatalf("the seeded run cost nothing: %+v", got)
	}
	check("latency observations", delta("btl_upstream_latency_seconds_count"), 9)
	check("ttft observations", delta("btl_time_to_first_token_seconds_count"), 9)
	for _, name := range []string{"btl_ledger_queue_rows", "btl_ledger_spool_bytes", "btl_ledger_write_errors_total", "btl_savings_microdollars_total"} {
		if _, ok := after[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	// Reload: the new config gets a fresh registry; the btl counters continue.
	port := strings.TrimPrefix(base, "http://127.0.0.1:")
	cf := "{\n\tadmin off\n\tpersist_config off\n\tgrace_period 1s\n\tlog {\n\t\tlevel ERROR\n\t}\n\t" +
		block("\n\t\tmodel btl-other {\n\t\t\tcandidates sim/gpt-4o-mini\n\t\t}") + "\n}\nhttp://127.0.0.1:" + port + " {\n" + site + "\n}\n"
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		t.Fatalf("reload: %v", err)
	}
	reloaded := scrape(t, base+"/metrics")
	for _, name := range []string{"btl_requests_total", `btl_tokens_total{kind="output"}`, "btl_cost_microdollars_total", "btl_credit_reservations_refused_total"} {
		if reloaded[name] != after[name] {
			t.Errorf("%s changed across the reload: %v → %v", name, after[name], reloaded[name])
		}
	}
	m := traffic(2)
	got2 := waitLedger(t, base, tl.ownerKey, n+m)
	final := scrape(t, base+"/metrics")
	check("requests after reload", int64(final["btl_requests_total"]-before["btl_requests_total"]), got2.Requests+1)
	check("cost after reload", int64(final["btl_cost_microdollars_total"]-before["btl_cost_microdollars_total"]), got2.Cost)
	check("output tokens after reload", int64(final[`btl_tokens_total{kind="output"}`]-before[`btl_tokens_total{kind="output"}`]), got2.Tokens["output"])

	// Access log: one line per request with the btl fields, never the secret.
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), tl.ownerKey) || strings.Contains(string(raw), poorKey) {
		t.Fatal("the access log contains an API key secret")
	}
	var chatLines, okLines int
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if req, _ := e["request"].(map[string]any); req == nil || req["uri"] != "/v1/chat/completions" {
			continue
		}
		chatLines++
		for _, f := range []string{"btl_request_id", "btl_workspace", "btl_key_id", "btl_model", "btl_provider", "btl_upstream_model", "btl_tokens", "btl_cost_usd", "btl_saved_usd", "btl_attempts"} {
			if _, ok := e[f]; !ok {
				t.Fatalf("log line lacks %s: %s", f, line)
			}
		}
		hdr, _ := e["resp_headers"].(map[string]any)
		if ids, _ := hdr["X-Btl-Request-Id"].([]any); len(ids) != 1 || ids[0] != e["btl_request_id"] {
			t.Fatalf("btl_request_id %v does not match the response header %v", e["btl_request_id"], hdr["X-Btl-Request-Id"])
		}
		if e["status"] == float64(200) {
			okLines++
			tok, _ := e["btl_tokens"].(map[string]any)
			if e["btl_provider"] != "sim" || e["btl_upstream_model"] != "gpt-4o-mini" || tok["output"] == float64(0) || e["btl_cost_usd"] == "0.000000" {
				t.Fatalf("log line for a completed call: %s", line)
			}
		}
		if e["btl_workspace"] == poor.ID && e["status"] != float64(402) {
			t.Fatalf("poor workspace line: %s", line)
		}
	}
	if chatLines != int(n+m+1) || okLines != 18 {
		t.Fatalf("access log has %d chat lines (%d ok), want %d (18 ok)", chatLines, okLines, n+m+1)
	}
}
