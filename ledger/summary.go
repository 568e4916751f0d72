package ledger

import (
	"context"
	"time"
)

// UsageGroup aggregates the rows of one group of a Summary. All money is Micros.
type UsageGroup struct {
	// Key is the group value: "" (no grouping), "2006-01-02" (day, UTC), the requested
	// model, the provider, or the key id.
	Key      string
	Requests int64
	Usage
	Cost     Micros
	Baseline Micros
	Savings
}

func (g *UsageGroup) add(o UsageGroup) {
	g.Requests += o.Requests
	g.Usage.add(o.Usage)
	g.Cost += o.Cost
	g.Baseline += o.Baseline
	g.Savings.add(o.Savings)
}

// Summary is the answer to /v1/usage/summary: groups in key order, their total, and the
// workspace's current balance.
type Summary struct {
	WorkspaceID string
	From, To    time.Time
	GroupBy     string
	Groups      []UsageGroup
	Total       UsageGroup
	Balance     Micros
}

func finishSummary(s *Summary) {
	for _, g := range s.Groups {
		s.Total.add(g)
	}
}

// Audit is a workspace's money as the database holds it, each figure computed on its own:
// the totals kept on the workspace row, and the sums of the grants and ledger rows that
// should justify them.
type Audit struct {
	WorkspaceID string
	Granted     Micros // the workspace's granted total
	GrantsSum   Micros // Σ credit grants
	Spent       Micros // the workspace's spent total
	RowsCost    Micros // Σ ledger row cost
	Rows        int64
	Leased      Micros // Σ credit leases (expired ones too: they hold their money)
}

// Auditor is implemented by both stores (not part of Store, so test doubles need not).
type Auditor interface {
	Audit(ctx context.Context, ws string) (Audit, error)
}

// auditSQL works on both backends (CAST, not ::, and no numeric sums); append the placeholder.
const auditSQL = `SELECT w.granted_micros, w.spent_micros,
	CAST(COALESCE((SELECT sum(amount_micros) FROM credit_grants g WHERE g.workspace_id = w.id), 0) AS bigint),
	CAST(COALESCE((SELECT sum(cost_micros) FROM ledger_rows r WHERE r.workspace_id = w.id), 0) AS bigint),
	(SELECT count(*) FROM ledger_rows r WHERE r.workspace_id = w.id),
	CAST(COALESCE((SELECT sum(amount_micros) FROM credit_leases l WHERE l.workspace_id = w.id), 0) AS bigint)
	FROM workspaces w WHERE w.id = `

func scanAudit(ws string, scan func(...any) error) (Audit, error) {
	a := Audit{WorkspaceID: ws}
	var grants, cost, leased int64
	err := scan(&a.Granted, &a.Spent, &grants, &cost, &a.Rows, &leased)
	a.GrantsSum, a.RowsCost, a.Leased = Micros(grants), Micros(cost), Micros(leased)
	return a, err
}
