// Package dashboard is BTL Runtime's usage dashboard: a static page (HTML, CSS and plain
// JavaScript with inline SVG charts, no dependencies) embedded in the binary, so it works
// offline and fetches nothing from elsewhere. The page signs in with a usage:read API key
// typed by the user, keeps it in sessionStorage (this tab only) and calls the gateway's
// public APIs (/v1/usage/summary, /v1/usage/requests, /v1/account/pricing) with it, so it
// can show nothing the key may not read. The handler serves only the static files; it needs
// no identity and holds no data.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

type file struct {
	body        []byte
	contentType string
	etag        string
}

var files = func() map[string]file {
	types := map[string]string{".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
	m := map[string]file{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m[strings.TrimPrefix(p, "assets/")] = file{body: b, contentType: types[path.Ext(p)], etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("dashboard: reading embedded assets: " + err.Error())
	}
	return m
}()

// ContentSecurityPolicy allows only this origin: no inline script, no third-party requests.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard under prefix (such as "/dashboard"): prefix redirects to
// prefix+"/", which serves the page; prefix+"/app.js" and prefix+"/app.css" its assets.
// Other paths under prefix are 404. Requests outside prefix are not its business: ServeHTTP
// reports them with ok=false so a middleware can pass them on.
type Handler struct {
	prefix string
}

// New returns a Handler for prefix; "" means "/dashboard".
func New(prefix string) *Handler {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		prefix = "/dashboard"
	}
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	return &Handler{prefix: prefix}
}

// Prefix is the path the dashboard is served at.
func (h *Handler) Prefix() string { return h.prefix }

// Matches reports whether the request path belongs to the dashboard.
func (h *Handler) Matches(p string) bool {
	return p == h.prefix || strings.HasPrefix(p, h.prefix+"/")
}

// Has reports whether the dashboard has something at path: its prefix, the page or an asset.
func (h *Handler) Has(p string) bool {
	if p == h.prefix || p == h.prefix+"/" {
		return true
	}
	name, ok := strings.CutPrefix(p, h.prefix+"/")
	_, exists := files[name]
	return ok && exists
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.Matches(r.URL.Path) {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == h.prefix {
		target := h.prefix + "/"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, h.prefix+"/")
	if name == "" {
		name = "index.html"
	}
	f, ok := files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	// Revalidate every time: cheap (ETag) and a gateway upgrade shows at once.
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", f.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
