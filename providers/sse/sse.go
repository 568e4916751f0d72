// Package sse reads and writes Server-Sent Events as LLM providers use them. The reader is
// bounded (one event at a time, a size cap) and allocation-free in the steady state, because it
// sits on the per-chunk hot path of every stream.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// ErrEventTooLarge is returned when one event exceeds the reader's limit.
var ErrEventTooLarge = errors.New("sse: event exceeds size limit")

// DefaultMaxEvent bounds one event: large tool-call arguments and base64 chunks exceed
// bufio.Scanner's 64 KiB default, but an unbounded buffer would let an upstream exhaust memory.
const DefaultMaxEvent = 8 << 20

// Event is one dispatched event. Its slices are valid until the next call to Next.
type Event struct {
	Name []byte
	Data []byte
	ID   []byte
}

// Reader parses an event stream per the WHATWG rules: lines end in \n, \r\n or \r; an event
// ends at a blank line; multiple data lines join with \n; lines starting with ':' are comments;
// one optional space after the colon is stripped.
type Reader struct {
	br       *bufio.Reader
	max      int
	data     []byte
	name     []byte
	id       []byte
	line     []byte
	pendingR bool // last line ended in a bare \r: swallow a following \n
}

// NewReader reads events from r with the default size limit.
func NewReader(r io.Reader) *Reader { return NewReaderSize(r, DefaultMaxEvent) }

// NewReaderSize reads events from r, failing on any event larger than max bytes.
func NewReaderSize(r io.Reader, max int) *Reader {
	br := bufPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &Reader{br: br, max: max}
}

// ErrReleased is returned by Next after Release.
var ErrReleased = errors.New("sse: reader released")

// bufPool holds the 16 KiB read buffers: every stream needs one, and allocating it afresh
// per stream was a tenth of a stream's garbage.
var bufPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// Release gives the reader's buffer back for reuse by another stream. The reader, and every
// event it returned, must not be used afterwards. Release is idempotent; it must not run
// concurrently with Next.
func (r *Reader) Release() {
	if r.br != nil {
		r.br.Reset(nil)
		bufPool.Put(r.br)
		r.br = nil
	}
}

// Next returns the next event with a data field or an event name. Comment-only and empty
// events are skipped. At the end of the input it returns io.EOF (a final event without a
// terminating blank line is dispatched first, as most providers' last event is).
func (r *Reader) Next() (Event, error) {
	if r.br == nil {
		return Event{}, ErrReleased
	}
	r.data, r.name, r.id = r.data[:0], r.name[:0], r.id[:0]
	hasData := false
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && (hasData || len(r.name) > 0) {
				return r.event(), nil
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if hasData || len(r.name) > 0 {
				return r.event(), nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if hasData {
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, value...)
			hasData = true
		case "event":
			r.name = append(r.name[:0], value...)
		case "id":
			r.id = append(r.id[:0], value...)
		}
		if len(r.data) > r.max {
			return Event{}, ErrEventTooLarge
		}
	}
}

// Buffered reports how many bytes are already read from the source but not yet returned: a
// relay can hold its flush while more events are waiting, batching them into one write.
func (r *Reader) Buffered() int {
	if r.br == nil {
		return 0
	}
	return r.br.Buffered()
}

func (r *Reader) event() Event {
	return Event{Name: r.name, Data: r.data, ID: r.id}
}

// readLine returns one line without its terminator. The slice is valid until the next call.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if r.pendingR {
			r.pendingR = false
			if len(chunk) > 0 && chunk[0] == '\n' {
				chunk = chunk[1:]
				if len(chunk) == 0 && err == nil {
					continue
				}
			}
		}
		// A bare \r also ends a line; split there and keep the rest buffered.
		if i := bytes.IndexByte(chunk, '\r'); i >= 0 && (i+1 == len(chunk) || chunk[i+1] != '\n') {
			r.line = append(r.line, chunk[:i]...)
			rest := len(chunk) - (i + 1)
			if rest > 0 {
				if uerr := r.unread(chunk[i+1:]); uerr != nil {
					return nil, uerr
				}
			} else {
				r.pendingR = true
			}
			return r.line, nil
		}
		r.line = append(r.line, chunk...)
		if len(r.line) > r.max {
			return nil, ErrEventTooLarge
		}
		switch {
		case err == nil:
			return trimEOL(r.line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(r.line) > 0:
			return trimEOL(r.line), nil
		default:
			return nil, err
		}
	}
}

// unread pushes bytes after a bare \r back in front of the buffered input. This is rare (no
// major provider uses bare \r), so it may allocate.
func (r *Reader) unread(b []byte) error {
	rest := append([]byte(nil), b...)
	buffered, _ := r.br.Peek(r.br.Buffered())
	rest = append(rest, buffered...)
	_, _ = r.br.Discard(len(buffered))
	r.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(rest), r.br), 16<<10)
	return nil
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// AppendData appends one "data: <payload>\n\n" event to dst.
func AppendData(dst, payload []byte) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, payload...)
	return append(dst, '\n', '\n')
}

// AppendEvent appends a named event ("event: name\ndata: payload\n\n").
func AppendEvent(dst []byte, name string, payload []byte) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, name...)
	dst = append(dst, '\n')
	return AppendData(dst, payload)
}
