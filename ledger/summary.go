package ledger

import "time"

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
