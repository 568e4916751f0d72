// Command savings measures what the token-efficiency layer saves, and that it keeps what the
// model needs. Seeded generators produce five workloads — a long system prompt shared by many
// users, multi-turn RAG that re-pastes overlapping chunks with planted facts, an agent loop
// with growing tool outputs, duplicate bursts, and requests without max_tokens — which run
// twice: "direct" (straight to the simulated upstream for OpenAI-format traffic; through the
// gateway with the optimizer off, i.e. the same translation a client SDK would do, for
// Anthropic traffic) and through the full gateway. Effective dollars come from the
// simulator's own usage × catalog price. Quality checks: every planted fact still reaches the
// upstream, and every request is valid for its provider (the simulator validates as strictly
// as the real APIs).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/badtheorylabs/btl-runtime/caddymodule"
	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// recorder keeps what reached the upstream, for the quality checks.
type recorder struct {
	h      http.Handler
	mu     sync.Mutex
	bodies [][]byte
	bad    int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(b))
	sw := &statusWriter{ResponseWriter: w}
	r.h.ServeHTTP(sw, req)
	r.mu.Lock()
	r.bodies = append(r.bodies, b)
	if sw.status >= 400 {
		r.bad++
	}
	r.mu.Unlock()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(c int) { s.status = c; s.ResponseWriter.WriteHeader(c) }
func (s *statusWriter) Flush()            { http.NewResponseController(s.ResponseWriter).Flush() }

func (r *recorder) take() ([][]byte, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, n := r.bodies, r.bad
	r.bodies, r.bad = nil, 0
	return b, n
}

type env struct {
	gateway, upstream string
	rec               *recorder
	store             ledger.Store
	prices            *catalog.Catalog
}

type result struct {
	name, provider          string
	requests                int
	direct, gateway         ledger.Micros
	baseline                ledger.Micros
	levers                  map[string]float64
	factsLost, invalid      int
	directFactsLost         int
	gatewayErrors, dirError int
}

func main() {
	out := flag.String("out", "", "also write the markdown table here")
	flag.Parse()
	dir, err := os.MkdirTemp("", "btl-savings-")
	check(err)
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", dir)

	rec := &recorder{h: simulated.New(simulated.Options{})}
	up := httptest.NewServer(rec)
	defer up.Close()
	db := filepath.Join(dir, "btl.db")
	store, err := ledger.OpenSQLite(context.Background(), db)
	check(err)
	e := &env{upstream: up.URL, rec: rec, store: store, prices: catalog.Default()}
	port := freePort()
	cf := fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		level ERROR
	}
	btl {
		storage sqlite %s
		spool_dir %s
		provider oai simulated {
			base_url %s/v1
			api_key bench-gateway
			models gpt-4.1-mini
		}
		provider anth anthropic {
			base_url %s
			api_key sk-ant-bench
			models claude-sonnet-4-5
		}
	}
}
http://127.0.0.1:%d {
	btl_auth
	btl_meter
	btl_optimize {
		mask_tool_outputs
		response_cache {
			ttl 10m
		}
	}
	btl_route
}
`, db, filepath.Join(dir, "spool"), up.URL, up.URL, port)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	check(err)
	check(caddy.Load(cfg, true))
	defer caddy.Stop()
	e.gateway = fmt.Sprintf("http://127.0.0.1:%d", port)
	time.Sleep(200 * time.Millisecond)

	results := []result{
		e.run("shared system prompt", "anthropic", sharedSystem),
		e.run("RAG with re-pasted chunks", "openai", rag),
		e.run("agent loop, growing tool outputs", "anthropic", agent),
		e.run("duplicate bursts", "openai", duplicates),
		e.run("no max_tokens", "anthropic", noMaxTokens),
	}
	table := render(results)
	fmt.Print(table)
	if *out != "" {
		check(os.WriteFile(*out, []byte(table), 0o644))
	}
	failures := 0
	for _, r := range results {
		failures += r.factsLost + r.invalid + r.gatewayErrors
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "%d quality failures\n", failures)
		os.Exit(1)
	}
}

// request is one generated call: its OpenAI chat body and the facts it carries.
type request struct {
	body  map[string]any
	facts []string
}

type generator func(rng *rand.Rand, model string) [][]request // conversations of turns

func (e *env) run(name, provider string, gen generator) result {
	res := result{name: name, provider: provider, levers: map[string]float64{}}
	model, pinned := "gpt-4.1-mini", "oai/gpt-4.1-mini"
	if provider == "anthropic" {
		model, pinned = "claude-sonnet-4-5", "anth/claude-sonnet-4-5"
	}
	for _, mode := range []string{"direct", "gateway"} {
		ws, key, err := e.store.CreateWorkspace(context.Background(), name+" "+mode, 1000*ledger.Credit)
		check(err)
		rng := rand.New(rand.NewPCG(42, uint64(len(name))))
		convs := gen(rng, pinned)
		e.rec.take()
		var facts []string
		for _, conv := range convs {
			for _, turn := range conv {
				facts = append(facts, turn.facts...)
				body, _ := json.Marshal(turn.body)
				cost, ok := e.send(mode, provider, model, key, body)
				if !ok {
					if mode == "gateway" {
						res.gatewayErrors++
					} else {
						res.dirError++
					}
					continue
				}
				if mode == "direct" {
					res.direct += cost
					res.requests++
				} else {
					res.gateway += cost
				}
			}
		}
		bodies, bad := e.rec.take()
		lost := missingFacts(facts, bodies)
		if mode == "gateway" {
			res.factsLost, res.invalid = lost, bad
			sum := e.summary(ws.ID)
			res.baseline = sum.Baseline
			for k, v := range sum.Levers {
				res.levers[k] = v
			}
		} else {
			res.directFactsLost = lost
		}
	}
	return res
}

// send makes one call and returns its effective cost from the upstream's own usage.
func (e *env) send(mode, provider, model, key string, body []byte) (ledger.Micros, bool) {
	url := e.gateway + "/v1/chat/completions"
	direct := mode == "direct" && provider == "openai"
	if direct {
		// Straight to the simulated upstream, with the model name it knows.
		body = bytes.Replace(body, []byte(`"oai/`), []byte(`"`), 1)
		url = e.upstream + "/v1/chat/completions"
	}
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if direct {
		req.Header.Set("Authorization", "Bearer bench-direct")
	} else {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if mode == "direct" {
		req.Header.Set("X-Btl-Optimize", "off")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fmt.Fprintf(os.Stderr, "%s %s: %d %s\n", mode, provider, resp.StatusCode, truncate(raw))
		return 0, false
	}
	if direct {
		span, ok, _ := providers.FindTopLevel(raw, "usage")
		if !ok {
			return 0, false
		}
		u, _ := providers.ParseOpenAIUsage(raw[span.Start:span.End])
		p, _ := e.prices.Lookup(model)
		return ledger.Micros(p.Cost(u)), true
	}
	var whole, frac int64
	fmt.Sscanf(resp.Header.Get("X-Btl-Cost-Usd"), "%d.%06d", &whole, &frac)
	return ledger.Micros(whole*1_000_000 + frac), true
}

type wsSummary struct {
	Baseline ledger.Micros
	Levers   map[string]float64
}

func (e *env) summary(ws string) wsSummary {
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := e.store.Summary(context.Background(), ws, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "")
		check(err)
		if time.Now().After(deadline) || s.Total.Requests > 0 {
			time.Sleep(300 * time.Millisecond) // let the writer finish the last batch
			s, _ = e.store.Summary(context.Background(), ws, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "")
			t := s.Total
			return wsSummary{Baseline: t.Baseline, Levers: map[string]float64{
				"prompt_cache": float64(t.SavePromptCache), "response_cache": float64(t.SaveResponseCache),
				"compression": float64(t.SaveCompression), "dedupe": float64(t.SaveDedupe),
				"coalesce": float64(t.SaveCoalesce), "routing": float64(t.SaveRouting)}}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// missingFacts counts planted facts that reached the upstream in no request of the run.
func missingFacts(facts []string, bodies [][]byte) int {
	all := bytes.Join(bodies, nil)
	lost := 0
	for _, f := range facts {
		if !bytes.Contains(all, []byte(f)) {
			lost++
		}
	}
	return lost
}

func render(rs []result) string {
	var b strings.Builder
	b.WriteString("| workload | upstream | requests | direct $ | through gateway $ | saved | gateway baseline vs direct | savings by lever | facts lost | invalid requests |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---|---:|---:|\n")
	var d, g ledger.Micros
	for _, r := range rs {
		d += r.direct
		g += r.gateway
		levers := []string{}
		for _, l := range []string{"prompt_cache", "dedupe", "compression", "response_cache", "coalesce", "routing"} {
			if v := r.levers[l]; v != 0 {
				levers = append(levers, fmt.Sprintf("%s $%s", l, ledger.Micros(v).String()))
			}
		}
		recon := "—"
		if r.direct > 0 {
			recon = fmt.Sprintf("%+.2f%%", 100*float64(r.baseline-r.direct)/float64(r.direct))
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %.1f%% | %s | %s | %d | %d |\n", r.name, r.provider, r.requests,
			r.direct, r.gateway, pct(r.direct, r.gateway), recon, strings.Join(levers, ", "), r.factsLost, r.invalid)
	}
	fmt.Fprintf(&b, "| **all** | | | %s | %s | **%.1f%%** | | | | |\n", d, g, pct(d, g))
	return b.String()
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
