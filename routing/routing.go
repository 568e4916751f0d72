// Package routing decides where a request goes. A public slug (btl-frontier) expands to its
// candidates — configured, or shipped in the catalog over equivalent models — which are
// filtered by what the request needs (context window, tools, vision, JSON schema) and ordered
// by strategy: cheapest effective price (cache-warm conversations priced at the cached rate),
// fastest, ordered or weighted. "<provider>/<model>" pins one provider; a bare upstream id is
// served by the providers that list it. Per-target health (a circuit breaker and speed
// averages) and conversation stickiness live for the whole process, across config reloads.
package routing

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Target is one upstream that can serve a request.
type Target struct {
	Provider providers.Adapter
	Model    string
	// Price is the catalog entry of Model (nil, Priced=false, when the catalog does not
	// know it). A pointer keeps Target small: plans copy targets on every request.
	Price  *catalog.Price
	Priced bool
	// Weight is the share of traffic under the weighted strategy.
	Weight int

	key    string
	health *Health
}

// Health returns the target's breaker and speed tracker.
func (t Target) Health() *Health { return t.health }

// Slug is a public model name and its candidates in preference order.
type Slug struct {
	Name       string
	Candidates []Target
	Strategy   string
	// Shipped marks a slug that came from the catalog, not the config.
	Shipped bool
}

// Table is immutable after New, so lookups need no locks (health and stickiness are
// internally synchronised).
type Table struct {
	providers map[string]providers.Adapter
	order     []string
	slugs     map[string]*Slug
	slugOrder []string
	byModel   map[string][]Target
	// unserved holds the shipped slugs no configured provider can serve, with the catalog
	// models each needs, so a request for one gets an answer that says what to configure.
	unserved map[string][]string
	prices   *catalog.Catalog
	breaker  BreakerPolicy
	now      func() time.Time
}

// SlugConfig is a slug as configured: candidates as "<provider>/<model>" strings.
type SlugConfig struct {
	Name       string
	Candidates []string
	Strategy   string
	// Weights parallel Candidates for the weighted strategy (empty: all 1).
	Weights []int
}

// Options tunes a table; zero values take defaults.
type Options struct {
	Breaker BreakerPolicy
	Now     func() time.Time
}

// baseURLer is implemented by adapters that know their endpoint; health is keyed by it so
// two configs naming different upstreams "sim" do not share a breaker.
type baseURLer interface{ BaseURL() string }

// New builds a routing table. Candidates naming an unconfigured provider are an error unless
// skip contains that provider (an optional provider without credentials). The catalog's
// shipped slugs are added for every slug name the config does not define, over the models
// the configured providers declare.
func New(adapters []providers.Adapter, models map[string][]string, slugs []SlugConfig, skip map[string]bool, prices *catalog.Catalog, opts Options) (*Table, error) {
	if prices == nil {
		prices = catalog.Default()
	}
	if opts.Breaker.Window == 0 {
		opts.Breaker = DefaultBreaker
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := &Table{providers: map[string]providers.Adapter{}, slugs: map[string]*Slug{}, byModel: map[string][]Target{},
		prices: prices, breaker: opts.Breaker, now: opts.Now}
	for _, a := range adapters {
		if _, dup := t.providers[a.Name()]; dup {
			return nil, fmt.Errorf("duplicate provider %q", a.Name())
		}
		t.providers[a.Name()] = a
		t.order = append(t.order, a.Name())
		for _, m := range models[a.Name()] {
			t.byModel[m] = append(t.byModel[m], t.target(a, m, 1))
		}
	}
	for _, sc := range slugs {
		if _, dup := t.slugs[sc.Name]; dup {
			return nil, fmt.Errorf("duplicate model %q", sc.Name)
		}
		if strings.Contains(sc.Name, "/") {
			return nil, fmt.Errorf("model %q: a public slug cannot contain '/', which marks a pinned provider", sc.Name)
		}
		strategy := sc.Strategy
		if strategy == "" {
			strategy = StrategyOrdered
		}
		if !ValidStrategy(strategy) {
			return nil, fmt.Errorf("model %q: unknown strategy %q (cheapest, fastest, ordered, weighted)", sc.Name, strategy)
		}
		if len(sc.Weights) > 0 && len(sc.Weights) != len(sc.Candidates) {
			return nil, fmt.Errorf("model %q: %d weights for %d candidates", sc.Name, len(sc.Weights), len(sc.Candidates))
		}
		s := &Slug{Name: sc.Name, Strategy: strategy}
		for i, c := range sc.Candidates {
			prov, model, ok := strings.Cut(c, "/")
			if !ok || prov == "" || model == "" {
				return nil, fmt.Errorf("model %q: candidate %q must be <provider>/<upstream-model>", sc.Name, c)
			}
			a, ok := t.providers[prov]
			if !ok {
				if skip[prov] {
					continue
				}
				return nil, fmt.Errorf("model %q: candidate %q names unknown provider %q", sc.Name, c, prov)
			}
			w := 1
			if len(sc.Weights) > 0 {
				w = sc.Weights[i]
			}
			s.Candidates = append(s.Candidates, t.target(a, model, w))
		}
		if len(sc.Candidates) == 0 {
			return nil, fmt.Errorf("model %q: no candidates", sc.Name)
		}
		t.slugs[sc.Name] = s
		t.slugOrder = append(t.slugOrder, sc.Name)
	}
	t.addShippedSlugs()
	return t, nil
}

// addShippedSlugs makes the catalog's slugs available over the declared models of the
// configured providers (each provider's models in catalog order of the slug).
func (t *Table) addShippedSlugs() {
	for _, cs := range t.prices.Slugs() {
		if _, taken := t.slugs[cs.Name]; taken {
			continue
		}
		s := &Slug{Name: cs.Name, Strategy: cs.Strategy, Shipped: true}
		if !ValidStrategy(s.Strategy) {
			s.Strategy = StrategyCheapest
		}
		for _, want := range cs.Models {
			for _, name := range t.order {
				for m, targets := range t.byModel {
					p, ok := t.prices.Lookup(m)
					if !ok || p.Model != want {
						continue
					}
					for _, tg := range targets {
						if tg.Provider.Name() == name {
							s.Candidates = append(s.Candidates, tg)
						}
					}
				}
			}
		}
		if len(s.Candidates) == 0 {
			if t.unserved == nil {
				t.unserved = map[string][]string{}
			}
			t.unserved[cs.Name] = cs.Models
			continue
		}
		t.slugs[s.Name] = s
		t.slugOrder = append(t.slugOrder, s.Name)
	}
}

func (t *Table) target(a providers.Adapter, model string, weight int) Target {
	key := a.Name() + "/" + model
	healthKey := key
	if b, ok := a.(baseURLer); ok {
		healthKey = b.BaseURL() + "|" + key
	}
	tg := Target{Provider: a, Model: model, Weight: weight, key: key, health: healthFor(healthKey, t.now)}
	if p, ok := t.prices.Lookup(model); ok {
		tg.Price, tg.Priced = &p, true
	}
	return tg
}

// candidates resolves a requested model to its unfiltered targets and strategy.
func (t *Table) candidates(model string) ([]Target, string, *providers.Error) {
	if s, ok := t.slugs[model]; ok {
		if len(s.Candidates) == 0 {
			return nil, "", &providers.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_available_provider",
				Message: fmt.Sprintf("no provider is currently configured for model '%s'", model)}
		}
		return append([]Target(nil), s.Candidates...), s.Strategy, nil
	}
	if prov, upstream, ok := strings.Cut(model, "/"); ok {
		if a, ok := t.providers[prov]; ok {
			if upstream == "" {
				return nil, "", providers.Errorf(http.StatusBadRequest, "invalid_value", "model", "model '%s' names provider '%s' but no model", model, prov)
			}
			return []Target{t.target(a, upstream, 1)}, StrategyOrdered, nil
		}
		if _, known := t.byModel[model]; !known {
			return nil, "", providers.Errorf(http.StatusNotFound, "model_not_found", "model",
				"the model '%s' does not exist: provider '%s' is not configured on this gateway", model, prov)
		}
	}
	if targets, ok := t.byModel[model]; ok {
		// The same upstream id on several hosts: the cheapest effective price wins.
		return append([]Target(nil), targets...), StrategyCheapest, nil
	}
	if needs, ok := t.unserved[model]; ok {
		return nil, "", providers.Errorf(http.StatusNotFound, "model_not_found", "model",
			"the model '%s' is not available on this gateway: it needs a provider that declares one of %s in its `models` (or a `model %s { candidates … }` block)",
			model, strings.Join(needs, ", "), model)
	}
	return nil, "", providers.Errorf(http.StatusNotFound, "model_not_found", "model",
		"the model '%s' does not exist or you do not have access to it", model)
}

// Resolve returns every candidate for the requested model, unfiltered and in configuration
// order (the meter prices its reservation over all of them).
func (t *Table) Resolve(model string) ([]Target, *providers.Error) {
	c, _, err := t.candidates(model)
	return c, err
}

// Unserved lists the shipped slugs that no configured provider can serve, with the catalog
// models each would need (sorted by slug).
func (t *Table) Unserved() []catalog.Slug {
	out := make([]catalog.Slug, 0, len(t.unserved))
	for _, cs := range t.prices.Slugs() {
		if needs, ok := t.unserved[cs.Name]; ok {
			out = append(out, catalog.Slug{Name: cs.Name, Models: needs})
		}
	}
	return out
}

// Slugs lists the public slugs: configured ones in configuration order, then shipped ones.
func (t *Table) Slugs() []*Slug {
	out := make([]*Slug, 0, len(t.slugOrder))
	for _, n := range t.slugOrder {
		out = append(out, t.slugs[n])
	}
	return out
}

// Providers lists the configured providers in configuration order.
func (t *Table) Providers() []providers.Adapter {
	out := make([]providers.Adapter, 0, len(t.order))
	for _, n := range t.order {
		out = append(out, t.providers[n])
	}
	return out
}

// PinnedModels lists "<provider>/<model>" for every model a provider declares, sorted.
func (t *Table) PinnedModels() []string {
	var out []string
	for m, targets := range t.byModel {
		for _, tg := range targets {
			out = append(out, tg.Provider.Name()+"/"+m)
		}
	}
	sort.Strings(out)
	return out
}

// ProviderModels lists the models a provider declares.
func (t *Table) ProviderModels(name string) []string {
	var out []string
	for m, targets := range t.byModel {
		for _, tg := range targets {
			if tg.Provider.Name() == name {
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out
}

func (t *Table) allTargets() []Target {
	var out []Target
	for _, ts := range t.byModel {
		out = append(out, ts...)
	}
	for _, s := range t.slugs {
		out = append(out, s.Candidates...)
	}
	return out
}

func logf(x float64) float64 { return math.Log(x) }
