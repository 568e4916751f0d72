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
	"strings"

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
	// LongAbove switches to the Long* rates when the prompt exceeds it (0: no tier).
	LongAbove       int64
	LongInput       Micros
	LongCachedInput Micros
	LongOutput      Micros
}

// Catalog maps upstream model ids to prices.
type Catalog struct {
	AsOf   string
	models map[string]Price
}

type fileModel struct {
	Input        float64 `json:"input"`
	CachedInput  float64 `json:"cached_input"`
	CacheWrite5m float64 `json:"cache_write_5m"`
	CacheWrite1h float64 `json:"cache_write_1h"`
	Output       float64 `json:"output"`
	Context      int64   `json:"context"`
	MaxOutput    int64   `json:"max_output"`
	LongContext  *struct {
		Above       int64   `json:"above"`
		Input       float64 `json:"input"`
		CachedInput float64 `json:"cached_input"`
		Output      float64 `json:"output"`
	} `json:"long_context"`
}

type file struct {
	AsOf   string               `json:"as_of"`
	Models map[string]fileModel `json:"models"`
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
func Load(path string) (*Catalog, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	over, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c := Default()
	for k, v := range over.models {
		c.models[k] = v
	}
	if over.AsOf != "" {
		c.AsOf = over.AsOf
	}
	return c, nil
}

// usd converts a per-1M-token dollar rate into micro-dollars, rounding to the nearest µ$.
func usd(v float64) Micros { return Micros(math.Round(v * 1e6)) }

// Parse decodes a catalog document.
func Parse(raw []byte) (*Catalog, error) {
	var f file
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	c := &Catalog{AsOf: f.AsOf, models: make(map[string]Price, len(f.Models))}
	for name, m := range f.Models {
		if m.Input < 0 || m.Output < 0 || m.CachedInput < 0 {
			return nil, fmt.Errorf("model %s: negative price", name)
		}
		p := Price{
			Input: usd(m.Input), CachedInput: usd(m.CachedInput), Output: usd(m.Output),
			CacheWrite5m: usd(m.CacheWrite5m), CacheWrite1h: usd(m.CacheWrite1h),
			Context: m.Context, MaxOutput: m.MaxOutput,
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
		if lc := m.LongContext; lc != nil {
			p.LongAbove, p.LongInput, p.LongCachedInput, p.LongOutput = lc.Above, usd(lc.Input), usd(lc.CachedInput), usd(lc.Output)
			if p.LongCachedInput == 0 {
				p.LongCachedInput = p.CachedInput
			}
			if p.LongOutput == 0 {
				p.LongOutput = p.Output
			}
		}
		c.models[name] = p
	}
	return c, nil
}

// Lookup finds a model's price. It tries the exact id, then the id without an "org/" prefix
// (OpenRouter, Together) and without a trailing date or version suffix, longest prefix first,
// so "gpt-4o-mini-2024-07-18" prices as gpt-4o-mini.
func (c *Catalog) Lookup(model string) (Price, bool) {
	if p, ok := c.models[model]; ok {
		return p, true
	}
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:]
		if p, ok := c.models[model]; ok {
			return p, true
		}
	}
	for m := model; ; {
		i := strings.LastIndexAny(m, "-@:")
		if i <= 0 {
			return Price{}, false
		}
		m = m[:i]
		if p, ok := c.models[m]; ok {
			return p, true
		}
	}
}

// Cost prices usage at p, in micro-dollars, rounded half up. The sum is taken in units of
// 1e-12 dollars (tokens × µ$ per 1M tokens) so no intermediate rounding loses money.
func (p Price) Cost(u providers.Usage) Micros {
	in, cached, out := p.Input, p.CachedInput, p.Output
	if p.LongAbove > 0 && u.PromptTokens() > p.LongAbove {
		in, cached, out = p.LongInput, p.LongCachedInput, p.LongOutput
	}
	pico := u.InputUncached*in + u.CacheRead*cached + u.CacheWrite5m*p.CacheWrite5m +
		u.CacheWrite1h*p.CacheWrite1h + u.Output*out
	return (pico + 500_000) / 1_000_000
}

// MicrosToUSD renders micro-dollars as a decimal dollar string without float rounding.
func MicrosToUSD(m Micros) string {
	sign := ""
	if m < 0 {
		sign, m = "-", -m
	}
	return fmt.Sprintf("%s%d.%06d", sign, m/1_000_000, m%1_000_000)
}
