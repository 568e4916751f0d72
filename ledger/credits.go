package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// CreditsOptions tunes the lease policy. Zero values take the defaults in brackets.
type CreditsOptions struct {
	// LeaseTTL is how long a lease lives in the database without renewal [60s]. A crashed
	// node's unused lease returns to the pool after at most this long.
	LeaseTTL time.Duration
	// IdleRelease gives a workspace's lease back after this long without reservations [30s].
	IdleRelease time.Duration
	// MinLease is the smallest lease asked for (capped by what is available) [$1].
	MinLease Micros
	// MaxLease caps the adaptive lease size [$100].
	MaxLease Micros
	// Growth sizes leases at Growth × the recent average reservation [20].
	Growth int64
	// TickInterval is the renew/release scan period, which also answers other nodes'
	// requests to give back unused lease [min(LeaseTTL/4, 1s)].
	TickInterval time.Duration
	// ShortWait is how long a reservation refused for lack of unleased credit waits, in
	// total, for other nodes to give back what they do not use, before a 402 [1.5s]. It
	// only applies while other nodes hold leases on the workspace.
	ShortWait time.Duration
	// OnError, if set, is told about background lease errors.
	OnError func(error)
	// AcquireTimeout bounds each database call a reservation waits for [2s]: in a database
	// stall the caller gets an error to answer (503) instead of hanging.
	AcquireTimeout time.Duration
	// Deferred leaves the background loop stopped until Start (so that a config can be
	// validated without any database traffic).
	Deferred bool
	// AwaitAdopt is set when a Writer may still replay rows of a previous process charged
	// to this node's leases: until Adopt is called, only what this process leased is given
	// back.
	AwaitAdopt bool
}

func (o *CreditsOptions) defaults() {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = time.Minute
	}
	if o.IdleRelease <= 0 {
		o.IdleRelease = 30 * time.Second
	}
	if o.MinLease <= 0 {
		o.MinLease = Credit
	}
	if o.MaxLease < o.MinLease {
		o.MaxLease = max(100*Credit, o.MinLease)
	}
	if o.Growth <= 0 {
		o.Growth = 20
	}
	if o.TickInterval <= 0 {
		o.TickInterval = min(o.LeaseTTL/4, time.Second)
	}
	if o.ShortWait <= 0 {
		o.ShortWait = 1500 * time.Millisecond
	}
	if o.AcquireTimeout <= 0 {
		o.AcquireTimeout = 2 * time.Second
	}
}

// Credits reserves credits for requests against per-workspace leases held in memory, so the
// hot path takes one mutex and no database round trip. Each node leases part of a
// workspace's balance (Store.AcquireLease keeps Σ leases ≤ balance in the database) and
// may only reserve what its lease covers; a miss asks the database for more.
//
// Per workspace it tracks the lease L (a mirror of the database lease, never above it),
// open reservations R and settled-but-uncommitted cost S, and keeps R + S ≤ L (except when
// a request's actual cost overruns its estimate, which is counted as overdraft). When the
// Writer commits rows, InsertRows moves their cost from the database lease to spent, and
// Committed (wired as WriterOptions.OnCommit) lowers L and S by the same amount. The
// database holds a lease until the node gives it back, so money settled here but not yet
// committed can never be leased to another node, however long the database is away.
//
// On a small balance (the database reports less unleased credit than a full lease) the
// workspace's lease is scarce: this node then borrows exactly what each reservation needs
// and gives back what it does not use as soon as the reservation ends, so every node can
// serve while the workspace has money. A node refused while others hold leases asks them to
// give back, and waits briefly (ShortWait) for them to do so.
//
// The node id must be unique per gateway node and equal the Writer's NodeID; a restart on
// the same spool must reuse it, so that the new process adopts the old one's leases.
type Credits struct {
	store Store
	node  string
	opts  CreditsOptions

	mu sync.RWMutex
	ws map[string]*wsLease

	closed    atomic.Bool
	started   atomic.Bool
	startOnce sync.Once
	adopted   atomic.Bool // the spool's replay is committed: database leases are all ours to give back
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	hits, misses, acquires, insufficient, overruns atomic.Int64
	overdraft                                      atomic.Int64
}

type wsLease struct {
	id  string
	acq sync.Mutex // one database lease call at a time per workspace
	mu  sync.Mutex // guards the fields below; never held across I/O

	lease, reserved, settled Micros
	// committed is the running total of cost Committed took out of the lease. A database
	// call compares it before and after (sync): a commit that lands while the call is out
	// may or may not be in the figure the call read.
	committed          Micros
	usableUntil        time.Time // local clock; a margin before the database expiry
	lastUsed           time.Time
	avg                Micros // moving average reservation size
	dead               bool   // removed from the map; callers must re-get
	scarce             bool   // small balance: borrow per reservation, give back at once
	topping, returning atomic.Bool
}

// NewCredits starts the background renew/release loop; call Close to stop it and give
// unused leases back.
func NewCredits(store Store, nodeID string, opts CreditsOptions) *Credits {
	opts.defaults()
	c := &Credits{store: store, node: nodeID, opts: opts, ws: map[string]*wsLease{},
		stop: make(chan struct{}), done: make(chan struct{})}
	c.adopted.Store(!opts.AwaitAdopt)
	if !opts.Deferred {
		c.Start()
	}
	return c
}

// Start starts the background renew/release loop of a Deferred Credits (once).
func (c *Credits) Start() {
	c.startOnce.Do(func() {
		c.started.Store(true)
		go c.loop()
	})
}

// Reservation is money set aside for one request. Exactly one of Settle or Release takes
// effect; later calls are ignored.
type Reservation struct {
	c      *Credits
	l      *wsLease
	amount Micros
	done   bool // guarded by l.mu
}

// Amount is the reserved estimate.
func (r *Reservation) Amount() Micros { return r.amount }

func (c *Credits) get(ws string) *wsLease {
	c.mu.RLock()
	l := c.ws[ws]
	c.mu.RUnlock()
	if l != nil {
		return l
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l = c.ws[ws]; l == nil {
		l = &wsLease{id: ws, lastUsed: time.Now()} // not idle before its first reservation
		c.ws[ws] = l
	}
	return l
}

func (c *Credits) margin() time.Duration { return c.opts.LeaseTTL / 10 }

// target is the lease size to aim for: Growth × recent reservations, at least MinLease,
// at most MaxLease, and never less than the reservation at hand.
func (c *Credits) target(l *wsLease, amount Micros) Micros {
	g := Micros(c.opts.Growth)
	t := min(max(l.avg, amount), c.opts.MaxLease/g) * g // min first: no overflow
	t = min(max(t, c.opts.MinLease), c.opts.MaxLease)
	return max(t, amount)
}

// init books amount on l; l.mu must be held and the headroom checked. It reports whether
// the lease is running low.
func (r *Reservation) init(c *Credits, l *wsLease, amount Micros, now time.Time) (low bool) {
	r.c, r.l, r.amount = c, l, amount
	l.reserved += amount
	l.lastUsed = now
	l.avg += (amount - l.avg) / 8
	return !l.scarce && l.lease-l.reserved-l.settled < c.target(l, amount)/4
}

// Reserve sets aside amount for a request in workspace ws. It answers from the local lease
// when it can (no I/O); otherwise it leases more from the store, and returns
// ErrInsufficientCredits when the workspace's balance cannot cover the amount.
func (c *Credits) Reserve(ctx context.Context, ws string, amount Micros) (*Reservation, error) {
	if amount < 0 {
		return nil, fmt.Errorf("%w: negative reservation", ErrInvalid)
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	for {
		l := c.get(ws)
		now := time.Now()
		l.mu.Lock()
		if l.dead {
			l.mu.Unlock()
			continue
		}
		if now.Before(l.usableUntil) && l.lease-l.reserved-l.settled >= amount {
			r := &Reservation{}
			low := r.init(c, l, amount, now)
			l.mu.Unlock()
			c.hits.Add(1)
			if low {
				c.topUpAsync(l)
			}
			return r, nil
		}
		l.mu.Unlock()
		c.misses.Add(1)
		r, err := c.reserveSlow(ctx, l, amount)
		if errors.Is(err, errDeadLease) {
			continue
		}
		return r, err
	}
}

var errDeadLease = errors.New("ledger: lease state recycled")

func (c *Credits) reserveSlow(ctx context.Context, l *wsLease, amount Micros) (*Reservation, error) {
	l.acq.Lock()
	locked := true
	defer func() {
		if locked {
			l.acq.Unlock()
		}
	}()
	waited := time.Duration(0)
	for calls, clean := 0, 0; ; {
		now := time.Now()
		l.mu.Lock()
		if l.dead {
			l.mu.Unlock()
			return nil, errDeadLease
		}
		headroom := l.lease - l.reserved - l.settled
		if now.Before(l.usableUntil) && headroom >= amount {
			r := &Reservation{}
			r.init(c, l, amount, now)
			l.mu.Unlock()
			return r, nil
		}
		if clean >= cleanLeaseCalls || calls >= maxLeaseCalls {
			l.mu.Unlock()
			c.refused(l)
			return nil, ErrInsufficientCredits
		}
		if !now.Before(l.usableUntil) {
			headroom = 0 // an expired lease is kept, not used, until it is renewed
		}
		need := max(amount-headroom, 1)
		want := max(need, c.target(l, amount)-headroom)
		if l.scarce {
			want = need
		}
		before := l.committed
		l.mu.Unlock()

		c.acquires.Add(1)
		actx, cancel := context.WithTimeout(ctx, c.opts.AcquireTimeout)
		lease, err := c.store.AcquireLease(actx, l.id, c.node, want, need, c.opts.LeaseTTL)
		cancel()
		var short *ShortError
		if errors.As(err, &short) && c.adopted.Load() {
			l.mu.Lock()
			own := l.since(short.Own, before)
			healed := own > l.lease
			if healed { // the database holds more for us than we knew (see sync)
				l.lease = own
			}
			// A commit while the call was out may have left the figure too small (see
			// sync): ask again rather than refuse on it.
			disturbed := l.committed != before
			l.mu.Unlock()
			if healed {
				continue
			}
			if disturbed && calls < maxLeaseCalls {
				calls++
				continue
			}
		}
		if short != nil && short.Returnable > 0 && waited < c.opts.ShortWait {
			// Other live nodes hold leases and were just asked to give back what they do
			// not use: wait for them rather than refuse while the workspace has money.
			l.mu.Lock()
			l.scarce = true
			l.mu.Unlock()
			pause := min(100*time.Millisecond<<min(waited/(100*time.Millisecond), 3), c.opts.ShortWait-waited)
			l.acq.Unlock() // other reservations of this workspace may proceed meanwhile
			locked = false
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			waited += pause
			l.acq.Lock()
			locked = true
			continue
		}
		if err != nil {
			if errors.Is(err, ErrInsufficientCredits) || errors.Is(err, ErrNotFound) {
				l.mu.Lock()
				l.scarce = true
				l.mu.Unlock()
				c.refused(l)
			}
			return nil, err
		}
		calls++
		l.mu.Lock()
		if l.committed == before {
			clean++
		}
		c.sync(l, l.lease+lease.Granted, lease.Amount, before)
		l.usableUntil = now.Add(c.opts.LeaseTTL - c.margin())
		l.scarce = lease.Available < c.target(l, amount)
		l.mu.Unlock()
	}
}

// refused counts a refusal; on a scarce lease it gives back what this reservation's calls
// borrowed, so other nodes can serve with it.
func (c *Credits) refused(l *wsLease) {
	c.insufficient.Add(1)
	l.mu.Lock()
	unused := l.scarce && l.lease > l.reserved+l.settled
	l.mu.Unlock()
	if unused {
		c.giveBackAsync(l)
	}
}

// A reservation is refused after cleanLeaseCalls granted lease calls that still left it
// short, or maxLeaseCalls granted or overlapped ones in all. A call that a commit overlapped
// does not count as clean: its figure may be short by that commit's cost (see sync), and the
// next call sees the true one.
const (
	cleanLeaseCalls = 3
	maxLeaseCalls   = 9
)

// sync sets the local lease after a database call that reported the node's whole lease
// (db); expected is what the local copy would be without it. l.mu must be held.
//
// The local copy never believes in more than the database holds. It may believe in less:
// InsertRows moves a batch's cost out of the database lease before Committed lowers the
// local copy, so a lease call in between sees the lower amount and Committed then subtracts
// the cost again. Once adopted, every row charged to this node's leases is in the local
// settled amount, so the database figure is safe to take whole, which heals that drift;
// before, the database may also hold a previous process's unreplayed rows, so only the
// smaller figure is safe.
//
// db was read while the call was out, and a commit may have landed meanwhile: if Committed
// already took its cost out of the local lease (l.committed moved past before, its value when
// the call started), db may still hold that cost, and taking db as it is would count the money
// twice, once spent and once as lease, which lets this node spend it again. So those costs
// come off db. If db did not hold them, this counts them twice the other way: the local lease
// then believes in less than the database holds, which is safe, and the next call heals it.
func (c *Credits) sync(l *wsLease, expected, db, before Micros) {
	db = l.since(db, before)
	if c.adopted.Load() {
		l.lease = db
	} else {
		l.lease = min(expected, db)
	}
}

// since is a database lease figure read by a call that started when l.committed was before,
// less the costs Committed took out of the local lease since (see sync). l.mu must be held.
func (l *wsLease) since(db, before Micros) Micros {
	return max(0, db-(l.committed-before))
}

// topUpAsync grows a lease in the background when it runs low, so the hot path rarely
// waits for the database.
func (c *Credits) topUpAsync(l *wsLease) {
	if !l.topping.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.topping.Store(false)
		if !l.acq.TryLock() {
			return // a foreground acquisition is already running
		}
		defer l.acq.Unlock()
		now := time.Now()
		l.mu.Lock()
		headroom := l.lease - l.reserved - l.settled
		t := c.target(l, l.avg)
		if l.dead || l.scarce || !now.Before(l.usableUntil) || headroom >= t/2 {
			l.mu.Unlock()
			return
		}
		before := l.committed
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.acquires.Add(1)
		lease, err := c.store.AcquireLease(ctx, l.id, c.node, t-headroom, 1, c.opts.LeaseTTL)
		if err != nil {
			if !errors.Is(err, ErrInsufficientCredits) {
				c.noteErr(err)
			}
			return
		}
		l.mu.Lock()
		c.sync(l, l.lease+lease.Granted, lease.Amount, before)
		l.usableUntil = now.Add(c.opts.LeaseTTL - c.margin())
		l.scarce = lease.Available < t
		l.mu.Unlock()
	}()
}

// giveBackAsync returns a scarce lease's unused part as soon as a reservation ends, so that
// other nodes can borrow it.
func (c *Credits) giveBackAsync(l *wsLease) {
	if !l.returning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.returning.Store(false)
		c.release(l, false)
	}()
}

// Settle records the request's actual cost. actual may exceed the estimate; the excess is
// still charged (the ledger row carries it) and counted in Stats.OverdraftMicros when the
// lease cannot cover it.
func (r *Reservation) Settle(actual Micros) {
	l := r.l
	actual = max(actual, 0)
	l.mu.Lock()
	if r.done {
		l.mu.Unlock()
		return
	}
	r.done = true
	before := max(0, l.reserved+l.settled-l.lease)
	l.reserved -= r.amount
	l.settled += actual
	after := max(0, l.reserved+l.settled-l.lease)
	scarce := l.scarce
	l.mu.Unlock()
	if actual > r.amount {
		r.c.overruns.Add(1)
	}
	if after > before {
		r.c.overdraft.Add(int64(after - before))
		r.c.topUpAsync(l)
	}
	if scarce {
		r.c.giveBackAsync(l)
	}
}

// Release cancels the reservation (the request cost nothing).
func (r *Reservation) Release() {
	l := r.l
	l.mu.Lock()
	if !r.done {
		r.done = true
		l.reserved -= r.amount
	}
	scarce := l.scarce
	l.mu.Unlock()
	if scarce {
		r.c.giveBackAsync(l)
	}
}

// Committed tells Credits that rows with these per-workspace costs are now in the store
// (InsertRows moved the cost from this node's lease to spent). Wire it as
// WriterOptions.OnCommit.
func (c *Credits) Committed(costs map[string]Micros) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for ws, cost := range costs {
		l := c.ws[ws]
		if l == nil || cost <= 0 {
			continue
		}
		l.mu.Lock()
		l.settled -= min(l.settled, cost)
		l.lease = max(0, l.lease-cost) // as the database did (floor 0)
		l.committed += cost
		l.mu.Unlock()
	}
}

func (c *Credits) loop() {
	defer close(c.done)
	t := time.NewTicker(c.opts.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.maintain(time.Now(), false)
		c.answerReturnRequests()
	}
}

// answerReturnRequests gives back the unused part of leases another node asked for, and
// treats those workspaces as scarce from now on (borrow per reservation).
// The database may hold more for us than the local copy knows (see release), so this asks
// even when no local lease is left: one indexed query per tick.
func (c *Credits) answerReturnRequests() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	wss, err := c.store.ReturnRequests(ctx, c.node)
	if err != nil {
		c.noteErr(err)
		return
	}
	for _, ws := range wss {
		l := c.get(ws)
		l.mu.Lock()
		l.scarce = true
		l.mu.Unlock()
		c.release(l, false)
	}
}

// maintain renews leases nearing expiry and releases idle ones (all of them when final).
func (c *Credits) maintain(now time.Time, final bool) {
	c.mu.RLock()
	ls := make([]*wsLease, 0, len(c.ws))
	for _, l := range c.ws {
		ls = append(ls, l)
	}
	c.mu.RUnlock()
	for _, l := range ls {
		l.mu.Lock()
		idle := final || (now.Sub(l.lastUsed) >= c.opts.IdleRelease && l.reserved == 0)
		has := l.lease > 0
		renew := has && l.usableUntil.Sub(now) < c.opts.LeaseTTL/2
		empty := l.lease == 0 && l.reserved == 0 && l.settled == 0
		l.mu.Unlock()
		switch {
		case idle && has:
			c.release(l, !final)
		case renew:
			c.renew(l)
		case idle && empty && !final:
			if c.adopted.Load() {
				c.release(l, true) // trims what the database may still hold for us to nothing
			}
			c.forget(l)
		}
	}
}

func (c *Credits) forget(l *wsLease) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lease == 0 && l.reserved == 0 && l.settled == 0 && c.ws[l.id] == l {
		l.dead = true
		delete(c.ws, l.id)
	}
}

// release gives unused lease back. The amount leaves the local lease before the database
// call, so no reservation can use money that is being returned. Once adopted, the database
// lease is trimmed to what open reservations and uncommitted rows still need, which also
// returns anything the local copy had conservatively stopped counting (a commit racing a
// lease call) and whatever a previous process on this spool left.
//
// With ifIdle, nothing happens unless the workspace is still idle once the lease is ours to
// change (a reservation may have come in since the idle scan).
func (c *Credits) release(l *wsLease, ifIdle bool) {
	l.acq.Lock()
	defer l.acq.Unlock()
	l.mu.Lock()
	if ifIdle && (time.Since(l.lastUsed) < c.opts.IdleRelease || l.reserved > 0) {
		l.mu.Unlock()
		return
	}
	keep := l.reserved + l.settled
	amount := l.lease - keep
	adopted := c.adopted.Load()
	if adopted {
		l.lease = min(l.lease, keep)
		if keep == 0 {
			l.usableUntil = time.Time{}
		}
	} else if amount > 0 {
		l.lease -= amount
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	switch {
	case adopted:
		_, err = c.store.TrimLease(ctx, l.id, c.node, keep)
	case amount > 0:
		_, err = c.store.ReleaseLease(ctx, l.id, c.node, amount)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.noteErr(err) // the money stays held in the database until the next release
	}
}

func (c *Credits) renew(l *wsLease) {
	l.acq.Lock()
	defer l.acq.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	l.mu.Lock()
	before := l.committed
	l.mu.Unlock()
	lease, err := c.store.RenewLease(ctx, l.id, c.node, c.opts.LeaseTTL)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.usableUntil = start.Add(c.opts.LeaseTTL - c.margin())
		c.sync(l, l.lease, lease.Amount, before)
	case errors.Is(err, ErrNotFound): // an operator released it: nothing left to spend
		l.lease, l.usableUntil = 0, time.Time{}
	default:
		c.noteErr(err)
	}
}

// Adopt takes over the leases a previous process on this node's spool left in the
// database. Call it once the Writer has committed the replayed rows (Writer.Flush after
// start): their cost then left those leases, so the rest is unused and goes back, and from
// now on an idle workspace's whole database lease may be given back. Until Adopt, only
// what this process itself leased is ever released.
func (c *Credits) Adopt(ctx context.Context) error {
	leases, err := c.store.ListLeases(ctx, c.node)
	if err != nil {
		return err
	}
	c.adopted.Store(true)
	for _, rec := range leases {
		l := c.get(rec.WorkspaceID)
		l.mu.Lock()
		idle := l.lease == 0 && l.reserved == 0 && l.settled == 0
		l.mu.Unlock()
		if idle { // untouched by this process: all of it was the previous one's
			c.release(l, false)
		}
	}
	return nil
}

func (c *Credits) noteErr(err error) {
	if c.opts.OnError != nil {
		c.opts.OnError(err)
	}
}

// Close stops the background loop and releases unused leases (bounded by ctx).
func (c *Credits) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.stop)
		if !c.started.Load() {
			return // never ran: it holds nothing
		}
		<-c.done
		finished := make(chan struct{})
		go func() { c.maintain(time.Now(), true); close(finished) }()
		select {
		case <-finished:
		case <-ctx.Done():
		}
	})
	return nil
}

// CreditsStats is a snapshot for metrics.
type CreditsStats struct {
	Workspaces      int
	Hits, Misses    int64 // reservations served locally / needing the database
	Acquires        int64 // AcquireLease calls
	Insufficient    int64 // reservations refused
	Overruns        int64 // settlements above their estimate
	OverdraftMicros Micros
}

// Stats returns counters.
func (c *Credits) Stats() CreditsStats {
	c.mu.RLock()
	n := len(c.ws)
	c.mu.RUnlock()
	return CreditsStats{Workspaces: n, Hits: c.hits.Load(), Misses: c.misses.Load(), Acquires: c.acquires.Load(),
		Insufficient: c.insufficient.Load(), Overruns: c.overruns.Load(), OverdraftMicros: Micros(c.overdraft.Load())}
}

// LocalState reports the local lease, open reservations and settled-uncommitted cost for ws.
func (c *Credits) LocalState(ws string) (lease, reserved, settled Micros) {
	c.mu.RLock()
	l := c.ws[ws]
	c.mu.RUnlock()
	if l == nil {
		return 0, 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease, l.reserved, l.settled
}
