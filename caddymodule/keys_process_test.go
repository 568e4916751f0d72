package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// TestTwoNodesShareRateLimit: two gateway processes on one PostgreSQL enforce one key's
// requests-per-minute together: the nodes lease slices of the minute from the database, so
// alternating requests admit exactly the limit in all, and concurrent ones never more. A
// workspace limit set through one node reaches the other within seconds.
func TestTwoNodesShareRateLimit(t *testing.T) {
	dsn := pgSchema(t)
	dir := t.TempDir()
	ctx := context.Background()
	store, err := ledger.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ws, owner, err := store.CreateWorkspace(ctx, "shared", 10*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	limited, limitedKey, err := store.CreateKey(ctx, ws.ID, ledger.KeySpec{Scopes: []ledger.Scope{ledger.ScopeInference}, Limits: ledger.KeyLimits{RPM: 10}})
	if err != nil {
		t.Fatal(err)
	}
	_, burstKey, _ := store.CreateKey(ctx, ws.ID, ledger.KeySpec{Scopes: []ledger.Scope{ledger.ScopeInference}, Limits: ledger.KeyLimits{RPM: 25}})
	up := simUpstream(t)
	nodeA := startProc(t, dir, btlBlockFor("postgres "+dsn, filepath.Join(dir, "spool-a"), "node-a", up))
	nodeB := startProc(t, dir, btlBlockFor("postgres "+dsn, filepath.Join(dir, "spool-b"), "node-b", up))
	body := `{"model":"btl-fast","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}`
	awayFromMinuteEdge(t, 25*time.Second)

	admitted, limitedCodes := 0, map[int]int{}
	for i := range 30 {
		node := nodeA
		if i%2 == 1 {
			node = nodeB
		}
		status, _, _, err := chatOnce(http.DefaultClient, node.base, limitedKey, body)
		if err != nil {
			t.Fatal(err)
		}
		limitedCodes[status]++
		if status == 200 {
			admitted++
		}
	}
	if admitted != 10 || limitedCodes[http.StatusTooManyRequests] != 20 {
		t.Fatalf("alternating over two nodes with 10 RPM: %v", limitedCodes)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var used int64
	if err := conn.QueryRow(ctx, `SELECT used FROM rate_windows WHERE bucket = $1`, "key:"+limited.ID+":rpm").Scan(&used); err != nil || used != 10 {
		t.Fatalf("the shared counter: %d %v", used, err)
	}

	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := nodeA
			if i%2 == 1 {
				node = nodeB
			}
			status, _, _, err := chatOnce(http.DefaultClient, node.base, burstKey, body)
			if err != nil {
				t.Error(err)
			}
			if status == 200 {
				ok.Add(1)
			} else if status != http.StatusTooManyRequests {
				t.Errorf("status %d", status)
			}
		}()
	}
	wg.Wait()
	if ok.Load() > 25 || ok.Load() < 20 {
		t.Fatalf("60 concurrent requests over two nodes with 25 RPM: %d admitted", ok.Load())
	}
	t.Logf("two nodes, 25 RPM, 60 concurrent requests: %d admitted", ok.Load())

	// A workspace limit set through node A binds node B too, once B's cache refreshes.
	_, freeKey, _ := store.CreateKey(ctx, ws.ID, ledger.KeySpec{Scopes: []ledger.Scope{ledger.ScopeInference}})
	if status, _, _, _ := chatOnce(http.DefaultClient, nodeB.base, freeKey, body); status != 200 {
		t.Fatalf("unlimited key on B: %d", status)
	}
	if status, raw := call(t, http.MethodPost, nodeA.base+"/v1/account/limits", owner, `{"rpm":1}`); status != 200 {
		t.Fatalf("set workspace limit on A: %d %s", status, raw)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, _, _, _ := chatOnce(http.DefaultClient, nodeB.base, freeKey, body)
		if status == http.StatusTooManyRequests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node B never applied the workspace limit set through node A")
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestCLIKeysAndWorkspaces: caddy btl keys list|revoke and workspace list print JSON, never
// secrets, and refuse to revoke the last owner key.
func TestCLIKeysAndWorkspaces(t *testing.T) {
	bin := gatewayBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte("{\n\tbtl {\n\t\tstorage sqlite "+filepath.Join(dir, "btl.db")+"\n\t}\n}\n:0 {\n\trespond ok\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (map[string]any, string, error) {
		cmd := exec.Command(bin, append(append([]string{"btl"}, args...), "--config", cfg, "--adapter", "caddyfile")...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var m map[string]any
		if err == nil {
			if jerr := json.Unmarshal(out, &m); jerr != nil {
				t.Fatalf("%v: not JSON: %s", args, out)
			}
		}
		return m, string(out) + stderr.String(), err
	}
	must := func(args ...string) map[string]any {
		m, out, err := run(args...)
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
		return m
	}
	ws := must("workspace", "create", "--name", "acme", "--credits", "5")
	id := ws["workspace_id"].(string)
	k := must("keys", "create", "--workspace", id, "--scopes", "inference", "--models", "btl-fast,openai/*", "--rpm", "30", "--budget", "2.5", "--budget-period", "month")
	if k["rpm"].(float64) != 30 || k["budget_usd"].(float64) != 2.5 || len(k["models"].([]any)) != 2 {
		t.Fatalf("keys create with limits: %v", k)
	}
	list := must("keys", "list", "--workspace", id)
	data := list["data"].([]any)
	if len(data) != 2 {
		t.Fatalf("keys list: %v", list)
	}
	raw, _ := json.Marshal(list)
	if strings.Contains(string(raw), ws["api_key"].(string)) || strings.Contains(string(raw), k["api_key"].(string)) {
		t.Fatalf("keys list shows a secret: %s", raw)
	}
	ownerID := data[0].(map[string]any)["key_id"].(string)
	if _, out, err := run("keys", "revoke", "--workspace", id, "--key", ownerID); err == nil || !strings.Contains(out, "last owner key") {
		t.Fatalf("revoking the last owner key: %v %s", err, out)
	}
	if r := must("keys", "revoke", "--workspace", id, "--key", k["key_id"].(string)); r["revoked"] != true {
		t.Fatalf("keys revoke: %v", r)
	}
	after := must("keys", "list", "--workspace", id)["data"].([]any)
	if after[1].(map[string]any)["revoked_at"] == nil {
		t.Fatalf("revoked key not shown revoked: %v", after)
	}
	if _, out, err := run("keys", "list", "--workspace", "ws_nope"); err == nil {
		t.Fatalf("listing an unknown workspace: %s", out)
	}
	wsl := must("workspace", "list")["data"].([]any)
	if len(wsl) != 1 || wsl[0].(map[string]any)["workspace_id"] != id || wsl[0].(map[string]any)["balance_usd"].(float64) != 5 {
		t.Fatalf("workspace list: %v", wsl)
	}
}
