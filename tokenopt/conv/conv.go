// Package conv is the one parse of a chat-completions body that the optimizers share: the
// messages (spans, roles, content) and the top-level members, found in a single walk. The
// levers read the view instead of scanning the body again, and say what they would change as
// edits; Rewrite and Apply turn all of a stage's edits into the new body in one copy, and
// Rewrite also returns the view of that body without parsing it again.
package conv

import (
	"errors"
	"slices"
	"sync"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/msgjson"
)

// Message is one element of the messages array (see msgjson.Message).
type Message = msgjson.Message

// Member is one top-level member: the key as written (quoted) and its value's span.
type Member = msgjson.Member

// ReserveKeys are the top-level fields that give a request's output reserve, by precedence;
// View.Reserve holds their spans.
var ReserveKeys = [...]string{"max_completion_tokens", "max_tokens"}

// View is one parse of a body. Spans are into Body; a message's field spans are into its Raw.
type View struct {
	Body []byte
	// Arr is the span of the messages array (the last "messages" member, as every reader of
	// the gateway takes it).
	Arr  providers.Span
	Msgs []Message
	// Top lists every top-level member in order, duplicates included.
	Top []Member
	// Reserve holds the spans of ReserveKeys' values (decoded-key match, last one wins), or
	// msgjson.NoSpan.
	Reserve [len(ReserveKeys)]providers.Span
}

// ErrNotChat is returned for a body whose messages array cannot be viewed: malformed, or an
// element that is not an object.
var ErrNotChat = errors.New("conv: body has no messages array of objects")

// Parse views body. Nothing is copied: the view aliases body. Its messages are held in a
// pooled array until Release.
func Parse(body []byte) (*View, error) {
	v := &View{Body: body}
	var msgs []Message
	if p, ok := msgPool.Get().(*[]Message); ok {
		msgs = (*p)[:0]
	}
	arr, msgs, top, err := msgjson.ParseAll(msgs, make([]Member, 0, 12), body, ReserveKeys[:], v.Reserve[:])
	if err != nil {
		return nil, ErrNotChat
	}
	v.Arr, v.Msgs, v.Top = arr, msgs, top
	return v, nil
}

// msgPool holds message arrays for reuse: on a long conversation they are the largest thing
// a view allocates.
var msgPool sync.Pool

// maxPooledMsgs bounds the arrays kept, so one huge conversation does not pin its size.
const maxPooledMsgs = 1 << 14

// Release ends the use of v's messages: Msgs becomes nil and its array is reused. The top
// level stays readable.
func (v *View) Release() {
	if v == nil || v.Msgs == nil {
		return
	}
	msgs := v.Msgs[:cap(v.Msgs)]
	v.Msgs = nil
	if len(msgs) > maxPooledMsgs {
		return
	}
	clear(msgs) // they point into the body, which must not stay reachable
	msgs = msgs[:0]
	msgPool.Put(&msgs)
}

// Of reports whether b is the very body the view was made of (the same memory).
func (v *View) Of(b []byte) bool {
	if v == nil || len(b) != len(v.Body) {
		return false
	}
	return len(b) == 0 || &b[0] == &v.Body[0]
}

// Raws returns the messages' bytes.
func (v *View) Raws() [][]byte {
	out := make([][]byte, len(v.Msgs))
	for i := range v.Msgs {
		out[i] = v.Msgs[i].Raw
	}
	return out
}

// Change is what a stage does to the messages: replacements (each a whole message object),
// and optionally the range [DelFrom, DelTo) of messages removed with Marker (a message
// object, or nil) in its place. DelTo must be a message index (the range never reaches the
// end). Compact writes the array without whitespace between its elements.
type Change struct {
	Repl           map[int][]byte
	DelFrom, DelTo int
	Marker         []byte
	Compact        bool
}

// None is a Change that changes nothing.
func None() Change { return Change{DelFrom: -1, DelTo: -1} }

// Empty reports whether c changes no byte of a body with no whitespace to compact.
func (c Change) Empty() bool { return len(c.Repl) == 0 && c.DelFrom < 0 }

// Identity reports whether c leaves every body as it is: Rewrite returns the body itself.
func (c Change) Identity() bool { return c.Empty() && !c.Compact }

// Len is the length of the body Rewrite(c) would return.
func (v *View) Len(c Change) int {
	n := 0
	v.emit(c, func(b []byte) { n += len(b) }, nil)
	return n
}

// Rewrite returns the body with c applied, in one copy, and its view. With withMsgs the view
// has the messages (nil when a replacement is not a message object the view can read);
// without, only the top level (Top, Arr, Reserve) and Msgs is nil. With an empty change (and
// no compaction) it returns v's body and v itself.
func (v *View) Rewrite(c Change, withMsgs bool) ([]byte, *View) {
	if c.Identity() {
		return v.Body, v
	}
	return v.rewrite(c, withMsgs, NewBuffer(v.Len(c)))
}

// RewriteAppend is Rewrite without the messages, writing the body after dst's contents (in
// dst's memory when it has the room) instead of into new memory: for a reader of the
// rewritten body that is done with it before dst is reused. It returns the body written
// (without dst's contents) and its view, and always writes, even an empty change.
func (v *View) RewriteAppend(dst []byte, c Change) ([]byte, *View) {
	return v.rewrite(c, false, &appendBuffer{b: slices.Grow(dst, v.Len(c)), base: len(dst)})
}

// sink is where rewrite writes: a Buffer, or a caller's slice.
type sink interface {
	Write(p []byte)
	Len() int
	Bytes() []byte
}

// appendBuffer is a sink appending to a slice from base on; Len and Bytes see only that part.
type appendBuffer struct {
	b    []byte
	base int
}

func (w *appendBuffer) Write(p []byte) { w.b = append(w.b, p...) }
func (w *appendBuffer) Len() int       { return len(w.b) - w.base }
func (w *appendBuffer) Bytes() []byte  { return w.b[w.base:] }

func (v *View) rewrite(c Change, withMsgs bool, w sink) ([]byte, *View) {
	nv := &View{Top: make([]Member, 0, len(v.Top))}
	var msg func(i int, raw []byte)
	bad := false
	if withMsgs {
		nv.Msgs = make([]Message, 0, len(v.Msgs)+1)
		msg = func(i int, raw []byte) {
			var m Message
			if i >= 0 {
				m = v.Msgs[i]
			} else {
				var err error
				if m, err = msgjson.ParseMessage(raw); err != nil || len(m.Raw) != len(raw) {
					bad = true
				}
			}
			// Raw is set once the body is written; Pos says where.
			m.Pos = providers.Span{Start: w.Len() - len(raw) - v.Arr.Start, End: w.Len() - v.Arr.Start}
			nv.Msgs = append(nv.Msgs, m)
		}
	}
	v.emit(c, w.Write, msg)
	out := w.Bytes()
	if bad {
		return out, nil
	}
	for i := range nv.Msgs {
		m := &nv.Msgs[i]
		m.Raw = out[v.Arr.Start+m.Pos.Start : v.Arr.Start+m.Pos.End : v.Arr.Start+m.Pos.End]
	}
	nv.Body = out
	delta := len(out) - len(v.Body)
	arrStart := v.Arr.Start
	nv.Arr = providers.Span{Start: arrStart, End: v.Arr.End + delta}
	shift := func(s providers.Span) providers.Span {
		if s.Start >= v.Arr.End {
			s.Start, s.End = s.Start+delta, s.End+delta
		}
		return s
	}
	for _, m := range v.Top {
		m.Val = shift(m.Val)
		ks := cap(v.Body) - cap(m.Key) // the key's offset in the old body
		if ks >= v.Arr.End {
			ks += delta
		}
		m.Key = out[ks : ks+len(m.Key) : ks+len(m.Key)]
		if m.Val.Start == arrStart {
			m.Val = nv.Arr
		}
		nv.Top = append(nv.Top, m)
	}
	for k, s := range v.Reserve {
		if s.Start >= 0 {
			s = shift(s)
		}
		nv.Reserve[k] = s
	}
	return out, nv
}

// emit writes the rewritten body as a sequence of byte runs to w, and calls msg after each
// message with its bytes and its index in v, or -1 for a replacement or the marker.
func (v *View) emit(c Change, w func([]byte), msg func(i int, raw []byte)) {
	body, a := v.Body, v.Body[v.Arr.Start:v.Arr.End]
	w(body[:v.Arr.Start])
	if len(v.Msgs) == 0 {
		w(a)
		w(body[v.Arr.End:])
		return
	}
	// gap is what goes before element i: the array's opening for the first one.
	gap := func(i int) []byte {
		switch {
		case c.Compact && i == 0:
			return a[:1]
		case c.Compact:
			return comma
		case i == 0:
			return a[:v.Msgs[0].Pos.Start]
		}
		return a[v.Msgs[i-1].Pos.End:v.Msgs[i].Pos.Start]
	}
	put := func(i int, raw []byte) {
		w(raw)
		if msg != nil {
			msg(i, raw)
		}
	}
	for i := 0; i < len(v.Msgs); i++ {
		if i == c.DelFrom {
			// As a splice of the messages array would: the gap before the first removed
			// message, the marker and its comma, then the first kept message.
			w(gap(i))
			if c.Marker != nil {
				put(-1, c.Marker)
				w(comma)
			}
			i = c.DelTo
		} else {
			w(gap(i))
		}
		if r, ok := c.Repl[i]; ok {
			put(-1, r)
		} else {
			put(i, v.Msgs[i].Raw)
		}
	}
	if c.Compact {
		w(a[len(a)-1:])
	} else {
		w(a[v.Msgs[len(v.Msgs)-1].Pos.End:])
	}
	w(body[v.Arr.End:])
}

var comma = []byte{','}

// RewriteWith returns Apply(body, edits) for the body Rewrite(c) returns (edits' positions
// are in that body), written in one copy: the rewritten body is never written on its own.
// edits is sorted in place.
func (v *View) RewriteWith(c Change, edits []Edit) []byte {
	if c.Identity() {
		return Apply(v.Body, edits)
	}
	slices.SortStableFunc(edits, func(a, b Edit) int { return a.Start - b.Start })
	n := v.Len(c)
	for _, e := range edits {
		n += len(e.Repl) - (e.End - e.Start)
	}
	w := NewBuffer(n)
	pos, skip := 0, 0 // where the next run starts in the rewritten body; bytes still replaced
	v.emit(c, func(run []byte) {
		base := pos
		pos += len(run)
		i := min(skip, len(run)) // an edit may replace past the run it starts in
		skip -= i
		for len(edits) > 0 && edits[0].Start < pos {
			e := edits[0]
			edits = edits[1:]
			if s := e.Start - base; s > i {
				w.Write(run[i:s])
				i = s
			}
			w.Write(e.Repl)
			if end := e.End - base; end > i {
				i = min(end, len(run))
				skip = end - i
			}
		}
		w.Write(run[i:])
	}, nil)
	for _, e := range edits { // insertions at the very end
		w.Write(e.Repl)
	}
	return w.Bytes()
}

// Edit replaces Body[Start:End] with Repl.
type Edit struct {
	Start, End int
	Repl       []byte
}

// Apply performs non-overlapping edits on body in one copy. Edits at the same position are
// applied in the order given; edits is sorted in place. Without edits it returns body.
func Apply(body []byte, edits []Edit) []byte {
	if len(edits) == 0 {
		return body
	}
	slices.SortStableFunc(edits, func(a, b Edit) int { return a.Start - b.Start })
	n := len(body)
	for _, e := range edits {
		n += len(e.Repl) - (e.End - e.Start)
	}
	w := NewBuffer(n)
	at := 0
	for _, e := range edits {
		w.Write(body[at:e.Start])
		w.Write(e.Repl)
		at = e.End
	}
	w.Write(body[at:])
	return w.Bytes()
}
