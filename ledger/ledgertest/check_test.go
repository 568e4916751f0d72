package ledgertest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// price is a toy catalog: 1 µ$ per uncached input token and 4 per output token.
func price(r ledger.Row) (ledger.Micros, bool) {
	if r.UpstreamModel != "m" {
		return 0, false
	}
	return ledger.Micros(r.InputUncached + 4*r.Output), true
}

func row(ws string, i int, in, out int64, cost ledger.Micros) ledger.Row {
	return ledger.Row{RequestID: fmt.Sprintf("req_%s_%d", ws, i), Time: time.Now(), WorkspaceID: ws, UpstreamModel: "m",
		Usage: ledger.Usage{InputUncached: in, Output: out}, CostMicros: cost, Status: 200}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	s, err := ledger.OpenSQLite(ctx, filepath.Join(t.TempDir(), "btl.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good, _, _ := s.CreateWorkspace(ctx, "good", 100)
	bad, _, _ := s.CreateWorkspace(ctx, "bad", 10)
	if err := s.InsertRows(ctx, "n", []ledger.Row{row(good.ID, 1, 10, 5, 30), row(good.ID, 2, 2, 1, 6)}); err != nil {
		t.Fatal(err)
	}
	opts := Options{Workspaces: []string{good.ID}, Price: price,
		Acked: map[string][]Ack{good.ID: {{RequestID: "req_" + good.ID + "_1", Cost: 30}, {RequestID: "req_" + good.ID + "_2", Cost: -1}}}}
	rep, err := Check(ctx, s, opts)
	if err != nil || !rep.OK() || rep.Rows != 2 || rep.Acknowledged != 2 || rep.Spent != 36 {
		t.Fatalf("clean ledger: %v %v", rep, err)
	}

	// Overspent, mispriced, an acknowledged request without a row, and a client told
	// another cost than billed: each is found.
	if err := s.InsertRows(ctx, "n", []ledger.Row{row(bad.ID, 1, 10, 5, 30), row(bad.ID, 2, 1, 1, 99)}); err != nil {
		t.Fatal(err)
	}
	opts = Options{Workspaces: []string{good.ID, bad.ID}, Price: price, Acked: map[string][]Ack{
		bad.ID: {{RequestID: "req_lost", Cost: -1}, {RequestID: "req_" + bad.ID + "_1", Cost: 29}},
	}}
	rep, err = Check(ctx, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Overspend != 119 || rep.Unbilled != 1 || rep.Mispriced != 2 {
		t.Fatalf("broken ledger not caught: %v", rep)
	}
	t.Log(rep)
}
