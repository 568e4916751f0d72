package handlers

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/badtheorylabs/btl-runtime/dashboard"
)

// Dashboard serves the embedded usage dashboard (package dashboard) at Path and passes every
// other request on. The page holds no data: it signs in with a usage:read key typed by the
// user and reads the public usage APIs with it, so a site that wants no dashboard simply
// leaves this handler out. Paths under /v1/ are refused as a prefix so the dashboard can
// never shadow the API.
type Dashboard struct {
	// Path is where the page is served. Default: /dashboard.
	Path string `json:"path,omitempty"`

	h *dashboard.Handler
}

// CaddyModule returns the Caddy module information.
func (Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.btl_dashboard", New: func() caddy.Module { return new(Dashboard) }}
}

// Provision applies the default path.
func (d *Dashboard) Provision(caddy.Context) error {
	d.h = dashboard.New(d.Path)
	d.Path = d.h.Prefix()
	return nil
}

// Validate refuses paths that would shadow the API or the site root.
func (d *Dashboard) Validate() error {
	if d.Path == "/" || d.Path == "/v1" || strings.HasPrefix(d.Path, "/v1/") {
		return fmt.Errorf("btl_dashboard: path %q would shadow the API; choose something like /dashboard", d.Path)
	}
	return nil
}

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !d.h.Matches(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	if !d.h.Has(r.URL.Path) {
		// Under the dashboard's path but not one of its files: the same 404 envelope as
		// any other unknown URL, not a plain-text page.
		writeError(w, ExchangeFrom(r), unknownURL(r.Method, r.URL.Path))
		return nil
	}
	d.h.ServeHTTP(w, r)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Dashboard)(nil)
	_ caddy.Validator             = (*Dashboard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
)
