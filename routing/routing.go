// Package routing resolves the model a caller names into the upstream targets that may serve
// it. A public slug (btl-frontier) expands to its configured candidates; "<provider>/<model>"
// pins one provider; a bare upstream model id is served by the providers that list it.
package routing

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Strategies a slug may use.
const (
	StrategyOrdered = "ordered"
)

// Target is one upstream that can serve a request.
type Target struct {
	Provider providers.Adapter
	Model    string
}

// Slug is a public model name and its candidates in preference order.
type Slug struct {
	Name       string
	Candidates []Target
	Strategy   string
}

// Table is immutable after New, so lookups need no locks.
type Table struct {
	providers map[string]providers.Adapter
	order     []string
	slugs     map[string]*Slug
	slugOrder []string
	byModel   map[string][]Target
}

// SlugConfig is a slug as configured: candidates as "<provider>/<model>" strings.
type SlugConfig struct {
	Name       string
	Candidates []string
	Strategy   string
}

// New builds a routing table. Candidates naming an unconfigured provider are an error unless
// skip contains that provider (an optional provider without credentials).
func New(adapters []providers.Adapter, models map[string][]string, slugs []SlugConfig, skip map[string]bool) (*Table, error) {
	t := &Table{providers: map[string]providers.Adapter{}, slugs: map[string]*Slug{}, byModel: map[string][]Target{}}
	for _, a := range adapters {
		if _, dup := t.providers[a.Name()]; dup {
			return nil, fmt.Errorf("duplicate provider %q", a.Name())
		}
		t.providers[a.Name()] = a
		t.order = append(t.order, a.Name())
		for _, m := range models[a.Name()] {
			t.byModel[m] = append(t.byModel[m], Target{Provider: a, Model: m})
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
		if strategy != StrategyOrdered {
			return nil, fmt.Errorf("model %q: strategy %q is not supported (supported: %s)", sc.Name, strategy, StrategyOrdered)
		}
		s := &Slug{Name: sc.Name, Strategy: strategy}
		for _, c := range sc.Candidates {
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
			s.Candidates = append(s.Candidates, Target{Provider: a, Model: model})
		}
		if len(s.Candidates) == 0 && len(sc.Candidates) == 0 {
			return nil, fmt.Errorf("model %q: no candidates", sc.Name)
		}
		t.slugs[sc.Name] = s
		t.slugOrder = append(t.slugOrder, sc.Name)
	}
	return t, nil
}

// Resolve returns the targets for the requested model, in the order to try them.
func (t *Table) Resolve(model string) ([]Target, *providers.Error) {
	if s, ok := t.slugs[model]; ok {
		if len(s.Candidates) == 0 {
			return nil, &providers.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_available_provider",
				Message: fmt.Sprintf("no provider is currently configured for model '%s'", model)}
		}
		return s.Candidates, nil
	}
	if prov, upstream, ok := strings.Cut(model, "/"); ok {
		if a, ok := t.providers[prov]; ok {
			if upstream == "" {
				return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", "model", "model '%s' names provider '%s' but no model", model, prov)
			}
			return []Target{{Provider: a, Model: upstream}}, nil
		}
		if _, known := t.byModel[model]; !known {
			return nil, providers.Errorf(http.StatusNotFound, "model_not_found", "model",
				"the model '%s' does not exist: provider '%s' is not configured on this gateway", model, prov)
		}
	}
	if targets, ok := t.byModel[model]; ok {
		return targets, nil
	}
	return nil, providers.Errorf(http.StatusNotFound, "model_not_found", "model",
		"the model '%s' does not exist or you do not have access to it", model)
}

// Slugs lists the public slugs in configuration order.
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
