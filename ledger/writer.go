package ledger

import (
	"context"
	"encoding/binary"
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
	// FlushInterval is how long rows may wait for a batch to fill [200ms]. Each insert
	// transaction rewrites the last page of every index of the ledger table, so a small batch
	// costs several times more per row: on SQLite 31 CPU µs a row in batches of 15 (50 ms at
	// 300 requests/s), 18 in batches of 60, 16 in batches of 150 and 10 in batches of 600
	// (BenchmarkIngestSQLite run with those batch sizes, 100k rows in the table). Rows are
	// durable in the spool from their append on, so the wait only delays what the usage
	// views show.
	FlushInterval time.Duration
	// FsyncInterval groups fsyncs of the spool [200ms]. Rows are written with write(2) at
	// once, which survives a process crash; fsync only matters for power loss.
	FsyncInterval time.Duration
	// CheckpointInterval spaces the checkpoint (how far the store has the spool) [1s]. A
	// checkpoint only bounds the replay after a crash, which idempotent inserts make
	// harmless, and each is a file write and a rename: per batch they cost more than the
	// batch's insert at a low rate.
	CheckpointInterval time.Duration
	// SegmentSize rotates segment files at this size [64 MiB].
	SegmentSize int64
	// MinBackoff and MaxBackoff bound the retry delay after a failed insert [100ms, 5s].
	MinBackoff, MaxBackoff time.Duration
	// InsertTimeout bounds one InsertRows call [30s].
	InsertTimeout time.Duration
	// SpaceChunk is how much spool space is preallocated at a time [256 KiB]: about a
	// thousand rows between two fallocate calls, and at most that much is held back when the
	// disk fills up.
	SpaceChunk int64
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
		o.FlushInterval = 200 * time.Millisecond
	}
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = 200 * time.Millisecond
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Second
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
	if o.SpaceChunk < MaxRecordBytes {
		o.SpaceChunk = 256 << 10
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
	WriteErrors   int64 // failed Appends (rows)
	SpaceErrors   int64 // reservations refused for lack of disk space
	OpenSlots     int64 // reservations not yet spent or cancelled (requests in flight)
	Writes        int64 // write(2) calls: group commit makes these fewer than rows under load
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
//
// Appends commit in groups: concurrent callers queue their records and one of them writes
// the whole queue with a single write(2) while the others wait; no lock is held across the
// system call. Disk space is promised before it is needed: Reserve preallocates room for
// one row (fallocate) and fails with ErrSpoolFull when there is none, so callers can refuse
// work whose row could not be recorded, and Close waits for every reservation to be spent.
type Writer struct {
	store Store
	opts  WriterOptions
	lock  *os.File

	mu         sync.Mutex
	cond       sync.Cond // on mu: a batch was written, leadership or allocation freed, a slot ended
	f          *os.File
	marker     syncMarker
	end        spoolPos    // published end: every byte before it is a complete record
	cur        *spoolBatch // records queued for the next write(2)
	writing    bool        // a leader is in write(2)
	allocating bool        // someone is preallocating
	allocEnd   int64       // preallocated end of the current segment
	claimed    int64       // end + queued bytes + open slots × MaxRecordBytes
	slots      int64       // open reservations
	closing    bool        // no new reservations
	closed     bool        // no more writes
	dirty      bool
	totalRows  int64         // replayed + written: Flush's target
	freeBatch  []*spoolBatch // written batches whose appenders have all left, for reuse
	boundary   uint64        // segments >= boundary were written by this process
	firstSeg   uint64        // reader state: lowest segment file still on disk
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
	encPool    sync.Pool

	lastCheckpoint time.Time // reader goroutine only

	commitMu sync.Mutex
	commitCh chan struct{} // closed and replaced after every commit

	pendingRows, pendingBytes, spoolBytes        atomic.Int64
	appendedRows, replayedRows, committedRows    atomic.Int64
	batches, writeErrors, insertErrors, corruptB atomic.Int64
	spaceErrors, writes                          atomic.Int64
	lastErr                                      atomic.Pointer[timedErr]
}

// spoolBatch is one group commit: the records of every Append that joined it.
type spoolBatch struct {
	buf  []byte
	rows int
	refs int // appenders that have not yet read the outcome
	done bool
	err  error
}

// NewWriter opens (or creates) the spool in opts.Dir, recovers it (truncating a torn last
// record) and starts replaying whatever the store has not yet committed.
func NewWriter(store Store, opts WriterOptions) (*Writer, error) {
	w, err := PrepareWriter(store, opts)
	if err != nil {
		return nil, err
	}
	if err := w.Open(); err != nil {
		return nil, err
	}
	return w, nil
}

// PrepareWriter makes a Writer without touching the disk: Open takes the spool. Until then
// Reserve and Append fail with ErrClosed and Close does nothing, so a config can be
// validated while another process owns the spool.
func PrepareWriter(store Store, opts WriterOptions) (*Writer, error) {
	opts.defaults()
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: writer needs a spool dir", ErrInvalid)
	}
	w := &Writer{store: store, opts: opts, cur: &spoolBatch{}, closing: true,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), abort: make(chan struct{}),
		readerDone: make(chan struct{}), syncerDone: make(chan struct{}), commitCh: make(chan struct{})}
	w.cond.L = &w.mu
	return w, nil
}

// Open locks the spool directory (one Writer per directory), recovers it and starts the
// background reader and fsync loops.
func (w *Writer) Open() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lock != nil || w.closed {
		return fmt.Errorf("%w: writer already opened", ErrInvalid)
	}
	opts := w.opts
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(opts.Dir+"/"+lockName, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("ledger: spool %s is in use by another writer: %w", opts.Dir, err)
	}
	if err := w.recover(); err != nil {
		lock.Close()
		return err
	}
	w.lock, w.closing = lock, false
	w.abortCtx, w.cancel = context.WithCancel(context.Background())
	go w.runReader()
	go w.runSyncer()
	return nil
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
		rows, end, damaged, err := recoverSegment(dir, s, from)
		if err != nil {
			return fmt.Errorf("ledger: spool recovery of segment %d: %w", s, err)
		}
		if damaged > 0 {
			w.corruptB.Add(damaged)
			w.noteErr(fmt.Errorf("ledger: spool segment %d: %d bytes of torn or corrupt data cut or skipped", s, damaged))
		}
		w.pendingRows.Add(rows)
		w.pendingBytes.Add(max(0, end-from))
		w.spoolBytes.Add(end)
		w.replayedRows.Add(rows)
		w.totalRows += rows
		next = max(next, s+1)
	}
	// This process writes to fresh segments, so "ours" is simply "segment >= boundary".
	f, m, err := createSegment(dir, next)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: %v", ErrSpoolFull, err)
		}
		return err
	}
	_ = syncDir(dir)
	w.f, w.marker, w.end, w.boundary, w.startPos, w.firstSeg = f, m, spoolPos{Seg: next, Off: segHeaderSize}, next, start, start.Seg
	w.allocEnd, w.claimed = segHeaderSize, segHeaderSize
	w.spoolBytes.Add(segHeaderSize)
	if len(live) == 0 {
		w.startPos, w.firstSeg = w.end, next
	}
	return nil
}

// Slot is spool space reserved for one row. Callers that must not serve what they cannot
// record (the meter) take one before the request may cost anything and spend it on the
// request's row, so a full disk refuses requests up front instead of losing their rows.
// Exactly one of Append or Cancel must follow Reserve; the zero Slot is spent.
type Slot struct{ w *Writer }

// Reserve promises room for one row in the spool. It fails with ErrSpoolFull when the disk
// cannot hold it and with ErrClosed once Close has begun.
func (w *Writer) Reserve() (Slot, error) {
	w.mu.Lock()
	err := w.claimLocked(MaxRecordBytes)
	if err == nil {
		w.slots++
	}
	w.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrSpoolFull) {
			w.spaceErrors.Add(1)
		}
		return Slot{}, err
	}
	return Slot{w: w}, nil
}

// claimLocked promises n more bytes of spool space in the current segment, preallocating
// (with w.mu released) when the promises would pass what is allocated.
func (w *Writer) claimLocked(n int64) error {
	for {
		if w.closing {
			return ErrClosed
		}
		need := w.claimed + n
		if need <= w.allocEnd {
			w.claimed = need
			return nil
		}
		if w.allocating {
			w.cond.Wait()
			continue
		}
		w.allocating = true
		f, from := w.f, w.allocEnd
		size := max(w.opts.SpaceChunk, need-from)
		w.mu.Unlock()
		err := preallocate(f, from, size)
		w.mu.Lock()
		w.allocating = false
		w.cond.Broadcast()
		if f != w.f {
			continue // the segment rotated meanwhile: promise against the new one
		}
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
				err = fmt.Errorf("%w (%s): %v", ErrSpoolFull, w.opts.Dir, err)
			} else {
				err = fmt.Errorf("ledger: spool preallocation in %s: %w", w.opts.Dir, err)
			}
			w.noteErr(err)
			return err
		}
		w.allocEnd = max(w.allocEnd, from+size)
	}
}

// Cancel gives the reserved space back (the request ends without a row).
func (s *Slot) Cancel() {
	w := s.w
	if w == nil {
		return
	}
	s.w = nil
	w.mu.Lock()
	w.claimed -= MaxRecordBytes
	w.slotEndedLocked()
	w.mu.Unlock()
}

func (w *Writer) slotEndedLocked() {
	w.slots--
	if w.slots == 0 && w.closing {
		w.cond.Broadcast()
	}
}

// Append spools one row without a reservation: it reserves and spends one at once.
func (w *Writer) Append(row Row) error {
	s, err := w.Reserve()
	if err != nil {
		w.writeErrors.Add(1)
		return err
	}
	return s.Append(row)
}

// Append spools the row into the reserved space. It returns once the row is in the kernel
// (write(2)), which survives the process being killed; it never waits for the database or
// for fsync. Call it after Reservation.Settle for the same request.
func (s *Slot) Append(row Row) error {
	w := s.w
	if w == nil {
		return fmt.Errorf("%w: spool slot already spent", ErrInvalid)
	}
	s.w = nil
	encp, _ := w.encPool.Get().(*[]byte)
	if encp == nil {
		encp = new([]byte)
	}
	// The marker is stamped under the lock, since the segment is only known there.
	rec := appendRecord((*encp)[:0], syncMarker{}, &row)
	*encp = rec

	w.mu.Lock()
	if w.closed {
		w.claimed -= MaxRecordBytes
		w.slotEndedLocked()
		w.mu.Unlock()
		w.encPool.Put(encp)
		w.writeErrors.Add(1)
		return ErrClosed
	}
	b := w.cur
	at := len(b.buf)
	b.buf = append(b.buf, rec...)
	copy(b.buf[at:], w.marker[:])
	b.rows++
	b.refs++
	w.claimed += int64(len(rec)) - MaxRecordBytes
	w.slotEndedLocked()
	for !b.done {
		switch {
		case w.closed: // Close gave up waiting (its context ended): the queue is not written
			w.cur = &spoolBatch{}
			b.done, b.err = true, ErrClosed
			w.writeErrors.Add(int64(b.rows))
			w.cond.Broadcast()
		case !w.writing:
			w.writeBatchLocked()
		default:
			w.cond.Wait()
		}
	}
	err := b.err
	if b.refs--; b.refs == 0 && len(w.freeBatch) < 4 {
		*b = spoolBatch{buf: b.buf[:0]}
		w.freeBatch = append(w.freeBatch, b)
	}
	w.mu.Unlock()
	w.encPool.Put(encp)
	return err
}

// writeBatchLocked makes the caller the leader: it writes the queued records with one
// write(2), without the lock, then publishes the new end. Called and returns with w.mu held.
func (w *Writer) writeBatchLocked() {
	w.writing = true
	b := w.cur
	if n := len(w.freeBatch); n > 0 {
		w.cur, w.freeBatch = w.freeBatch[n-1], w.freeBatch[:n-1]
	} else {
		w.cur = &spoolBatch{}
	}
	f, start := w.f, w.end.Off
	w.mu.Unlock()
	n, err := f.Write(b.buf)
	w.writes.Add(1)
	if err != nil && n > 0 { // keep the framing intact for the next record
		_ = f.Truncate(start)
	}
	w.mu.Lock()
	if err != nil {
		w.claimed -= int64(len(b.buf))
		b.err = fmt.Errorf("ledger: spool write: %w", err)
		w.writeErrors.Add(int64(b.rows))
		w.noteErr(b.err)
	} else {
		w.end.Off += int64(n)
		w.totalRows += int64(b.rows)
		w.dirty = true
		w.appendedRows.Add(int64(b.rows))
		w.pendingBytes.Add(int64(n))
		w.spoolBytes.Add(int64(n))
		if w.pendingRows.Add(int64(b.rows)) >= int64(w.opts.BatchSize) {
			w.wake()
		}
		if w.end.Off >= w.opts.SegmentSize {
			w.rotateLocked()
		}
	}
	b.done = true
	w.writing = false
	w.cond.Broadcast()
}

func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// rotateLocked starts the next segment, moving the space promised for queued records and
// open slots to it; the finished segment is fsynced and closed in the background. If the
// new segment cannot get that space, writing goes on in the old one, whose preallocation
// still covers every promise.
func (w *Writer) rotateLocked() {
	seg := w.end.Seg + 1
	f, m, err := createSegment(w.opts.Dir, seg)
	if err != nil {
		w.noteErr(fmt.Errorf("ledger: spool rotate: %w", err))
		return
	}
	promised := int64(len(w.cur.buf)) + w.slots*MaxRecordBytes
	if err := preallocate(f, segHeaderSize, promised+w.opts.SpaceChunk); err != nil {
		f.Close()
		_ = os.Remove(segmentPath(w.opts.Dir, seg))
		w.noteErr(fmt.Errorf("ledger: spool rotate: %w", err))
		return
	}
	// Queued records were framed for the old segment: stamp the new marker on them.
	for off := 0; off+recordHeaderSize <= len(w.cur.buf); {
		copy(w.cur.buf[off:], m[:])
		off += recordHeaderSize + int(binary.LittleEndian.Uint32(w.cur.buf[off+markerSize:]))
	}
	old := w.f
	w.f, w.marker, w.end, w.dirty = f, m, spoolPos{Seg: seg, Off: segHeaderSize}, false
	w.claimed = segHeaderSize + promised
	w.allocEnd = segHeaderSize + promised + w.opts.SpaceChunk
	w.spoolBytes.Add(segHeaderSize)
	go func() {
		_ = old.Sync()
		_ = old.Close()
		_ = syncDir(w.opts.Dir)
	}()
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
			// Unreadable data after recovery (disk corruption): skip to the next intact
			// record, or to the segment's known end, rather than wedging the spool.
			bad := st.sr.off
			found, serr := st.sr.resync(lim)
			if serr != nil {
				w.noteErr(serr)
			}
			if w.pendingRows.Add(-1) < 0 { // at least the damaged record is gone
				w.pendingRows.Add(1)
			}
			if found {
				w.corruptB.Add(st.sr.off - bad)
				w.noteErr(fmt.Errorf("ledger: spool segment %d: skipped %d damaged bytes at offset %d: %w", st.pos.Seg, st.sr.off-bad, bad, err))
				st.pos.Off = st.sr.off
				continue
			}
			w.corruptB.Add(lim - bad)
			w.noteErr(fmt.Errorf("ledger: spool segment %d offset %d: %w", st.pos.Seg, bad, err))
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
	// wait sleeps until rows may be waiting; false means abort.
	wait := func() bool {
		select {
		case <-w.kick:
		case <-tick.C:
		case <-w.quit:
			draining = true
		case <-w.abort:
			return false
		}
		return true
	}
	if w.replayedRows.Load() == 0 && !wait() { // nothing to replay: wait for rows first
		return
	}
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
				// Read to the end: whatever the counters still hold was damaged data.
				w.pendingRows.Store(0)
				w.pendingBytes.Store(0)
				return
			}
			continue
		}
		if !wait() {
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

// committed records progress: checkpoint (at most every CheckpointInterval), drop finished
// segments, stats, OnCommit, and wake Flush waiters.
func (w *Writer) committed(pos spoolPos, rows int, bytes int64, costs map[string]Micros) {
	if now := time.Now(); now.Sub(w.lastCheckpoint) >= w.opts.CheckpointInterval {
		w.lastCheckpoint = now
		if err := writeCheckpoint(w.opts.Dir, pos); err != nil {
			w.noteErr(fmt.Errorf("ledger: spool checkpoint: %w", err))
		}
	}
	// Committed segments go even without a fresh checkpoint (a full disk cannot write one,
	// and deleting is what frees it): recovery starts at the first segment left, and
	// idempotent inserts absorb the replay of its committed part.
	for ; w.firstSeg < pos.Seg; w.firstSeg++ {
		p := segmentPath(w.opts.Dir, w.firstSeg)
		if fi, err := os.Stat(p); err == nil {
			if os.Remove(p) == nil {
				w.spoolBytes.Add(-fi.Size())
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

// Close stops taking reservations, waits until every open reservation is spent (requests
// still in flight append their rows), fsyncs, and drains the spool into the store until ctx
// ends. Rows that could not be committed stay in the spool for the next start; Close then
// reports how many, and how many reservations were abandoned when ctx ended first.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		if w.lock == nil { // never opened: nothing on disk is ours
			w.closed = true
			w.mu.Unlock()
			return
		}
		w.closing = true
		stop := context.AfterFunc(ctx, func() {
			w.mu.Lock()
			w.cond.Broadcast()
			w.mu.Unlock()
		})
		for (w.slots > 0 || w.writing || w.allocating || w.cur.rows > 0) && ctx.Err() == nil {
			w.cond.Wait()
		}
		stop()
		for w.writing || w.allocating { // never close the file under a leader
			w.cond.Wait()
		}
		abandoned := w.slots
		w.closed = true
		f := w.f
		w.mu.Unlock()
		if abandoned > 0 {
			w.closeErr = fmt.Errorf("ledger: writer closed with %d requests still in flight; their rows are lost: %w", abandoned, context.Cause(ctx))
		}
		if err := f.Sync(); err != nil && w.closeErr == nil {
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
		w.closing, w.closed = true, true
		for w.writing {
			w.cond.Wait()
		}
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
		CorruptBytes: w.corruptB.Load(), SpaceErrors: w.spaceErrors.Load(), Writes: w.writes.Load(),
	}
	w.mu.Lock()
	s.OpenSlots = w.slots
	w.mu.Unlock()
	if e := w.lastErr.Load(); e != nil {
		s.LastError, s.LastErrorTime = e.err.Error(), e.at
	}
	return s
}
