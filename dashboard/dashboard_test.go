package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := New("/ops/")
	if h.Prefix() != "/ops" || New("").Prefix() != "/dashboard" {
		t.Fatalf("prefix: %q", h.Prefix())
	}
	get := func(method, path string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := get("GET", "/ops?x=1"); w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/ops/?x=1" {
		t.Fatalf("bare prefix: %d %v", w.Code, w.Header())
	}
	w := get("GET", "/ops/")
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(w.Body.String(), `<script src="app.js">`) || w.Header().Get("Content-Security-Policy") != ContentSecurityPolicy {
		t.Fatalf("index: %d %v", w.Code, w.Header())
	}
	for path, ct := range map[string]string{"/ops/app.js": "text/javascript", "/ops/app.css": "text/css", "/ops/index.html": "text/html"} {
		w := get("GET", path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ct) {
			t.Errorf("%s: %d %s", path, w.Code, w.Header().Get("Content-Type"))
		}
		if w := get("GET", path, "If-None-Match", w.Header().Get("ETag")); w.Code != http.StatusNotModified {
			t.Errorf("%s revalidation: %d", path, w.Code)
		}
	}
	// Nothing is fetched from elsewhere: no absolute URLs in the assets.
	for name, f := range files {
		if strings.Contains(string(f.body), "https://") || strings.Contains(string(f.body), "http://") && !strings.Contains(string(f.body), "http://www.w3.org/2000/svg") {
			t.Errorf("%s refers to another origin", name)
		}
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{{"GET", "/ops/nope.js", 404}, {"GET", "/opsx", 404}, {"POST", "/ops/", 405}, {"HEAD", "/ops/app.css", 200}} {
		if w := get(c.method, c.path); w.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, w.Code, c.code)
		}
	}
	if !h.Matches("/ops/app.js") || h.Matches("/opsx") || h.Matches("/v1/usage/summary") {
		t.Error("Matches")
	}
}
