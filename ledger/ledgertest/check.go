// Package ledgertest checks the money invariants of a ledger after any scenario: a test
// (or the chaos run) records what its clients were told, then asks Check whether the
// database agrees. It depends only on package ledger, so any package's tests can use it.
//
// For every workspace checked:
//   - spent ≤ granted (no overspend);
//   - balance = grants − Σ row cost: the workspace's totals equal the sums of its grants and
//     rows (stores that implement ledger.Auditor);
//   - every acknowledged request id has exactly one row, in that workspace, and its cost is
//     what the client was told (when it was told);
//   - every row's cost is its usage at the catalog price (when Options.Price is set).
package ledgertest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// Ack is a request a client saw succeed.
type Ack struct {
	RequestID string
	// Cost is the cost the gateway reported (x-btl-cost-usd or usage.cost); negative when
	// the client was not told.
	Cost ledger.Micros
}

// Options say what to check.
type Options struct {
	// Workspaces to check (each must exist).
	Workspaces []string
	// Acked lists, per workspace, the requests whose answers reached their clients.
	Acked map[string][]Ack
	// Price is the catalog price of a row's usage; ok=false when it cannot tell (the row is
	// then reported). Nil skips the price check. Rows the gateway answered without an upstream
	// call (cache hits, coalesced followers) must cost 0, and are not priced.
	Price func(ledger.Row) (cost ledger.Micros, ok bool)
	// MaxViolations bounds the messages kept (all are counted) [20].
	MaxViolations int
}

// Report is what Check found.
type Report struct {
	Workspaces   int
	Rows         int64
	Acknowledged int
	Granted      ledger.Micros
	Spent        ledger.Micros
	// Overspend is Σ over workspaces of max(0, spent − granted).
	Overspend ledger.Micros
	// Unbilled counts acknowledged requests without a row; Doubled, ids with more than one.
	Unbilled, Doubled int
	// Mispriced counts rows whose cost differs from their usage at the catalog price, or
	// from what the client was told.
	Mispriced  int
	Violations int
	Messages   []string
}

// OK reports whether every invariant held.
func (r *Report) OK() bool { return r.Violations == 0 }

// String summarises the report, with the first violations.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d workspaces, %d rows, %d acknowledged; granted %s, spent %s, overspend %s; unbilled %d, doubled %d, mispriced %d; %d violations",
		r.Workspaces, r.Rows, r.Acknowledged, r.Granted, r.Spent, r.Overspend, r.Unbilled, r.Doubled, r.Mispriced, r.Violations)
	for _, m := range r.Messages {
		b.WriteString("\n  ")
		b.WriteString(m)
	}
	return b.String()
}

func (r *Report) fail(max int, format string, args ...any) {
	r.Violations++
	if len(r.Messages) < max {
		r.Messages = append(r.Messages, fmt.Sprintf(format, args...))
	}
}

// Check reads every checked workspace's rows and totals and verifies the invariants. It
// returns an error only when the store cannot be read; broken invariants are in the Report.
func Check(ctx context.Context, store ledger.Store, opts Options) (*Report, error) {
	if opts.MaxViolations <= 0 {
		opts.MaxViolations = 20
	}
	r := &Report{}
	auditor, _ := store.(ledger.Auditor)
	for _, ws := range opts.Workspaces {
		r.Workspaces++
		w, err := store.Workspace(ctx, ws)
		if err != nil {
			return nil, fmt.Errorf("ledgertest: workspace %s: %w", ws, err)
		}
		r.Granted += w.Granted
		r.Spent += w.Spent
		if w.Spent > w.Granted {
			r.Overspend += w.Spent - w.Granted
			r.fail(opts.MaxViolations, "%s: overspent: spent %s of %s granted", ws, w.Spent, w.Granted)
		}
		rows := map[string]ledger.Row{}
		var cost ledger.Micros
		var n int64
		err = store.ExportRows(ctx, ws, time.Time{}, time.Time{}, func(row ledger.Row) error {
			n++
			cost += row.CostMicros
			if _, dup := rows[row.RequestID]; dup { // the primary key forbids it; say so if not
				r.Doubled++
				r.fail(opts.MaxViolations, "%s: request %s has two rows", ws, row.RequestID)
			}
			rows[row.RequestID] = row
			if row.WorkspaceID != ws {
				r.fail(opts.MaxViolations, "%s: row %s belongs to %s", ws, row.RequestID, row.WorkspaceID)
			}
			if opts.Price != nil {
				want := ledger.Micros(0)
				free := row.CacheOutcome == "hit" || row.CacheOutcome == "coalesced"
				if !free {
					var ok bool
					if want, ok = opts.Price(row); !ok {
						r.Mispriced++
						r.fail(opts.MaxViolations, "%s: row %s: no catalog price for %q", ws, row.RequestID, row.UpstreamModel)
						return nil
					}
				}
				if row.CostMicros != want {
					r.Mispriced++
					r.fail(opts.MaxViolations, "%s: row %s costs %s; its usage at the catalog price is %s", ws, row.RequestID, row.CostMicros, want)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("ledgertest: rows of %s: %w", ws, err)
		}
		r.Rows += n
		if cost != w.Spent {
			r.fail(opts.MaxViolations, "%s: spent %s but its rows cost %s", ws, w.Spent, cost)
		}
		if auditor != nil {
			a, err := auditor.Audit(ctx, ws)
			if err != nil {
				return nil, fmt.Errorf("ledgertest: audit of %s: %w", ws, err)
			}
			if a.Granted != a.GrantsSum {
				r.fail(opts.MaxViolations, "%s: granted %s but its grants sum to %s", ws, a.Granted, a.GrantsSum)
			}
			if a.Spent != a.RowsCost || a.Rows != n {
				r.fail(opts.MaxViolations, "%s: spent %s over %d rows, rows sum to %s over %d", ws, a.Spent, n, a.RowsCost, a.Rows)
			}
		}
		for _, ack := range opts.Acked[ws] {
			r.Acknowledged++
			row, ok := rows[ack.RequestID]
			switch {
			case !ok:
				r.Unbilled++
				r.fail(opts.MaxViolations, "%s: acknowledged request %s has no row", ws, ack.RequestID)
			case ack.Cost >= 0 && row.CostMicros != ack.Cost:
				r.Mispriced++
				r.fail(opts.MaxViolations, "%s: request %s was told %s and billed %s", ws, ack.RequestID, ack.Cost, row.CostMicros)
			}
		}
	}
	return r, nil
}
