package ledger

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// BudgetsOptions tune Budgets. Zero values take the defaults in brackets.
type BudgetsOptions struct {
	// NodeID names this node; it must equal the Writer's, whose rows carry it.
	NodeID string
	// Refresh is how often an active budget re-reads the other nodes' spend [1s].
	Refresh time.Duration
	// Idle is how long an unused budget stays in memory [10m].
	Idle time.Duration
	// PendingRows reports the rows appended to this node's Writer but not yet in the store;
	// a budget is forgotten only when it is 0, so a later load misses none of this node's
	// rows. Nil: budgets are never forgotten.
	PendingRows func() int64
	// Now is the clock [time.Now].
	Now func() time.Time
	// OnError is told about failed background refreshes.
	OnError func(error)
}

// Budgets enforces keys' spend caps (KeyLimits.BudgetMicros per BudgetPeriod) next to the
// credit reservation. The spend is derived from ledger rows, never kept in a counter of its
// own: when a budget is first used in a period, its key's (and the keys it minted) rows are
// summed from the store — this node's and the other nodes' apart. From then on this node adds
// what it settles itself, and re-reads the other nodes' part in the background every Refresh
// (or less often when the sum takes long: at most 1/20 of the time per budget).
// In-flight reservations count against the cap, so concurrent requests on one node can never
// overspend it; across nodes, a budget can be exceeded by what other nodes settled within the
// last Refresh (plus rows still in their spools).
type Budgets struct {
	store Store
	opts  BudgetsOptions

	mu      sync.Mutex
	entries map[string]*budgetEntry

	stop chan struct{}
	done chan struct{}
}

type budgetEntry struct {
	ws, keyID string
	cap       Micros
	period    string

	mu       sync.Mutex
	loading  chan struct{} // non-nil while a load runs
	loaded   bool
	start    time.Time // the period the figures below belong to
	node     Micros    // this node's spend: the store's at load, plus what was settled since
	others   Micros    // the other nodes' spend at the last refresh
	othersAt time.Time
	refresh  bool // a background refresh is running
	// every is the refresh interval: Refresh, or longer when summing the rows takes long,
	// so a budget over many rows never keeps the database busy.
	every    time.Duration
	inflight Micros
	holds    int // reservations not yet settled
	lastUse  time.Time
}

// NewBudgets starts the housekeeping that forgets idle budgets; call Close to stop it.
func NewBudgets(store Store, opts BudgetsOptions) *Budgets {
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	if opts.Idle <= 0 {
		opts.Idle = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Budgets{store: store, opts: opts, entries: map[string]*budgetEntry{}, stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// BudgetError says which cap refused a reservation; it wraps ErrBudgetExceeded.
type BudgetError struct {
	KeyID    string // the key whose cap refused (the caller's or an ancestor's)
	Cap      Micros
	Period   string
	Spent    Micros // settled in the period, plus other requests in flight on this node
	Amount   Micros // what the refused request reserves
	ResetsAt time.Time
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("ledger: key %s budget of %s per %s exceeded (spent %s, request needs %s)", e.KeyID, e.Cap, e.Period, e.Spent, e.Amount)
}

// Unwrap makes errors.Is(err, ErrBudgetExceeded) true.
func (e *BudgetError) Unwrap() error { return ErrBudgetExceeded }

// BudgetReservation holds amount against every budget of a key's chain until Settle or
// Release (exactly one takes effect).
type BudgetReservation struct {
	b      *Budgets
	amount Micros
	parts  []budgetHold
	once   sync.Once
}

type budgetHold struct {
	e     *budgetEntry
	start time.Time
}

// Reserve holds amount against the budget of each key in chain (the caller first, then its
// ancestors) that has one. It returns nil and no error when none has, a *BudgetError when a
// cap cannot cover the amount, or a store error when a budget's spend cannot be read.
func (b *Budgets) Reserve(ctx context.Context, ws string, chain []KeyAncestor, amount Micros) (*BudgetReservation, error) {
	var res *BudgetReservation
	now := b.opts.Now()
	for _, k := range chain {
		if k.Limits.BudgetMicros <= 0 {
			continue
		}
		e := b.entry(ws, k)
		if err := b.load(ctx, e, now); err != nil {
			res.Release()
			return nil, err
		}
		start, err := e.hold(amount, now)
		if err != nil {
			res.Release()
			return nil, err
		}
		if res == nil {
			res = &BudgetReservation{b: b, amount: amount}
		}
		res.parts = append(res.parts, budgetHold{e: e, start: start})
		b.maybeRefresh(e, now)
	}
	return res, nil
}

// Grow holds extra more against every budget of the reservation, all or nothing (a
// *BudgetError when a cap cannot cover it): for a request whose bound rose after it was
// reserved, such as an output cap raised by an adapter. A nil reservation has no budget.
func (r *BudgetReservation) Grow(extra Micros) error {
	if r == nil || extra <= 0 {
		return nil
	}
	now := r.b.opts.Now()
	for i, p := range r.parts {
		if err := p.e.grow(extra, now); err != nil {
			for _, q := range r.parts[:i] {
				q.e.mu.Lock()
				q.e.inflight -= extra
				q.e.mu.Unlock()
			}
			if be, ok := err.(*BudgetError); ok { // say what the whole request needs
				be.Spent -= r.amount
				be.Amount = r.amount + extra
			}
			return err
		}
	}
	r.amount += extra
	return nil
}

// Settle records the request's actual cost (its row's cost) for each budget of the chain.
func (r *BudgetReservation) Settle(actual Micros) { r.finish(actual) }

// Release cancels the reservation: the request cost nothing.
func (r *BudgetReservation) Release() { r.finish(0) }

func (r *BudgetReservation) finish(actual Micros) {
	if r == nil {
		return
	}
	r.once.Do(func() {
		now := r.b.opts.Now()
		for _, p := range r.parts {
			e := p.e
			e.mu.Lock()
			e.inflight -= r.amount
			e.holds--
			e.lastUse = now
			if e.loaded && e.start.Equal(p.start) { // a request of a past period counts there
				e.node += actual
			}
			e.mu.Unlock()
		}
	})
}

func (b *Budgets) entry(ws string, k KeyAncestor) *budgetEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[k.ID]
	if !ok {
		e = &budgetEntry{ws: ws, keyID: k.ID, cap: k.Limits.BudgetMicros, period: k.Limits.BudgetPeriod}
		b.entries[k.ID] = e
	}
	return e
}

// load reads the entry's spend for the period containing now, once per period; concurrent
// callers wait for the one load.
func (b *Budgets) load(ctx context.Context, e *budgetEntry, now time.Time) error {
	start := PeriodStart(e.period, now)
	for {
		e.mu.Lock()
		e.lastUse = now
		if e.loaded && !e.start.Before(start) {
			e.mu.Unlock()
			return nil
		}
		if wait := e.loading; wait != nil {
			e.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		e.loading = make(chan struct{})
		e.mu.Unlock()

		spend, err := b.store.KeySpend(ctx, e.ws, e.keyID, start, b.opts.NodeID)
		e.mu.Lock()
		close(e.loading)
		e.loading = nil
		if err == nil {
			e.loaded, e.start, e.node, e.others, e.othersAt = true, start, spend.Node, spend.Others, now
		}
		e.mu.Unlock()
		if err != nil {
			return fmt.Errorf("ledger: reading key %s's spend: %w", e.keyID, err)
		}
	}
}

// hold adds amount to the entry's in-flight total if the cap covers it.
func (e *budgetEntry) hold(amount Micros, now time.Time) (time.Time, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.fits(amount, now); err != nil {
		return time.Time{}, err
	}
	e.inflight += amount
	e.holds++
	return e.start, nil
}

// grow adds to an existing hold's in-flight amount if the cap covers it.
func (e *budgetEntry) grow(extra Micros, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.fits(extra, now); err != nil {
		return err
	}
	e.inflight += extra
	return nil
}

// fits says whether amount more fits under the cap; e.mu is held.
func (e *budgetEntry) fits(amount Micros, now time.Time) error {
	spent := e.node + e.others + e.inflight
	if spent+amount > e.cap {
		return &BudgetError{KeyID: e.keyID, Cap: e.cap, Period: e.period, Spent: spent, Amount: amount,
			ResetsAt: PeriodEnd(e.period, now)}
	}
	return nil
}

// budgetQueryShare × a refresh's duration is the least time to the next: a budget's refresh
// keeps the database busy at most 1/20 of the time.
const budgetQueryShare = 20

// maybeRefresh re-reads the other nodes' spend in the background when it is older than
// Refresh, so the request path never waits for it.
func (b *Budgets) maybeRefresh(e *budgetEntry, now time.Time) {
	e.mu.Lock()
	if e.refresh || now.Sub(e.othersAt) < max(b.opts.Refresh, e.every) {
		e.mu.Unlock()
		return
	}
	e.refresh = true
	start := e.start
	e.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		began := time.Now()
		spend, err := b.store.KeySpend(ctx, e.ws, e.keyID, start, b.opts.NodeID)
		took := time.Since(began)
		e.mu.Lock()
		e.refresh = false
		e.every = budgetQueryShare * took
		if err == nil && e.start.Equal(start) {
			e.others, e.othersAt = spend.Others, b.opts.Now()
		}
		e.mu.Unlock()
		if err != nil && b.opts.OnError != nil {
			b.opts.OnError(fmt.Errorf("ledger: refreshing key %s's spend: %w", e.keyID, err))
		}
	}()
}

// Close stops the housekeeping.
func (b *Budgets) Close() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}

func (b *Budgets) loop() {
	defer close(b.done)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.sweep()
	}
}

// sweep forgets budgets idle for Idle with nothing in flight, but only while this node's
// Writer has no row pending: the next load then finds every row this node settled.
func (b *Budgets) sweep() {
	if b.opts.PendingRows == nil || b.opts.PendingRows() != 0 {
		return
	}
	cutoff := b.opts.Now().Add(-b.opts.Idle)
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, e := range b.entries {
		e.mu.Lock()
		idle := e.holds == 0 && e.loading == nil && !e.refresh && e.lastUse.Before(cutoff)
		e.mu.Unlock()
		if idle {
			delete(b.entries, id)
		}
	}
}
