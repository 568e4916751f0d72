// Package dedupe removes retrieval chunks from the newest message of an OpenAI
// chat-completions request when the same content is already present earlier in the request.
//
// Only the newest message (a user or tool message) is rewritten, so every older byte — and
// the provider's cached prefix — stays as it was. Its text is split into chunks: <document>/<doc>
// elements when there are any, otherwise sections opened by label lines (markdown headings,
// "Source:" lines, "[n]" citations, "Document 3"/"Chunk 3" lines, numbered items) or separated
// by "---", otherwise paragraphs. A chunk whose normalised text (whitespace collapsed, case
// folded) equals a chunk of an earlier message — or an earlier chunk of the same message — is
// replaced by a short reference that keeps the chunk's label. A near duplicate (64-bit SimHash
// over word 3-shingles within Options.MaxHamming bits) is replaced the same way only when its
// salient tokens (numbers, dates, percentages, money, versions, named values, negations) equal
// the earlier copy's; otherwise it carries a changed fact and is kept.
//
// A chunk is never replaced by a reference to a copy that a conflicting version follows: when
// a chunk with the same label, or a near duplicate, but different content appears after the
// copy the reference would point to, the reader could not tell which version the reference
// means (a document pasted, then updated, then pasted as it first was must stay literal, or
// the newest literal copy in the prompt would be the superseded one). No dedupe is better
// than an ambiguous reference.
//
// Dedupe is deterministic and idempotent, and never changes the number of messages.
package dedupe

import (
	"bytes"
	"errors"
	"hash/maphash"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/msgjson"
)

// Options tunes Dedupe. Zero values select the defaults.
type Options struct {
	// Count estimates the tokens of a text. Default: ceil(bytes/4). It may be handed a string
	// that aliases the request body: it must not retain it.
	Count func(string) int
	// MinChunkTokens is the smallest chunk body considered. Default 40.
	MinChunkTokens int
	// MaxHamming is the largest SimHash distance counted as a near duplicate. Default 3;
	// negative disables near-duplicate detection.
	MaxHamming int
	// Cache, when set, keeps what each earlier message contributes to the index, keyed by the
	// message's bytes, so a conversation's next turn indexes only what is new instead of the
	// whole history. The result is the same with or without it. It must not be shared
	// between calls with different Count functions.
	Cache *IndexCache
	// Source, when set, is the request body that a Conversation's messages are slices of.
	// The cache may then keep references into it instead of copying the messages' text,
	// and counts the whole body against its bound, once. That pays when the conversation
	// indexes most of the body (one seen for the first time), not when it adds a message
	// or two to a history already cached. Nothing may write to the body afterwards.
	Source []byte

	bytesCount bool // Count is the default, monotonic in bytes
}

// Report says what Dedupe did.
type Report struct {
	ChunksSeen      int // chunks in the newest message
	ExactDups       int // replaced as exact duplicates
	NearDupsRemoved int // replaced as near duplicates with the same salient facts
	NearDupsKept    int // near duplicates kept because a number, date or named value changed
	Conflicts       int // duplicates kept because another version of them follows the copy
	TokensSaved     int
}

// ErrNoMessages is returned when the body has no messages array.
var ErrNoMessages = errors.New("dedupe: body has no messages array")

const refPrefix = "[duplicate of "

func (o Options) withDefaults() Options {
	if o.Count == nil {
		o.Count = func(s string) int { return (len(s) + 3) / 4 }
		o.bytesCount = true
	}
	if o.MinChunkTokens <= 0 {
		o.MinChunkTokens = 40
	}
	if o.MaxHamming == 0 {
		o.MaxHamming = 3
	}
	return o
}

// known is a chunk of content already in the request.
type known struct {
	exact uint64
	sim   uint64 // SimHash of body (chunks only)
	words int
	body  []byte
	msg   int // 1-based message number; 0 for the newest message itself
	chunk int // index among its message's chunks (or the newest message's local chunks)
	label string
	whole bool // a whole message, used for exact matches only
	// ref: the body is a reference the gateway wrote on an earlier turn. It stands for the
	// copy it names, so it is never another version of that copy.
	ref bool
}

// conflictHamming is the SimHash distance within which a later chunk with different content
// counts as another version of the same passage. Wider than MaxHamming: it only ever stops a
// replacement, so erring wide costs a few tokens, never a fact.
const conflictHamming = 12

// conflicts reports a chunk after the copy at (msg, chunk) — in a later message of the
// history, or among the newest message's chunks seen so far — that is another version of the
// chunk being replaced (exact hash h, SimHash sim, label): the same label or a near SimHash,
// but different content.
func (h *history) conflicts(copyAt known, local []known, hash, sim uint64, words int, label string) bool {
	other := func(k *known) bool {
		if k.whole || k.ref || k.exact == hash {
			return false
		}
		if label != "" && k.label == label {
			return true
		}
		return words >= 3 && k.words >= 3 && hamming(sim, k.sim) <= conflictHamming
	}
	if copyAt.msg > 0 {
		for i := copyAt.msg - 1; i < len(h.idx); i++ {
			mi := h.idx[i]
			if mi == nil {
				continue
			}
			from := 0
			if i == copyAt.msg-1 {
				from = copyAt.chunk + 1
			}
			for j := from; j < len(mi.chunks); j++ {
				if other(&mi.chunks[j]) {
					return true
				}
			}
		}
	}
	from := 0
	if copyAt.msg == 0 {
		from = copyAt.chunk + 1
	}
	for j := from; j < len(local); j++ {
		if other(&local[j]) {
			return true
		}
	}
	return false
}

// Dedupe rewrites the newest message of a chat-completions body. It returns body itself when
// nothing changes.
func Dedupe(body []byte, opts Options) ([]byte, Report, error) {
	o := opts.withDefaults()
	var rep Report
	arr, msgs, err := msgjson.Parse(body)
	if err != nil {
		return body, rep, ErrNoMessages
	}
	if len(msgs) < 2 {
		return body, rep, nil
	}
	last := &msgs[len(msgs)-1]
	if (last.Role != "user" && last.Role != "tool") || last.Content.Start < 0 || len(segments(last)) == 0 {
		return body, rep, nil
	}
	c := &Conversation{o: o, hist: history{idx: make([]*msgIndex, 0, len(msgs)-1)}}
	for i := range msgs[:len(msgs)-1] {
		c.hist.idx = append(c.hist.idx, o.Cache.index(&msgs[i]))
	}
	newRaw, changed := c.rewrite(last, nil, &rep)
	if !changed {
		return body, rep, nil
	}
	return msgjson.Splice(body, arr, msgs, map[int][]byte{len(msgs) - 1: newRaw}), rep, nil
}

// Conversation dedupes a conversation's messages in order, each against the messages before
// it: what Dedupe does for the newest message of a body, for every message of a
// conversation in one pass, indexing each message once.
type Conversation struct {
	o    Options
	hist history
	// pending are added messages not indexed yet: indexing waits for a message that could
	// change, so a conversation whose new message is short never indexes its history.
	pending [][]byte
	// rewritten and rewrittenIdx are the last message Rewrite left unchanged and the index
	// it built for it: when that message is added next, as it usually is, it is not
	// hashed again.
	rewritten    []byte
	rewrittenIdx *msgIndex
	scratch      []byte // the text rewrite writes before encoding it
	decoded      []byte // the text rewrite decodes
	src          *source
	ahead        ahead
}

// NewConversation starts an empty conversation.
func NewConversation(opts Options) *Conversation {
	c := &Conversation{o: opts.withDefaults()}
	if c.o.Source != nil && c.o.Cache != nil {
		c.src = &source{body: c.o.Source}
	}
	return c
}

// IndexAhead shares the indexing of a long history with another goroutine. raws are the
// messages the caller will give the Conversation later, in this order: to Rewrite where
// rewrites says so (the goroutine hashes them as Rewrite would), otherwise to Add unchanged
// (it indexes them into the cache). run, which the caller runs on another goroutine, takes
// them from the last one down, while the Conversation takes them from the first one up as
// it needs them. Each message is worked on once: the two sides claim messages until they
// meet, and the Conversation waits for run only when it needs a message run has claimed
// (run then has at most that one left). It needs a cache; the caller must let run finish
// before the raws' memory is reused.
func (c *Conversation) IndexAhead(raws [][]byte, rewrites []bool) (run func()) {
	if c.o.Cache == nil || len(raws) == 0 || c.ahead.raws != nil || len(rewrites) != len(raws) {
		return func() {}
	}
	a := &c.ahead
	a.raws, a.rewrites, a.hashed, a.done = raws, rewrites, make([]*msgIndex, len(raws)), make(chan struct{})
	a.claims.Store(uint64(len(raws))) // nothing claimed from below (0), nothing from above
	return func() {
		defer close(a.done)
		var buf []byte // the texts decoded, one at a time
		for {
			cl := a.claims.Load()
			lo, hi := cl>>32, cl&0xFFFFFFFF
			if hi <= lo {
				return
			}
			if !a.claims.CompareAndSwap(cl, lo<<32|(hi-1)) {
				continue
			}
			if !a.rewrites[hi-1] {
				c.o.Cache.indexRaw(a.raws[hi-1], c.src)
				continue
			}
			if m, err := msgjson.ParseMessage(a.raws[hi-1]); err == nil && stringContent(&m) {
				text, borrowed := messageText(&m, buf[:0])
				if mi, _ := indexText(text, false); mi != nil {
					for i := range mi.chunks {
						mi.chunks[i].body = nil // Rewrite slices its own text
					}
					a.hashed[hi-1] = mi
				}
				if !borrowed { // a borrowed text is the request's: never decode into it
					buf = text[:0]
				}
			}
		}
	}
}

// ahead is the state IndexAhead shares with its goroutine: claims holds, in its high half,
// how many of raws the Conversation claimed (from the first) and, in its low half, the
// index below which the other goroutine has claimed nothing (it claims from the last).
// hashed holds what the goroutine hashed of the messages to rewrite, without chunk bodies.
type ahead struct {
	raws     [][]byte
	rewrites []bool
	hashed   []*msgIndex
	next     int // where the Conversation looks for the next of raws
	claims   atomic.Uint64
	done     chan struct{}
}

// claim finds raw among IndexAhead's messages, from the last one found on, and claims it. It
// reports the message's index and whether the other goroutine has it, once it is done;
// -1 when raw is not one of them.
func (a *ahead) claim(raw []byte) (int, bool) {
	for s := a.next; s < len(a.raws); s++ {
		if len(raw) != len(a.raws[s]) || unsafe.SliceData(raw) != unsafe.SliceData(a.raws[s]) {
			continue
		}
		a.next = s + 1
		for {
			cl := a.claims.Load()
			if hi := cl & 0xFFFFFFFF; uint64(s) >= hi {
				<-a.done // claimed by the other side, which has no more to claim
				return s, true
			}
			if a.claims.CompareAndSwap(cl, uint64(s+1)<<32|cl&0xFFFFFFFF) {
				return s, false
			}
		}
	}
	return -1, false
}

// index is the entry for raw, a message to add: from the cache when IndexAhead's goroutine
// indexed it, else built here.
func (c *Conversation) index(raw []byte) *msgIndex {
	c.ahead.claim(raw)
	return c.o.Cache.indexRaw(raw, c.src)
}

// stringContent reports a message whose content is one string: the content Rewrite
// hashes the way the history does (see rewrite).
func stringContent(m *msgjson.Message) bool {
	raw := m.ContentRaw()
	return len(raw) > 0 && raw[0] == '"'
}

// Rewrite returns the message object raw as Dedupe would rewrite it if it were the newest
// message after the ones added so far, and whether anything changed (a changed message is
// a new slice, sharing nothing with raw). raw is not added.
func (c *Conversation) Rewrite(raw []byte) ([]byte, Report, bool) {
	var rep Report
	m, err := msgjson.ParseMessage(raw)
	if err != nil || len(c.hist.idx)+len(c.pending) == 0 || (m.Role != "user" && m.Role != "tool") || m.Content.Start < 0 {
		return raw, rep, false
	}
	// The raw content is never shorter than its text: below the smallest chunk nothing can
	// be replaced (dedupeText skips texts and chunks under MinChunkTokens).
	if n := m.Content.End - m.Content.Start; c.o.bytesCount && (n+3)/4 < c.o.MinChunkTokens {
		return raw, rep, false
	}
	for _, p := range c.pending {
		if c.rewrittenIdx != nil && len(p) == len(c.rewritten) && unsafe.SliceData(p) == unsafe.SliceData(c.rewritten) {
			c.hist.idx = append(c.hist.idx, c.o.Cache.adopt(p, c.rewrittenIdx, c.src))
			continue
		}
		c.hist.idx = append(c.hist.idx, c.index(p))
	}
	c.pending = c.pending[:0]
	c.rewritten, c.rewrittenIdx = nil, nil
	var hashed *msgIndex
	if s, theirs := c.ahead.claim(raw); theirs {
		hashed = c.ahead.hashed[s]
	}
	out, changed := c.rewrite(&m, hashed, &rep)
	return out, rep, changed
}

// Add appends the message object raw to the history later messages are compared with.
// raw must stay unchanged while the Conversation is in use.
func (c *Conversation) Add(raw []byte) {
	c.pending = append(c.pending, raw)
}

// rewrite dedupes the text segments of m against the history, last to first so the spans
// stay valid. hashed, when not nil, is m's index as IndexAhead's goroutine built it, without
// chunk bodies.
func (c *Conversation) rewrite(m *msgjson.Message, hashed *msgIndex, rep *Report) ([]byte, bool) {
	segs := segments(m)
	c.hist.newestLen = m.Content.End - m.Content.Start
	// A string content is indexed as the history indexes a message, and dedupe takes its
	// hashes from that index: the message is hashed once, here, even when it joins the
	// history next (see Conversation.rewritten).
	if len(segs) == 1 && stringContent(m) {
		// The text is decoded into a buffer the next message reuses: the index keeps its
		// own copy only if the message joins the history unchanged (adopt).
		if text, borrowed := messageText(m, c.decoded[:0]); len(text) > 0 {
			mi, chunks := withBodies(hashed, text, borrowed)
			if mi == nil {
				mi, chunks = indexText(text, borrowed)
			}
			if !borrowed {
				c.decoded, mi.transient = text[:0], true
			}
			out, did := dedupeText(c.scratch[:0], text, chunks, mi, &c.hist, c.o, rep)
			c.scratch = out[:0]
			if !did {
				c.rewritten, c.rewrittenIdx = m.Raw, mi
				return m.Raw, false
			}
			// The message written in one buffer, with room for a few escapes.
			seg := segs[0]
			nr := make([]byte, 0, len(m.Raw)-(seg.End-seg.Start)+len(out)+len(out)/8+16)
			nr = append(nr, m.Raw[:seg.Start]...)
			nr = msgjson.AppendString(nr, msgjson.Unsafe(out))
			return append(nr, m.Raw[seg.End:]...), true
		}
	}
	newRaw := m.Raw
	changed := false
	for si := len(segs) - 1; si >= 0; si-- {
		seg := segs[si]
		text, ok := msgjson.DecodeString(newRaw[seg.Start:seg.End], nil)
		if !ok {
			continue
		}
		out, did := dedupeText(nil, text, chunk(text), nil, &c.hist, c.o, rep)
		if !did {
			continue
		}
		v := msgjson.AppendString(make([]byte, 0, len(out)+16), msgjson.Unsafe(out))
		newRaw = providers.Replace(newRaw, seg, v)
		changed = true
	}
	return newRaw, changed
}

// history is the index of the messages before the newest one.
type history struct {
	idx       []*msgIndex // per message; nil for one without text
	newestLen int         // raw length of the newest message's content
}

// findExact returns the latest earlier entry with the normalised hash h: the last chunk of
// the latest message that has it, else that message's whole text when its size is
// comparable to the newest message's (a whole copy of a much smaller or larger message is
// not the same document).
func (h *history) findExact(hash uint64) (known, bool) {
	for i := len(h.idx) - 1; i >= 0; i-- {
		mi := h.idx[i]
		if mi == nil {
			continue
		}
		for j := len(mi.chunks) - 1; j >= 0; j-- {
			if mi.chunks[j].exact == hash {
				k := mi.chunks[j]
				k.msg, k.chunk = i+1, j
				return k, true
			}
		}
		if mi.wholeExact == hash && mi.textLen >= h.newestLen/3 && mi.textLen <= 3*h.newestLen {
			k := known{exact: mi.wholeExact, words: mi.wholeWords, whole: true}
			k.msg, k.chunk = i+1, -1
			return k, true
		}
	}
	return known{}, false
}

// msgIndex is what one earlier message contributes to the index. It depends only on the
// message's bytes, not on where the message sits, so it can be reused across turns.
type msgIndex struct {
	textLen int
	// The whole text's normalised hash and word count, for a copy of a whole message.
	wholeExact uint64
	wholeWords int
	chunks     []known
	// borrowed: the chunk bodies alias the message's bytes (its text had no escapes), so
	// an entry that outlives the request must copy them; otherwise they are the index's own.
	borrowed bool
	// transient: the chunk bodies alias a buffer the Conversation reuses (its decoded
	// text), so the entry copies them before it joins the history.
	transient bool
}

// ownBodies gives the entry its own copy of the chunk bodies, in one buffer, and returns
// their size.
func (mi *msgIndex) ownBodies() int {
	own := 0
	for i := range mi.chunks {
		own += len(mi.chunks[i].body)
	}
	buf := make([]byte, 0, own)
	for i := range mi.chunks {
		k := &mi.chunks[i]
		buf = append(buf, k.body...)
		k.body = buf[len(buf)-len(k.body) : len(buf) : len(buf)]
	}
	mi.borrowed, mi.transient = false, false
	return own
}

// buildIndex chunks and hashes one earlier message's text. Chunk bodies alias text.
func buildIndex(m *msgjson.Message) *msgIndex {
	text, borrowed := messageText(m, nil)
	mi, _ := indexText(text, borrowed)
	return mi
}

// messageText is the text of a message's content: the string decoded, or an array's text
// parts joined by blank lines. borrowed: the text is the content itself (a string without
// escapes), not a copy.
func messageText(m *msgjson.Message, dst []byte) (text []byte, borrowed bool) {
	raw := m.ContentRaw()
	if len(raw) == 0 {
		return nil, false
	}
	if raw[0] == '"' {
		if bytes.IndexByte(raw, '\\') < 0 {
			return raw[1 : len(raw)-1], true
		}
		text, ok := msgjson.DecodeString(raw, dst)
		if !ok {
			return nil, false
		}
		return text, false
	} else if raw[0] == '[' {
		return partsText(raw, nil), false
	}
	return nil, false
}

// indexText chunks and hashes a text (borrowed as messageText says), and returns its chunks
// too.
func indexText(text []byte, borrowed bool) (*msgIndex, []chunkSpan) {
	if len(text) == 0 {
		return nil, nil
	}
	chunks := chunk(text)
	mi := &msgIndex{textLen: len(text), chunks: make([]known, len(chunks)), borrowed: borrowed}
	for i, c := range chunks {
		b := text[c.bodyStart:c.bodyEnd]
		mi.chunks[i] = known{body: b, label: c.label, chunk: i, ref: isReference(b)}
	}
	if len(chunks) == 1 && holdsAllWords(text, chunks[0]) {
		k := &mi.chunks[0]
		k.exact, k.words, k.sim = chunkHashes(k.body)
		mi.wholeExact, mi.wholeWords = k.exact, k.words
	} else {
		h, n := textHashes(text, chunks, mi.chunks)
		mi.wholeExact, mi.wholeWords = h, n
	}
	return mi, chunks
}

// withBodies completes an index built without chunk bodies (IndexAhead) with text's, the
// same text decoded again; nil when there is none.
func withBodies(mi *msgIndex, text []byte, borrowed bool) (*msgIndex, []chunkSpan) {
	if mi == nil || mi.textLen != len(text) {
		return nil, nil
	}
	chunks := chunk(text)
	if len(chunks) != len(mi.chunks) {
		return nil, nil
	}
	for i, c := range chunks {
		mi.chunks[i].body = text[c.bodyStart:c.bodyEnd]
	}
	mi.borrowed = borrowed
	return mi, chunks
}

// holdsAllWords reports whether c's body has every word of text (only whitespace lies outside
// it): its normalised hash is then the whole text's, and the text need not be hashed twice.
func holdsAllWords(text []byte, c chunkSpan) bool {
	return len(bytes.TrimSpace(text[:c.bodyStart])) == 0 && len(bytes.TrimSpace(text[c.bodyEnd:])) == 0
}

// IndexCache remembers earlier messages' index entries across requests (see Options.Cache).
// It is safe for concurrent use and bounded: when full, it starts over.
type IndexCache struct {
	mu       sync.Mutex
	m        map[uint64]*msgIndex
	size     int
	maxBytes int
	gen      uint64 // counts the times the cache started over, from 1
}

// NewIndexCache returns a cache holding about maxBytes of message text.
func NewIndexCache(maxBytes int) *IndexCache {
	return &IndexCache{m: map[uint64]*msgIndex{}, maxBytes: maxBytes, gen: 1}
}

var cacheSeed = maphash.MakeSeed()

// index returns the message's index entry, from the cache when there is one. Cached entries
// outlive the request: they own their bytes, or alias a body the cache counts whole
// (Options.Source). Like every entry they carry their SimHash precomputed, so they are never
// written after they are shared.
func (c *IndexCache) index(m *msgjson.Message) *msgIndex {
	if c == nil {
		return buildIndex(m)
	}
	return c.lookupOrBuild(m.Raw, nil, func() *msgIndex { return buildIndex(m) })
}

// adopt is index for a message whose entry was built already (Conversation.rewritten).
func (c *IndexCache) adopt(raw []byte, mi *msgIndex, src *source) *msgIndex {
	if mi != nil && mi.transient {
		mi.ownBodies()
	}
	if c == nil {
		return mi
	}
	return c.lookupOrBuild(raw, src, func() *msgIndex { return mi })
}

// indexRaw is index for a message object not parsed yet: a cached message is not parsed.
// src, when not nil, is the body raw is a slice of (Options.Source).
func (c *IndexCache) indexRaw(raw []byte, src *source) *msgIndex {
	build := func() *msgIndex {
		m, err := msgjson.ParseMessage(raw)
		if err != nil {
			return nil
		}
		return buildIndex(&m)
	}
	if c == nil {
		return build()
	}
	return c.lookupOrBuild(raw, src, build)
}

// source is a request body that cache entries may alias (Options.Source), and the cache
// generation that counted it against the bound (0: none). gen is guarded by the cache's mutex.
type source struct {
	body []byte
	gen  uint64
}

// holds reports whether b lies in the body (a message the caller rewrote does not).
func (s *source) holds(b []byte) bool {
	if s == nil || len(b) == 0 || len(s.body) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(s.body)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return at >= start && at+uintptr(len(b)) <= start+uintptr(len(s.body))
}

func (c *IndexCache) lookupOrBuild(raw []byte, src *source, build func() *msgIndex) *msgIndex {
	key := maphash.Bytes(cacheSeed, raw) ^ uint64(len(raw))
	c.mu.Lock()
	mi, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return mi
	}
	mi = build()
	size := 64
	keep := false // the bodies stay slices of src.body, which the bound counts instead
	if mi != nil {
		own := 0
		for i := range mi.chunks {
			k := &mi.chunks[i]
			own += len(k.body)
			size += len(k.label) + 96
		}
		switch {
		case mi.borrowed && src.holds(raw):
			keep = true
		case mi.borrowed:
			size += mi.ownBodies()
		default:
			size += own
		}
	}
	c.mu.Lock()
	charge := 0
	if keep && src.gen != c.gen {
		charge = len(src.body)
	}
	if c.size+size+charge > c.maxBytes {
		clear(c.m)
		c.size = 0
		c.gen++
		if keep {
			charge = len(src.body)
		}
	}
	if keep {
		src.gen = c.gen
	}
	c.m[key] = mi
	c.size += size + charge
	c.mu.Unlock()
	return mi
}

// segments returns the spans (inside m.Raw) of the JSON strings holding the message's text.
// Array contents are processed from last to first, so they are returned in order.
func segments(m *msgjson.Message) []providers.Span {
	raw := m.ContentRaw()
	off := m.Content.Start
	switch raw[0] {
	case '"':
		return []providers.Span{m.Content}
	case '[':
		var out []providers.Span
		_ = msgjson.EachElement(raw, func(v providers.Span) bool {
			part := raw[v.Start:v.End]
			if len(part) == 0 || part[0] != '{' {
				return true
			}
			if msgjson.StringField(part, "type") != "text" {
				return true
			}
			s := msgjson.Field(part, "text")
			if s.Start >= 0 && part[s.Start] == '"' {
				out = append(out, providers.Span{Start: off + v.Start + s.Start, End: off + v.Start + s.End})
			}
			return true
		})
		return out
	}
	return nil
}

func partsText(raw []byte, out []byte) []byte {
	_ = msgjson.EachElement(raw, func(v providers.Span) bool {
		part := raw[v.Start:v.End]
		if len(part) == 0 || part[0] != '{' {
			return true
		}
		s := msgjson.Field(part, "text")
		if s.Start >= 0 && part[s.Start] == '"' {
			if len(out) > 0 {
				out = append(out, '\n', '\n')
			}
			out, _ = msgjson.DecodeString(part[s.Start:s.End], out)
		}
		return true
	})
	return out
}

// dedupeText rewrites one text of the newest message, whose chunks are chunks. pre, when
// set, is the text's index (indexText), which has every hash dedupe needs.
func dedupeText(dst, text []byte, chunks []chunkSpan, pre *msgIndex, hist *history, o Options, rep *Report) ([]byte, bool) {
	// A text that is one chunk is hashed once, for the whole-text check and for its chunk:
	// firstH, firstN and firstSim hold its hashes once taken (firstN < 0: not yet).
	single := len(chunks) == 1 && holdsAllWords(text, chunks[0])
	var firstH, firstSim uint64
	firstN := -1
	// The whole text repeating an earlier message (an agent re-reading a file).
	if o.Count(msgjson.Unsafe(text)) >= o.MinChunkTokens {
		var h uint64
		if pre != nil {
			h = pre.wholeExact
		} else if single {
			firstH, firstN, firstSim = chunkHashes(text[chunks[0].bodyStart:chunks[0].bodyEnd])
			h = firstH
		} else {
			h, _ = normHash(text)
		}
		if k, ok := hist.findExact(h); ok && !wholeConflicts(hist, k, text) {
			rep.ChunksSeen++
			rep.ExactDups++
			ref := reference("", k)
			rep.TokensSaved += o.Count(msgjson.Unsafe(text)) - o.Count(ref)
			return append(dst, ref...), true
		}
	}
	type edit struct {
		start, end int
		ref        string
	}
	var edits []edit
	local := make([]known, 0, len(chunks))
	localExact := make(map[uint64]int)
	for ci, c := range chunks {
		rep.ChunksSeen++
		b := text[c.bodyStart:c.bodyEnd]
		tok := o.Count(msgjson.Unsafe(b))
		if tok < o.MinChunkTokens {
			continue
		}
		h, n, sim := firstH, firstN, firstSim
		if pre != nil {
			k := &pre.chunks[ci]
			h, n, sim = k.exact, k.words, k.sim
		} else if ci > 0 || n < 0 {
			h, n, sim = chunkHashes(b)
		}
		var match *known
		if k, ok := hist.findExact(h); ok {
			match = &k
		} else if li, ok := localExact[h]; ok {
			match = &local[li]
		}
		if match != nil && hist.conflicts(*match, local, h, sim, n, c.label) {
			rep.Conflicts++
			match = nil
		}
		if match != nil {
			rep.ExactDups++
			ref := reference(c.label, *match)
			rep.TokensSaved += tok - o.Count(ref)
			edits = append(edits, edit{c.bodyStart, c.bodyEnd, ref})
			continue
		}
		me := known{exact: h, sim: sim, words: n, body: b, label: c.label}
		if o.MaxHamming >= 0 && n >= 3 {
			best, bestMsg, bestD := (*known)(nil), 0, o.MaxHamming+1
			consider := func(k *known, msg int) {
				if k.whole || k.words*10 < n*7 || n*10 < k.words*7 || k.words < 3 {
					return
				}
				if d := hamming(me.sim, k.sim); d < bestD {
					best, bestMsg, bestD = k, msg, d
				}
			}
			for i, mi := range hist.idx {
				if mi != nil {
					for j := range mi.chunks {
						consider(&mi.chunks[j], i+1)
					}
				}
			}
			for i := range local {
				consider(&local[i], 0)
			}
			if best != nil {
				earlier := *best
				earlier.msg = bestMsg
				if slices.Equal(salient(b), salient(best.body)) && !hist.conflicts(earlier, local, h, sim, n, c.label) {
					rep.NearDupsRemoved++
					ref := reference(c.label, earlier)
					rep.TokensSaved += tok - o.Count(ref)
					edits = append(edits, edit{c.bodyStart, c.bodyEnd, ref})
					continue
				}
				rep.NearDupsKept++
			}
		}
		me.chunk = len(local)
		local = append(local, me)
		localExact[h] = len(local) - 1
	}
	if len(edits) == 0 {
		return dst, false
	}
	out := slices.Grow(dst, len(text))
	prev := 0
	for _, e := range edits {
		out = append(out, text[prev:e.start]...)
		out = append(out, e.ref...)
		prev = e.end
	}
	return append(out, text[prev:]...), true
}

// isReference reports a chunk body that is a reference the gateway wrote.
func isReference(b []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(b), []byte(refPrefix))
}

// reference is the text that replaces a duplicate chunk body.
func reference(label string, earlier known) string {
	if label == "" {
		label = earlier.label
	}
	// Written in one buffer: one allocation per reference instead of one per piece.
	b := make([]byte, 0, len(refPrefix)+len(label)+64)
	b = append(b, refPrefix...)
	if label != "" {
		b = append(append(append(b, "the document \""...), label...), '"')
	} else {
		b = append(b, "a passage"...)
	}
	if earlier.msg > 0 {
		b = strconv.AppendInt(append(b, " in message "...), int64(earlier.msg), 10)
	} else {
		b = append(b, " earlier in this message"...)
	}
	return msgjson.Unsafe(append(b, " — omitted by gateway]"...)) // b is not written again
}

// chunkSpan is one chunk of a text: its body [bodyStart, bodyEnd) and its display label.
type chunkSpan struct {
	bodyStart, bodyEnd int
	label              string
}

// chunk splits text into chunks: document elements, labelled sections, or paragraphs.
func chunk(text []byte) []chunkSpan {
	if c := docChunks(text); c != nil {
		return c
	}
	return sectionChunks(text)
}

// docChunks returns the bodies of <document …>…</document> and <doc …>…</doc> elements, or
// nil when there are none.
func docChunks(text []byte) []chunkSpan {
	var out []chunkSpan
	for i := 0; i < len(text); {
		j := bytes.Index(text[i:], []byte("<doc"))
		if j < 0 {
			break
		}
		open := i + j
		rest := text[open+4:]
		var name string
		switch {
		case bytes.HasPrefix(rest, []byte("ument")) && len(rest) > 5 && (rest[5] == '>' || isSpace(rest[5])):
			name = "document"
		case len(rest) > 0 && (rest[0] == '>' || isSpace(rest[0])):
			name = "doc"
		default:
			i = open + 4
			continue
		}
		gt := bytes.IndexByte(text[open:], '>')
		if gt < 0 {
			break
		}
		bodyStart := open + gt + 1
		closeTag := "</" + name + ">"
		ce := bytes.Index(text[bodyStart:], []byte(closeTag))
		if ce < 0 {
			break
		}
		bodyEnd := bodyStart + ce
		label := tagLabel(text[open+1 : open+gt])
		// A leading <source>…</source> belongs to the label.
		bs := skipWS(text, bodyStart, bodyEnd)
		if bytes.HasPrefix(text[bs:bodyEnd], []byte("<source>")) {
			if se := bytes.Index(text[bs:bodyEnd], []byte("</source>")); se >= 0 {
				label = clean(text[bs+8 : bs+se])
				bodyStart = bs + se + 9
			}
		}
		s, e := trimSpan(text, bodyStart, bodyEnd)
		out = append(out, chunkSpan{s, e, label})
		i = bodyEnd + len(closeTag)
	}
	return out
}

// tagLabel turns `document index="1" source="x"` into a label safe to quote.
func tagLabel(tag []byte) string {
	if sp := bytes.IndexAny(tag, " \t\n"); sp >= 0 {
		return clean(tag[sp+1:])
	}
	return ""
}

// clean makes a label safe to embed: one line, no quotes or angle brackets, bounded length.
func clean(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 120 {
		b = b[:120]
		for len(b) > 0 && !utf8.Valid(b) {
			b = b[:len(b)-1]
		}
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		switch c {
		case '"':
			out = append(out, '\'')
		case '<', '>':
		case '\n', '\r', '\t':
			out = append(out, ' ')
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// sectionChunks splits on label lines and "---" separators, or on blank lines when there are
// none.
func sectionChunks(text []byte) []chunkSpan {
	type line struct{ start, end int }
	var lines []line
	for i := 0; i < len(text); {
		j := bytes.IndexByte(text[i:], '\n')
		if j < 0 {
			lines = append(lines, line{i, len(text)})
			break
		}
		lines = append(lines, line{i, i + j})
		i += j + 1
	}
	labelled := false
	for _, l := range lines {
		if k, _ := classify(text[l.start:l.end]); k != plain {
			labelled = true
			break
		}
	}
	var out []chunkSpan
	if !labelled {
		return paragraphs(text, 0, len(text), out)
	}
	secStart, secLabel, labelEnd := -1, "", 0
	flush := func(end int) {
		if secStart < 0 {
			return
		}
		s, e := trimSpan(text, labelEnd, end)
		if e > s {
			out = append(out, chunkSpan{s, e, secLabel})
		}
		secStart = -1
	}
	preStart := 0
	for _, l := range lines {
		k, n := classify(text[l.start:l.end])
		switch k {
		case separator:
			if secStart < 0 {
				out = paragraphs(text, preStart, l.start, out)
			}
			flush(l.start)
			preStart = min(l.end+1, len(text))
		case label:
			if secStart < 0 {
				out = paragraphs(text, preStart, l.start, out)
			}
			flush(l.start)
			secStart = l.start
			if n > 0 { // inline label: "[3] body…"
				secLabel = clean(text[l.start : l.start+n])
				labelEnd = l.start + n
			} else {
				secLabel = clean(text[l.start:l.end])
				labelEnd = min(l.end+1, len(text))
			}
		}
	}
	if secStart < 0 {
		out = paragraphs(text, preStart, len(text), out)
	}
	flush(len(text))
	return out
}

const (
	plain = iota
	label
	separator
)

// classify says whether a line is a label line (and, for inline labels such as "[3] …", the
// label's length) or a separator.
func classify(l []byte) (int, int) {
	l = bytes.TrimRight(l, " \t\r")
	if len(l) == 0 {
		return plain, 0
	}
	if len(l) >= 3 && allByte(l, '-') {
		return separator, 0
	}
	switch {
	case l[0] == '#':
		n := 0
		for n < len(l) && l[n] == '#' {
			n++
		}
		if n <= 6 && n < len(l) && l[n] == ' ' {
			return label, 0
		}
	case bytes.HasPrefix(l, []byte("Source:")) || bytes.HasPrefix(l, []byte("source:")):
		return label, 0
	case l[0] == '[':
		n := 1
		for n < len(l) && l[n] >= '0' && l[n] <= '9' {
			n++
		}
		if n > 1 && n < len(l) && l[n] == ']' {
			if n+1 < len(l) && len(bytes.TrimSpace(l[n+1:])) > 0 {
				return label, n + 1
			}
			return label, 0
		}
	case l[0] >= '0' && l[0] <= '9':
		n := 0
		for n < len(l) && l[n] >= '0' && l[n] <= '9' {
			n++
		}
		if n < 4 && n+1 < len(l) && (l[n] == '.' || l[n] == ')') && l[n+1] == ' ' {
			return label, n + 1
		}
	}
	for _, w := range [...]string{"Document ", "Doc ", "Chunk ", "Passage ", "Result ", "Snippet "} {
		if bytes.HasPrefix(l, []byte(w)) {
			r := bytes.TrimPrefix(l[len(w):], []byte("#"))
			if len(r) > 0 && r[0] >= '0' && r[0] <= '9' {
				return label, 0
			}
		}
	}
	return plain, 0
}

func allByte(b []byte, c byte) bool {
	for _, x := range b {
		if x != c {
			return false
		}
	}
	return true
}

// paragraphs appends the blank-line separated paragraphs of text[start:end].
func paragraphs(text []byte, start, end int, out []chunkSpan) []chunkSpan {
	ps := -1
	i := start
	for i < end {
		// Find the end of the current line.
		j := bytes.IndexByte(text[i:end], '\n')
		le := end
		if j >= 0 {
			le = i + j
		}
		blank := len(bytes.TrimSpace(text[i:le])) == 0
		if blank {
			if ps >= 0 {
				s, e := trimSpan(text, ps, i)
				if e > s {
					out = append(out, chunkSpan{s, e, ""})
				}
				ps = -1
			}
		} else if ps < 0 {
			ps = i
		}
		if j < 0 {
			break
		}
		i = le + 1
	}
	if ps >= 0 {
		s, e := trimSpan(text, ps, end)
		if e > s {
			out = append(out, chunkSpan{s, e, ""})
		}
	}
	return out
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i, end int) int {
	for i < end && isSpace(b[i]) {
		i++
	}
	return i
}

func trimSpan(b []byte, s, e int) (int, int) {
	s = skipWS(b, s, e)
	for e > s && isSpace(b[e-1]) {
		e--
	}
	return s, e
}

// Hashing: words are maximal runs of non-space characters, case folded.

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// foldASCII maps an ASCII byte to what a word hash takes in: 0 for a space (the word ends),
// the lower case of a letter, the byte itself otherwise (NUL as 0x80, which no other ASCII
// byte gives).
var foldASCII = func() (t [utf8.RuneSelf]byte) {
	for c := range utf8.RuneSelf {
		switch {
		case c == 0:
			t[c] = 0x80
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			t[c] = 0
		case c >= 'A' && c <= 'Z':
			t[c] = byte(c + 'a' - 'A')
		default:
			t[c] = byte(c)
		}
	}
	return t
}()

// Words are hashed eight bytes at a time: bytes are packed into a word-sized block and
// only a full block goes through a multiply, instead of one per byte.

const wordSeed = 0x9e3779b97f4a7c15

// pushByte adds one folded byte to a word's running hash (h, block acc holding k bytes).
func pushByte(h, acc uint64, k int, f byte) (uint64, uint64, int) {
	acc = acc<<8 | uint64(f)
	if k++; k == 8 {
		h = (h ^ acc) * 0xff51afd7ed558ccd
		h ^= h >> 32
		acc, k = 0, 0
	}
	return h, acc, k
}

// wordBlock is how many word hashes a wordScanner hands over at once.
const wordBlock = 128

// wordScanner yields the folded hashes of a text's words a block at a time: the loops that
// consume them (normHash, chunkHashes) then run without a call per word and keep their state
// in registers, which a callback per word prevented (it was a third of the hashing time).
type wordScanner struct {
	b []byte
	i int
}

// next fills buf with the next words' hashes and returns how many; 0 at the end. spans,
// when not nil, receives each word's start and end offsets in the text.
func (s *wordScanner) next(buf []uint64, spans [][2]int32) int {
	b, i, n := s.b, s.i, 0
	for n < len(buf) {
		// Skip to the word's first byte.
		for i < len(b) {
			c := b[i]
			if c < utf8.RuneSelf {
				if foldASCII[c] != 0 {
					break
				}
				i++
				continue
			}
			r, size := utf8.DecodeRune(b[i:])
			if !unicode.IsSpace(r) {
				break
			}
			i += size
		}
		if i >= len(b) {
			break
		}
		start := i
		h, acc, k := uint64(wordSeed), uint64(0), 0
		for i < len(b) {
			c := b[i]
			if c < utf8.RuneSelf {
				f := foldASCII[c]
				if f == 0 {
					break
				}
				i++
				h, acc, k = pushByte(h, acc, k, f)
				continue
			}
			r, size := utf8.DecodeRune(b[i:])
			if unicode.IsSpace(r) {
				break
			}
			i += size
			// A rune goes in as three bytes with the high bit set, which no ASCII byte has.
			r = unicode.ToLower(r)
			h, acc, k = pushByte(h, acc, k, byte(0x80|r>>14&0x7f))
			h, acc, k = pushByte(h, acc, k, byte(0x80|r>>7&0x7f))
			h, acc, k = pushByte(h, acc, k, byte(0x80|r&0x7f))
		}
		buf[n] = mix(h ^ acc ^ uint64(k)<<56)
		if spans != nil {
			spans[n] = [2]int32{int32(start), int32(i)}
		}
		n++
	}
	s.i = i
	return n
}

// hashWord is the hash of the first word of b[i:].
func hashWord(b []byte, i int) uint64 {
	var h [1]uint64
	s := wordScanner{b: b, i: i}
	s.next(h[:], nil)
	return h[0]
}

// normHash hashes the whitespace-collapsed, case-folded text; n is its word count.
func normHash(b []byte) (uint64, int) { return textHashes(b, nil, nil) }

const normSeed = 0x9e3779b97f4a7c15

// chain folds the next word's hash into a text's running hash. The word hashes are already
// mixed, so one multiply keeps the order; the text's hash is mixed once, at the end, with
// the word count.
func chain(acc, h uint64) uint64 {
	acc = (acc ^ h) * 0xff51afd7ed558ccd
	return acc ^ acc>>29
}

// chunkAcc computes chunkHashes word by word: normHash and a SimHash (Charikar's, 64 bits,
// over word 3-shingles). SimHash bit counts are kept in byte lanes (8 features' bits per
// uint64 add) and flushed every 255 features.
type chunkAcc struct {
	norm           uint64
	words          int
	w0, w1         uint64
	lanes          [8]uint64
	counts         [64]int32
	pending, total int
}

func newChunkAcc() chunkAcc { return chunkAcc{norm: normSeed} }

// addAll takes the chunk's next words. It works on locals (the lanes written out) and
// writes them back at the end: a call per word, or the state in memory, cost a tenth of
// the hashing.
func (a *chunkAcc) addAll(hs []uint64) {
	const ones = 0x0101010101010101
	norm, words, w0, w1, pending, total := a.norm, a.words, a.w0, a.w1, a.pending, a.total
	l0, l1, l2, l3, l4, l5, l6, l7 := a.lanes[0], a.lanes[1], a.lanes[2], a.lanes[3], a.lanes[4], a.lanes[5], a.lanes[6], a.lanes[7]
	for _, h := range hs {
		norm = chain(norm, h)
		words++
		if words >= 3 {
			f := mix(w0*31 ^ w1*17 ^ h)
			l0 += f & ones
			l1 += f >> 1 & ones
			l2 += f >> 2 & ones
			l3 += f >> 3 & ones
			l4 += f >> 4 & ones
			l5 += f >> 5 & ones
			l6 += f >> 6 & ones
			l7 += f >> 7 & ones
			total++
			if pending++; pending == 255 {
				a.lanes = [8]uint64{l0, l1, l2, l3, l4, l5, l6, l7}
				a.flush()
				l0, l1, l2, l3, l4, l5, l6, l7, pending = 0, 0, 0, 0, 0, 0, 0, 0, 0
			}
		}
		w0, w1 = w1, h
	}
	a.norm, a.words, a.w0, a.w1, a.pending, a.total = norm, words, w0, w1, pending, total
	a.lanes = [8]uint64{l0, l1, l2, l3, l4, l5, l6, l7}
}

func (a *chunkAcc) feature(f uint64) {
	const ones = 0x0101010101010101
	l := &a.lanes
	l[0] += f & ones
	l[1] += f >> 1 & ones
	l[2] += f >> 2 & ones
	l[3] += f >> 3 & ones
	l[4] += f >> 4 & ones
	l[5] += f >> 5 & ones
	l[6] += f >> 6 & ones
	l[7] += f >> 7 & ones
	a.total++
	if a.pending++; a.pending == 255 {
		a.flush()
	}
}

func (a *chunkAcc) flush() {
	for j, v := range a.lanes {
		for k := 0; k < 8; k++ {
			a.counts[k*8+j] += int32(v >> (8 * k) & 0xFF)
		}
	}
	a.lanes, a.pending = [8]uint64{}, 0
}

// sum returns the chunk's hashes.
func (a *chunkAcc) sum() (norm uint64, words int, sim uint64) {
	if a.words < 3 && a.words > 0 {
		a.feature(mix(a.w0 ^ a.w1))
	}
	a.flush()
	for i, c := range a.counts {
		if 2*int(c) > a.total {
			sim |= 1 << i
		}
	}
	return mix(a.norm ^ uint64(a.words)), a.words, sim
}

// chunkHashes is normHash and a SimHash in one pass over the words (chunkAcc): every chunk
// is hashed both ways, and the word scan is most of the cost.
func chunkHashes(b []byte) (norm uint64, words int, sim uint64) {
	a := newChunkAcc()
	s := wordScanner{b: b}
	var buf [wordBlock]uint64
	for {
		k := s.next(buf[:], nil)
		if k == 0 {
			break
		}
		a.addAll(buf[:k])
	}
	return a.sum()
}

// textHashes is normHash of text and chunkHashes of each of its chunks (chunk's spans, in
// order), written to out, in one pass over the text's words: a word inside a chunk is the
// chunk's word too; one that a chunk's edge cuts is hashed again, as the part inside. (Chunk
// edges are next to ASCII bytes, so the text's words and a chunk's agree on every rune.)
func textHashes(text []byte, chunks []chunkSpan, out []known) (whole uint64, words int) {
	whole = normSeed
	j := 0
	a := newChunkAcc()
	var run [wordBlock + 1]uint64 // chunk j's words from this block (and a cut word's part)
	m := 0
	finish := func() {
		a.addAll(run[:m])
		m = 0
		out[j].exact, out[j].words, out[j].sim = a.sum()
		a = newChunkAcc()
		j++
	}
	s := wordScanner{b: text}
	var buf [wordBlock]uint64
	var spans [wordBlock][2]int32
	for {
		k := s.next(buf[:], spans[:])
		if k == 0 {
			break
		}
		for w, h := range buf[:k] {
			whole = chain(whole, h)
			words++
			ws, we := int(spans[w][0]), int(spans[w][1])
			for j < len(chunks) {
				c := chunks[j]
				if c.bodyEnd <= ws || c.bodyStart >= c.bodyEnd {
					finish() // the chunk is behind the word, or empty
					continue
				}
				if we <= c.bodyStart {
					break // the word is before the chunk
				}
				if ws >= c.bodyStart && we <= c.bodyEnd {
					run[m] = h
				} else {
					run[m] = hashWord(text[:min(we, c.bodyEnd)], max(ws, c.bodyStart))
				}
				m++
				if we < c.bodyEnd {
					break // the chunk goes on after the word
				}
				finish()
			}
		}
		a.addAll(run[:m])
		m = 0
	}
	for j < len(chunks) {
		finish()
	}
	return mix(whole ^ uint64(words)), words
}

func hamming(a, b uint64) int { return bits.OnesCount64(a ^ b) }

// salient returns the sorted tokens that carry facts: anything with a digit (numbers, dates,
// times, percentages, money, versions, ids), currency amounts, capitalised words that do not
// start a sentence (names, named values) and value words such as negations and booleans.
func salient(b []byte) []string {
	var out []string
	sentenceStart := true
	for _, w := range bytes.Fields(b) {
		core := bytes.Trim(w, ".,;:!?()[]{}\"'`*")
		if len(core) == 0 {
			continue
		}
		ends := bytes.ContainsAny(w[len(w)-1:], ".!?:")
		switch {
		case bytes.ContainsAny(core, "0123456789$€£¥%"):
			out = append(out, string(core))
		case !sentenceStart && startsUpper(core):
			out = append(out, string(core))
		default:
			switch string(bytes.ToLower(core)) {
			case "not", "no", "never", "none", "yes", "true", "false", "enabled", "disabled",
				"on", "off", "always", "cannot", "can't", "won't", "isn't", "doesn't", "don't":
				out = append(out, string(bytes.ToLower(core)))
			}
		}
		sentenceStart = ends
	}
	slices.Sort(out)
	return out
}

func startsUpper(b []byte) bool {
	r, _ := utf8.DecodeRune(b)
	return unicode.IsUpper(r)
}

// wholeConflicts reports whether a later message than the whole-message copy k holds another
// version of any chunk of text (see history.conflicts).
func wholeConflicts(hist *history, k known, text []byte) bool {
	at := known{msg: k.msg, chunk: 1 << 30} // the copy's own chunks are the text itself
	for _, c := range chunk(text) {
		h, n, sim := chunkHashes(text[c.bodyStart:c.bodyEnd])
		if hist.conflicts(at, nil, h, sim, n, c.label) {
			return true
		}
	}
	return false
}
