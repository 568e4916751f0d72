package caddymodule

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/badtheorylabs/btl-runtime/handlers"
	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/routing"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("btl", parseGlobal)
	httpcaddyfile.RegisterHandlerDirective("btl_auth", parseAuth)
	httpcaddyfile.RegisterHandlerDirective("btl_meter", parseMeter)
	httpcaddyfile.RegisterHandlerDirective("btl_optimize", parseOptimize)
	httpcaddyfile.RegisterHandlerDirective("btl_route", parseRoute)
	httpcaddyfile.RegisterHandlerDirective("btl_dashboard", parseDashboard)
	// One init, in request order: Caddy keeps registration order among directives anchored
	// to the same standard directive, so a site block needs no route {}.
	httpcaddyfile.RegisterDirectiveOrder("btl_auth", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("btl_meter", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("btl_optimize", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("btl_route", httpcaddyfile.Before, "respond")
	// The dashboard comes last: the API handlers pass every path outside /v1/ on, so it
	// sees its own path and nothing else needs to know about it.
	httpcaddyfile.RegisterDirectiveOrder("btl_dashboard", httpcaddyfile.Before, "respond")
	// Registered here rather than in app.go so the directive and its module stay together.
	caddy.RegisterModule(handlers.Dashboard{})
}

// parseDashboard parses:
//
//	btl_dashboard [{
//		path <path>
//	}]
//
// The path defaults to /dashboard; it is an option rather than an argument because a leading
// "/" argument would be read as a request matcher. A site without the directive serves no
// dashboard.
func parseDashboard(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(handlers.Dashboard)
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for nesting := h.Nesting(); h.NextBlock(nesting); {
		switch h.Val() {
		case "path":
			if d.Path != "" {
				return nil, h.Err("btl_dashboard: duplicate option 'path'")
			}
			if !h.AllArgs(&d.Path) {
				return nil, h.ArgErr()
			}
			if !strings.HasPrefix(d.Path, "/") {
				return nil, h.Errf("btl_dashboard: path must start with '/', got '%s'", d.Path)
			}
		default:
			return nil, h.Errf("btl_dashboard: unrecognized subdirective '%s'", h.Val())
		}
	}
	return d, nil
}

// parseGlobal parses the btl global option:
//
//	btl {
//		storage sqlite [<path>] | postgres <dsn>
//		spool_dir <dir>
//		node_id <id>
//		lease_ttl <duration>
//		prices <file>
//		workspace_prices <workspace-id> <file>
//		responses_retention <duration>
//		payments stripe {
//			secret_key <secret>
//			webhook_secret <secret>
//			base_url <url>
//			success_url <url>
//			cancel_url <url>
//		}
//		provider <name> <type> {
//			base_url <url>
//			api_key <secret>
//			api_keys <secret>...
//			key_weights <n>...
//			models <upstream-model>...
//			optional
//			connect_timeout <duration>
//			first_byte_timeout <duration>
//			idle_timeout <duration>
//			<type-specific option> <value>
//		}
//		model <slug> {
//			candidates <provider>/<upstream-model>...
//			strategy cheapest|fastest|ordered|weighted
//			weights <n>...
//		}
//	}
//
// A second btl block merges into the first. Placeholders are kept for Provision to expand.
func parseGlobal(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if prev, ok := existing.(httpcaddyfile.App); ok {
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, err
		}
	}
	if err := unmarshalApp(d, app); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "btl", Value: caddyconfig.JSON(app, nil)}, nil
}

func unmarshalApp(d *caddyfile.Dispenser, app *App) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	seenProvider := map[string]bool{}
	for _, p := range app.Providers {
		seenProvider[p.Name] = true
	}
	seenModel := map[string]bool{}
	for _, m := range app.Models {
		seenModel[m.Name] = true
	}
	var mentions []modelMention
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "price":
			model, e, err := unmarshalPrice(d)
			if err != nil {
				return err
			}
			if _, dup := app.ModelPrices[model]; dup {
				return d.Errf("duplicate price for '%s'", model)
			}
			if app.ModelPrices == nil {
				app.ModelPrices = map[string]catalog.Entry{}
			}
			app.ModelPrices[model] = e
		case "storage":
			if app.Storage != nil && app.Storage.Type != "" {
				return d.Err("duplicate option 'storage'")
			}
			if app.Storage == nil { // spool_dir, node_id and lease_ttl may come first
				app.Storage = &StorageConfig{}
			}
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			switch args[0] {
			case "sqlite":
				if len(args) > 2 {
					return d.ArgErr()
				}
				app.Storage.Type = "sqlite"
				if len(args) == 2 {
					app.Storage.Path = args[1]
				}
			case "postgres":
				if len(args) != 2 {
					return d.Err("storage postgres needs a connection string")
				}
				app.Storage.Type, app.Storage.DSN = "postgres", args[1]
			default:
				return d.Errf("unknown storage type '%s' (want sqlite or postgres)", args[0])
			}
		case "spool_dir", "node_id":
			if app.Storage == nil {
				app.Storage = &StorageConfig{}
			}
			dst := &app.Storage.SpoolDir
			if d.Val() == "node_id" {
				dst = &app.Storage.NodeID
			}
			if *dst != "" {
				return d.Errf("duplicate option '%s'", d.Val())
			}
			if !d.AllArgs(dst) {
				return d.ArgErr()
			}
		case "lease_ttl":
			if app.Storage == nil {
				app.Storage = &StorageConfig{}
			}
			if app.Storage.LeaseTTL != 0 {
				return d.Err("duplicate option 'lease_ttl'")
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			ttl, err := caddy.ParseDuration(v)
			if err != nil || ttl < time.Second || ttl > time.Hour {
				return d.Errf("lease_ttl must be a duration between 1s and 1h, not %q", v)
			}
			app.Storage.LeaseTTL = caddy.Duration(ttl)
		case "payments":
			if app.PaymentsConfig != nil {
				return d.Err("duplicate option 'payments'")
			}
			p, err := unmarshalPayments(d)
			if err != nil {
				return err
			}
			app.PaymentsConfig = p
		case "responses_retention":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("invalid responses_retention '%s' (a positive duration such as 720h)", v)
			}
			app.RetainResponses = caddy.Duration(dur)
		case "workspace_prices":
			var ws, file string
			if !d.Args(&ws, &file) || d.NextArg() {
				return d.ArgErr()
			}
			if app.WorkspacePrices == nil {
				app.WorkspacePrices = map[string]string{}
			}
			if _, dup := app.WorkspacePrices[ws]; dup {
				return d.Errf("duplicate workspace_prices for '%s'", ws)
			}
			app.WorkspacePrices[ws] = file
		case "allow_file_uris":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Err("allow_file_uris needs a workspace id and at least one prefix (gs://bucket/…) or file id")
			}
			for _, p := range args[1:] {
				if err := providers.CheckRefPrefix(p); err != nil {
					return d.Errf("allow_file_uris: %v", err)
				}
			}
			if app.AllowFileURIs == nil {
				app.AllowFileURIs = map[string][]string{}
			}
			app.AllowFileURIs[args[0]] = append(app.AllowFileURIs[args[0]], args[1:]...)
		case "images":
			if app.Images != nil {
				return d.Err("duplicate option 'images'")
			}
			img, err := unmarshalImages(d)
			if err != nil {
				return err
			}
			app.Images = img
		case "body_timeout":
			dur, err := positiveDuration(d, "btl", "body_timeout")
			if err != nil {
				return err
			}
			app.BodyTimeout = dur
		case "prices":
			if app.PricesFile != "" {
				return d.Err("duplicate option 'prices'")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			app.PricesFile = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "provider":
			p, err := unmarshalProvider(d, &mentions)
			if err != nil {
				return err
			}
			if seenProvider[p.Name] {
				return d.Errf("duplicate provider '%s'", p.Name)
			}
			seenProvider[p.Name] = true
			app.Providers = append(app.Providers, p)
		case "model":
			m, err := unmarshalModel(d, &mentions)
			if err != nil {
				return err
			}
			if seenModel[m.Name] {
				return d.Errf("duplicate model '%s'", m.Name)
			}
			seenModel[m.Name] = true
			app.Models = append(app.Models, m)
		default:
			return d.Errf("unrecognized btl option '%s'", d.Val())
		}
	}
	return checkPriced(app, mentions)
}

func unmarshalProvider(d *caddyfile.Dispenser, mentions *[]modelMention) (ProviderConfig, error) {
	var p ProviderConfig
	if !d.Args(&p.Name, &p.Type) {
		return p, d.Err("provider needs a name and a type: provider <name> <type> { … }")
	}
	if d.NextArg() {
		return p, d.ArgErr()
	}
	if strings.Contains(p.Name, "/") {
		return p, d.Errf("provider name '%s' cannot contain '/'", p.Name)
	}
	if !providers.KnownType(p.Type) {
		return p, d.Errf("provider '%s': unknown type '%s' (known: %s)", p.Name, p.Type, strings.Join(providers.Types(), ", "))
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		if seen[key] {
			return p, d.Errf("provider '%s': duplicate option '%s'", p.Name, key)
		}
		seen[key] = true
		switch key {
		case "base_url":
			if !d.AllArgs(&p.BaseURL) {
				return p, d.ArgErr()
			}
		case "api_key":
			if !d.AllArgs(&p.APIKey) {
				return p, d.ArgErr()
			}
		case "api_keys":
			p.APIKeys = d.RemainingArgs()
			if len(p.APIKeys) == 0 {
				return p, d.ArgErr()
			}
		case "key_weights":
			for _, v := range d.RemainingArgs() {
				w, err := strconv.Atoi(v)
				if err != nil || w <= 0 {
					return p, d.Errf("provider '%s': invalid key weight '%s'", p.Name, v)
				}
				p.KeyWeights = append(p.KeyWeights, w)
			}
			if len(p.KeyWeights) == 0 {
				return p, d.ArgErr()
			}
		case "models":
			p.Models = mentionArgs(d, mentions, func(m string) string { return m })
			if len(p.Models) == 0 {
				return p, d.ArgErr()
			}
		case "optional":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			p.Optional = true
		case "connect_timeout", "first_byte_timeout", "idle_timeout":
			dur, err := positiveDuration(d, "provider '"+p.Name+"'", key)
			if err != nil {
				return p, err
			}
			switch key {
			case "connect_timeout":
				p.ConnectTimeout = dur
			case "first_byte_timeout":
				p.FirstByteTimeout = dur
			default:
				p.IdleTimeout = dur
			}
		default:
			if !providers.KnownOption(p.Type, key) {
				return p, d.Errf("provider '%s': unrecognized option '%s' for type %s", p.Name, key, p.Type)
			}
			var v string
			if !d.AllArgs(&v) {
				return p, d.ArgErr()
			}
			if p.Options == nil {
				p.Options = map[string]string{}
			}
			p.Options[key] = v
		}
	}
	return p, nil
}

func unmarshalModel(d *caddyfile.Dispenser, mentions *[]modelMention) (ModelConfig, error) {
	var m ModelConfig
	if !d.NextArg() {
		return m, d.Err("model needs a slug: model <slug> { candidates … }")
	}
	m.Name = d.Val()
	if d.NextArg() {
		return m, d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		if seen[key] {
			return m, d.Errf("model '%s': duplicate option '%s'", m.Name, key)
		}
		seen[key] = true
		switch key {
		case "candidates":
			m.Candidates = mentionArgs(d, mentions, func(c string) string {
				_, model, _ := strings.Cut(c, "/")
				return model
			})
			if len(m.Candidates) == 0 {
				return m, d.ArgErr()
			}
			for _, c := range m.Candidates {
				if p, mod, ok := strings.Cut(c, "/"); !ok || p == "" || mod == "" {
					return m, d.Errf("model '%s': candidate '%s' must be <provider>/<upstream-model>", m.Name, c)
				}
			}
		case "strategy":
			if !d.AllArgs(&m.Strategy) {
				return m, d.ArgErr()
			}
			if !routing.ValidStrategy(m.Strategy) {
				return m, d.Errf("model '%s': unknown strategy '%s' (cheapest, fastest, ordered, weighted)", m.Name, m.Strategy)
			}
		case "weights":
			for _, v := range d.RemainingArgs() {
				w, err := strconv.Atoi(v)
				if err != nil || w <= 0 {
					return m, d.Errf("model '%s': invalid weight '%s'", m.Name, v)
				}
				m.Weights = append(m.Weights, w)
			}
			if len(m.Weights) == 0 {
				return m, d.ArgErr()
			}
		default:
			return m, d.Errf("model '%s': unrecognized option '%s'", m.Name, key)
		}
	}
	if len(m.Candidates) == 0 {
		return m, d.Errf("model '%s' needs candidates", m.Name)
	}
	if len(m.Weights) > 0 && len(m.Weights) != len(m.Candidates) {
		return m, d.Errf("model '%s': %d weights for %d candidates", m.Name, len(m.Weights), len(m.Candidates))
	}
	return m, nil
}

// positiveInt reads one positive integer argument for option (within max when max > 0).
func positiveInt(d *caddyfile.Dispenser, who, option string, max int64) (int64, error) {
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || (max > 0 && n > max) {
		return 0, d.Errf("%s: invalid %s '%s'", who, option, v)
	}
	return n, nil
}

// unmarshalImages parses the images block (limits on inlining image URLs):
//
//	images {
//		max_per_request <n>
//		max_bytes <size>
//		max_request_bytes <size>
//		timeout <duration>
//		allow_private_addresses
//	}
func unmarshalImages(d *caddyfile.Dispenser) (*providers.ImageLimits, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	img := &providers.ImageLimits{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "max_per_request":
			n, err := positiveInt(d, "images", opt, 1000)
			if err != nil {
				return nil, err
			}
			img.MaxImages = int(n)
		case "max_bytes", "max_request_bytes":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<40 {
				return nil, d.Errf("images: invalid %s '%s' (a size such as 20MB)", opt, v)
			}
			if opt == "max_bytes" {
				img.MaxBytes = int64(n)
			} else {
				img.MaxTotalBytes = int64(n)
			}
		case "timeout":
			dur, err := positiveDuration(d, "images", opt)
			if err != nil {
				return nil, err
			}
			img.Timeout = time.Duration(dur)
		case "allow_private_addresses":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			img.AllowPrivate = true
		default:
			return nil, d.Errf("images: unknown option '%s'", opt)
		}
	}
	return img, nil
}

// positiveDuration reads one positive duration argument for option.
func positiveDuration(d *caddyfile.Dispenser, who, option string) (caddy.Duration, error) {
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s: invalid %s '%s'", who, option, v)
	}
	return caddy.Duration(dur), nil
}

// techniques reads optimizer technique names.
func techniques(h httpcaddyfile.Helper) ([]string, error) {
	var out []string
	for _, t := range h.RemainingArgs() {
		switch t {
		case handlers.TechPromptCache, handlers.TechOutputBudget, handlers.TechDedupe, handlers.TechCompression, handlers.TechCoalesce, handlers.TechResponseCache:
			out = append(out, t)
		default:
			return nil, h.Errf("btl_optimize: unknown technique '%s' (prompt_cache, output_budget, dedupe, compression, coalesce, response_cache)", t)
		}
	}
	if len(out) == 0 {
		return nil, h.ArgErr()
	}
	return out, nil
}

// parseAuth parses:
//
//	btl_auth {
//		count_tokens_rpm <n>|off
//	}
func parseAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(handlers.Auth)
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for nesting := h.Nesting(); h.NextBlock(nesting); {
		switch key := h.Val(); key {
		case "count_tokens_rpm":
			if a.CountTokensRPM != 0 {
				return nil, h.Errf("btl_auth: duplicate option '%s'", key)
			}
			var v string
			if !h.AllArgs(&v) {
				return nil, h.ArgErr()
			}
			n, err := strconv.ParseInt(v, 10, 64)
			switch {
			case v == "off":
				a.CountTokensRPM = -1
			case err != nil || n <= 0 || n > ledger.MaxRate:
				return nil, h.Errf("btl_auth: invalid %s '%s' (a positive number of requests per minute, or off)", key, v)
			default:
				a.CountTokensRPM = n
			}
		default:
			return nil, h.Errf("btl_auth: unrecognized subdirective '%s'", key)
		}
	}
	return a, nil
}

// parseMeter parses:
//
//	btl_meter {
//		anonymous_workspace <workspace-id>
//		default_output_reserve <tokens>
//	}
func parseMeter(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(handlers.Meter)
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := h.Nesting(); h.NextBlock(nesting); {
		key := h.Val()
		if seen[key] {
			return nil, h.Errf("btl_meter: duplicate option '%s'", key)
		}
		seen[key] = true
		switch key {
		case "anonymous_workspace":
			if !h.AllArgs(&m.AnonymousWorkspace) {
				return nil, h.ArgErr()
			}
		case "default_output_reserve":
			n, err := positiveInt(h.Dispenser, "btl_meter", "default_output_reserve", 0)
			if err != nil {
				return nil, err
			}
			m.DefaultOutputReserve = n
		default:
			return nil, h.Errf("btl_meter: unrecognized subdirective '%s'", key)
		}
	}
	return m, nil
}

func unmarshalPayments(d *caddyfile.Dispenser) (*PaymentsConfig, error) {
	p := &PaymentsConfig{}
	if !d.AllArgs(&p.Provider) {
		return nil, d.Err("payments needs a provider: payments stripe { … }")
	}
	if p.Provider != "stripe" {
		return nil, d.Errf("unsupported payments provider '%s' (supported: stripe)", p.Provider)
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		if seen[key] {
			return nil, d.Errf("payments: duplicate option '%s'", key)
		}
		seen[key] = true
		var dst *string
		switch key {
		case "secret_key":
			dst = &p.SecretKey
		case "webhook_secret":
			dst = &p.WebhookSecret
		case "base_url":
			dst = &p.BaseURL
		case "success_url":
			dst = &p.SuccessURL
		case "cancel_url":
			dst = &p.CancelURL
		default:
			return nil, d.Errf("payments: unrecognized option '%s'", key)
		}
		if !d.AllArgs(dst) {
			return nil, d.ArgErr()
		}
	}
	if p.SecretKey == "" || p.WebhookSecret == "" {
		return nil, d.Err("payments: secret_key and webhook_secret are required")
	}
	return p, nil
}

// parseOptimize parses:
//
//	btl_optimize {
//		shadow
//		disable prompt_cache|output_budget|dedupe|compression|coalesce|response_cache...
//		mask_tool_outputs
//		workspace <id> {
//			shadow
//			disable <technique>...
//			mask_tool_outputs
//			coalesce_sampled
//			cache_sampled
//		}
//		response_cache off | {        # on by default for deterministic requests
//			max_bytes <n>
//			ttl <duration>
//			sampled
//		}
//		cache_isolation workspace|strict|off
//	}
func parseOptimize(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	o := new(handlers.Optimize)
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := h.Nesting(); h.NextBlock(nesting); {
		key := h.Val()
		if seen[key] {
			return nil, h.Errf("btl_optimize: duplicate option '%s'", key)
		}
		seen[key] = true
		switch key {
		case "shadow":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			o.Shadow = true
		case "mask_tool_outputs":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			o.MaskToolOutputs = true
		case "cache_isolation":
			var mode string
			if !h.Args(&mode) || h.NextArg() {
				return nil, h.ArgErr()
			}
			switch mode {
			case handlers.CacheIsolationWorkspace, handlers.CacheIsolationStrict, handlers.CacheIsolationOff:
			default:
				return nil, h.Errf("btl_optimize: cache_isolation must be workspace, strict or off, not '%s'", mode)
			}
			o.CacheIsolation = mode
		case "disable":
			t, err := techniques(h)
			if err != nil {
				return nil, err
			}
			o.Disable = append(o.Disable, t...)
		case "workspace":
			seen[key] = false // one block per workspace id
			var ws string
			if !h.Args(&ws) || h.NextArg() {
				return nil, h.ArgErr()
			}
			if o.Workspaces == nil {
				o.Workspaces = map[string]*handlers.WorkspacePolicy{}
			}
			if o.Workspaces[ws] != nil {
				return nil, h.Errf("btl_optimize: duplicate workspace '%s'", ws)
			}
			wp := &handlers.WorkspacePolicy{}
			for n := h.Nesting(); h.NextBlock(n); {
				switch h.Val() {
				case "shadow":
					wp.Shadow = true
				case "mask_tool_outputs":
					wp.MaskToolOutputs = true
				case "coalesce_sampled":
					wp.CoalesceSampled = true
				case "cache_sampled":
					wp.CacheSampled = true
				case "disable":
					t, err := techniques(h)
					if err != nil {
						return nil, err
					}
					wp.Disable = t
				default:
					return nil, h.Errf("btl_optimize: unrecognized workspace option '%s'", h.Val())
				}
			}
			o.Workspaces[ws] = wp
		case "response_cache":
			if h.NextArg() {
				if h.Val() != "off" || h.NextArg() {
					return nil, h.Errf("btl_optimize: response_cache takes 'off' or a block")
				}
				if !slices.Contains(o.Disable, handlers.TechResponseCache) {
					o.Disable = append(o.Disable, handlers.TechResponseCache)
				}
				continue
			}
			rc := &handlers.ResponseCacheConfig{}
			for n := h.Nesting(); h.NextBlock(n); {
				switch h.Val() {
				case "max_bytes":
					b, err := positiveInt(h.Dispenser, "btl_optimize", "max_bytes", 0)
					if err != nil {
						return nil, err
					}
					rc.MaxBytes = b
				case "ttl":
					d, err := positiveDuration(h.Dispenser, "btl_optimize", "ttl")
					if err != nil {
						return nil, err
					}
					rc.TTL = d
				case "sampled":
					rc.Sampled = true
				default:
					return nil, h.Errf("btl_optimize: unrecognized response_cache option '%s'", h.Val())
				}
			}
			o.ResponseCache = rc
		default:
			return nil, h.Errf("btl_optimize: unrecognized subdirective '%s'", key)
		}
	}
	return o, nil
}

// parseRoute parses:
//
//	btl_route {
//		max_body_bytes <n>
//		retries <n>
//		deadline <duration>
//	}
func parseRoute(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	r := new(handlers.Route)
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := h.Nesting(); h.NextBlock(nesting); {
		key := h.Val()
		if seen[key] {
			return nil, h.Errf("btl_route: duplicate option '%s'", key)
		}
		seen[key] = true
		switch key {
		case "max_body_bytes":
			n, err := positiveInt(h.Dispenser, "btl_route", "max_body_bytes", 0)
			if err != nil {
				return nil, err
			}
			r.MaxBodyBytes = n
		case "retries":
			var v string
			if !h.AllArgs(&v) {
				return nil, h.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 10 {
				return nil, h.Errf("btl_route: invalid retries '%s' (0 to 10)", v)
			}
			r.Retries = n
			if n == 0 {
				r.Retries = -1 // explicit zero: no retries (0 in JSON means the default)
			}
		case "deadline":
			d, err := positiveDuration(h.Dispenser, "btl_route", "deadline")
			if err != nil {
				return nil, err
			}
			r.Deadline = d
		default:
			return nil, h.Errf("btl_route: unrecognized subdirective '%s'", key)
		}
	}
	return r, nil
}
