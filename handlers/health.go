package handlers

import (
	"context"
	_ "embed"
	"net/http"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Unauthenticated routes for load balancers and tooling: /healthz (the process answers),
// /readyz (it can take traffic) and the OpenAPI document of every route the gateway serves.
const (
	PathHealth  = "/healthz"
	PathReady   = "/readyz"
	PathOpenAPI = "/v1/openapi.json"
)

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument is the OpenAPI 3.1 description of the gateway's routes.
func OpenAPIDocument() []byte { return openAPIDocument }

// readyTimeout bounds the store check, so a probe answers even when the database hangs.
const readyTimeout = 2 * time.Second

// serveHealth answers liveness: the process is up and serving HTTP. It checks nothing else,
// so a slow database never gets a live process restarted.
func serveHealth(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, ex, "GET, HEAD")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is /readyz's answer: each check is "ok" or a short reason (detail goes to the
// log: the route is unauthenticated).
type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// serveReady answers readiness: the ledger store answers a ping, the spool directory takes
// a new file (a row can be made durable), and at least one provider's circuit is not open.
// Any failure is 503, so a load balancer sends traffic elsewhere.
func (h *Route) serveReady(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, ex, "GET, HEAD")
		return
	}
	res := readiness{Status: "ready", Checks: map[string]string{"store": "ok", "spool": "ok", "providers": "ok"}}
	fail := func(check, reason string, err error) {
		res.Status, res.Checks[check] = "not_ready", reason
		if err != nil {
			h.logger.Warn("not ready", zap.String("check", check), zap.Error(err))
		}
	}
	led := h.rt.Ledger()
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := led.Store.Ping(ctx); err != nil {
		fail("store", "unreachable", err)
	}
	if err := spoolWritable(led.SpoolDir); err != nil {
		fail("spool", "not writable", err)
	} else if slot, err := led.Writer.Reserve(); err != nil {
		// What the meter itself asks before serving: room for a row (a full disk refuses).
		fail("spool", "full or closing", err)
	} else {
		slot.Cancel()
	}
	routes := h.rt.Routes()
	available, total := 0, 0
	for _, a := range routes.Providers() {
		total++
		if routes.HealthOf(a.Name()) != "open" {
			available++
		}
	}
	if available == 0 {
		if total == 0 {
			fail("providers", "none configured", nil)
		} else {
			fail("providers", "every provider's circuit is open", nil)
		}
	}
	status := http.StatusOK
	if res.Status != "ready" {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, res)
}

// spoolWritable creates and removes a file in the spool directory: a full or read-only disk
// fails here before a request's ledger row would.
func spoolWritable(dir string) error {
	if dir == "" {
		return nil
	}
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return err
	}
	name := f.Name()
	err = f.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}

func serveOpenAPI(w http.ResponseWriter, r *http.Request, ex *Exchange) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, ex, "GET, HEAD")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDocument)
}

// apiPaths are the paths the gateway answers under /v1/ (with {param} segments), for telling a
// client that left /v1 out of its base URL where it should have gone.
var apiPaths = []string{PathChat, PathEmbeddings, PathCompletions, PathModerations, PathModels, PathProviders,
	PathMessages, PathCountTokens, PathResponses, PathUsageSummary, PathUsageRequests, PathUsageExport,
	PathPricing, PathTopUps, PathLimits, PathWebhook, PathKeys, PathOpenAPI}

// unknownURL is the 404 for a path the gateway does not serve. It names the URL and, where the
// mistake is recognisable, the fix: a base URL without /v1, or /v1/ spelt with capitals or
// doubled slashes (never served: only the exact /v1/ prefix is the authenticated API).
func unknownURL(method, path string) *providers.Error {
	msg := "Unknown request URL: " + method + " " + path + "."
	norm := strings.ToLower(path)
	for strings.Contains(norm, "//") {
		norm = strings.ReplaceAll(norm, "//", "/")
	}
	switch {
	case norm != path && strings.HasPrefix(norm, "/v1/"):
		msg += " API paths are lower-case and start with a single /v1/ (did you mean " + norm + "?)."
	case !strings.HasPrefix(norm, "/v1/") && isAPIPath("/v1"+norm):
		msg += " The API is served under /v1: add /v1 to your client's base URL (did you mean /v1" + norm + "?)."
	}
	return providers.Errorf(http.StatusNotFound, "unknown_url", "", "%s", msg)
}

func isAPIPath(p string) bool {
	for _, a := range apiPaths {
		if p == a || strings.HasPrefix(p, a+"/") {
			return true
		}
	}
	return false
}

// writeTracker records whether a later handler answered, so a request nobody served gets
// the 404 envelope instead of Caddy's empty 200.
type writeTracker struct {
	http.ResponseWriter
	wrote bool
}

func (t *writeTracker) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *writeTracker) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush, Hijack).
func (t *writeTracker) Unwrap() http.ResponseWriter { return t.ResponseWriter }
