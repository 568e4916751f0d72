package coalesce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultMaxBuffer is the default number of event bytes a flight keeps for late joiners.
const DefaultMaxBuffer = 4 << 20

// ErrClosed is returned by Sub.Next after Sub.Close.
var ErrClosed = errors.New("coalesce: subscription closed")

// Source is an upstream stream of event payloads; providers.ChunkStream satisfies it. Next
// returns io.EOF after the last event; a payload is valid until the next call.
type Source interface {
	Next() ([]byte, error)
	Close() error
}

// Flight is one in-flight stream shared by its subscribers. A publisher (Streams' pump
// goroutine, or the owner of a NewFlight) feeds it with Publish and ends it with Finish;
// subscribers read every event from the first one, whenever they joined.
//
// Memory is bounded. While the events published so far fit in maxBuffer bytes, the flight is
// joinable and keeps them all. Past that it stops taking new subscribers (they go upstream on
// their own), drops the events every current subscriber has read, and Publish waits while the
// slowest subscriber is more than maxBuffer bytes behind (plus one event): from then on the
// slowest subscriber paces the upstream, as a single client's TCP window would.
type Flight struct {
	mu        sync.Mutex
	events    [][]byte // events[i] has absolute index base+i
	base      int
	retained  int64
	total     int64
	maxBuffer int64
	joinable  bool
	done      bool
	err       error
	changed   chan struct{} // closed (and replaced) when an event is published or the flight ends
	advanced  chan struct{} // non-nil while Publish waits for a subscriber to catch up
	subs      map[*Sub]struct{}

	ctx    context.Context
	cancel context.CancelFunc
	// unlisted is called (without f.mu held) when the flight stops taking subscribers.
	unlisted func()
}

// NewFlight starts a flight whose context is detached from parent (values kept, cancellation
// not) and cancelled once every subscriber has left or the flight finished. maxBuffer <= 0 means
// DefaultMaxBuffer.
func NewFlight(parent context.Context, maxBuffer int64) *Flight {
	if maxBuffer <= 0 {
		maxBuffer = DefaultMaxBuffer
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &Flight{maxBuffer: maxBuffer, joinable: true, changed: make(chan struct{}),
		subs: make(map[*Sub]struct{}), ctx: ctx, cancel: cancel}
}

// Context is the upstream call's context: cancelled when every subscriber has gone (nobody is
// left to read the answer) or the flight finished.
func (f *Flight) Context() context.Context { return f.ctx }

// Subscribe adds a subscriber that will read every event from the first. ok is false when the
// flight no longer takes subscribers (its buffer limit was passed, it finished, or everyone
// left); the caller then makes its own upstream call. The subscription closes itself when ctx ends.
func (f *Flight) Subscribe(ctx context.Context) (s *Sub, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.joinable || f.ctx.Err() != nil {
		return nil, false
	}
	s = &Sub{f: f}
	f.subs[s] = struct{}{}
	s.stop = context.AfterFunc(ctx, s.Close)
	return s, true
}

// Publish appends one event (copied). It returns the flight context's error once every
// subscriber has gone, telling the publisher to stop reading the upstream. It may wait for
// slow subscribers (see Flight).
func (f *Flight) Publish(event []byte) error {
	return f.publish([][]byte{append([]byte(nil), event...)})
}

// publish appends events (owned by the flight from now on) at once, so a subscriber sees a
// burst that arrived together as one (Sub.Pending).
func (f *Flight) publish(evs [][]byte) error {
	var n int64
	for _, ev := range evs {
		n += int64(len(ev))
	}
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return errors.New("coalesce: publish after finish")
	}
	unlist := false
	if f.joinable && f.total+n > f.maxBuffer {
		f.joinable = false
		unlist = true
	}
	for !f.joinable {
		f.trim()
		if f.retained == 0 || f.retained+n <= f.maxBuffer || f.ctx.Err() != nil {
			break
		}
		if f.advanced == nil {
			f.advanced = make(chan struct{})
		}
		wait := f.advanced
		f.mu.Unlock()
		if unlist {
			f.unlist()
			unlist = false
		}
		select {
		case <-wait:
		case <-f.ctx.Done():
		}
		f.mu.Lock()
	}
	if err := f.ctx.Err(); err != nil {
		f.mu.Unlock()
		if unlist {
			f.unlist()
		}
		return err
	}
	f.events = append(f.events, evs...)
	f.retained += n
	f.total += n
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if unlist {
		f.unlist()
	}
	return nil
}

// trim drops the events every subscriber has read; only once the flight is closed to joiners.
func (f *Flight) trim() {
	low := f.base + len(f.events)
	for s := range f.subs {
		low = min(low, s.next)
	}
	drop := low - f.base
	if drop <= 0 {
		return
	}
	for i := range drop {
		f.retained -= int64(len(f.events[i]))
		f.events[i] = nil
	}
	f.events = f.events[drop:]
	f.base = low
}

// Finish ends the flight: subscribers read the remaining events, then err (io.EOF when nil).
// Later calls do nothing.
func (f *Flight) Finish(err error) {
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	f.done, f.err = true, err
	f.joinable = false // a finished flight is not remembered, least of all its error
	close(f.changed)
	f.mu.Unlock()
	f.cancel()
	f.unlist()
}

func (f *Flight) unlist() {
	if f.unlisted != nil {
		f.unlisted()
	}
}

// Stats reports the bytes published and still held, and the number of subscribers.
func (f *Flight) Stats() (published, retained int64, subscribers int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total, f.retained, len(f.subs)
}

// pump reads the upstream on the flight's context and publishes every event. It owns the
// source: no subscriber's handler reads the upstream, so any of them (the leader included) may
// leave without disturbing the others.
func (f *Flight) pump(open func(ctx context.Context) (Source, error)) {
	var src Source
	defer func() {
		if r := recover(); r != nil {
			f.Finish(fmt.Errorf("coalesce: upstream panicked: %v", r))
		}
		if src != nil {
			_ = src.Close()
		}
	}()
	src, err := open(f.ctx)
	if err != nil {
		f.Finish(err)
		return
	}
	// Events already buffered upstream are published together, so subscribers relay a burst
	// in one write as a direct stream does.
	pender, _ := src.(interface{ Pending() bool })
	for {
		var burst [][]byte
		var ev []byte
		for ev, err = src.Next(); err == nil; ev, err = src.Next() {
			burst = append(burst, append([]byte(nil), ev...))
			if pender == nil || !pender.Pending() {
				break
			}
		}
		if len(burst) > 0 {
			if perr := f.publish(burst); perr != nil {
				f.Finish(perr)
				return
			}
		}
		if err == io.EOF {
			f.Finish(nil)
			return
		}
		if err != nil {
			f.Finish(err)
			return
		}
	}
}

// Sub reads a flight from its first event. It is not safe for concurrent use; different
// subscriptions are independent.
type Sub struct {
	f      *Flight
	next   int
	closed bool
	stop   func() bool
}

// Next returns the next event, waiting for it if needed. After the last event it returns
// io.EOF, or the error the flight finished with. When ctx ends it returns ctx's error (and the
// subscription closes itself if it was made with that ctx). The returned slice is shared and
// read-only.
func (s *Sub) Next(ctx context.Context) ([]byte, error) {
	f := s.f
	for {
		f.mu.Lock()
		if s.closed {
			f.mu.Unlock()
			return nil, ErrClosed
		}
		if s.next < f.base+len(f.events) {
			ev := f.events[s.next-f.base]
			s.next++
			if f.advanced != nil {
				close(f.advanced)
				f.advanced = nil
			}
			f.mu.Unlock()
			return ev, nil
		}
		if f.done {
			err := f.err
			f.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return nil, err
		}
		wait := f.changed
		f.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Pending reports whether Next would return without waiting: an event this subscriber has not
// read is buffered, or the flight has ended. A relay uses it to write a burst in one go.
func (s *Sub) Pending() bool {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	return !s.closed && (s.next < f.base+len(f.events) || f.done)
}

// Close leaves the flight. When the last subscriber leaves an unfinished flight, its upstream
// call is cancelled. Close is idempotent.
func (s *Sub) Close() {
	f := s.f
	f.mu.Lock()
	if s.closed {
		f.mu.Unlock()
		return
	}
	s.closed = true
	delete(f.subs, s)
	abandon := len(f.subs) == 0 && !f.done
	if abandon {
		f.joinable = false
	}
	if f.advanced != nil {
		close(f.advanced)
		f.advanced = nil
	}
	f.mu.Unlock()
	if s.stop != nil {
		s.stop()
	}
	if abandon {
		f.cancel()
		f.unlist()
	}
}

// Streams coalesces identical streaming calls. The zero value is ready to use.
type Streams struct {
	// MaxBuffer bounds the bytes one flight keeps for late joiners (DefaultMaxBuffer when 0).
	MaxBuffer int64

	mu      sync.Mutex
	flights map[string]*Flight
}

// Join subscribes to the in-flight stream for key, or starts one: open is then called on a
// goroutine owned by the flight, with the flight's detached context, and the returned source is
// read to the end by that goroutine (or until every subscriber has left). The caller — leader
// or follower — reads the events with sub.Next and must Close sub when done. shared is false
// for the caller that started the flight. A flight that finished, or passed its buffer limit,
// takes no more subscribers: the next Join starts a new one.
func (s *Streams) Join(ctx context.Context, key string, open func(ctx context.Context) (Source, error)) (sub *Sub, shared bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.flights[key]; ok {
		if sub, ok := f.Subscribe(ctx); ok {
			return sub, true
		}
	}
	if s.flights == nil {
		s.flights = make(map[string]*Flight)
	}
	f := NewFlight(ctx, s.MaxBuffer)
	f.unlisted = func() {
		s.mu.Lock()
		if s.flights[key] == f {
			delete(s.flights, key)
		}
		s.mu.Unlock()
	}
	sub, _ = f.Subscribe(ctx)
	s.flights[key] = f
	go f.pump(open)
	return sub, false
}

// InFlight is the number of flights taking subscribers.
func (s *Streams) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flights)
}
