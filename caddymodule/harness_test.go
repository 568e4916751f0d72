package caddymodule

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// caddyMu serialises tests that run a Caddy instance: Caddy has one running config per process.
var caddyMu sync.Mutex

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startGateway runs a real Caddy with the given global btl block and site directives, and
// returns the site's base URL. The instance stops when the test ends.
func startGateway(t testing.TB, btlBlock, site string) string {
	t.Helper()
	return startSites(t, btlBlock, func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d {\n%s\n}\n", port, site) })
}

// startSites is startGateway with the site blocks written by sites for the chosen port.
func startSites(t testing.TB, btlBlock string, sites func(port int) string) string {
	t.Helper()
	caddyMu.Lock()
	var port int
	// A port found free can be taken by another test process before Caddy binds it (and
	// Caddy binds every interface, where the probe checked only loopback): try another.
	for attempt := 1; ; attempt++ {
		port = freePort(t)
		cf := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tgrace_period 1s\n\tlog {\n\t\tlevel ERROR\n\t}\n\t%s\n}\n%s", btlBlock, sites(port))
		cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			caddyMu.Unlock()
			t.Fatalf("adapt: %v\n%s", err, cf)
		}
		for _, w := range warnings {
			if !strings.Contains(w.Message, "fmt") {
				t.Logf("adapt warning: %s", w.Message)
			}
		}
		err = caddy.Load(cfgJSON, true)
		if err == nil {
			break
		}
		// Caddy's error carries the bind failure as text.
		if !strings.Contains(err.Error(), "address already in use") || attempt == 5 {
			caddyMu.Unlock()
			t.Fatalf("load: %v", err)
		}
	}
	t.Cleanup(func() {
		_ = caddy.Stop()
		caddyMu.Unlock()
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/healthz-probe"); err == nil {
			resp.Body.Close()
			return base
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("gateway did not start")
	return ""
}

const fullChain = "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize\n\tbtl_route\n"

// testLedger is a fresh SQLite ledger for one test: the storage lines for the btl block and
// a workspace with an owner key (all scopes) and the given credits.
type testLedger struct {
	dir, db   string
	storage   string
	workspace string
	ownerKey  string
}

func newTestLedger(t testing.TB, credits ledger.Micros) *testLedger {
	t.Helper()
	dir := t.TempDir()
	tl := &testLedger{dir: dir, db: filepath.Join(dir, "btl.db")}
	tl.storage = fmt.Sprintf("storage sqlite %s\n\t\tspool_dir %s\n\t\tnode_id test-node", tl.db, filepath.Join(dir, "spool"))
	ctx := context.Background()
	store, err := ledger.OpenSQLite(ctx, tl.db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ws, secret, err := store.CreateWorkspace(ctx, "test", credits)
	if err != nil {
		t.Fatal(err)
	}
	tl.workspace, tl.ownerKey = ws.ID, secret
	return tl
}

// withStorage inserts the ledger's storage lines into a btl block.
func (tl *testLedger) withStorage(btlBlock string) string {
	return strings.Replace(btlBlock, "btl {", "btl {\n\t\t"+tl.storage, 1)
}

// gatewayBefore starts the full chain in front of one OpenAI-compatible upstream serving
// models (space separated), with a fresh ledger whose owner key becomes testKey. It returns
// the gateway's base URL and the ledger.
func gatewayBefore(t *testing.T, upstreamURL, models string) (string, *testLedger) {
	t.Helper()
	tl := newTestLedger(t, 10*ledger.Credit)
	testKey = tl.ownerKey
	return startGateway(t, tl.withStorage(`btl {`+pricesFor(models)+`
		provider up openai_compatible {
			base_url `+upstreamURL+`/v1
			models `+models+`
		}
	}`), fullChain), tl
}

// pricesFor prices the models the catalog does not know (a test upstream's made-up ids) at
// $1 per 1M tokens each way: the config must price every model it names.
func pricesFor(models string) string {
	var b strings.Builder
	for _, m := range strings.Fields(models) {
		if _, ok := catalog.Default().Lookup(m); !ok {
			fmt.Fprintf(&b, "\n\t\tprice %s {\n\t\t\tinput 1\n\t\t\toutput 1\n\t\t}", m)
		}
	}
	return b.String()
}
