// Command savings measures what the token-efficiency layer saves against independent direct
// callers, and that it keeps what the model needs.
//
// Eight seeded workloads (a long system prompt shared by many users, RAG that re-pastes
// overlapping chunks, an agent loop with growing tool outputs, duplicate bursts, requests
// without max_tokens, a fact that changes and reverts, parallel sampled requests, runaway
// answers without max_tokens) run against five providers (OpenAI, Anthropic, Bedrock, Claude
// on Vertex, Gemini), each three ways:
//
//   - direct: the provider's own API, called the way its users write calls (native.go), sent
//     straight to the simulated upstream — never through the gateway;
//   - gateway: an OpenAI-SDK-shaped client through the gateway with the defaults of
//     Caddyfile.example (a bare btl_optimize: the response cache and coalescing for
//     deterministic requests included);
//   - opt-in: the same with observation masking of old tool outputs on (mask_tool_outputs).
//     Sharing or replaying sampled answers is opt-in too, but it hands one sample to callers
//     who asked for independent draws (a quality failure here), so no column measures it.
//
// Both sides are priced from the upstream's own usage (recorded at the simulator's door) at
// catalog prices, by the same code. Quality checks: every planted fact reaches the upstream,
// every request is valid for its provider, every recall question is answered from the newest
// copy of its fact, and every parallel sample reaches the upstream. The whole table runs under
// two models of OpenAI's prompt cache: scoped by (API key, prompt_cache_key), and per machine
// with overflow above 15 requests a minute (providers/simulated/openai_cache.go).
//
// Time is virtual: the simulator and the gateway's evidence record run on the benchmark's
// clock, so arrival rates and cache lifetimes are those of the workload.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/badtheorylabs/btl-runtime/caddymodule"
	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/providers/googleauth"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// clock is the benchmark's virtual time.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

type env struct {
	gateway, optin, upstream string
	sim                      *simulated.Server
	rec                      *recorder
	store                    ledger.Store
	prices                   *catalog.Catalog
	clock                    *clock
	vertexToken              *googleauth.Source
	seq                      int
}

// side is one way of sending a row's traffic.
type side struct {
	cost                       ledger.Micros
	parts                      parts
	calls, clients, invalid    int
	factsLost, wrong, failures int
}

type row struct {
	workload, provider     string
	direct, gateway, optin side
	eachReaches            bool
}

func main() {
	out := flag.String("out", "", "also write the markdown tables here")
	only := flag.String("only", "", "run only workloads whose name contains this")
	flag.Parse()
	dir, err := os.MkdirTemp("", "btl-savings-")
	check(err)
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", dir)

	clk := &clock{}
	clk.Set(time.Now())
	// Answers are deterministic per request (no Options.Sampling): a sampled answer's length would
	// differ between the direct and the gateway run and add noise to every sampled row.
	sim := simulated.New(simulated.Options{CacheClock: clk.Now})
	rec := &recorder{h: sim}
	up := httptest.NewServer(rec)
	defer up.Close()
	sim.SetAWSCredentials("us-east-1", awsKeyID, awsSecret, "")
	sim.SetGeminiAPIKey(geminiKey)
	sa, err := sim.GoogleServiceAccount(up.URL + "/token")
	check(err)
	saFile := filepath.Join(dir, "sa.json")
	check(os.WriteFile(saFile, sa, 0o600))
	tok, err := newVertexToken(sa, up.URL+"/token")
	check(err)
	// The gateway's levers learn on the benchmark's clock.
	evidence.Default.SetClock(clk.Now)

	db := filepath.Join(dir, "btl.db")
	store, err := ledger.OpenSQLite(context.Background(), db)
	check(err)
	e := &env{upstream: up.URL, sim: sim, rec: rec, store: store, prices: catalog.Default(), clock: clk, vertexToken: tok}
	port, optPort := freePort(), freePort()
	cf := fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		level ERROR
	}
	btl {
		storage sqlite %[1]s
		spool_dir %[2]s
		provider oai openai {
			base_url %[3]s/v1
			api_key %[4]s
			models gpt-4.1
		}
		provider anth anthropic {
			base_url %[3]s
			api_key %[5]s
		}
		provider bed bedrock {
			base_url %[3]s
			region us-east-1
			access_key_id %[6]s
			secret_access_key %[7]s
		}
		provider vtx vertex {
			base_url %[3]s
			project btl-bench
			location us-east5
			credentials_file %[8]s
		}
		provider gem gemini {
			base_url %[3]s
			api_key %[9]s
		}
	}
}
# The defaults of Caddyfile.example: a bare btl_optimize.
http://127.0.0.1:%[10]d {
	btl_auth
	btl_meter
	btl_optimize
	btl_route
}
# The opt-in lever.
http://127.0.0.1:%[11]d {
	btl_auth
	btl_meter
	btl_optimize {
		mask_tool_outputs
	}
	btl_route
}
`, db, filepath.Join(dir, "spool"), up.URL, openAIKey, anthropicKey, awsKeyID, awsSecret, saFile, geminiKey, port, optPort)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	check(err)
	check(caddy.Load(cfg, true))
	defer caddy.Stop()
	e.gateway = fmt.Sprintf("http://127.0.0.1:%d", port)
	e.optin = fmt.Sprintf("http://127.0.0.1:%d", optPort)
	time.Sleep(200 * time.Millisecond)

	var report strings.Builder
	failures := 0
	for _, model := range []struct {
		mode  simulated.OpenAICache
		title string
	}{
		{simulated.CacheByKey, "OpenAI cache scoped by (API key, prompt_cache_key)"},
		{simulated.CacheOverflow, "OpenAI cache per machine, overflow above 15 requests/min"},
	} {
		sim.SetOpenAICache(model.mode)
		var rows []row
		for _, w := range workloads {
			if *only != "" && !strings.Contains(w.name, *only) {
				continue
			}
			for _, p := range allProviders {
				r := e.runRow(w, p)
				rows = append(rows, r)
				fmt.Fprintf(os.Stderr, "%-34s %-9s direct %s  gateway %s (%.1f%%)  opt-in %s (%.1f%%)\n", w.name, p.name,
					r.direct.cost, r.gateway.cost, pct(r.direct.cost, r.gateway.cost), r.optin.cost, pct(r.direct.cost, r.optin.cost))
			}
		}
		table, f := render(model.title, rows)
		failures += f
		report.WriteString(table)
		report.WriteString("\n")
	}
	fmt.Print(report.String())
	if *out != "" {
		check(os.WriteFile(*out, []byte(report.String()), 0o644))
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "%d quality failures\n", failures)
		os.Exit(1)
	}
}

// runRow runs one workload against one provider: direct, through the gateway, opt-in.
func (e *env) runRow(w workload, p provider) row {
	r := row{workload: w.name, provider: p.name, eachReaches: w.eachReaches}
	r.direct = e.runSide(w, p, "direct")
	r.gateway = e.runSide(w, p, e.gateway)
	r.optin = e.runSide(w, p, e.optin)
	return r
}

// runSide sends the workload once, from a fresh upstream cache and a fresh workspace, on a
// clock that starts now.
func (e *env) runSide(w workload, p provider, target string) side {
	e.sim.Reset()
	e.rec.take()
	start := time.Now()
	e.seq++
	var key string
	if target != "direct" {
		_, k, err := e.store.CreateWorkspace(context.Background(), fmt.Sprintf("%s %s %d", w.name, p.name, e.seq), 1000*ledger.Credit)
		check(err)
		key = k
	}
	rng := rand.New(rand.NewPCG(42, uint64(len(w.name))))
	var s side
	var facts []string
	var mu sync.Mutex
	for _, st := range w.gen(rng) {
		e.clock.Set(start.Add(st.at))
		var wg sync.WaitGroup
		for _, rq := range st.group {
			facts = append(facts, rq.facts...)
			s.clients++
			wg.Go(func() {
				answer, err := e.send(p, target, key, rq.body)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					s.failures++
					return
				}
				if rq.expect != "" && !strings.Contains(answer, rq.expect) {
					s.wrong++
				}
			})
		}
		wg.Wait()
	}
	xs := e.rec.take()
	price, ok := e.prices.Lookup(p.price)
	if !ok {
		check(fmt.Errorf("no price for %s", p.price))
	}
	s.cost, s.parts, s.calls, s.invalid = cost(xs, price)
	var all [][]byte
	for _, x := range xs {
		all = append(all, x.body)
	}
	joined := bytes.Join(all, nil)
	for _, f := range facts {
		if !bytes.Contains(joined, []byte(f)) {
			s.factsLost++
		}
	}
	if w.eachReaches && s.calls < s.clients {
		s.failures += s.clients - s.calls
	}
	return s
}

// send makes one call, direct or through the gateway, and returns the answer's text.
func (e *env) send(p provider, target, key string, body map[string]any) (string, error) {
	if target == "direct" {
		return e.direct(p, body)
	}
	b := clone(body)
	b["model"] = p.gateway
	raw, _ := json.Marshal(b)
	req, _ := http.NewRequest(http.MethodPost, target+"/v1/chat/completions", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	return call(req, "gateway "+p.name, "openai")
}

func (s side) quality() int { return s.factsLost + s.invalid + s.wrong + s.failures }

// render writes one cache model's tables: saved per workload × provider, then the detail.
func render(title string, rows []row) (string, int) {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", title)
	b.WriteString("Saved against direct calls, gateway defaults (opt-in mask_tool_outputs in brackets):\n\n| workload |")
	for _, p := range allProviders {
		fmt.Fprintf(&b, " %s |", p.name)
	}
	b.WriteString("\n|---|")
	for range allProviders {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	var d, g, o ledger.Micros
	failures := 0
	byWorkload := map[string][]row{}
	var order []string
	for _, r := range rows {
		if byWorkload[r.workload] == nil {
			order = append(order, r.workload)
		}
		byWorkload[r.workload] = append(byWorkload[r.workload], r)
		d += r.direct.cost
		g += r.gateway.cost
		o += r.optin.cost
	}
	for _, w := range order {
		fmt.Fprintf(&b, "| %s |", w)
		for _, r := range byWorkload[w] {
			fmt.Fprintf(&b, " %.1f%% (%.1f%%) |", pct(r.direct.cost, r.gateway.cost), pct(r.direct.cost, r.optin.cost))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\n**Total: direct $%s, gateway $%s — %.1f%% saved with the defaults; opt-in $%s — %.1f%% saved.**\n\n",
		d, g, pct(d, g), o, pct(d, o))
	b.WriteString("| workload | provider | clients | upstream calls direct / gateway / opt-in | direct $ | gateway $ | saved | opt-in $ | saved | quality failures (gateway, opt-in) |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		q := r.gateway.quality() + r.optin.quality()
		failures += q
		// The gateway must never cost more than calling the provider directly.
		for _, c := range []struct {
			name string
			s    side
		}{{"defaults", r.gateway}, {"opt-in", r.optin}} {
			if c.s.cost > r.direct.cost {
				fmt.Fprintf(os.Stderr, "NEGATIVE ROW: %s / %s with %s costs %s more than direct\n", r.workload, r.provider, c.name, c.s.cost-r.direct.cost)
				failures++
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d / %d / %d | %s | %s | %.1f%% | %s | %.1f%% | %d, %d |\n", r.workload, r.provider, r.direct.clients,
			r.direct.calls, r.gateway.calls, r.optin.calls, r.direct.cost, r.gateway.cost, pct(r.direct.cost, r.gateway.cost),
			r.optin.cost, pct(r.direct.cost, r.optin.cost), r.gateway.quality(), r.optin.quality())
		if dq := r.direct.quality(); dq > 0 {
			fmt.Fprintf(os.Stderr, "direct baseline of %s / %s had %d quality failures\n", r.workload, r.provider, dq)
			failures += dq
		}
	}
	b.WriteString(whereTheMoneyIs(rows))
	return b.String(), failures
}

// whereTheMoneyIs splits each row's direct and gateway spend by what was paid for (uncached
// input, cache reads, cache writes, output), largest gateway spend first, with the totals: the
// remaining spend, and which part of it a lever could still reach.
func whereTheMoneyIs(rows []row) string {
	var b strings.Builder
	b.WriteString("\nWhere the money is (direct → gateway defaults, by part; rows by gateway spend):\n\n| workload | provider |")
	for _, n := range partNames {
		fmt.Fprintf(&b, " %s |", n)
	}
	b.WriteString(" gateway $ | share of gateway total |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	sorted := append([]row(nil), rows...)
	slices.SortStableFunc(sorted, func(x, y row) int { return cmp.Compare(y.gateway.cost, x.gateway.cost) })
	var d, g parts
	var gt ledger.Micros
	for _, r := range rows {
		d.add(r.direct.parts)
		g.add(r.gateway.parts)
		gt += r.gateway.cost
	}
	for _, r := range sorted {
		fmt.Fprintf(&b, "| %s | %s |", r.workload, r.provider)
		for i := range partNames {
			fmt.Fprintf(&b, " %s → %s |", r.direct.parts[i], r.gateway.parts[i])
		}
		fmt.Fprintf(&b, " %s | %.1f%% |\n", r.gateway.cost, share(r.gateway.cost, gt))
	}
	b.WriteString("| **total** | |")
	for i := range partNames {
		fmt.Fprintf(&b, " %s → %s |", d[i], g[i])
	}
	fmt.Fprintf(&b, " %s | 100%% |\n", gt)
	return b.String()
}

func share(x, total ledger.Micros) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(x) / float64(total)
}

func pct(direct, gw ledger.Micros) float64 {
	if direct == 0 {
		return 0
	}
	return 100 * float64(direct-gw) / float64(direct)
}

func truncate(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
