package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/metrics"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
	"github.com/badtheorylabs/btl-runtime/tokenopt/budget"
	"github.com/badtheorylabs/btl-runtime/tokenopt/cacheplan"
	"github.com/badtheorylabs/btl-runtime/tokenopt/coalesce"
	"github.com/badtheorylabs/btl-runtime/tokenopt/compress"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
	"github.com/badtheorylabs/btl-runtime/tokenopt/respcache"
	"github.com/badtheorylabs/btl-runtime/tokenopt/tokens"
)

// Optimize decides what must be sent upstream: it dedupes retrieval chunks in the newest
// message, compresses old tool outputs in frozen epochs (and trims on context overflow),
// plans provider-native prompt caching and the output budget for each upstream target, and
// answers identical requests from the response cache. Every technique can be switched off in
// the Caddyfile or, for one request, with the x-btl-optimize header; shadow mode computes
// what would have been saved without changing the request. What each technique saved is
// attributed by the meter against an honest baseline (the request as the caller wrote it).
//
// Defaults: on for what is safe (prompt caching, output budget, dedupe, overflow trimming,
// coalescing and the response cache for deterministic requests), opt-in for what changes
// semantics (sharing or replaying sampled answers; masking old tool outputs).
type Optimize struct {
	// Shadow computes savings without changing requests.
	Shadow bool `json:"shadow,omitempty"`
	// Disable lists techniques switched off: prompt_cache, output_budget, dedupe,
	// compression, coalesce, response_cache. Coalescing and the response cache are on by
	// default for deterministic requests only (temperature 0, n 1, no sampling parameters);
	// see WorkspacePolicy.CoalesceSampled and CacheSampled.
	Disable []string `json:"disable,omitempty"`
	// MaskToolOutputs turns on observation masking of old tool outputs (a semantic change,
	// so opt-in); without it compression only trims on context overflow.
	MaskToolOutputs bool `json:"mask_tool_outputs,omitempty"`
	// ResponseCache bounds the response cache, which answers identical deterministic
	// requests (temperature 0, n 1, no sampling-only parameters) of one workspace from memory.
	// On by default (64 MiB, 10m); Disable response_cache turns it off.
	ResponseCache *ResponseCacheConfig `json:"response_cache,omitempty"`
	// Workspaces tunes the policy per workspace id, on top of the settings above.
	Workspaces map[string]*WorkspacePolicy `json:"workspaces,omitempty"`
	// CacheIsolation scopes provider prompt caches per workspace, so that no tenant can learn
	// from its own cache reads what another sent through the same upstream key.
	// "workspace" (the default) puts a workspace-keyed salt first in every request that carries
	// cache markers (Anthropic, Bedrock, Claude on Vertex) and scopes OpenAI's
	// prompt_cache_key to the workspace; "strict" also salts requests to upstreams that cache
	// on their own (Gemini, OpenAI-compatible), at a few tokens a request; "off" for a
	// single-tenant deployment.
	CacheIsolation string `json:"cache_isolation,omitempty"`

	rt      Runtime
	logger  *zap.Logger
	cache   *respcache.Cache
	plans   *cacheplan.Planner
	ev      *evidence.Store
	metrics *metrics.Set
}

// WorkspacePolicy adjusts the optimizer for one workspace.
type WorkspacePolicy struct {
	Shadow          bool     `json:"shadow,omitempty"`
	Disable         []string `json:"disable,omitempty"`
	MaskToolOutputs bool     `json:"mask_tool_outputs,omitempty"`
	// CoalesceSampled lets identical sampled requests in flight together (no temperature,
	// temperature above 0, n > 1) share one upstream call and so one sample. Off by default:
	// parallel sampling, best-of-n and self-consistency need independent draws.
	CoalesceSampled bool `json:"coalesce_sampled,omitempty"`
	// CacheSampled lets the response cache replay answers to identical sampled requests of
	// this workspace (ResponseCacheConfig.Sampled does it for every workspace). Off by default
	// for the same reason.
	CacheSampled bool `json:"cache_sampled,omitempty"`
}

// ResponseCacheConfig bounds the response cache.
type ResponseCacheConfig struct {
	// MaxBytes bounds the cache's memory. Default: 64 MiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// TTL is how long an answer is reused. Default: 10m.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Sampled also caches answers to requests with a non-zero temperature or n > 1.
	Sampled bool `json:"sampled,omitempty"`
}

// Cache isolation modes.
const (
	CacheIsolationWorkspace = "workspace"
	CacheIsolationStrict    = "strict"
	CacheIsolationOff       = "off"
)

// Techniques.
const (
	TechPromptCache   = "prompt_cache"
	TechOutputBudget  = "output_budget"
	TechDedupe        = "dedupe"
	TechCompression   = "compression"
	TechResponseCache = "response_cache"
	TechCoalesce      = "coalesce"
)

// CaddyModule returns the Caddy module information.
func (Optimize) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_optimize", New: func() caddy.Module { return new(Optimize) }}
}

// Provision finds the btl app and builds the response cache.
func (h *Optimize) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	rt, err := runtimeFrom(ctx, "btl_optimize")
	if err != nil {
		return err
	}
	h.rt = rt
	switch h.CacheIsolation {
	case "", CacheIsolationWorkspace, CacheIsolationStrict, CacheIsolationOff:
	default:
		return fmt.Errorf("btl_optimize: cache_isolation must be %q, %q or %q, not %q", CacheIsolationWorkspace, CacheIsolationStrict, CacheIsolationOff, h.CacheIsolation)
	}
	// The evidence outlives this config: what the levers learned survives reloads.
	h.ev = evidence.Default
	h.plans = &cacheplan.Planner{Evidence: h.ev}
	h.metrics = metrics.Default()
	// The response cache is on by default: it replays only deterministic answers, within the
	// workspace that paid for them, so a hit is the answer the caller would have got.
	if h.ResponseCache == nil && !slices.Contains(h.Disable, TechResponseCache) {
		h.ResponseCache = &ResponseCacheConfig{}
	}
	if rc := h.ResponseCache; rc != nil && !slices.Contains(h.Disable, TechResponseCache) {
		if rc.MaxBytes <= 0 {
			rc.MaxBytes = 64 << 20
		}
		if rc.TTL <= 0 {
			rc.TTL = caddy.Duration(10 * time.Minute)
		}
		h.cache = respcache.New(rc.MaxBytes, time.Duration(rc.TTL)).WithPolicy(respcache.Policy{AllowSampled: rc.Sampled})
	}
	return nil
}

// Cleanup releases the response cache.
func (h *Optimize) Cleanup() error {
	if h.cache != nil {
		h.cache.Close()
	}
	return nil
}

// policy is what applies to one request.
type policy struct {
	shadow                       bool
	promptCache, budget, dedupe  bool
	compression, mask, respCache bool
	coalesce, coalesceSampled    bool
	cacheSampled                 bool
}

// policyFor combines the configuration with the x-btl-optimize header: "off" (nothing),
// "shadow", or a comma list of technique names prefixed with "-" (off) or "+" (on, for the
// opt-in ones the configuration allows).
func (h *Optimize) policyFor(r *http.Request, workspace string) policy {
	p := policy{shadow: h.Shadow, promptCache: true, budget: true, dedupe: true, compression: true,
		mask: h.MaskToolOutputs, respCache: h.cache != nil, coalesce: true}
	for _, d := range h.Disable {
		p.set(d, false)
	}
	if wp := h.Workspaces[workspace]; wp != nil {
		p.shadow = p.shadow || wp.Shadow
		p.mask = p.mask || wp.MaskToolOutputs
		p.coalesceSampled = wp.CoalesceSampled
		p.cacheSampled = wp.CacheSampled
		for _, d := range wp.Disable {
			p.set(d, false)
		}
	}
	for _, v := range strings.Split(r.Header.Get("X-Btl-Optimize"), ",") {
		v = strings.TrimSpace(strings.ToLower(v))
		switch {
		case v == "":
		case v == "off":
			return policy{}
		case v == "shadow":
			p.shadow = true
		case strings.HasPrefix(v, "-"):
			p.set(v[1:], false)
		case strings.HasPrefix(v, "+") && v[1:] == TechResponseCache:
			p.respCache = h.cache != nil
		}
	}
	return p
}

func (p *policy) set(tech string, on bool) {
	switch tech {
	case TechPromptCache:
		p.promptCache = on
	case TechOutputBudget:
		p.budget = on
	case TechDedupe:
		p.dedupe = on
	case TechCompression:
		p.compression, p.mask = on, p.mask && on
	case TechResponseCache:
		p.respCache = on
	case TechCoalesce:
		p.coalesce = on
	}
}

func (h *Optimize) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := ExchangeFrom(r)
	w.Header().Set("X-Btl-Request-Id", ex.ID)
	if r.Method == http.MethodPost && r.URL.Path == PathResponses && h.CacheIsolation != CacheIsolationOff {
		// Isolation is not a lever: it holds whatever the request's optimize policy says.
		ex.CacheScope = cacheplan.Isolate(ex.WorkspaceID)
	}
	if r.Method != http.MethodPost || (r.URL.Path != PathChat && r.URL.Path != PathMessages && r.URL.Path != PathResponses) {
		return next.ServeHTTP(w, r)
	}
	if r.URL.Path == PathResponses {
		// A Responses request is optimised on its chat translation, which is what every
		// provider but OpenAI receives; an attempt that passes the original through to an
		// OpenAI upstream takes back what the rewrites claimed (OptimizerReport.passedThrough).
		ex.startResponses(h.rt, h.logger)
	}
	req, perr := ex.LoadChatRequest(r, DefaultMaxBody)
	if perr != nil {
		return next.ServeHTTP(w, r) // the route answers with the parse error
	}
	_, span := startSpan(r, "btl.optimize")
	p := h.policyFor(r, ex.WorkspaceID)
	ex.Optimizer = &OptimizerReport{Shadow: p.shadow, Coalesce: p.coalesce && !p.shadow, CoalesceSampled: p.coalesceSampled}
	// One view of the conversation serves every lever; a body it cannot read (a message that
	// is not an object) takes the lever-by-lever path, which handles anything that parsed.
	var view *conv.View
	if p.dedupe || p.compression || (p.budget && req.OutputCap() == 0) {
		if v, err := conv.Parse(req.Body); err == nil && v.Arr.Start == req.MessagesAt && v.Arr.End-v.Arr.Start == len(req.Messages) {
			view = v
		}
	}
	if !p.shadow && (p.coalesce || p.respCache) {
		// One top-level look for both levers that share only deterministic requests (the
		// view's, when there is one); the rewrites below never touch the sampling
		// parameters it reads.
		if view != nil {
			ex.Optimizer.Deterministic = coalesce.DeterministicMembers(req.Body, view.Top)
		} else {
			ex.Optimizer.Deterministic = coalesce.Deterministic(req.Body)
		}
	}
	if view != nil {
		if ch := h.rewriteMessages(ex, req, p, view); !ch.Identity() {
			// Not written here: perTarget writes it once with each target's edits.
			ex.rewrite = &pendingRewrite{view: view, ch: ch, len: view.Len(ch)}
		} else {
			view.Release() // what follows reads only the top level
		}
	} else if body := h.rewriteMessagesEach(ex, req, p); !bytes.Equal(body, req.Body) {
		ex.Body = body
	}
	// Prompt caching and the output budget depend on the upstream target, so they run per
	// attempt, in the route handler.
	ex.PerTarget = func(tg routing.Target) []byte { return h.perTarget(ex, p, tg, view) }
	if !p.shadow {
		ex.OnComplete(h.observe)
	}
	if span != nil {
		span.SetAttributes(optimizerAttributes(ex.Optimizer)...)
		endSpan(span, http.StatusOK)
	}

	// Shadow mode changes nothing, so it answers nothing from memory either.
	if p.respCache && !p.shadow {
		cache := h.cache
		if p.cacheSampled {
			cache = cache.WithPolicy(respcache.Policy{AllowSampled: true})
		}
		// Most traffic samples: that is settled before the cache key canonicalises and
		// hashes the whole body.
		if cache.AllowsSampled() || ex.Optimizer.Deterministic {
			return h.serveCached(w, r, ex, req, cache, next)
		}
	}
	return next.ServeHTTP(w, r)
}

// rewriteMessages dedupes and compresses the conversation on its view, returning the change
// to its messages (written later, once: see perTarget).
func (h *Optimize) rewriteMessages(ex *Exchange, req *providers.ChatRequest, p policy, view *conv.View) conv.Change {
	ch := conv.None()
	if p.dedupe {
		if c, newest, history, ok := dedupeView(view); ok && newest+history > 0 {
			ex.Optimizer.DedupeTokens, ex.Optimizer.DedupeHistoryTokens = newest, history
			if !p.shadow {
				ch = c
			}
		}
	}
	if p.compression && h.mayCompress(ex, view.Len(ch), req, p.mask) {
		if c, rep, err := compress.CompressView(view, ch, h.compressOptions(ex, req, p)); err == nil && rep.TokensAfter < rep.TokensBefore {
			ex.Optimizer.CompressionTokens = int64(rep.TokensBefore - rep.TokensAfter)
			if !p.shadow {
				ch = c
			}
		}
	}
	return ch
}

// rewriteMessagesEach is rewriteMessages for a body without a view: each lever reads and
// writes the body on its own.
func (h *Optimize) rewriteMessagesEach(ex *Exchange, req *providers.ChatRequest, p policy) []byte {
	body := req.Body
	if p.dedupe {
		if nb, newest, history, ok := dedupeConversation(req); ok && newest+history > 0 {
			ex.Optimizer.DedupeTokens, ex.Optimizer.DedupeHistoryTokens = newest, history
			if !p.shadow {
				body = nb
			}
		}
	}
	if p.compression && h.mayCompress(ex, len(body), req, p.mask) {
		if nb, rep, err := compress.Compress(body, h.compressOptions(ex, req, p)); err == nil && rep.TokensAfter < rep.TokensBefore {
			ex.Optimizer.CompressionTokens = int64(rep.TokensBefore - rep.TokensAfter)
			if !p.shadow {
				body = nb
			}
		}
	}
	return body
}

func (h *Optimize) compressOptions(ex *Exchange, req *providers.ChatRequest, p policy) compress.Options {
	// KeepToolOutputs also protects the newest tool outputs of an agent loop that runs
	// under a single user message (the default protects only whole user turns).
	opts := compress.Options{DisableMask: !p.mask, KeepToolOutputs: 4, ContextWindow: int(h.contextOf(ex, req))}
	if p.mask {
		opts.Economics = h.maskEconomics(ex, req)
	}
	return opts
}

// perTarget is the body for one upstream target: the request as rewritten, with the
// prompt-cache plan and output cap for tg. A pending rewrite is written once, with those
// edits: the plan reads it in reused memory. view, when it is of the body, spares the budget
// a walk.
func (h *Optimize) perTarget(ex *Exchange, p policy, tg routing.Target, view *conv.View) []byte {
	if pr := ex.rewrite; pr != nil {
		body, top := pr.view.RewriteAppend(planBufs.get(), pr.ch)
		out := h.planTarget(ex, p, body, tg, top, func(edits []conv.Edit) []byte { return pr.view.RewriteWith(pr.ch, edits) })
		planBufs.put(body)
		return out
	}
	body := ex.OutboundBody()
	return h.planTarget(ex, p, body, tg, view, func(edits []conv.Edit) []byte { return conv.Apply(body, edits) })
}

// planBufs are the buffers perTarget writes a rewritten body in for the plan to read. They
// are kept across garbage collections, unlike a sync.Pool's: the large bodies that need them
// come seldom, and new memory that size costs several times the copy (measured 100–120 µs
// against 14 µs for 400 KB).
var planBufs = &bufList{max: 4, maxBytes: 4 << 20}

// bufList keeps up to max buffers of at most maxBytes each.
type bufList struct {
	mu            sync.Mutex
	free          [][]byte
	max, maxBytes int
}

// get returns an empty buffer, nil when none is free.
func (l *bufList) get() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.free)
	if n == 0 {
		return nil
	}
	b := l.free[n-1]
	l.free[n-1] = nil
	l.free = l.free[:n-1]
	return b
}

// put gives b back for reuse; its contents are garbage from now on.
func (l *bufList) put(b []byte) {
	if cap(b) > l.maxBytes {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < l.max {
		l.free = append(l.free, b[:0])
	}
}

// planTarget plans provider-native caching and the output cap of body for tg. Both are edits
// of body, which write writes in one copy: the result never shares body's memory, unless
// write returns it.
func (h *Optimize) planTarget(ex *Exchange, p policy, body []byte, tg routing.Target, view *conv.View, write func([]conv.Edit) []byte) []byte {
	rep := ex.Optimizer
	rep.CacheMarkers, rep.CacheKey, rep.BudgetCap = 0, false, 0
	rep.target, rep.cacheKeyBase, rep.keyWarm, rep.prefixShare = tg.Model, "", false, 0
	rep.prefixMarked, rep.convMarked, rep.markedShare = false, false, 0
	var price = tg.Price
	if tg.Priced {
		rep.price = *price
	}
	// A caller's own cap is never touched; the parse already knows whether there is one. The
	// cap is decided on the body as it comes (the plan never touches the fields it reads) and
	// written with the plan. The two inserts at the object's start are written in the order
	// the levers ran one after the other; a body with space before its '{' keeps that order
	// by running them so.
	var extra []conv.Edit
	together := len(body) > 0 && body[0] == '{'
	if p.budget && tg.Priced && ex.Request.OutputCap() == 0 && together {
		var top []conv.Member
		if view.Of(body) {
			top = view.Top
		}
		e, ok, br, err := budget.Decide(body, top, h.budgetTarget(ex, tg))
		if err == nil && !br.CallerCap && br.Cap > 0 {
			rep.BudgetCap = br.Cap
			if !p.shadow && ok {
				extra = append(extra, e)
			}
		}
	}
	planned := false // the body carries the cache plan, isolation included
	written := false // body is write's
	if p.promptCache && tg.Priced {
		ct := h.cacheTarget(ex, tg)
		nb, cr, err := h.plans.PlanApply(body, ct, extra, write) // extra is empty in shadow mode
		if err == nil {
			rep.Breakers = cr.BreakerHeader()
			rep.CacheMarkers = len(cr.Breakpoints)
			rep.CacheKey = cr.PromptCacheKey != ""
			rep.cacheKeyBase, rep.keyWarm = cr.CacheKeyBase, cr.KeyWarm
			rep.prefixMarked, rep.convMarked = cr.PrefixMarked, cr.ConvMarked
			if cr.TotalTokens > 0 {
				rep.prefixShare = float64(cr.PrefixTokens) / float64(cr.TotalTokens)
				rep.markedShare = float64(cr.MarkedPrefixTokens) / float64(cr.TotalTokens)
			}
			if !p.shadow {
				body, planned, written, extra = nb, true, true, nil
				rep.SaltTokens = saltTokens(cr.Salted, ct.Salt, ct.Provider)
			}
		}
	}
	if !planned && tg.Priced && h.CacheIsolation != CacheIsolationOff {
		// Isolation is not a lever: a tenant that turns prompt caching off (or the operator,
		// or shadow mode) must not leave its own markers or named key readable by others.
		ct := h.cacheTarget(ex, tg)
		ct.IsolateOnly = true
		if nb, cr, err := h.plans.PlanApply(body, ct, extra, write); err == nil {
			body, written, extra = nb, true, nil
			rep.SaltTokens = saltTokens(cr.Salted, ct.Salt, ct.Provider)
		}
	}
	if !written {
		body = write(extra)
	}
	if p.budget && tg.Priced && ex.Request.OutputCap() == 0 && !together {
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

// saltTokens estimates what the workspace salt message adds to the prompt: the salt's text
// (short and fixed, so the byte estimate is as good as any tokenizer's guess of another
// provider's count) and, on OpenAI-shaped upstreams, a message's framing (system blocks and
// instructions elsewhere have none). It is the gateway's own addition, so the baseline
// leaves it out.
func saltTokens(salted bool, salt, providerType string) int64 {
	if !salted {
		return 0
	}
	n := int64(tokens.Estimate(len(salt)))
	switch providerType {
	case "openai", "openai_compatible", "openrouter", "simulated":
		n += 3
	}
	return n
}

func (h *Optimize) budgetTarget(ex *Exchange, tg routing.Target) budget.Target {
	return budget.Target{Provider: tg.Provider.Type(), Model: tg.Model, Price: *tg.Price, Workspace: ex.WorkspaceID, Evidence: h.ev}
}

// cacheTarget is the cache plan's view of one upstream target, with the workspace's
// isolation salt unless cache_isolation is off.
func (h *Optimize) cacheTarget(ex *Exchange, tg routing.Target) cacheplan.Target {
	ct := cacheplan.Target{Provider: tg.Provider.Type(), Model: tg.Model, Workspace: ex.WorkspaceID, Price: *tg.Price}
	if h.CacheIsolation != CacheIsolationOff {
		ct.Salt = cacheplan.Isolate(ex.WorkspaceID)
		ct.SaltAutomatic = h.CacheIsolation == CacheIsolationStrict
	}
	return ct
}

// observe feeds the evidence record with what the upstream reported for this request. Only
// the request that made the upstream call counts: a cached replay or a coalesced follower
// reports someone else's usage.
func (h *Optimize) observe(ex *Exchange) {
	rep := ex.Optimizer
	if rep == nil || !ex.UsageKnown || ex.UsageEstimated || ex.Partial || ex.Coalesced || ex.Provider == "cache" || rep.target == "" {
		return
	}
	u := ex.Usage
	out := h.ev.Observe(evidence.Observation{
		Workspace: ex.WorkspaceID, Model: rep.target, Price: rep.price,
		Markers: rep.CacheMarkers, PrefixMarked: rep.prefixMarked, ConvMarked: rep.convMarked, MarkedPrefixShare: rep.markedShare,
		CacheKey: rep.cacheKeyBase, KeyWarm: rep.keyWarm, PrefixShare: rep.prefixShare,
		MinCacheTokens: rep.price.CacheMinTokens,
		GatewayCap:     rep.BudgetCap, CallerCapped: ex.Request != nil && ex.Request.OutputCap() > 0,
		Prompt: u.PromptTokens(), CacheRead: u.CacheRead, CacheWrite5m: u.CacheWrite5m, CacheWrite1h: u.CacheWrite1h,
		Output: u.Output, Finish: rep.Finish, EmptyContent: rep.emptyContent,
	})
	if out.CutByGateway {
		h.metrics.CapCut()
	}
}

// maskEconomics prices observation masking for the request's first candidate with what the
// evidence shows: a kept old token costs the cached rate only as far as the upstream actually
// serves this workspace's prompts from its cache, and the full rate otherwise.
func (h *Optimize) maskEconomics(ex *Exchange, req *providers.ChatRequest) compress.Economics {
	targets, err := ex.Candidates(h.rt.Routes(), req.Model)
	if err != nil || len(targets) == 0 || !targets[0].Priced {
		return compress.Economics{}
	}
	p := targets[0].Price
	e := compress.Economics{InputPrice: float64(p.Input)}
	if p.Input > 0 && p.CachedInput > 0 {
		e.CacheReadMultiplier = float64(p.CachedInput) / float64(p.Input)
	}
	if p.Input > 0 && p.CacheWrite5m > 0 {
		e.CacheWriteMultiplier = float64(p.CacheWrite5m) / float64(p.Input)
	} else {
		e.CacheWriteMultiplier = 1
	}
	if share, ok := h.ev.ReadShare(ex.WorkspaceID, targets[0].Model); ok && e.CacheReadMultiplier > 0 {
		e.CacheReadMultiplier = share*e.CacheReadMultiplier + (1 - share)
	}
	return e
}

// mayCompress is a cheap pre-check: without masking, compression only truncates a tool
// output above compress's 8k-token limit or trims on context overflow, and neither can happen
// to a body (of size bytes) smaller than that limit that fits the smallest context window.
func (h *Optimize) mayCompress(ex *Exchange, size int, req *providers.ChatRequest, mask bool) bool {
	if mask {
		return true
	}
	const truncateAboveBytes = 8192 * 4
	est := int64(size)/4 + req.OutputCap()
	ctx := h.contextOf(ex, req)
	return size > truncateAboveBytes || (ctx > 0 && est > ctx*9/10)
}

// contextOf is the smallest context window among the request's candidates (0: unknown).
func (h *Optimize) contextOf(ex *Exchange, req *providers.ChatRequest) int64 {
	targets, err := ex.Candidates(h.rt.Routes(), req.Model)
	if err != nil {
		return 0
	}
	return minContext(targets)
}

func minContext(targets []routing.Target) int64 {
	var m int64
	for _, t := range targets {
		if t.Priced && t.Price.Context > 0 && (m == 0 || t.Price.Context < m) {
			m = t.Price.Context
		}
	}
	return m
}

// OptimizerReport is what btl_optimize did to one request, for headers and attribution.
type OptimizerReport struct {
	Shadow bool
	// Coalesce lets identical in-flight deterministic requests share one upstream call;
	// CoalesceSampled extends that to sampled ones (the workspace opted in).
	Coalesce, CoalesceSampled bool
	// Deterministic: the request asks for one deterministic answer (coalesce.Deterministic),
	// the only kind coalescing and the response cache share by default.
	Deterministic bool
	// EmptyLength is set when the answer hit the gateway's cap with no content.
	EmptyLength bool
	// DedupeTokens were removed from the newest message, DedupeHistoryTokens from earlier
	// ones (which a provider with automatic prefix caching would have read from its cache).
	DedupeTokens        int64
	DedupeHistoryTokens int64
	CompressionTokens   int64
	CacheMarkers        int
	// SaltTokens is the estimated size of the workspace salt the cache plan added (0 when
	// none): billed, as the upstream counts it, but not part of what the caller sent.
	SaltTokens int64
	CacheKey   bool
	BudgetCap  int64
	Breakers   string
	// Finish is the answer's finish reason, recorded by the route while a gateway-set cap
	// applies (BudgetCap > 0): the evidence for the learned cap and the cut count.
	Finish       string
	emptyContent bool

	// For the evidence record: the target that answered and what the cache plan did there.
	target       string
	price        catalog.Price
	cacheKeyBase string
	keyWarm      bool
	prefixShare  float64
	prefixMarked bool
	convMarked   bool
	markedShare  float64
}

// passedThrough takes back what the chat rewrites claimed when an attempt sends the caller's
// original Responses body to an OpenAI upstream instead of the rewritten translation: nothing
// of it reached the upstream, so nothing of it is credited or observed.
func (o *OptimizerReport) passedThrough() {
	o.DedupeTokens, o.DedupeHistoryTokens, o.CompressionTokens = 0, 0, 0
	o.CacheMarkers, o.SaltTokens, o.CacheKey, o.BudgetCap, o.Breakers = 0, 0, false, 0, ""
	o.target = ""
}

// serveCached answers from the response cache, or lets the request through and stores its
// answer. The key is the request as the caller wrote it (before any rewrite), per workspace.
func (h *Optimize) serveCached(w http.ResponseWriter, r *http.Request, ex *Exchange, req *providers.ChatRequest, cache *respcache.Cache, next caddyhttp.Handler) error {
	key, ok := cache.Key(ex.WorkspaceID, req.Body)
	if !ok {
		return next.ServeHTTP(w, r)
	}
	if e, hit := cache.Get(key); hit {
		// The route translates answers into the API the request came in through; a replay
		// never reaches the route, so it is translated here the same way.
		aw, finish := ex.answerWriter(w)
		h.replay(aw, ex, req, e)
		finish()
		return nil
	}
	ex.CacheOutcome = "miss"
	var asm *respcache.Assembler
	var captured []byte
	ex.CaptureUpstream = func(body []byte) { captured = body }
	if req.Stream {
		asm = respcache.NewAssembler(0)
		ex.CaptureChunk = func(chunk []byte) { _ = asm.Add(chunk) }
	}
	err := next.ServeHTTP(w, r)
	if ex.Status != http.StatusOK || ex.Partial || !ex.UsageKnown || ex.UsageEstimated {
		return err
	}
	if o := ex.Optimizer; o != nil && o.BudgetCap > 0 && o.Finish == "length" {
		// Cut by the gateway's own cap: a replay would hide that (no X-Btl-Capped), and
		// the next call may find the cap learned higher.
		return err
	}
	if asm != nil {
		if c, aerr := asm.Completion(); aerr == nil {
			captured = c
		}
	}
	if captured != nil {
		cache.Put(key, captured, ex.Usage)
	}
	return err
}

// replay writes a cached answer, as a stream when the request asked for one.
func (h *Optimize) replay(w http.ResponseWriter, ex *Exchange, req *providers.ChatRequest, e *respcache.Entry) {
	ex.CacheOutcome = respcache.HeaderHit
	ex.Provider, ex.UpstreamModel = "cache", ""
	if span, ok, _ := providers.FindTopLevel(e.Body(), "model"); ok {
		_ = json.Unmarshal(e.Body()[span.Start:span.End], &ex.UpstreamModel)
	}
	ex.Usage, ex.UsageKnown = e.Usage(), true
	ex.Status = http.StatusOK
	ex.TTFB = time.Since(ex.Start)
	ex.Complete()
	hdr := w.Header()
	hdr.Set("X-Btl-Cache", respcache.HeaderHit)
	hdr.Set("Age", itoa(int64(time.Since(e.StoredAt())/time.Second)))
	setCostHeaders(hdr, ex)
	if req.Stream {
		ex.Streamed = true
		hdr.Set("Content-Type", "text/event-stream")
		hdr.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = e.WriteStream(w, req.WantsUsage(), rc.Flush)
		return
	}
	body := e.Body()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", itoa(int64(len(body))))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Optimize)(nil)
	_ caddy.CleanerUpper          = (*Optimize)(nil)
	_ caddyhttp.MiddlewareHandler = (*Optimize)(nil)
)
