package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// WriterOptions configures a Writer. Zero values take the defaults in brackets.
type WriterOptions struct {
	// Dir is the spool directory (required). One Writer per directory: it is flock'ed.
	Dir string
	// NodeID names this gateway node; InsertRows charges this node's credit leases, so it
	// must equal the node id given to NewCredits.
	NodeID string
	// BatchSize is the most rows per InsertRows call [1000].
	BatchSize int
	// FlushInterval is how long rows may wait for a batch to fill [50ms].
	FlushInterval time.Duration
	// FsyncInterval groups fsyncs of the spool [200ms]. Rows are written with write(2) at
	// once, which survives a process crash; fsync only matters for power loss.
	FsyncInterval time.Duration
	// SegmentSize rotates segment files at this size [64 MiB].
	SegmentSize int64
	// MinBackoff and MaxBackoff bound the retry delay after a failed insert [100ms, 5s].
	MinBackoff, MaxBackoff time.Duration
	// InsertTimeout bounds one InsertRows call [30s].
	InsertTimeout time.Duration
	// OnCommit, if set, receives per-workspace cost sums of committed rows that were
	// appended by this Writer (rows replayed from an earlier process are not reported).
	// Wire it to (*Credits).Committed. It runs on the writer goroutine: keep it short.
	OnCommit func(costs map[string]Micros)
	// OnError, if set, is told about insert and spool errors (for logging).
	OnError func(error)
}

func (o *WriterOptions) defaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 50 * time.Millisecond
	}
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = 200 * time.Millisecond
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 64 << 20
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Second, o.MinBackoff)
	}
	if o.InsertTimeout <= 0 {
		o.InsertTimeout = 30 * time.Second
	}
}

// WriterStats is a snapshot for metrics.
type WriterStats struct {
	PendingRows   int64 // in the spool, not yet committed to the store
	PendingBytes  int64
	SpoolBytes    int64 // segment bytes on disk (includes committed rows of live segments)
	AppendedRows  int64 // since start
	ReplayedRows  int64 // found in the spool at start
	CommittedRows int64 // since start
	Batches       int64
	WriteErrors   int64 // failed Appends
	InsertErrors  int64 // failed InsertRows calls (each is retried)
	CorruptBytes  int64 // bytes cut by recovery or skipped as unreadable
	LastError     string
	LastErrorTime time.Time
}

type timedErr struct {
	err error
	at  time.Time
}

// Writer is the durable, asynchronous path of ledger rows into a Store: Append writes the
// row to a local spool file at once (a few µs, no fsync, no network), and a background
// goroutine batches spooled rows into InsertRows, retrying with backoff while the database
// is away. A row that Append accepted is never lost to a process crash: on start the spool
// is replayed from the last checkpoint, and idempotent inserts make replays harmless.
// Memory stays bounded: the writer holds at most one batch.
type Writer struct {
	store Store
	opts  WriterOptions
	lock  *os.File

	mu         sync.Mutex // append state
	f          *os.File
	end        spoolPos // where the next record goes
	buf        []byte
	closed     bool
	dirty      bool
	totalRows  int64  // replayed + appended: Flush's target
	boundary   uint64 // segments >= boundary were written by this process
	firstSeg   uint64 // reader state: lowest segment file still on disk
	startPos   spoolPos
	kick       chan struct{}
	quit       chan struct{} // Close: drain, then stop
	abort      chan struct{} // stop now
	abortCtx   context.Context
	cancel     context.CancelFunc
	readerDone chan struct{}
	syncerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	commitMu sync.Mutex
	commitCh chan struct{} // closed and replaced after every commit

	pendingRows, pendingBytes, spoolBytes        atomic.Int64
	appendedRows, replayedRows, committedRows    atomic.Int64
	batches, writeErrors, insertErrors, corruptB atomic.Int64
	lastErr                                      atomic.Pointer[timedErr]
}

// NewWriter opens (or creates) the spool in opts.Dir, recovers it (truncating a torn last
// record) and starts replaying whatever the store has not yet committed.
func NewWriter(store Store, opts WriterOptions) (*Writer, error) {
	opts.defaults()
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: writer needs a spool dir", ErrInvalid)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(opts.Dir+"/"+lockName, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("ledger: spool %s is in use by another writer: %w", opts.Dir, err)
	}
	w := &Writer{store: store, opts: opts, lock: lock,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), abort: make(chan struct{}),
		readerDone: make(chan struct{}), syncerDone: make(chan struct{}), commitCh: make(chan struct{})}
	if err := w.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	w.abortCtx, w.cancel = context.WithCancel(context.Background())
	go w.runReader()
	go w.runSyncer()
	return w, nil
}

func (w *Writer) recover() error {
	dir := w.opts.Dir
	cp := readCheckpoint(dir)
	segs, err := listSegments(dir)
	if err != nil {
		return err
	}
	var live []uint64
	for _, s := range segs {
		if s < cp.Seg { // fully committed; a crash came between checkpoint and delete
			_ = os.Remove(segmentPath(dir, s))
			continue
		}
		live = append(live, s)
	}
	start := cp
	if len(live) > 0 && live[0] != cp.Seg {
		start = spoolPos{Seg: live[0]}
	}
	next := max(cp.Seg, 1)
	for _, s := range live {
		from := int64(0)
		if s == start.Seg {
			from = start.Off
		}
		rows, good, cut, err := recoverSegment(dir, s, from)
		if err != nil {
			return fmt.Errorf("ledger: spool recovery of segment %d: %w", s, err)
		}
		if cut > 0 {
			w.corruptB.Add(cut)
			w.noteErr(fmt.Errorf("ledger: spool segment %d: cut %d bytes of torn or corrupt data", s, cut))
		}
		w.pendingRows.Add(rows)
		w.pendingBytes.Add(good)
		w.spoolBytes.Add(from + good)
		w.replayedRows.Add(rows)
		w.totalRows += rows
		next = max(next, s+1)
	}
	// This process writes to fresh segments, so "ours" is simply "segment >= boundary".
	f, err := os.OpenFile(segmentPath(dir, next), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_ = syncDir(dir)
	w.f, w.end, w.boundary, w.startPos, w.firstSeg = f, spoolPos{Seg: next}, next, start, start.Seg
	if len(live) == 0 {
		w.startPos, w.firstSeg = w.end, next
	}
	return nil
}

// Append spools one row. It returns once the row is in the kernel (write(2)), which
// survives the process being killed; it never waits for the database or for fsync.
// Call it after Reservation.Settle for the same request.
func (w *Writer) Append(row Row) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	w.buf = appendRecord(w.buf[:0], &row)
	n, err := w.f.Write(w.buf)
	if err != nil {
		if n > 0 { // keep the framing intact for the next record
			_ = w.f.Truncate(w.end.Off)
		}
		w.mu.Unlock()
		w.writeErrors.Add(1)
		err = fmt.Errorf("ledger: spool write: %w", err)
		w.noteErr(err)
		return err
	}
	w.end.Off += int64(n)
	w.dirty = true
	w.totalRows++
	if w.end.Off >= w.opts.SegmentSize {
		w.rotateLocked()
	}
	w.mu.Unlock()
	w.appendedRows.Add(1)
	w.pendingBytes.Add(int64(n))
	w.spoolBytes.Add(int64(n))
	if w.pendingRows.Add(1) >= int64(w.opts.BatchSize) {
		w.wake()
	}
	return nil
}

func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// rotateLocked starts the next segment; the finished one is fsynced before it is closed.
func (w *Writer) rotateLocked() {
	f, err := os.OpenFile(segmentPath(w.opts.Dir, w.end.Seg+1), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.noteErr(fmt.Errorf("ledger: spool rotate: %w", err)) // keep writing the old one
		return
	}
	_ = w.f.Sync()
	_ = w.f.Close()
	_ = syncDir(w.opts.Dir)
	w.f, w.end, w.dirty = f, spoolPos{Seg: w.end.Seg + 1}, false
}

// runSyncer fsyncs the current segment every FsyncInterval when it has new data, outside
// the append lock so appends never wait for the disk.
func (w *Writer) runSyncer() {
	defer close(w.syncerDone)
	t := time.NewTicker(w.opts.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-w.abort:
			return
		case <-t.C:
		}
		w.mu.Lock()
		f, dirty := w.f, w.dirty
		w.dirty = false
		w.mu.Unlock()
		if dirty {
			if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
				w.noteErr(fmt.Errorf("ledger: spool fsync: %w", err))
			}
		}
	}
}

// readState is the reader goroutine's cursor.
type readState struct {
	pos        spoolPos
	sr         *segReader
	finalLimit int64 // size of pos.Seg once it is no longer the live segment; -1 unknown
}

// limit returns how far the reader may read in seg and whether seg is finished.
func (w *Writer) limit(st *readState) (int64, bool) {
	w.mu.Lock()
	endSeg, endOff := w.end.Seg, w.end.Off
	w.mu.Unlock()
	if st.pos.Seg == endSeg {
		return endOff, false
	}
	if st.finalLimit < 0 {
		if fi, err := os.Stat(segmentPath(w.opts.Dir, st.pos.Seg)); err == nil {
			st.finalLimit = fi.Size()
		} else {
			st.finalLimit = 0
		}
	}
	return st.finalLimit, true
}

func (st *readState) advance() {
	st.sr.close()
	st.sr = nil
	st.pos = spoolPos{Seg: st.pos.Seg + 1}
	st.finalLimit = -1
}

// readBatch fills batch from the spool and sums the cost of this process's rows.
func (w *Writer) readBatch(st *readState, batch []Row, costs map[string]Micros) ([]Row, int64) {
	var bytes int64
	for len(batch) < w.opts.BatchSize {
		lim, final := w.limit(st)
		if st.sr == nil {
			sr, err := openSegReader(w.opts.Dir, st.pos.Seg, st.pos.Off)
			if err != nil {
				if final { // missing finished segment: nothing to read there
					st.advance()
					continue
				}
				w.noteErr(err)
				break
			}
			st.sr = sr
		}
		row, size, ok, err := st.sr.next(lim)
		if err != nil {
			// Unreadable data after recovery (disk corruption): skip to the segment's
			// known end rather than wedging the spool.
			w.corruptB.Add(lim - st.sr.off)
			w.noteErr(fmt.Errorf("ledger: spool segment %d offset %d: %w", st.pos.Seg, st.sr.off, err))
			if final {
				st.advance()
			} else {
				st.sr.close()
				st.sr = nil
				st.pos.Off = lim
			}
			continue
		}
		if !ok {
			if final {
				st.advance()
				continue
			}
			break
		}
		st.pos.Off = st.sr.off
		bytes += int64(size)
		batch = append(batch, row)
		if st.pos.Seg >= w.boundary && w.opts.OnCommit != nil {
			costs[row.WorkspaceID] += row.CostMicros
		}
	}
	return batch, bytes
}

func (w *Writer) runReader() {
	defer close(w.readerDone)
	st := &readState{pos: w.startPos, finalLimit: -1}
	defer func() { st.sr.close() }()
	batch := make([]Row, 0, w.opts.BatchSize)
	costs := map[string]Micros{}
	tick := time.NewTicker(w.opts.FlushInterval)
	defer tick.Stop()
	draining := false
	for {
		batch = batch[:0]
		clear(costs)
		var bytes int64
		batch, bytes = w.readBatch(st, batch, costs)
		if len(batch) > 0 {
			if !w.insert(batch) {
				return // aborted; rows stay in the spool
			}
			w.committed(st.pos, len(batch), bytes, costs)
			clear(batch) // drop string references while idle
		}
		if len(batch) == w.opts.BatchSize {
			continue // more may be waiting
		}
		if draining {
			if len(batch) == 0 {
				return
			}
			continue
		}
		select {
		case <-w.kick:
		case <-tick.C:
		case <-w.quit:
			draining = true
		case <-w.abort:
			return
		}
	}
}

// insert retries InsertRows with capped exponential backoff until it succeeds or the
// writer is aborted. It returns false on abort.
func (w *Writer) insert(batch []Row) bool {
	backoff := w.opts.MinBackoff
	for {
		ctx, cancel := context.WithTimeout(w.abortCtx, w.opts.InsertTimeout)
		err := w.store.InsertRows(ctx, w.opts.NodeID, batch)
		cancel()
		if err == nil {
			return true
		}
		w.insertErrors.Add(1)
		w.noteErr(fmt.Errorf("ledger: insert %d rows (will retry): %w", len(batch), err))
		t := time.NewTimer(backoff)
		select {
		case <-w.abort:
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(backoff*2, w.opts.MaxBackoff)
	}
}

// committed records progress: checkpoint, drop finished segments, stats, OnCommit, and
// wake Flush waiters.
func (w *Writer) committed(pos spoolPos, rows int, bytes int64, costs map[string]Micros) {
	if err := writeCheckpoint(w.opts.Dir, pos); err != nil {
		w.noteErr(fmt.Errorf("ledger: spool checkpoint: %w", err))
	} else {
		for ; w.firstSeg < pos.Seg; w.firstSeg++ {
			p := segmentPath(w.opts.Dir, w.firstSeg)
			if fi, err := os.Stat(p); err == nil {
				if os.Remove(p) == nil {
					w.spoolBytes.Add(-fi.Size())
				}
			}
		}
	}
	w.pendingRows.Add(-int64(rows))
	w.pendingBytes.Add(-bytes)
	w.committedRows.Add(int64(rows))
	w.batches.Add(1)
	if w.opts.OnCommit != nil && len(costs) > 0 {
		w.opts.OnCommit(costs)
	}
	w.commitMu.Lock()
	close(w.commitCh)
	w.commitCh = make(chan struct{})
	w.commitMu.Unlock()
}

// Flush waits until every row appended before the call is committed to the store.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.totalRows
	w.mu.Unlock()
	for {
		w.commitMu.Lock()
		ch := w.commitCh
		w.commitMu.Unlock()
		if w.committedRows.Load() >= target { // both count replayed rows too
			return nil
		}
		w.wake()
		select {
		case <-ch:
		case <-w.readerDone:
			if w.committedRows.Load() >= target {
				return nil
			}
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops accepting rows, fsyncs, and drains the spool into the store until ctx ends.
// Rows that could not be committed stay in the spool for the next start; Close then
// reports how many.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		f := w.f
		w.mu.Unlock()
		if err := f.Sync(); err != nil {
			w.closeErr = fmt.Errorf("ledger: spool fsync: %w", err)
		}
		close(w.quit)
		select {
		case <-w.readerDone:
		case <-ctx.Done():
			close(w.abort)
			w.cancel()
			<-w.readerDone
		}
		<-w.syncerDone
		w.cancel()
		_ = f.Close()
		if w.pendingRows.Load() == 0 {
			w.removeCommitted()
		}
		_ = w.lock.Close() // releases the flock
		if p := w.pendingRows.Load(); p > 0 && w.closeErr == nil {
			w.closeErr = fmt.Errorf("ledger: writer closed with %d rows still spooled (replayed on next start): %w", p, context.Cause(ctx))
		}
	})
	return w.closeErr
}

// removeCommitted deletes every segment after a full drain, leaving a checkpoint that keeps
// segment numbers increasing across restarts.
func (w *Writer) removeCommitted() {
	next := spoolPos{Seg: w.end.Seg + 1}
	if err := writeCheckpoint(w.opts.Dir, next); err != nil {
		return
	}
	for seg := w.firstSeg; seg < next.Seg; seg++ {
		p := segmentPath(w.opts.Dir, seg)
		if fi, err := os.Stat(p); err == nil && os.Remove(p) == nil {
			w.spoolBytes.Add(-fi.Size())
		}
	}
	w.firstSeg = next.Seg
}

// crash stops the writer the way kill -9 would: no drain, no fsync, no checkpoint.
// Tests use it to simulate a crash while keeping the process.
func (w *Writer) crash() {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		f := w.f
		w.mu.Unlock()
		close(w.abort)
		w.cancel()
		<-w.readerDone
		<-w.syncerDone
		_ = f.Close()
		_ = w.lock.Close()
		w.closeErr = ErrClosed
	})
}

func (w *Writer) noteErr(err error) {
	w.lastErr.Store(&timedErr{err: err, at: time.Now()})
	if w.opts.OnError != nil {
		w.opts.OnError(err)
	}
}

// Stats returns a snapshot of the writer's counters.
func (w *Writer) Stats() WriterStats {
	s := WriterStats{
		PendingRows: w.pendingRows.Load(), PendingBytes: w.pendingBytes.Load(), SpoolBytes: w.spoolBytes.Load(),
		AppendedRows: w.appendedRows.Load(), ReplayedRows: w.replayedRows.Load(), CommittedRows: w.committedRows.Load(),
		Batches: w.batches.Load(), WriteErrors: w.writeErrors.Load(), InsertErrors: w.insertErrors.Load(),
		CorruptBytes: w.corruptB.Load(),
	}
	if e := w.lastErr.Load(); e != nil {
		s.LastError, s.LastErrorTime = e.err.Error(), e.at
	}
	return s
}
