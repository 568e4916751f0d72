package caddymodule

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Config mistakes caught when the Caddyfile is adapted (so `caddy validate` and `caddy
// adapt` report them with file and line): every upstream model the config names — in a
// provider's `models` or a slug's `candidates` — must have a price, from the catalog or a
// `price` block, because an unpriced model would be served without being billed.

// modelMention is an upstream model named in the config, and where.
type modelMention struct {
	model string
	file  string
	line  int
}

// mentionArgs reads the remaining arguments of the current line, noting each as a model.
func mentionArgs(d *caddyfile.Dispenser, mentions *[]modelMention, model func(arg string) string) []string {
	var args []string
	for d.NextArg() {
		args = append(args, d.Val())
		if m := model(d.Val()); m != "" && mentions != nil {
			*mentions = append(*mentions, modelMention{model: m, file: d.File(), line: d.Line()})
		}
	}
	return args
}

// unmarshalPrice parses:
//
//	price <upstream-model> {
//		input <usd per 1M tokens>
//		output <usd per 1M tokens>
//		cached_input <usd per 1M tokens>
//		kind chat|embedding|moderation
//	}
func unmarshalPrice(d *caddyfile.Dispenser) (string, catalog.Entry, error) {
	var e catalog.Entry
	if !d.NextArg() {
		return "", e, d.Err("price needs a model: price <upstream-model> { input … output … }")
	}
	model := d.Val()
	if d.NextArg() {
		return "", e, d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		if seen[key] {
			return "", e, d.Errf("price '%s': duplicate option '%s'", model, key)
		}
		seen[key] = true
		var v string
		if !d.AllArgs(&v) {
			return "", e, d.ArgErr()
		}
		if key == "kind" {
			e.Kind = v
			continue
		}
		usd, err := strconv.ParseFloat(v, 64)
		if err != nil || usd < 0 || usd > 10_000 {
			return "", e, d.Errf("price '%s': %s must be US dollars per 1M tokens, not '%s'", model, key, v)
		}
		switch key {
		case "input":
			e.Input = usd
		case "output":
			e.Output = usd
		case "cached_input":
			e.CachedInput = usd
		default:
			return "", e, d.Errf("price '%s': unrecognized option '%s' (input, output, cached_input, kind)", model, key)
		}
	}
	if !seen["input"] || !seen["output"] {
		return "", e, d.Errf("price '%s' needs input and output", model)
	}
	if _, err := catalog.Default().WithEntries(map[string]catalog.Entry{model: e}); err != nil {
		return "", e, d.Errf("price '%s': %v", model, err)
	}
	return model, e, nil
}

// checkPriced reports the first model mention the catalog (with the config's own prices)
// cannot price, naming the file and line. A prices file replaces the check when it is named
// with a placeholder, since it cannot be read before provisioning.
func checkPriced(app *App, mentions []modelMention) error {
	if strings.Contains(app.PricesFile, "{") {
		return nil
	}
	prices := catalog.Default()
	if app.PricesFile != "" {
		var err error
		if prices, err = catalog.Load(app.PricesFile); err != nil {
			return fmt.Errorf("prices %s: %v", app.PricesFile, err)
		}
	}
	prices, err := prices.WithEntries(app.ModelPrices)
	if err != nil {
		return err
	}
	for _, m := range mentions {
		if _, ok := prices.Lookup(m.model); ok {
			continue
		}
		return fmt.Errorf("%s:%d - Error during parsing: unknown model '%s': it is not in the price catalog, so it could not be billed; "+
			"check the spelling (%s), or price it with `price %s { input <usd> output <usd> }` in the btl block",
			m.file, m.line, m.model, closest(prices, m.model), m.model)
	}
	return nil
}

// closest suggests catalog models sharing the longest prefix with model.
func closest(c *catalog.Catalog, model string) string {
	base := model
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	best, bestLen := []string(nil), 0
	for _, name := range c.Models() {
		n := 0
		for n < len(name) && n < len(base) && name[n] == base[n] {
			n++
		}
		switch {
		case n > bestLen:
			best, bestLen = []string{name}, n
		case n == bestLen && n > 0:
			best = append(best, name)
		}
	}
	if bestLen < 3 {
		return "no catalog model is close"
	}
	sort.Strings(best)
	if len(best) > 3 {
		best = best[:3]
	}
	return "did you mean " + strings.Join(best, " or ") + "?"
}
