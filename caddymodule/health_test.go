package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/badtheorylabs/btl-runtime/handlers"
	"github.com/badtheorylabs/btl-runtime/ledger"
)

// tcpProxy forwards loopback connections to target until cut, so a test can take the
// database away from a running gateway and give it back.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// cut closes the listener and every proxied connection: the database is gone.
func (p *tcpProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func getJSON(t *testing.T, u string, out any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s: not JSON: %s", u, raw)
	}
	return resp.StatusCode
}

type readyAnswer struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// /readyz turns 503 when the database goes away, and when the spool cannot take a file;
// /healthz stays 200 throughout (the process is alive). Both need no key.
func TestReadyzStoreDownIsNotReady(t *testing.T) {
	dsn := pgSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	spool := filepath.Join(t.TempDir(), "spool")
	base := startGateway(t, `btl {
		storage postgres `+u.String()+`
		spool_dir `+spool+`
		provider sim simulated {
			models gpt-4o-mini
		}
	}`, fullChain)

	var ready readyAnswer
	if status := getJSON(t, base+"/readyz", &ready); status != 200 || ready.Status != "ready" {
		t.Fatalf("before: %d %+v", status, ready)
	}
	proxy.cut()
	if status := getJSON(t, base+"/readyz", &ready); status != 503 || ready.Status != "not_ready" || ready.Checks["store"] != "unreachable" {
		t.Fatalf("store down: %d %+v", status, ready)
	}
	var live map[string]string
	if status := getJSON(t, base+"/healthz", &live); status != 200 || live["status"] != "ok" {
		t.Fatalf("healthz: %d %v", status, live)
	}
	if err := os.RemoveAll(spool); err != nil {
		t.Fatal(err)
	}
	if status := getJSON(t, base+"/readyz", &ready); status != 503 || ready.Checks["spool"] != "not writable" {
		t.Fatalf("spool gone: %d %+v", status, ready)
	}
}

// TestHostileUnknownPaths: anything the gateway does not serve is a 404 in the OpenAI
// envelope naming the URL — never an empty 200 — including case and slash variants of /v1/
// (which are never served: auth guards the exact /v1/ prefix), traversal, a base URL without
// /v1 and a wrong Host; the dashboard in the same block keeps working.
func TestHostileUnknownPaths(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	// Shaped like Caddyfile.example: one block for every host on the port.
	base := startSites(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), func(port int) string { return fmt.Sprintf(":%d {\n%s\tbtl_dashboard\n}\n", port, fullChain) })
	chat := `{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	cases := []struct {
		method, path, host string
		hint               string
	}{
		{"POST", "/chat/completions", "", "add /v1 to your client's base URL"},
		{"GET", "/models", "", "did you mean /v1/models"},
		{"POST", "/V1/chat/completions", "", "did you mean /v1/chat/completions"},
		{"POST", "//v1/chat/completions", "", "did you mean /v1/chat/completions"},
		{"POST", "/v1//chat/completions", "", "Unknown request URL"},
		{"POST", "/V1/CHAT/COMPLETIONS", "", "did you mean /v1/chat/completions"},
		{"GET", "/v1/../v1/models", "", "Unknown request URL"},
		{"GET", "/%2e%2e/etc/passwd", "", "Unknown request URL"},
		{"GET", "/health", "", "Unknown request URL: GET /health"},
		{"GET", "/openapi.json", "", "did you mean /v1/openapi.json"},
		{"GET", "/", "", "Unknown request URL: GET /"},
		{"POST", "/v1/nope", "", "Unknown request URL: POST /v1/nope"},
		{"GET", "/dashboard/../../x", "", "Unknown request URL"},
		{"GET", "/dashboard/missing.js", "", "Unknown request URL: GET /dashboard/missing.js"},
		{"POST", "/chat/completions", "evil.example", "add /v1"}, // the block serves every host
	}
	for _, c := range cases {
		status, raw := rawRequest(t, base, c.method, c.path, c.host, tl.ownerKey, chat)
		var e apiError
		_ = json.Unmarshal(raw, &e)
		if status == 200 || len(raw) == 0 {
			t.Errorf("%s %s: %d with %d bytes", c.method, c.path, status, len(raw))
			continue
		}
		if status != 404 {
			t.Errorf("%s %s: status %d: %s", c.method, c.path, status, raw)
			continue
		}
		if e.Error.Message == nil || e.Error.Type == nil || !strings.Contains(*e.Error.Message, c.hint) {
			t.Errorf("%s %s: %s (want %q)", c.method, c.path, raw, c.hint)
		}
	}
	// The dashboard page, and the real API, still answer.
	resp, err := http.Get(base + "/dashboard")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<html") {
		t.Fatalf("dashboard: %d", resp.StatusCode)
	}
	if status, raw := call(t, "POST", base+"/v1/chat/completions", tl.ownerKey, chat); status != 200 {
		t.Fatalf("chat: %d %s", status, raw)
	}
}

type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

// TestOpenAPISpecMatchesHandlers: every operation in /v1/openapi.json is answered by a
// handler (not the unknown-URL 404, not 405), every path the handlers package declares is in
// the spec, and no method the spec leaves out is served on a spec path.
func TestOpenAPISpecMatchesHandlers(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), fullChain)
	var doc openAPIDoc
	if status := getJSON(t, base+"/v1/openapi.json", &doc); status != 200 || doc.OpenAPI != "3.1.0" || len(doc.Paths) == 0 {
		t.Fatalf("%d %+v", status, doc)
	}
	var served openAPIDoc
	if err := json.Unmarshal(handlers.OpenAPIDocument(), &served); err != nil || len(served.Paths) != len(doc.Paths) {
		t.Fatal("served document differs from the embedded one")
	}
	methods := []string{"GET", "POST", "DELETE", "PUT", "PATCH"}
	var specPaths []string
	for p := range doc.Paths {
		specPaths = append(specPaths, p)
	}
	sort.Strings(specPaths)
	for _, p := range specPaths {
		concrete := strings.NewReplacer("{model}", "btl-fast", "{response_id}", "resp_missing", "{key_id}", "key_missing").Replace(p)
		if strings.Contains(concrete, "{") {
			t.Fatalf("%s: a path parameter the test does not know", p)
		}
		for _, m := range methods {
			_, inSpec := doc.Paths[p][strings.ToLower(m)]
			status, raw := call(t, m, base+concrete, tl.ownerKey, "")
			var e apiError
			_ = json.Unmarshal(raw, &e)
			unknown := status == 404 && e.Error.Code != nil && *e.Error.Code == "unknown_url" || status == 405
			switch {
			case inSpec && unknown:
				t.Errorf("%s %s is in the spec but no handler serves it: %d %s", m, p, status, raw)
			case !inSpec && !unknown:
				t.Errorf("%s %s is served (%d) but missing from the spec", m, p, status)
			}
		}
	}
	// Every route path the handlers declare is in the spec.
	for _, p := range declaredPaths(t) {
		found := false
		for _, sp := range specPaths {
			if sp == p || strings.HasPrefix(sp, p+"/") {
				found = true
			}
		}
		if !found {
			t.Errorf("handlers declare %s, which the OpenAPI document lacks", p)
		}
	}
}

// declaredPaths reads the handlers package's source for the route constants (Path… = "/…").
func declaredPaths(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("../handlers/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Path") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if v, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(v, "/") {
						out = append(out, v)
					}
				}
			}
			return true
		})
	}
	if len(out) < 15 {
		t.Fatalf("found only %d route constants", len(out))
	}
	return out
}

// TestHostileWrongHost: with a named site (the README's production shape) and its catch-all
// block, a request for any other Host gets a 404 envelope, not Caddy's empty 200.
func TestHostileWrongHost(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	base := startSites(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), func(port int) string {
		return fmt.Sprintf("http://api.test:%d {\n%s}\n\nhttp://:%d {\n%s}\n", port, fullChain, port, unknownHostBlock)
	})
	chat := `{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	if status, raw := rawRequest(t, base, "POST", "/v1/chat/completions", "api.test", tl.ownerKey, chat); status != 200 {
		t.Fatalf("right host: %d %s", status, raw)
	}
	for _, host := range []string{"evil.example", "127.0.0.1", "API.TEST.evil"} {
		status, raw := rawRequest(t, base, "POST", "/v1/chat/completions", host, tl.ownerKey, chat)
		var e apiError
		if status != 404 || json.Unmarshal(raw, &e) != nil || e.Error.Code == nil || *e.Error.Code != "unknown_host" {
			t.Errorf("Host %s: %d %s", host, status, raw)
		}
	}
}

// unknownHostBlock is the catch-all site body the README documents.
const unknownHostBlock = "\theader Content-Type application/json\n\trespond `{\"error\":{\"message\":\"Unknown host: this server does not serve that name\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"unknown_host\"}}` 404\n"

// rawRequest sends one HTTP/1.1 request exactly as written (path and Host unchanged by any
// client library) and returns the status and body.
func rawRequest(t *testing.T, base, method, path, host, key, body string) (int, []byte) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	if host == "" {
		host = addr
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + key +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}
