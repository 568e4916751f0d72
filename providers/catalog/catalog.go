// Package catalog prices token usage. Prices are data (an embedded JSON file, overridable by
// file) in USD per 1M tokens; they are converted once to integer micro-dollars so a cost is
// exact integer arithmetic, never a float sum.
package catalog

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

//go:embed prices.json
var embedded []byte

// Micros is an amount of money in micro-dollars (1 credit = $1 = 1,000,000 µ$).
type Micros = int64

// Price holds per-1M-token rates in micro-dollars.
type Price struct {
	Input        Micros
	CachedInput  Micros
	CacheWrite5m Micros
	CacheWrite1h Micros
	Output       Micros
	Context      int64
	MaxOutput    int64
	// LongAbove switches to the Long* rates when the prompt exceeds it (0: no tier). Cache
	// writes are priced on top of the long-context input rate (Anthropic's 1.25× and 2×
	// multipliers stack with its long-context price).
	LongAbove        int64
	LongInput        Micros
	LongCachedInput  Micros
	LongCacheWrite5m Micros
	LongCacheWrite1h Micros
	LongOutput       Micros

	// Model is the catalog's canonical id: upstream ids that normalise to the same Model are
	// the same model served by different hosts (the equivalence class).
	Model string
	Caps  Caps
	// CacheMinTokens is the shortest prefix the provider caches; CacheTTL how long an unused
	// cache entry lives.
	CacheMinTokens int64
	CacheTTL       time.Duration
	// CacheFields are the optional caching request fields the model accepts (for example
	// prompt_cache_key). The gateway adds such a field only to models that list it: a
	// provider rejects a field a model does not know, so the allow-list is catalog data.
	CacheFields []string
	// Kind is what the model does: KindChat (chat and legacy completions), KindEmbedding or
	// KindModeration. Routing sends each endpoint only to models of its kind.
	Kind string
	// Dimensions is an embedding model's default vector size (0 for other kinds).
	Dimensions int
	// tiers holds the rates of the provider's processing tiers other than the standard one
	// (OpenAI's service_tier "flex" and "priority"), by tier name. Read-only once parsed.
	tiers map[string]tierRates
}

// tierRates are one processing tier's per-1M-token rates, in micro-dollars.
type tierRates struct {
	Input, CachedInput, CacheWrite, Output Micros
}

// StandardTier reports whether a service_tier value asks for the provider's standard rates:
// none given, "auto" (the account's default, which the answer then names), "default" and
// "standard".
func StandardTier(tier string) bool {
	switch tier {
	case "", "auto", "default", "standard":
		return true
	}
	return false
}

// ForTier returns the price of the model in a processing tier (service_tier). The standard
// tier is p itself; another tier is priced only when the catalog lists its rates for the
// model, and ok is false otherwise: the gateway must not bill a tier at another tier's rate.
// A long-context tier keeps the higher of its own and the processing tier's rates.
func (p Price) ForTier(tier string) (Price, bool) {
	if StandardTier(tier) {
		return p, true
	}
	r, ok := p.tiers[tier]
	if !ok {
		return Price{}, false
	}
	q := p
	q.Input, q.CachedInput, q.Output = r.Input, r.CachedInput, r.Output
	q.CacheWrite5m, q.CacheWrite1h = r.CacheWrite, r.CacheWrite
	q.LongInput, q.LongCachedInput, q.LongOutput = max(q.LongInput, q.Input), max(q.LongCachedInput, q.CachedInput), max(q.LongOutput, q.Output)
	q.LongCacheWrite5m, q.LongCacheWrite1h = max(q.LongCacheWrite5m, q.CacheWrite5m), max(q.LongCacheWrite1h, q.CacheWrite1h)
	q.tiers = nil
	return q, true
}

// Tiers lists the processing tiers the catalog prices for the model besides the standard one.
func (p Price) Tiers() []string {
	out := make([]string, 0, len(p.tiers))
	for t := range p.tiers {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Model kinds.
const (
	KindChat       = "chat"
	KindEmbedding  = "embedding"
	KindModeration = "moderation"
)

// Accepts reports whether the model takes the optional caching request field.
func (p Price) Accepts(field string) bool { return slices.Contains(p.CacheFields, field) }

// Caps are what a model can do; routing filters candidates on them.
type Caps struct {
	Tools      bool `json:"tools"`
	Vision     bool `json:"vision"`
	JSONSchema bool `json:"json_schema"`
	Reasoning  bool `json:"reasoning"`
}

// Slug is a shipped public model name: an ordered set of equivalent-enough models and the
// strategy that picks among the hosts that serve them.
type Slug struct {
	Name     string
	Strategy string
	Models   []string
}

// Catalog maps upstream model ids to prices, capabilities and caching rules.
type Catalog struct {
	AsOf   string
	models map[string]Price
	slugs  []Slug
}

// Entry is one model's catalog record as written in prices.json (USD per 1M tokens); a
// config may add entries for models the shipped catalog does not know.
type Entry struct {
	Input        float64 `json:"input"`
	CachedInput  float64 `json:"cached_input"`
	CacheWrite5m float64 `json:"cache_write_5m"`
	CacheWrite1h float64 `json:"cache_write_1h"`
	Output       float64 `json:"output"`
	Context      int64   `json:"context"`
	MaxOutput    int64   `json:"max_output"`
	LongContext  *struct {
		Above        int64   `json:"above"`
		Input        float64 `json:"input"`
		CachedInput  float64 `json:"cached_input"`
		CacheWrite5m float64 `json:"cache_write_5m"`
		CacheWrite1h float64 `json:"cache_write_1h"`
		Output       float64 `json:"output"`
	} `json:"long_context"`
	Caps *Caps `json:"caps"`
	// Tiers are processing tiers priced apart from the standard one: {"priority": {"input":
	// …, "cached_input": …, "output": …}}; cache_write defaults to the tier's input rate.
	Tiers map[string]struct {
		Input       float64 `json:"input"`
		CachedInput float64 `json:"cached_input"`
		CacheWrite  float64 `json:"cache_write"`
		Output      float64 `json:"output"`
	} `json:"tiers"`
	Cache *struct {
		MinTokens int64    `json:"min_tokens"`
		TTL       string   `json:"ttl"`
		Fields    []string `json:"fields"`
	} `json:"cache"`
	Kind       string `json:"kind"`
	Dimensions int    `json:"dimensions"`
}

type fileSlug struct {
	Strategy string   `json:"strategy"`
	Models   []string `json:"models"`
}

type file struct {
	AsOf   string              `json:"as_of"`
	Models map[string]Entry    `json:"models"`
	Slugs  map[string]fileSlug `json:"slugs"`
}

// Default returns the embedded catalog.
func Default() *Catalog {
	c, err := Parse(embedded)
	if err != nil {
		panic("catalog: embedded prices.json: " + err.Error())
	}
	return c
}

// Load reads a catalog file; its models override and extend the embedded ones.
func Load(path string) (*Catalog, error) { return LoadOver(Default(), path) }

// LoadOver reads a catalog file whose models override and extend base's (base is not
// modified): list prices plus a workspace's negotiated ones.
func LoadOver(base *Catalog, path string) (*Catalog, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	over, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c := &Catalog{AsOf: base.AsOf, models: make(map[string]Price, len(base.models)), slugs: append([]Slug(nil), base.slugs...)}
	for k, v := range base.models {
		c.models[k] = v
	}
	for k, v := range over.models {
		c.models[k] = v
	}
	if over.AsOf != "" {
		c.AsOf = over.AsOf
	}
	for _, s := range over.slugs {
		c.setSlug(s)
	}
	return c, nil
}

func (c *Catalog) setSlug(s Slug) {
	for i := range c.slugs {
		if c.slugs[i].Name == s.Name {
			c.slugs[i] = s
			return
		}
	}
	c.slugs = append(c.slugs, s)
}

// Slugs lists the shipped public slugs, by name.
func (c *Catalog) Slugs() []Slug { return c.slugs }

// usd converts a per-1M-token dollar rate into micro-dollars, rounding to the nearest µ$.
func usd(v float64) Micros { return Micros(math.Round(v * 1e6)) }

// Parse decodes a catalog document.
func Parse(raw []byte) (*Catalog, error) {
	var f file
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	c := &Catalog{AsOf: f.AsOf, models: make(map[string]Price, len(f.Models))}
	names := make([]string, 0, len(f.Slugs))
	for n := range f.Slugs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fs := f.Slugs[n]
		c.slugs = append(c.slugs, Slug{Name: n, Strategy: fs.Strategy, Models: fs.Models})
	}
	for name, m := range f.Models {
		p, err := m.price(name)
		if err != nil {
			return nil, err
		}
		c.models[name] = p
	}
	return c, nil
}

// WithEntries returns a catalog with extra models added to (or replacing) c's; c is not
// modified.
func (c *Catalog) WithEntries(extra map[string]Entry) (*Catalog, error) {
	out := &Catalog{AsOf: c.AsOf, models: make(map[string]Price, len(c.models)+len(extra)), slugs: c.slugs}
	for k, v := range c.models {
		out.models[k] = v
	}
	for name, e := range extra {
		p, err := e.price(name)
		if err != nil {
			return nil, err
		}
		out.models[name] = p
	}
	return out, nil
}

// Models lists the catalog's model ids, sorted.
func (c *Catalog) Models() []string {
	out := make([]string, 0, len(c.models))
	for m := range c.models {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Known reports whether the catalog has an entry under exactly this id (no respelling).
func (c *Catalog) Known(model string) bool {
	_, ok := c.models[model]
	return ok
}

func (m Entry) price(name string) (Price, error) {
	if m.Input < 0 || m.Output < 0 || m.CachedInput < 0 {
		return Price{}, fmt.Errorf("model %s: negative price", name)
	}
	p := Price{
		Input: usd(m.Input), CachedInput: usd(m.CachedInput), Output: usd(m.Output),
		CacheWrite5m: usd(m.CacheWrite5m), CacheWrite1h: usd(m.CacheWrite1h),
		Context: m.Context, MaxOutput: m.MaxOutput, Kind: m.Kind, Dimensions: m.Dimensions,
	}
	switch p.Kind {
	case "":
		p.Kind = KindChat
	case KindChat, KindEmbedding, KindModeration:
	default:
		return Price{}, fmt.Errorf("model %s: unknown kind %q (chat, embedding, moderation)", name, m.Kind)
	}
	if p.CachedInput == 0 {
		p.CachedInput = p.Input
	}
	if p.CacheWrite5m == 0 {
		p.CacheWrite5m = p.Input
	}
	if p.CacheWrite1h == 0 {
		p.CacheWrite1h = p.CacheWrite5m
	}
	p.Model = name
	p.Caps = Caps{Tools: true, Vision: true, JSONSchema: true}
	if p.Kind != KindChat {
		p.Caps = Caps{}
	}
	if m.Caps != nil {
		p.Caps = *m.Caps
	}
	p.CacheMinTokens, p.CacheTTL = 1024, 5*time.Minute
	if m.Cache != nil {
		if m.Cache.MinTokens > 0 {
			p.CacheMinTokens = m.Cache.MinTokens
		}
		if d, err := time.ParseDuration(m.Cache.TTL); err == nil && d > 0 {
			p.CacheTTL = d
		}
		p.CacheFields = m.Cache.Fields
	}
	if lc := m.LongContext; lc != nil {
		p.LongAbove, p.LongInput, p.LongCachedInput, p.LongOutput = lc.Above, usd(lc.Input), usd(lc.CachedInput), usd(lc.Output)
		if p.LongCachedInput == 0 {
			p.LongCachedInput = p.CachedInput
		}
		if p.LongOutput == 0 {
			p.LongOutput = p.Output
		}
		// Unless given, a cache write costs the same multiple of the long input rate as of
		// the standard one (for OpenAI and Gemini, whose writes cost the input rate, that is
		// the long input rate itself).
		p.LongCacheWrite5m, p.LongCacheWrite1h = usd(lc.CacheWrite5m), usd(lc.CacheWrite1h)
		if p.LongCacheWrite5m == 0 {
			p.LongCacheWrite5m = scaleRate(p.CacheWrite5m, p.LongInput, p.Input)
		}
		if p.LongCacheWrite1h == 0 {
			p.LongCacheWrite1h = scaleRate(p.CacheWrite1h, p.LongInput, p.Input)
		}
	}
	for tier, r := range m.Tiers {
		if StandardTier(tier) {
			return Price{}, fmt.Errorf("model %s: tier %q is the standard tier; its rates are the model's own", name, tier)
		}
		if r.Input <= 0 || r.Output <= 0 || r.CachedInput < 0 || r.CacheWrite < 0 {
			return Price{}, fmt.Errorf("model %s: tier %s needs positive input and output rates", name, tier)
		}
		tr := tierRates{Input: usd(r.Input), CachedInput: usd(r.CachedInput), CacheWrite: usd(r.CacheWrite), Output: usd(r.Output)}
		if tr.CachedInput == 0 {
			tr.CachedInput = tr.Input
		}
		if tr.CacheWrite == 0 {
			tr.CacheWrite = tr.Input
		}
		if p.tiers == nil {
			p.tiers = map[string]tierRates{}
		}
		p.tiers[tier] = tr
	}
	return p, nil
}

// Lookup finds a model's price from any host's spelling of its id: the exact id; the id
// after an "org/" prefix (OpenRouter, Together); without a Bedrock vendor or region prefix
// ("anthropic.", "us."); with dots as dashes (OpenRouter's claude-sonnet-4.5); and without
// trailing date or version suffixes (gpt-4o-mini-2024-07-18, claude-sonnet-4-5@20250929,
// anthropic.claude-sonnet-4-5-20250929-v1:0, gemini-1.5-pro-002, claude-3-5-haiku-latest).
// Only such suffixes are removed: a name is never trimmed at an arbitrary "-", so a typo
// such as gpt-4o-mni is unknown rather than priced as gpt-4o.
func (c *Catalog) Lookup(model string) (Price, bool) {
	if p, ok := c.models[model]; ok {
		return p, true
	}
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:]
	}
	for _, candidate := range spellings(model) {
		for m := candidate; ; {
			if p, ok := c.models[m]; ok {
				return p, true
			}
			trimmed, ok := trimVersionSuffix(m)
			if !ok {
				break
			}
			m = trimmed
		}
	}
	return Price{}, false
}

// versionSuffix matches one trailing date or version marker of a model id: a date
// (-2024-07-18, -20250929, @20250929), a release number (-001), a Bedrock version (-v1, :0),
// or -latest.
var versionSuffix = regexp.MustCompile(`(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3})|-v\d+|:\d+|-latest)$`)

// trimVersionSuffix removes one date or version suffix from model.
func trimVersionSuffix(model string) (string, bool) {
	loc := versionSuffix.FindStringIndex(model)
	if loc == nil || loc[0] == 0 {
		return model, false
	}
	return model[:loc[0]], true
}

// bedrockPrefixes are the vendor and cross-region prefixes of Bedrock model ids.
var bedrockPrefixes = []string{"us.", "eu.", "apac.", "global.", "anthropic.", "meta.", "amazon.", "mistral.", "cohere.", "ai21.", "deepseek.", "openai."}

func spellings(model string) []string {
	out := []string{model}
	trimmed := model
	for changed := true; changed; {
		changed = false
		for _, p := range bedrockPrefixes {
			if t, ok := strings.CutPrefix(trimmed, p); ok {
				trimmed, changed = t, true
			}
		}
	}
	if trimmed != model {
		out = append(out, trimmed)
	}
	for _, m := range out {
		if strings.Contains(m, ".") {
			out = append(out, strings.ReplaceAll(m, ".", "-"))
		}
	}
	return out
}

// Equivalent reports whether two upstream ids are the same catalog model.
func (c *Catalog) Equivalent(a, b string) bool {
	pa, oka := c.Lookup(a)
	pb, okb := c.Lookup(b)
	return oka && okb && pa.Model == pb.Model
}

// Cost prices usage at p, in micro-dollars, rounded half up. The sum is taken in units of
// 1e-12 dollars (tokens × µ$ per 1M tokens) so no intermediate rounding loses money; it
// saturates rather than wraps (see MulSat).
func (p Price) Cost(u providers.Usage) Micros {
	return AddSat(p.CostPrecise(u), 500_000) / 1_000_000
}

// CostPrecise is Cost before rounding, in units of 1e-12 dollars: for comparing candidates
// whose costs differ by less than a micro-dollar.
func (p Price) CostPrecise(u providers.Usage) int64 {
	in, cached, w5, w1, out := p.Input, p.CachedInput, p.CacheWrite5m, p.CacheWrite1h, p.Output
	if p.LongAbove > 0 && u.PromptTokens() > p.LongAbove {
		in, cached, w5, w1, out = p.LongInput, p.LongCachedInput, p.LongCacheWrite5m, p.LongCacheWrite1h, p.LongOutput
	}
	sum := MulSat(u.InputUncached, in)
	sum = AddSat(sum, MulSat(u.CacheRead, cached))
	sum = AddSat(sum, MulSat(u.CacheWrite5m, w5))
	sum = AddSat(sum, MulSat(u.CacheWrite1h, w1))
	return AddSat(sum, MulSat(u.Output, out))
}

// scaleRate is rate × num / den, rounded half up: a rate moved to another base price.
func scaleRate(rate, num, den Micros) Micros {
	if den <= 0 {
		return rate
	}
	return (MulSat(rate, num) + den/2) / den
}

// MicrosToUSD renders micro-dollars as a decimal dollar string without float rounding.
func MicrosToUSD(m Micros) string {
	// Three of these go into every answer's headers: strconv, not fmt.
	var buf [32]byte
	b := buf[:0]
	u := uint64(m)
	if m < 0 {
		b, u = append(b, '-'), -u // -u is right for the most negative value too
	}
	b = strconv.AppendUint(b, u/1_000_000, 10)
	frac := u % 1_000_000
	b = append(b, '.', '0', '0', '0', '0', '0', '0')
	for i := len(b) - 1; frac > 0; i-- {
		b[i] = byte('0' + frac%10)
		frac /= 10
	}
	return string(b)
}

// Bound is the most a call can cost at p: inTokens at the highest input rate (uncached, a
// cache write, the long-context tier) plus outTokens at the highest output rate, rounded up
// to the micro-dollar. It saturates rather than wraps, so an absurd request reserves more
// than any balance, never less.
func (p Price) Bound(inTokens, outTokens int64) Micros {
	in := max(p.Input, p.CacheWrite1h, p.CacheWrite5m, p.LongInput, p.LongCacheWrite1h, p.LongCacheWrite5m)
	out := max(p.Output, p.LongOutput)
	precise := AddSat(MulSat(inTokens, in), MulSat(outTokens, out))
	return AddSat(precise, 999_999) / 1_000_000
}
