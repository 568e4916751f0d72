// Package compress shortens OpenAI chat-completions conversations deterministically and in a
// way that keeps provider prompt caches warm.
//
// Three techniques, applied in this order:
//
//  1. Head+tail truncation of any tool output above a hard limit (Options.TruncateAboveTokens).
//     It depends only on the tool output itself, so a truncated message is byte-identical on
//     every later turn and never moves the cacheable prefix.
//  2. Observation masking: old tool outputs are replaced by a placeholder that keeps the tool
//     name, the original size in tokens and a content hash. Masking happens in frozen epochs:
//     the masked region is "tool outputs before message E", where E is the protected window's
//     start rounded down to a multiple of Options.EpochMessages. E is a pure function of the
//     conversation's shape, so consecutive turns produce byte-identical masked prefixes until
//     E jumps, and the provider cache is rewritten once per epoch instead of every turn. Masking
//     runs only when Economics.Worth says the saving over the expected remaining turns beats
//     the cache rewrite cost, or when the context window would otherwise overflow.
//  3. Trimming of the oldest whole turns (a user message and everything up to the next user
//     message) after the leading system/developer messages, only when the input estimate plus
//     the output cap exceeds Options.ContextWindow. A system marker message says how many
//     messages were omitted; a later pass reads it back so epochs stay aligned.
//
// What it never does: touch system or developer messages, tool definitions or assistant
// messages (tool calls and reasoning stay whole); remove a single tool message (trimming drops
// whole turns, so a tool result never loses its call). Every byte outside the rewritten
// messages' content values is kept. Compress is deterministic and idempotent.
package compress

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/msgjson"
)

// Options tunes Compress. Zero values select the documented defaults.
type Options struct {
	// Count estimates the tokens of a text. Default: ceil(bytes/4). It may be handed a string
	// that aliases the request body: it must not retain it.
	Count func(string) int

	// KeepTurns is how many of the most recent user turns keep their tool outputs intact.
	// Default 2.
	KeepTurns int
	// KeepToolOutputs, when positive, additionally ends the protected window at the
	// KeepToolOutputs-th most recent tool output, so a long agent loop under a single user
	// message still gets its old observations masked. Default 0 (off: user turns only).
	KeepToolOutputs int
	// EpochMessages is the step, in messages, by which the masked region advances. Default 16.
	EpochMessages int
	// MaskMinTokens is the smallest tool output worth masking. Default 256.
	MaskMinTokens int
	// DisableMask turns observation masking off; ForceMask skips the Economics check.
	DisableMask, ForceMask bool

	// TruncateAboveTokens is the hard limit on one tool output; above it the output keeps
	// TruncateHeadTokens of its head and TruncateTailTokens of its tail. Defaults 8192, 2048
	// and 1024. DisableTruncate turns it off.
	TruncateAboveTokens int
	TruncateHeadTokens  int
	TruncateTailTokens  int
	DisableTruncate     bool

	// ContextWindow is the model's context window in tokens; 0 disables overflow handling.
	ContextWindow int
	// OutputTokens is the output reserve counted against the window. Default: the body's
	// max_completion_tokens or max_tokens, else 0.
	OutputTokens int
	// DisableTrim turns oldest-turn trimming off (masking is still forced on overflow).
	DisableTrim bool

	// Economics decides whether masking pays for the cache rewrite it causes.
	Economics Economics
}

// Economics holds the prices and expectations behind the masking decision. Only ratios
// matter; zero values select the defaults.
type Economics struct {
	// InputPrice is the model's uncached input price (any unit, e.g. USD per 1M tokens).
	// Default 1.
	InputPrice float64
	// CacheReadMultiplier is the price of a cached input token relative to InputPrice: what a
	// kept old token costs on each later turn. Default 0.1 (Anthropic, GPT-5.x, Gemini 2.5+);
	// pass 1 for a provider without prompt caching.
	CacheReadMultiplier float64
	// CacheWriteMultiplier is the price of writing a token to the cache relative to
	// InputPrice: what each token after the first rewritten message costs once when the
	// prefix changes. Default 1.25 (Anthropic 5m, OpenAI GPT-5.6+); 1 for providers that bill
	// writes as plain input.
	CacheWriteMultiplier float64
	// ExpectedRemainingTurns is how many more requests the conversation is expected to send
	// with this prefix. Default 10: agent loops run tens of steps and a masked epoch is reused
	// for up to EpochMessages messages, so 10 is a conservative middle; chat UIs with short
	// sessions should pass less.
	ExpectedRemainingTurns float64
}

func (e Economics) withDefaults() Economics {
	if e.InputPrice <= 0 {
		e.InputPrice = 1
	}
	if e.CacheReadMultiplier <= 0 {
		e.CacheReadMultiplier = 0.1
	}
	if e.CacheWriteMultiplier <= 0 {
		e.CacheWriteMultiplier = 1.25
	}
	if e.ExpectedRemainingTurns <= 0 {
		e.ExpectedRemainingTurns = 10
	}
	return e
}

// Worth reports whether removing savedTokens from the prompt pays for rewriting the cached
// prefix from the first changed message on (rewrittenTokens):
//
//	saved × remaining turns × input price × read multiplier > rewritten × input price × write multiplier
func (e Economics) Worth(savedTokens, rewrittenTokens int) bool {
	e = e.withDefaults()
	benefit := float64(savedTokens) * e.ExpectedRemainingTurns * e.InputPrice * e.CacheReadMultiplier
	cost := float64(rewrittenTokens) * e.InputPrice * e.CacheWriteMultiplier
	return savedTokens > 0 && benefit > cost
}

// Report says what Compress did.
type Report struct {
	TokensBefore, TokensAfter int
	// Masked, Truncated and Trimmed count messages.
	Masked, Truncated, Trimmed int
	// Epoch is E: tool outputs before message E (counting messages trimmed earlier) are in
	// the maskable region.
	Epoch int
	// MaskDeclined is set when there were maskable outputs but Economics said no.
	MaskDeclined bool
	// Overflow is set when the request still exceeds ContextWindow after everything.
	Overflow bool
}

// MaskPrefix starts every masking placeholder.
const MaskPrefix = "[tool output masked by gateway: "

const (
	trimPrefix = "[gateway: "
	trimSuffix = " earlier messages were omitted to fit the context window]"
)

// ErrNoMessages is returned when the body has no messages array.
var ErrNoMessages = errors.New("compress: body has no messages array")

func (o Options) withDefaults() Options {
	if o.Count == nil {
		o.Count = func(s string) int { return (len(s) + 3) / 4 }
	}
	if o.KeepTurns <= 0 {
		o.KeepTurns = 2
	}
	if o.EpochMessages <= 0 {
		o.EpochMessages = 16
	}
	if o.MaskMinTokens <= 0 {
		o.MaskMinTokens = 256
	}
	if o.TruncateAboveTokens <= 0 {
		o.TruncateAboveTokens = 8192
	}
	if o.TruncateHeadTokens <= 0 {
		o.TruncateHeadTokens = 2048
	}
	if o.TruncateTailTokens <= 0 {
		o.TruncateTailTokens = 1024
	}
	// Head, tail and marker must fit under the limit, or a second pass would truncate again.
	if room := o.TruncateAboveTokens - 64; o.TruncateHeadTokens+o.TruncateTailTokens > room {
		total := o.TruncateHeadTokens + o.TruncateTailTokens
		o.TruncateHeadTokens = max(1, o.TruncateHeadTokens*room/total)
		o.TruncateTailTokens = max(1, o.TruncateTailTokens*room/total)
	}
	o.Economics = o.Economics.withDefaults()
	return o
}

type toolOut struct {
	tokens    int    // tokens of the original content
	curTokens int    // tokens after truncation
	ph        string // masking placeholder, set for a masking candidate
	truncated bool
	masked    bool
}

// scratch holds the per-call buffers, pooled because on a large body they are most of what
// Compress allocates.
type scratch struct {
	msgs   []message
	tokens []int
	tools  []toolOut
	cands  []int
	text   []byte // the decoded text of the tool output at hand
	trunc  []byte // its truncated version
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// maxPooledText bounds the text buffers kept for reuse, so one huge tool output does not pin
// its size in the pool.
const maxPooledText = 1 << 20

func (sc *scratch) release() {
	clear(sc.msgs[:cap(sc.msgs)]) // they point into the request body
	if cap(sc.text) > maxPooledText {
		sc.text = nil
	}
	if cap(sc.trunc) > maxPooledText {
		sc.trunc = nil
	}
	scratchPool.Put(sc)
}

// zeroed returns s resized to n zero values, reusing its array when it is large enough.
func zeroed[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// reserveKeys are the body fields that give the default output reserve, by precedence.
var reserveKeys = [...]string{"max_completion_tokens", "max_tokens"}

// Compress applies truncation, epoch masking and overflow trimming to a chat-completions body.
// It returns body itself when nothing changes.
func Compress(body []byte, opts Options) ([]byte, Report, error) {
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	var reserveAt [len(reserveKeys)]providers.Span
	arr, msgs, err := msgjson.ParseAppend(sc.msgs, body, reserveKeys[:], reserveAt[:])
	if err != nil {
		return body, Report{}, ErrNoMessages
	}
	sc.msgs = msgs
	c, rep := compress(sc, body, arr, msgs, reserveAt, opts)
	if len(c.repl) == 0 && c.delFrom < 0 {
		return body, rep, nil
	}
	return splice(body, arr, msgs, c.repl, c.delFrom, c.delTo, c.marker), rep, nil
}

// CompressView is Compress on the body that v's body becomes with pre applied (the changes
// of an earlier stage), without writing that body: it returns pre with its own changes
// added, for the caller to write in one copy (conv.View.Rewrite). pre may replace messages
// but not remove any.
func CompressView(v *conv.View, pre conv.Change, opts Options) (conv.Change, Report, error) {
	if pre.DelFrom >= 0 {
		return pre, Report{}, errors.New("compress: CompressView after a removal")
	}
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	msgs := append(sc.msgs[:0], v.Msgs...)
	sc.msgs = msgs
	for i, r := range pre.Repl {
		m, err := msgjson.ParseMessage(r)
		if err != nil {
			return pre, Report{}, ErrNoMessages
		}
		m.Pos = msgs[i].Pos // not used: the caller writes the body
		msgs[i] = m
	}
	c, rep := compress(sc, v.Body, v.Arr, msgs, v.Reserve, opts)
	if len(c.repl) == 0 && c.delFrom < 0 {
		return pre, rep, nil
	}
	out := conv.Change{Repl: c.repl, DelFrom: c.delFrom, DelTo: c.delTo, Marker: c.marker, Compact: pre.Compact}
	for i, r := range pre.Repl {
		if _, ok := out.Repl[i]; !ok {
			out.Repl[i] = r
		}
	}
	return out, rep, nil
}

// change is what compress decided: messages replaced, and [delFrom, delTo) removed with
// marker (a message, or nil) in their place.
type change struct {
	repl           map[int][]byte
	delFrom, delTo int
	marker         []byte
}

// compress does Compress's work on the parsed messages of body (msgs may hold messages
// replaced by an earlier stage: their Raw is not in body). Only the bytes outside the
// messages array and the reserve fields are read from body.
func compress(sc *scratch, body []byte, arr providers.Span, msgs []message, reserveAt [len(reserveKeys)]providers.Span, opts Options) (change, Report) {
	o := opts.withDefaults()
	// With the default Count, tokens only grow with length and a JSON value is never shorter
	// than the text it holds, so a tool output's raw size bounds its tokens: the text is
	// decoded only when that bound reaches the truncation or masking threshold. A custom Count
	// gives no such bound.
	lenCount := opts.Count == nil
	var rep Report
	reserve := outputReserve(body, reserveAt, o)
	count := func(b []byte) int { return o.Count(msgjson.Unsafe(b)) }
	outside := count(body[:arr.Start]) + count(body[arr.End:])

	// Leading system/developer block, and a marker left by an earlier trim.
	lead := 0
	for lead < len(msgs) && (msgs[lead].Role == "system" || msgs[lead].Role == "developer") {
		lead++
	}
	markerIdx, dropped := -1, 0
	for i := 0; i < lead; i++ {
		if n, ok := parseTrimMarker(&msgs[i]); ok {
			markerIdx, dropped = i, n
		}
	}
	eff := func(i int) int {
		if markerIdx >= 0 && i > markerIdx {
			return i + dropped - 1
		}
		return i
	}

	msgTokens := zeroed(sc.tokens, len(msgs))
	sc.tokens = msgTokens
	total := outside
	for i := range msgs {
		msgTokens[i] = count(msgs[i].Raw)
		total += msgTokens[i]
	}
	rep.TokensBefore = total

	repl := make(map[int][]byte)
	setContent := func(i int, s string) {
		m := &msgs[i]
		// providers.Replace(m.Raw, m.Content, AppendString(nil, s)) in one allocation.
		nb := make([]byte, 0, len(m.Raw)-(m.Content.End-m.Content.Start)+len(s)+16)
		nb = append(nb, m.Raw[:m.Content.Start]...)
		nb = msgjson.AppendString(nb, s)
		nb = append(nb, m.Raw[m.Content.End:]...)
		total += count(nb) - msgTokens[i]
		msgTokens[i] = count(nb)
		repl[i] = nb
	}

	// The masked region ends at the epoch, which depends only on the roles.
	protect := protectedFrom(msgs, eff, o)
	epoch := protect / o.EpochMessages * o.EpochMessages
	rep.Epoch = epoch

	// 1. Head+tail truncation of oversized tool outputs, wherever they are; and the masking
	// candidates: tool outputs before the epoch, big enough and not masked already.
	tools := zeroed(sc.tools, len(msgs))
	sc.tools = tools
	cands := sc.cands[:0]
	var names map[string]string
	for i := range msgs {
		m := &msgs[i]
		if m.Role != "tool" || m.Content.Start < 0 {
			continue
		}
		raw := m.ContentRaw()
		mayTruncate := !o.DisableTruncate && raw[0] == '"'
		mayMask := !o.DisableMask && eff(i) < epoch
		if lenCount {
			bound := count(raw)
			mayTruncate = mayTruncate && bound > o.TruncateAboveTokens
			// Truncation can make a small output bigger (the marker), so the bound holds for
			// masking only when there is no truncation.
			mayMask = mayMask && (mayTruncate || bound >= o.MaskMinTokens)
		}
		if !mayTruncate && !mayMask {
			continue
		}
		text, ok := contentText(raw, &sc.text)
		if !ok {
			continue
		}
		t := &tools[i]
		t.tokens = count(text)
		t.curTokens = t.tokens
		if mayTruncate && t.tokens > o.TruncateAboveTokens {
			sc.trunc = truncate(sc.trunc, text, t.tokens, o)
			t.curTokens = count(sc.trunc)
			t.truncated = true
			setContent(i, msgjson.Unsafe(sc.trunc))
			rep.Truncated++
		}
		if mayMask && t.curTokens >= o.MaskMinTokens && !strings.HasPrefix(msgjson.Unsafe(text), MaskPrefix) {
			if names == nil {
				names = toolNames(msgs)
			}
			t.ph = placeholder(names[msgjson.StringView(m.Value(m.ToolCallID))], text, t.tokens)
			cands = append(cands, i)
		}
	}
	sc.cands = cands

	// 2. Epoch masking.
	if len(cands) > 0 {
		saved := 0
		for _, i := range cands {
			saved += tools[i].curTokens - o.Count(tools[i].ph)
		}
		// The rewrite cost is measured up to the epoch boundary, not the end of the request:
		// it depends only on the frozen region, so every turn of the epoch decides alike.
		rewritten := 0
		for i := cands[0]; i < len(msgs) && eff(i) < epoch; i++ {
			if t := &tools[i]; t.ph != "" {
				rewritten += msgTokens[i] - t.curTokens + o.Count(t.ph)
			} else {
				rewritten += msgTokens[i]
			}
		}
		doMask := o.ForceMask || o.Economics.Worth(saved, rewritten) ||
			(o.ContextWindow > 0 && total+reserve > o.ContextWindow)
		if doMask {
			for _, i := range cands {
				setContent(i, tools[i].ph)
				tools[i].masked = true
				rep.Masked++
			}
		} else {
			rep.MaskDeclined = true
		}
	}

	// 3. Trim the oldest whole turns on overflow.
	delFrom, delTo := -1, -1
	var newMarker []byte
	if o.ContextWindow > 0 && total+reserve > o.ContextWindow && !o.DisableTrim {
		// Group starts after the leading block: each user message opens a group.
		var starts []int
		for i := lead; i < len(msgs); i++ {
			if i == lead || msgs[i].Role == "user" {
				starts = append(starts, i)
			}
		}
		markerCost := 0
		if markerIdx < 0 {
			markerCost = 24
		}
		g := 0
		removed := 0
		for g+1 < len(starts) && total-removed+markerCost+reserve > o.ContextWindow {
			for i := starts[g]; i < starts[g+1]; i++ {
				removed += msgTokens[i]
			}
			g++
		}
		if g > 0 {
			delFrom, delTo = starts[0], starts[g]
			n := delTo - delFrom
			rep.Trimmed = n
			for i := delFrom; i < delTo; i++ {
				delete(repl, i)
				if tools[i].masked {
					rep.Masked--
				}
				if tools[i].truncated {
					rep.Truncated--
				}
			}
			total -= removed
			text := trimPrefix + strconv.Itoa(dropped+n) + trimSuffix
			if markerIdx >= 0 {
				setContent(markerIdx, text)
			} else {
				newMarker = append([]byte(`{"role":"system","content":`), msgjson.AppendString(nil, text)...)
				newMarker = append(newMarker, '}')
				total += count(newMarker)
			}
		}
	}
	rep.TokensAfter = total
	rep.Overflow = o.ContextWindow > 0 && total+reserve > o.ContextWindow

	return change{repl: repl, delFrom: delFrom, delTo: delTo, marker: newMarker}, rep
}

// protectedFrom returns the effective index where the protected recent window starts.
func protectedFrom(msgs []message, eff func(int) int, o Options) int {
	p := 0
	seen := 0
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			seen++
			if seen == o.KeepTurns {
				p = eff(i)
				break
			}
		}
	}
	if o.KeepToolOutputs > 0 {
		seen = 0
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].Role == "tool" {
				seen++
				if seen == o.KeepToolOutputs {
					p = max(p, eff(i))
					break
				}
			}
		}
	}
	return p
}

// message is the scanned view of one message.
type message = msgjson.Message

func outputReserve(body []byte, at [len(reserveKeys)]providers.Span, o Options) int {
	if o.OutputTokens > 0 {
		return o.OutputTokens
	}
	for _, s := range at {
		if s.Start >= 0 {
			if n, err := strconv.Atoi(string(body[s.Start:s.End])); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// contentText returns the text of a content value: a string, or the concatenated text parts
// of an array. The text aliases raw when raw is a string without escapes, and is decoded into
// *buf otherwise.
func contentText(raw []byte, buf *[]byte) (text []byte, ok bool) {
	if len(raw) == 0 {
		return nil, false
	}
	switch raw[0] {
	case '"':
		if bytes.IndexByte(raw, '\\') < 0 {
			return raw[1 : len(raw)-1], true
		}
		b, ok := msgjson.DecodeString(raw, (*buf)[:0])
		*buf = b
		return b, ok
	case '[':
		out := (*buf)[:0]
		err := msgjson.EachElement(raw, func(v providers.Span) bool {
			part := raw[v.Start:v.End]
			if len(part) == 0 || part[0] != '{' {
				return true
			}
			s := msgjson.Field(part, "text")
			if s.Start >= 0 && part[s.Start] == '"' {
				if len(out) > 0 {
					out = append(out, '\n')
				}
				out, _ = msgjson.DecodeString(part[s.Start:s.End], out)
			}
			return true
		})
		*buf = out
		return out, err == nil
	}
	return nil, false
}

// toolNames maps tool_call ids to function names from the assistant messages. Keys and
// values may alias the messages.
func toolNames(msgs []message) map[string]string {
	names := make(map[string]string)
	for i := range msgs {
		m := &msgs[i]
		if m.ToolCalls.Start < 0 || m.Raw[m.ToolCalls.Start] != '[' {
			continue
		}
		calls := m.Raw[m.ToolCalls.Start:m.ToolCalls.End]
		_ = msgjson.EachElement(calls, func(v providers.Span) bool {
			c := calls[v.Start:v.End]
			if len(c) == 0 || c[0] != '{' {
				return true
			}
			id := stringField(c, "id")
			if fs := msgjson.Field(c, "function"); fs.Start >= 0 && c[fs.Start] == '{' {
				names[id] = stringField(c[fs.Start:fs.End], "name")
			}
			return true
		})
	}
	return names
}

// stringField is msgjson.StringField without the copy: the result may alias obj.
func stringField(obj []byte, key string) string {
	s := msgjson.Field(obj, key)
	if s.Start < 0 {
		return ""
	}
	return msgjson.StringView(obj[s.Start:s.End])
}

func placeholder(name string, text []byte, tokens int) string {
	if name == "" {
		name = "tool"
	}
	sum := sha256.Sum256(text)
	// Number and hash are formatted on the stack: the concatenation is the one allocation.
	var num [20]byte
	var hash [8]byte
	hex.Encode(hash[:], sum[:4])
	return MaskPrefix + name + ", " + string(strconv.AppendInt(num[:0], int64(tokens), 10)) + " tokens, sha256:" + string(hash[:]) + "]"
}

func parseTrimMarker(m *message) (int, bool) {
	raw := m.ContentRaw()
	if len(raw) < 2 || raw[0] != '"' {
		return 0, false
	}
	s := msgjson.Unsafe(raw[1 : len(raw)-1])
	if !strings.HasPrefix(s, trimPrefix) || !strings.HasSuffix(s, trimSuffix) {
		return 0, false
	}
	n, err := strconv.Atoi(s[len(trimPrefix) : len(s)-len(trimSuffix)])
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// truncate keeps the head and tail of text, cutting at line boundaries when one is near. It
// builds the result in dst's array.
func truncate(dst, text []byte, tokens int, o Options) []byte {
	head, tail := o.TruncateHeadTokens, o.TruncateTailTokens
	for {
		perTok := float64(len(text)) / float64(max(tokens, 1))
		hb := min(int(float64(head)*perTok), len(text))
		tb := min(int(float64(tail)*perTok), len(text)-hb)
		h := cutBack(text, hb)
		t := cutForward(text, len(text)-tb)
		if t < h {
			t = h
		}
		cut := text[h:t]
		cutTok := o.Count(msgjson.Unsafe(cut))
		out := append(dst[:0], text[:h]...)
		out = append(out, "\n[… gateway truncated this tool output: "...)
		out = strconv.AppendInt(out, int64(cutTok), 10)
		out = append(out, " of "...)
		out = strconv.AppendInt(out, int64(tokens), 10)
		out = append(out, " tokens ("...)
		out = strconv.AppendInt(out, int64(len(cut)), 10)
		out = append(out, " bytes) cut from the middle …]\n"...)
		out = append(out, text[t:]...)
		if o.Count(msgjson.Unsafe(out)) <= o.TruncateAboveTokens || (head <= 1 && tail <= 1) {
			return out
		}
		dst = out
		head, tail = max(1, head/2), max(1, tail/2)
	}
}

// cutBack returns a cut position at or before n: just after a newline in the last quarter, or
// else a UTF-8 boundary.
func cutBack(b []byte, n int) int {
	for i := n; i > n*3/4; i-- {
		if b[i-1] == '\n' {
			return i
		}
	}
	for n > 0 && n < len(b) && b[n]&0xC0 == 0x80 {
		n--
	}
	return n
}

// cutForward returns a cut position at or after n: just after a newline within a quarter of
// the tail, or else a UTF-8 boundary.
func cutForward(b []byte, n int) int {
	limit := n + (len(b)-n)/4
	for i := n; i < limit; i++ {
		if b[i] == '\n' {
			return i + 1
		}
	}
	for n < len(b) && b[n]&0xC0 == 0x80 {
		n++
	}
	return n
}

// splice rebuilds the body: replaced messages, an optional deleted range [delFrom, delTo) with
// an optional new marker in its place; every other byte is kept.
func splice(body []byte, arr providers.Span, msgs []message, repl map[int][]byte, delFrom, delTo int, marker []byte) []byte {
	a := body[arr.Start:arr.End]
	// Size the output exactly: after masking or trimming it can be far smaller than body.
	size := len(body)
	for i, r := range repl {
		size += len(r) - len(msgs[i].Raw)
	}
	if delFrom >= 0 {
		size -= msgs[delTo].Pos.Start - msgs[delFrom].Pos.Start
		if marker != nil {
			size += len(marker) + 1
		}
	}
	out := make([]byte, 0, size)
	out = append(out, body[:arr.Start]...)
	prev := 0
	for i := 0; i < len(msgs); i++ {
		if i == delFrom {
			out = append(out, a[prev:msgs[i].Pos.Start]...)
			if marker != nil {
				out = append(out, marker...)
				out = append(out, ',')
			}
			prev = msgs[delTo].Pos.Start
			i = delTo - 1
			continue
		}
		if r, ok := repl[i]; ok {
			out = append(out, a[prev:msgs[i].Pos.Start]...)
			out = append(out, r...)
			prev = msgs[i].Pos.End
		}
	}
	out = append(out, a[prev:]...)
	return append(out, body[arr.End:]...)
}
