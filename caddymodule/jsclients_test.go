package caddymodule

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// TestJSClients runs the official JavaScript SDKs (openai, @anthropic-ai/sdk, pinned in
// testdata/jsclients/package.json) against a real Caddy: clients the team did not write,
// with their own request shapes, stream parsers and error classes (testdata/jsclients/
// clients.mjs). Then it reconciles the money from the client's side: every 200 the SDKs
// got for an inference call has its ledger row, x-btl-cost-usd and usage.cost equal the
// row's cost, and the balance is the grant less the rows. .ci/run installs the packages
// (npm ci); without node or them the test is skipped.
func TestJSClients(t *testing.T) {
	dir, _ := filepath.Abs(filepath.Join("testdata", "jsclients"))
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	for _, pkg := range []string{"openai", "@anthropic-ai/sdk", "zod"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Skipf("%s is not installed: npm ci --prefix %s", pkg, dir)
		}
	}
	const granted = 10 * ledger.Credit
	tl := newTestLedger(t, granted)
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini gpt-4.1-mini text-embedding-3-small omni-moderation-latest
		}
		provider simclaude simulated {
			format anthropic
			models claude-sonnet-4-5
		}
		model btl-fast {
			candidates sim/gpt-4o-mini
		}
		model btl-balanced {
			candidates simclaude/claude-sonnet-4-5 sim/gpt-4.1-mini
		}
	}`), fullChain)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "clients.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE="+base, "KEY="+tl.ownerKey)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var res struct {
		Checks []struct {
			Name  string `json:"name"`
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"checks"`
		Calls []struct {
			Path      string   `json:"path"`
			Status    int      `json:"status"`
			RequestID string   `json:"request_id"`
			Cost      *string  `json:"cost"`
			UsageCost *float64 `json:"usage_cost"`
		} `json:"calls"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node: %v %v\n%s\n%s", runErr, err, out, stderr.String())
	}
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("%s: %s", c.Name, c.Error)
		}
	}
	if runErr != nil || len(res.Checks) == 0 {
		t.Fatalf("node: %v\n%s", runErr, stderr.String())
	}

	// What the clients were told, per request id.
	type told struct {
		cost, usageCost int64
		hasCost         bool
		hasUsage        bool
	}
	want := map[string]told{}
	for _, c := range res.Calls {
		if c.Status != 200 || !inferencePath(c.Path) {
			continue
		}
		if c.RequestID == "" {
			t.Fatalf("%s answered 200 without x-btl-request-id", c.Path)
		}
		var w told
		if c.Cost != nil {
			w.cost, w.hasCost = micros(t, json.Number(*c.Cost)), true
		}
		if c.UsageCost != nil {
			w.usageCost, w.hasUsage = int64(math.Round(*c.UsageCost*1e6)), true
		}
		want[c.RequestID] = w
	}
	if len(want) < 20 {
		t.Fatalf("only %d inference calls answered 200", len(want))
	}
	rows := ledgerCosts(t, base, tl.ownerKey, want)
	var spent int64
	for _, cost := range rows {
		spent += cost
	}
	for id, w := range want {
		cost, ok := rows[id]
		switch {
		case !ok:
			t.Errorf("%s: answered 200 but has no ledger row", id)
		case w.hasCost && w.cost != cost:
			t.Errorf("%s: x-btl-cost-usd %d µ$, row %d µ$", id, w.cost, cost)
		case w.hasUsage && w.usageCost != cost:
			t.Errorf("%s: usage.cost %d µ$, row %d µ$", id, w.usageCost, cost)
		}
	}
	status, raw := call(t, "GET", base+"/v1/usage/summary", tl.ownerKey, "")
	var s struct {
		Balance json.Number `json:"balance_usd"`
	}
	if status != 200 || json.Unmarshal(raw, &s) != nil {
		t.Fatalf("summary: %d %s", status, raw)
	}
	if got := micros(t, s.Balance); got != int64(granted)-spent {
		t.Fatalf("balance %d µ$, want grants %d − rows %d", got, granted, spent)
	}
}

// inferencePath reports whether a call to path makes a ledger row.
func inferencePath(path string) bool {
	switch path {
	case "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations", "/v1/messages", "/v1/responses":
		return true
	}
	return false
}

// ledgerCosts pages through /v1/usage/requests until every id of want has landed (rows are
// batched into the database after the answer) and returns every row's cost by request id.
func ledgerCosts[V any](t *testing.T, base, key string, want map[string]V) map[string]int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows := map[string]int64{}
		cursor := ""
		for {
			status, raw := call(t, "GET", base+"/v1/usage/requests?limit=1000&cursor="+cursor, key, "")
			var page struct {
				Data []struct {
					RequestID string      `json:"request_id"`
					Cost      json.Number `json:"cost_usd"`
				} `json:"data"`
				HasMore    bool   `json:"has_more"`
				NextCursor string `json:"next_cursor"`
			}
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.UseNumber()
			if status != 200 || dec.Decode(&page) != nil {
				t.Fatalf("usage/requests: %d %s", status, raw)
			}
			for _, r := range page.Data {
				if _, dup := rows[r.RequestID]; dup {
					t.Fatalf("request %s has two ledger rows", r.RequestID)
				}
				rows[r.RequestID] = micros(t, r.Cost)
			}
			if !page.HasMore {
				break
			}
			cursor = page.NextCursor
		}
		missing := 0
		for id := range want {
			if _, ok := rows[id]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return rows
		}
		time.Sleep(50 * time.Millisecond)
	}
}
