package handlers

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	btlmetrics "github.com/badtheorylabs/btl-runtime/metrics"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/budget"
	"github.com/badtheorylabs/btl-runtime/tokenopt/cacheplan"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
)

type openaiLike struct{ cannedAdapter }

func (openaiLike) Name() string { return "oa" }
func (openaiLike) Type() string { return "openai" }

// perTargetEach is perTarget as the levers ran before they shared one copy: the cache plan
// (or the isolation plan) writes the body, then the budget writes it again.
func (h *Optimize) perTargetEach(ex *Exchange, p policy, body []byte, tg routing.Target) []byte {
	rep := ex.Optimizer
	rep.CacheMarkers, rep.BudgetCap = 0, 0
	planned := false
	if p.promptCache && tg.Priced {
		nb, cr, err := h.plans.Plan(body, h.cacheTarget(ex, tg))
		if err == nil {
			rep.CacheMarkers = len(cr.Breakpoints)
			if !p.shadow {
				body, planned = nb, true
			}
		}
	}
	if !planned && tg.Priced && h.CacheIsolation != CacheIsolationOff {
		ct := h.cacheTarget(ex, tg)
		ct.IsolateOnly = true
		if nb, _, err := h.plans.Plan(body, ct); err == nil {
			body = nb
		}
	}
	if p.budget && tg.Priced && ex.Request.OutputCap() == 0 {
		nb, br, err := budget.Apply(body, h.budgetTarget(ex, tg))
		if err == nil && !br.CallerCap && br.Cap > 0 {
			rep.BudgetCap = br.Cap
			if !p.shadow {
				body = nb
			}
		}
	}
	return body
}

// TestOptimizeOneViewWritesWhatTheLeversWroteOneByOne: for bodies of every shape the levers
// treat differently (small and large, with and without the caller's cap, a null cap, spaces
// between messages, space before the object, a new turn that dedupe rewrites) and every
// policy, the request btl_optimize forwards and the body it sends to an Anthropic and an
// OpenAI target are byte for byte what the levers wrote when each read and copied the body
// on its own, with the same report.
func TestOptimizeOneViewWritesWhatTheLeversWroteOneByOne(t *testing.T) {
	// Tool outputs big enough to mask, one above the truncation limit.
	big := strings.ReplaceAll(string(optimizeBody(12_000)), "from region eu-west; ", strings.Repeat("from region eu-west; ", 30))
	big = strings.Replace(big, `"tool_call_id":"call_0","content":"`, `"tool_call_id":"call_0","content":"`+strings.Repeat("y", 40_000), 1)
	// dupTurn ends the conversation with a copy of a document pasted earlier, which dedupe
	// turns into a reference.
	dupTurn := func(b string, turn int) string {
		const open, end = `<document source=\"kb/3\">`, `</document>`
		i := strings.Index(b, open)
		doc := b[i : i+strings.Index(b[i:], end)+len(end)]
		return strings.Replace(b, `"content":"summarise"}]}`, `"content":"turn `+strconv.Itoa(turn)+`: `+doc+`"}]}`, 1)
	}
	var bodies []string
	for _, b := range []string{string(optimizeBody(1_000)), big} {
		b = strings.ReplaceAll(b, "Refunds are issued within 14 days. ", strings.Repeat("Refunds are issued within 14 days. ", 10))
		bodies = append(bodies, b, dupTurn(b, 7),
			strings.Replace(dupTurn(b, 8), `"max_tokens":500,`, ``, 1),
			strings.Replace(dupTurn(b, 9), `"max_tokens":500,`, `"max_tokens":null,"reasoning_effort":"low",`, 1),
			strings.ReplaceAll(strings.Replace(dupTurn(b, 10), `"max_tokens":500,`, ``, 1), `},{"role"`, "}, \n {\"role\""),
			" \n"+strings.Replace(dupTurn(b, 11), `"max_tokens":500,`, ``, 1),
		)
	}
	// Keys written with escapes and twice.
	bodies = append(bodies, strings.Replace(strings.Replace(bodies[len(bodies)-5], `{"role":"user","content":"turn`, `{"r\u006fle":"user","role":"user","content":"turn`, 1),
		`"max_tokens":500,`, `"max\u005ftokens":null,"max_tokens":null,`, 1))
	headers := []string{"", "shadow", "-dedupe", "-prompt_cache", "-output_budget,-compression"}

	ad, oa := &anthLike{}, &openaiLike{}
	table, err := routing.New([]providers.Adapter{ad, oa}, nil, []routing.SlugConfig{
		{Name: "btl-anth", Candidates: []string{"anth/claude-sonnet-4-5"}},
		{Name: "btl-oa", Candidates: []string{"oa/gpt-4.1"}},
	}, nil, catalog.Default(), routing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	newHandler := func(mask bool, isolation string) *Optimize {
		ev := evidence.New()
		return &Optimize{rt: &benchRuntime{routes: table, prices: catalog.Default()}, logger: zap.NewNop(),
			plans: &cacheplan.Planner{Evidence: ev}, ev: ev, metrics: btlmetrics.Default(), MaskToolOutputs: mask, CacheIsolation: isolation}
	}
	load := func(body, header string) (*http.Request, *Exchange) {
		r, _ := http.NewRequest(http.MethodPost, PathChat, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Btl-Optimize", header)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
		ex := ExchangeFrom(r)
		ex.WorkspaceID = "ws-1"
		return r, ex
	}
	cases, deduped, compressed, capped := 0, 0, 0, 0
	// The previous case's body as sent and a copy: the buffers a later plan reuses must not
	// be what an earlier one returned.
	var lastSent, lastCopy []byte
	for _, slug := range []string{"btl-anth", "btl-oa"} {
		targets, err := table.Resolve(slug)
		if err != nil {
			t.Fatal(err)
		}
		for bi, b := range bodies {
			b = strings.Replace(b, `"model":"btl-anth"`, `"model":"`+slug+`"`, 1)
			for _, hdr := range headers {
				for _, mask := range []bool{false, true} {
					for _, iso := range []string{"", CacheIsolationOff} {
						// The view, through the handler.
						h := newHandler(mask, iso)
						r, ex := load(b, hdr)
						var seen *Exchange
						if err := h.ServeHTTP(&discardWriter{h: http.Header{}}, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
							seen = ExchangeFrom(r)
							return nil
						})); err != nil || seen != ex {
							t.Fatalf("ServeHTTP: %v", err)
						}
						// Written in one pass from the pending rewrite, then again from the
						// rewritten body once something has read it whole: the same bytes.
						pending := ex.rewrite != nil
						got := ex.PerTarget(targets[0])
						if again := ex.PerTarget(targets[0]); !bytes.Equal(again, got) {
							t.Fatalf("a second plan differs:\n got %.600s\nwant %.600s", again, got)
						}
						if !bytes.Equal(lastSent, lastCopy) {
							t.Fatalf("a body already sent was written over:\n got %.600s\nwant %.600s", lastSent, lastCopy)
						}
						lastSent, lastCopy = got, bytes.Clone(got)
						if body := ex.OutboundBody(); pending {
							if ex.rewrite != nil || len(body) != len(ex.Body) {
								t.Fatal("OutboundBody did not write the pending rewrite")
							}
							if again := ex.PerTarget(targets[0]); !bytes.Equal(again, got) {
								t.Fatalf("the plan of the written body differs:\n got %.600s\nwant %.600s", again, got)
							}
						}

						// The levers one by one.
						h2 := newHandler(mask, iso)
						r2, ex2 := load(b, hdr)
						req, perr := ex2.LoadChatRequest(r2, DefaultMaxBody)
						if perr != nil {
							t.Fatal(perr)
						}
						p := h2.policyFor(r2, ex2.WorkspaceID)
						ex2.Optimizer = &OptimizerReport{}
						body := h2.rewriteMessagesEach(ex2, req, p)
						if !bytes.Equal(body, req.Body) {
							ex2.Body = body
						}
						want := h2.perTargetEach(ex2, p, ex2.OutboundBody(), targets[0])

						name := slug + "/" + hdr
						if !bytes.Equal(ex.OutboundBody(), ex2.OutboundBody()) {
							t.Fatalf("%s body %d mask %v: forwarded bodies differ\n got %.400s\nwant %.400s", name, bi, mask, ex.Body, ex2.Body)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("%s body %d mask %v iso %q: bodies sent differ\n got %.600s\nwant %.600s", name, bi, mask, iso, got, want)
						}
						o, o2 := ex.Optimizer, ex2.Optimizer
						if o.DedupeTokens != o2.DedupeTokens || o.DedupeHistoryTokens != o2.DedupeHistoryTokens || o.CompressionTokens != o2.CompressionTokens ||
							o.CacheMarkers != o2.CacheMarkers || o.BudgetCap != o2.BudgetCap {
							t.Fatalf("%s body %d: reports differ: %+v vs %+v", name, bi, o, o2)
						}
						cases++
						if o.DedupeTokens+o.DedupeHistoryTokens > 0 && !p.shadow && p.dedupe {
							deduped++
						}
						if o.CompressionTokens > 0 && !p.shadow {
							compressed++
						}
						if o.BudgetCap > 0 && !p.shadow {
							capped++
						}
					}
				}
			}
		}
	}
	t.Logf("%d cases: %d deduped, %d compressed, %d capped", cases, deduped, compressed, capped)
	if deduped == 0 || compressed == 0 || capped == 0 {
		t.Fatal("a lever never acted: the comparison proves nothing about it")
	}
}
