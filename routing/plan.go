package routing

import (
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Strategies a slug may use.
const (
	StrategyOrdered  = "ordered"
	StrategyCheapest = "cheapest"
	StrategyFastest  = "fastest"
	StrategyWeighted = "weighted"
)

// ValidStrategy reports whether s names a strategy.
func ValidStrategy(s string) bool {
	switch s {
	case StrategyOrdered, StrategyCheapest, StrategyFastest, StrategyWeighted:
		return true
	}
	return false
}

// Features are what routing needs to know about a request.
type Features struct {
	// InputTokens is the estimated prompt size.
	InputTokens int64
	// OutputCap is the caller's output limit (0: none).
	OutputCap                 int64
	Tools, Vision, JSONSchema bool
	// Conversation identifies a conversation for cache-warm stickiness (0: none).
	Conversation uint64
	// Strategy overrides the slug's strategy for this request ("" keeps it).
	Strategy string
	// Endpoint is the API served: "" for chat, else providers.EndpointEmbeddings,
	// EndpointCompletions or EndpointModerations. Only models of the matching kind on
	// providers that speak that endpoint are candidates.
	Endpoint string
}

// expectedOutput is the output size used to compare prices when the caller gave no cap.
const expectedOutput = 512

// Plan is the order in which to try targets, and why.
type Plan struct {
	Targets  []Target
	Strategy string
	// Reason is a short machine-readable explanation (x-btl-route-reason).
	Reason string
	// Default is the target a plain client would have used: the slug's first capable
	// candidate at list price. The routing lever's saving is measured against it.
	Default Target
}

// Plan resolves model and orders its capable targets by strategy. Unhealthy targets (open
// breaker) go last: they are tried only when nothing else is left. Slugs have a handful of
// candidates, so ordering is an insertion sort over precomputed keys: no map, no closure
// calls into locks while sorting.
func (t *Table) Plan(model string, f Features) (Plan, *providers.Error) {
	cands, strategy, perr := t.candidates(model)
	if perr != nil {
		return Plan{}, perr
	}
	if f.Strategy != "" && len(cands) > 1 {
		strategy = f.Strategy
	}
	capable := cands[:0]
	var rejected string
	for _, c := range cands {
		if why := c.cannotServe(f); why != "" {
			rejected = why
			continue
		}
		capable = append(capable, c)
	}
	if f.Endpoint == providers.EndpointEmbeddings && len(capable) > 1 {
		capable = sameModel(capable)
	}
	if len(capable) == 0 {
		if needs, ok := endpointNeeds[rejected]; ok {
			return Plan{}, providers.Errorf(http.StatusBadRequest, "unsupported_model", "model",
				"'%s' cannot serve /v1/%s: it needs %s", model, rejected, needs)
		}
		if rejected == "context" {
			return Plan{}, providers.Errorf(http.StatusBadRequest, "context_length_exceeded", "messages",
				"this request (about %d tokens plus output) exceeds the context window of every model that '%s' can use", f.InputTokens, model)
		}
		return Plan{}, providers.Errorf(http.StatusBadRequest, "unsupported_capability", "",
			"no model behind '%s' supports what this request needs (%s)", model, rejected)
	}
	p := Plan{Strategy: strategy, Targets: capable, Default: capable[0]}
	warm := ""
	var warmTokens int64
	if f.Conversation != 0 {
		if e, ok := sticky.get(f.Conversation, t.now()); ok {
			warm, warmTokens = e.target, min(e.promptTokens, f.InputTokens)
		}
	}
	var keyBuf [8]int64
	sortKeys := keyBuf[:0]
	if len(capable) > len(keyBuf) {
		sortKeys = make([]int64, 0, len(capable))
	}
	switch strategy {
	case StrategyCheapest:
		for _, c := range capable {
			cached := int64(0)
			if c.key == warm {
				cached = warmTokens
			}
			sortKeys = append(sortKeys, c.expectedCost(f, cached))
		}
		sortBy(capable, sortKeys)
		p.Reason = "cheapest"
		if warm != "" && capable[0].key == warm {
			p.Reason = "cheapest_warm_cache"
		}
	case StrategyFastest:
		for _, c := range capable {
			ttfb, _ := c.health.Speed()
			sortKeys = append(sortKeys, int64(ttfb)) // unmeasured (0) first: explore them
		}
		sortBy(capable, sortKeys)
		p.Reason = "fastest"
		p.stickFirst(warm, "fastest_warm_cache")
	case StrategyWeighted:
		for _, c := range capable {
			sortKeys = append(sortKeys, weightedKey(c.Weight))
		}
		sortBy(capable, sortKeys)
		p.Reason = "weighted"
		p.stickFirst(warm, "weighted_warm_cache")
	default:
		p.Reason = "ordered"
		if len(cands) == 1 && t.slugs[model] == nil {
			p.Reason = "pinned"
		}
		p.stickFirst(warm, "ordered_warm_cache")
	}
	// Healthy first, keeping the strategy's order within each group.
	sortKeys = sortKeys[:0]
	sick := 0
	for _, c := range p.Targets {
		if c.health.Healthy() {
			sortKeys = append(sortKeys, 0)
		} else {
			sortKeys = append(sortKeys, 1)
			sick++
		}
	}
	if sick > 0 {
		preferred := p.Targets[0].key
		sortBy(p.Targets, sortKeys)
		switch {
		case sick == len(p.Targets):
			p.Reason += "_all_unhealthy"
		case p.Targets[0].key != preferred:
			p.Reason += "_breaker_open"
		}
	}
	return p, nil
}

// sortBy is a stable insertion sort of ts by keys (ascending); keys move with ts.
func sortBy(ts []Target, keys []int64) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}

// weightedKey draws a sort key for weighted random order (Efraimidis–Spirakis: ascending
// -ln(u)/w puts each target first with probability proportional to its weight).
func weightedKey(weight int) int64 {
	u := rand.Float64()
	for u == 0 {
		u = rand.Float64()
	}
	return int64(-logf(u) / float64(max(weight, 1)) * 1e12)
}

// stickFirst moves the cache-warm target to the front for strategies that do not price.
func (p *Plan) stickFirst(warm, reason string) {
	if warm == "" {
		return
	}
	for i, c := range p.Targets {
		if c.key == warm && i > 0 {
			copy(p.Targets[1:i+1], p.Targets[:i])
			p.Targets[0] = c
			p.Reason = reason
			return
		}
	}
}

// endpointNeeds says, for a request rejected because of its endpoint, what would serve it.
var endpointNeeds = map[string]string{
	"chat/completions":            "a chat model (an embedding or moderation model cannot chat)",
	providers.EndpointEmbeddings:  "an embedding model (for example text-embedding-3-small, amazon.titan-embed-text-v2:0 or gemini-embedding-001) on an openai, openai_compatible, openrouter, simulated, bedrock, gemini or vertex provider",
	providers.EndpointCompletions: "a completion model on an OpenAI-style provider (openai, openai_compatible, openrouter or simulated)",
	providers.EndpointModerations: "a moderation model (for example omni-moderation-latest) on an OpenAI-style provider (openai, openai_compatible, openrouter or simulated)",
}

// servesEndpoint reports whether the target's provider and model kind fit the endpoint.
func (t Target) servesEndpoint(endpoint string) bool {
	kind := catalog.KindChat
	if t.Priced {
		kind = t.Price.Kind
	}
	switch endpoint {
	case "":
		return kind == catalog.KindChat
	case providers.EndpointEmbeddings:
		_, ok := t.Provider.(providers.Embedder)
		return ok && (!t.Priced || kind == catalog.KindEmbedding)
	case providers.EndpointCompletions:
		_, ok := t.Provider.(providers.Forwarder)
		return ok && kind == catalog.KindChat
	case providers.EndpointModerations:
		_, ok := t.Provider.(providers.Forwarder)
		return ok && (!t.Priced || kind == catalog.KindModeration)
	}
	return false
}

// sameModel keeps the targets that serve the same model as the first: vectors of different
// embedding models are not comparable, so an embeddings request fails over between hosts of
// one model, never to another model.
func sameModel(targets []Target) []Target {
	first := targets[0].canonical()
	out := targets[:0]
	for _, t := range targets {
		if t.canonical() == first {
			out = append(out, t)
		}
	}
	return out
}

func (t Target) canonical() string {
	if t.Priced {
		return t.Price.Model
	}
	return t.Model
}

// cannotServe names why the target cannot take the request ("" when it can).
func (t Target) cannotServe(f Features) string {
	if !t.servesEndpoint(f.Endpoint) {
		if f.Endpoint == "" {
			return "chat/completions"
		}
		return f.Endpoint
	}
	if !t.Priced {
		return "" // unknown model: nothing to check against
	}
	need := f.InputTokens + max(f.OutputCap, 1)
	// An embedding model's context bounds each input, not a batch of them: the upstream
	// enforces it per input.
	if t.Price.Context > 0 && need > t.Price.Context && f.Endpoint != providers.EndpointEmbeddings {
		return "context"
	}
	switch {
	case f.Tools && !t.Price.Caps.Tools:
		return "tools"
	case f.Vision && !t.Price.Caps.Vision:
		return "vision"
	case f.JSONSchema && !t.Price.Caps.JSONSchema:
		return "json_schema"
	}
	return ""
}

// expectedCost is the effective price of the request on this target in µ$: cached tokens
// at the cached rate where the cache is warm, long-context tiers, the output cap.
func (t Target) expectedCost(f Features, cached int64) int64 {
	if !t.Priced {
		return 1 << 50 // unknown price sorts last
	}
	out := f.OutputCap
	if out == 0 {
		out = expectedOutput
	}
	u := providers.Usage{InputUncached: max(f.InputTokens-cached, 0), CacheRead: cached, Output: out}
	return t.Price.CostPrecise(u)
}

// Observe records a finished attempt: breaker outcome and speed, and, for a successful call
// in a conversation, that this target's cache is now warm for it.
func (t *Table) Observe(tg Target, f Features, ok bool, ttfb, total time.Duration, usage providers.Usage) {
	tg.health.Record(ok, t.breaker)
	if !ok {
		return
	}
	tg.health.ObserveSpeed(ttfb, usage.Output, total)
	if f.Conversation != 0 && usage.PromptTokens() >= tg.cacheMin() {
		sticky.put(f.Conversation, stickyEntry{target: tg.key, until: t.now().Add(tg.cacheTTL()), promptTokens: usage.PromptTokens()}, t.now())
	}
}

func (t Target) cacheTTL() time.Duration {
	if t.Priced && t.Price.CacheTTL > 0 {
		return t.Price.CacheTTL
	}
	return 5 * time.Minute
}

func (t Target) cacheMin() int64 {
	if t.Priced && t.Price.CacheMinTokens > 0 {
		return t.Price.CacheMinTokens
	}
	return 1024
}

// HealthOf reports a provider's breaker state over its targets ("closed" unless one is not).
func (t *Table) HealthOf(provider string) string {
	state := "closed"
	for _, tg := range t.allTargets() {
		if tg.Provider.Name() == provider {
			if s := tg.health.State(); s != "closed" {
				state = s
			}
		}
	}
	return state
}
