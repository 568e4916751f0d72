// Package cacheplan makes OpenAI chat-completions bodies cache-friendly without changing what
// the model sees: tool schemas in canonical key order (a byte-stable prefix), cache breakers
// reported, automatic cache_control breakpoints for Anthropic-format targets (anthropic,
// bedrock, Claude on Vertex) and a derived prompt_cache_key for OpenAI models that accept it,
// plus an optional per-workspace salt that keeps one tenant's cached prefixes out of another's
// reach on a shared upstream key. Markers and key shards act on evidence (tokenopt/evidence):
// markers stand down where their writes were not read back, and a key is sharded only after
// its reported cache hits fell. It edits raw bytes: everything it does not mean to change is
// kept byte for byte.
package cacheplan

import (
	"bytes"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
	"github.com/badtheorylabs/btl-runtime/tokenopt/tokens"
)

// Limits of Anthropic-style caching.
const (
	MaxBreakpoints = 4
	// Lookback is how many blocks before a breakpoint the provider searches for an earlier
	// cache entry; consecutive breakpoints are kept at most this far apart.
	Lookback = 20
	// defaultMinTokens applies when the catalog price carries no minimum.
	defaultMinTokens = 1024
)

// Target is where the request goes.
type Target struct {
	// Provider is the adapter type: "openai", "openai_compatible", "openrouter", "anthropic",
	// "bedrock", "vertex" (Claude on Vertex when Model is a Claude model) or "vertex-claude".
	Provider string
	// Model is the upstream model id.
	Model string
	// Workspace scopes the derived prompt_cache_key.
	Workspace string
	// Price is the catalog entry of Model (CacheMinTokens is used; 0 means 1024).
	Price catalog.Price
	// Salt, when set, isolates the workspace's cached prefixes (see Isolate): a system message
	// carrying it goes first in every request that will carry cache markers, a caller's own
	// prompt_cache_key is scoped to the workspace (the derived one already is), and with
	// SaltAutomatic the salt also goes first where the upstream caches prefixes on its own
	// (Gemini, OpenAI-compatible servers) — isolation there costs the salt's tokens on every
	// request, which no gateway caching earns back.
	Salt          string
	SaltAutomatic bool
	// IsolateOnly makes Plan do only what isolation needs, for a request whose prompt-cache
	// lever is off (x-btl-optimize, shadow, disable prompt_cache): the salt ahead of the
	// caller's own markers (or, with SaltAutomatic, of an automatically cached prompt) and the
	// caller's prompt_cache_key scoped; no schema rewrite, marker or derived key.
	IsolateOnly bool
}

// Breakpoint is one cache_control marker added.
type Breakpoint struct {
	// Where is "tools[i]" or "messages[i]" (the marker is on the message's last content part).
	Where string
	// Block is the number of Anthropic content blocks up to and including the marked one.
	Block int
	// TTL is "5m" or "1h".
	TTL string
	// PrefixTokens estimates the tokens cached up to the marker.
	PrefixTokens int
}

// Report says what Plan did.
type Report struct {
	// SchemasSorted counts tool parameter schemas rewritten into canonical key order.
	SchemasSorted int
	// Breakers lists volatile content in system messages and tool descriptions.
	Breakers []Finding
	// PrefixTokens estimates the tokens of tools and system messages; TotalTokens of the
	// whole prompt (byte-based estimates, about 4 bytes a token).
	PrefixTokens, TotalTokens int
	// PrefixHash identifies the stable prefix (model, canonical tools, system messages).
	PrefixHash uint64
	// Breakpoints lists the markers added (Anthropic-format targets).
	Breakpoints []Breakpoint
	// CallerMarkers: the caller set cache_control somewhere, so no breakpoint was added.
	CallerMarkers bool
	// BelowMinimum: the prompt is shorter than the model's minimum cacheable prefix.
	BelowMinimum bool
	// PromptCacheKey is the key set for OpenAI ("" when none was set); CacheKeyBase the key
	// before any shard suffix, and KeyWarm whether it was in use recently enough for its
	// prefix to be cached (both for the evidence record).
	PromptCacheKey string
	CacheKeyBase   string
	KeyWarm        bool
	// MarkersStoodDown: some kind of marker would have been placed, but the evidence says it
	// did not pay for this workspace and model. PrefixMarked and ConvMarked say which kinds
	// were placed, and MarkedPrefixTokens estimates the prompt up to the last prefix marker.
	MarkersStoodDown         bool
	PrefixMarked, ConvMarked bool
	MarkedPrefixTokens       int
	// Salted: the workspace salt was added. CallerKeyScoped: the caller's prompt_cache_key
	// was scoped to its workspace.
	Salted, CallerKeyScoped bool
}

// BreakerHeader renders the findings for a response header ("" when none).
func (r *Report) BreakerHeader() string {
	s := make([]string, len(r.Breakers))
	for i, f := range r.Breakers {
		s[i] = f.String()
	}
	return strings.Join(s, ", ")
}

// Planner plans with what was learned from traffic (prefix reuse gaps, key rates and hit
// shares, marker economics), kept in an evidence store. It is safe for concurrent use.
type Planner struct {
	// Evidence is the record the plan consults and feeds; nil uses one of the Planner's own.
	Evidence *evidence.Store
	once     sync.Once
	own      *evidence.Store
}

// NewPlanner returns a Planner with an empty evidence store of its own.
func NewPlanner() *Planner { return &Planner{} }

func (p *Planner) evidence() *evidence.Store {
	if p.Evidence != nil {
		return p.Evidence
	}
	p.once.Do(func() { p.own = evidence.New() })
	return p.own
}

var defaultPlanner = NewPlanner()

// Plan runs the default Planner.
func Plan(body []byte, t Target) ([]byte, Report, error) { return defaultPlanner.Plan(body, t) }

// unit is one tool or message in Anthropic render order. How to mark it is plain data
// (offsets into the walked body), turned into edits only for the units that get a marker.
type unit struct {
	tool           bool // tools[idx], else messages[idx]
	assistant      bool
	idx            int
	blocks, tokens int // its own during the walk, then cumulative at its end
	mark           markKind
	at, end        int  // markInsert: at is the closing brace; markWrap: the string is [at,end)
	empty          bool // markInsert: the object has no members, so no comma
	from, to       int  // a message's bytes: system messages are hashed after the walk
}

type markKind uint8

const (
	noMark     markKind = iota
	markInsert          // insert ,"cache_control":cc before the object's closing brace
	markWrap            // replace string content s with [{"type":"text","text":s,"cache_control":cc}]
)

// The bytes a marker inserts; index 0 is the 5m TTL, 1 the 1h TTL.
var (
	markMember    = [2][]byte{[]byte(`,"cache_control":{"type":"ephemeral"}`), []byte(`,"cache_control":{"type":"ephemeral","ttl":"1h"}`)}
	markWrapOpen  = []byte(`[{"type":"text","text":`)
	markWrapClose = [2][]byte{[]byte(`,"cache_control":{"type":"ephemeral"}}]`), []byte(`,"cache_control":{"type":"ephemeral","ttl":"1h"}}]`)}
)

// markEdits appends the edits that add u's marker with the 1h TTL when long, else 5m.
func (u *unit) markEdits(edits []edit, long bool) []edit {
	ttl := 0
	if long {
		ttl = 1
	}
	switch u.mark {
	case markInsert:
		m := markMember[ttl]
		if u.empty {
			m = m[1:]
		}
		edits = append(edits, edit{Start: u.at, End: u.at, Repl: m})
	case markWrap:
		// Two insertions rather than one replacement: the string is not copied twice.
		edits = append(edits, edit{Start: u.at, End: u.at, Repl: markWrapOpen}, edit{Start: u.end, End: u.end, Repl: markWrapClose[ttl]})
	}
	return edits
}

func (u *unit) where() string {
	if u.tool {
		return indexed("tools", u.idx)
	}
	return indexed("messages", u.idx)
}

// indexed renders prefix[i] with a single allocation.
func indexed(prefix string, i int) string {
	var b [32]byte
	s := append(append(b[:0], prefix...), '[')
	s = strconv.AppendInt(s, int64(i), 10)
	return string(append(s, ']'))
}

// scratch is the working memory of one Plan call. It is pooled, so that a call allocates
// little more than its output.
type scratch struct {
	units     []unit // tools; after the walk all units in render order
	sys, conv []unit
	findings  []Finding // in system messages, reported after those in tools
	edits     []edit
	ins       []byte   // bytes the edits insert: canonical schemas, the prompt_cache_key
	stack     []member // canonical's
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Limits of what a pooled scratch keeps, so that one huge request does not pin memory.
const (
	maxPooledItems = 1 << 14
	maxPooledBytes = 1 << 20
)

func (s *scratch) release() {
	if cap(s.units)+cap(s.sys)+cap(s.conv)+cap(s.findings)+cap(s.edits)+cap(s.stack) > maxPooledItems || cap(s.ins) > maxPooledBytes {
		return
	}
	clear(s.stack[:cap(s.stack)]) // it points into the body, which must not stay reachable
	clear(s.findings[:cap(s.findings)])
	s.units, s.sys, s.conv, s.findings = s.units[:0], s.sys[:0], s.conv[:0], s.findings[:0]
	s.edits, s.ins, s.stack = s.edits[:0], s.ins[:0], s.stack[:0]
	scratchPool.Put(s)
}

// Plan rewrites body for t. On malformed input it returns body unchanged with the error.
func (p *Planner) Plan(body []byte, t Target) ([]byte, Report, error) {
	return p.PlanWith(body, t, nil)
}

// PlanWith is Plan that also applies extra, edits of body that another lever decided (the
// output budget), in the same copy. Where an extra edit and one of Plan's are at the same
// position, the extra one comes first. On error nothing is applied.
func (p *Planner) PlanWith(body []byte, t Target, extra []conv.Edit) ([]byte, Report, error) {
	return p.PlanApply(body, t, extra, func(edits []conv.Edit) []byte { return conv.Apply(body, edits) })
}

// PlanApply is PlanWith that writes its result with apply, given every edit of body (extra's
// included), instead of with conv.Apply: a caller that planned on a copy of the body (one
// that will be reused) writes the result from where that copy came from. apply runs once on
// success, even with no edits, before PlanApply returns; nothing it is given may be kept.
func (p *Planner) PlanApply(body []byte, t Target, extra []conv.Edit, apply func([]conv.Edit) []byte) ([]byte, Report, error) {
	s := scratchPool.Get().(*scratch)
	defer s.release()
	return p.plan(s, body, t, extra, apply)
}

// plan does Plan's work. Every change is an edit of body (canonical tool schemas, markers,
// prompt_cache_key), applied in one copy at the end.
func (p *Planner) plan(s *scratch, body []byte, t Target, extra []conv.Edit, apply func([]conv.Edit) []byte) ([]byte, Report, error) {
	var rep Report
	ev := p.evidence()
	if i := skipSpace(body, 0); i >= len(body) || body[i] != '{' {
		return body, rep, errBadJSON
	}
	// 1. The top level, the messages walked on the way.
	top, err := s.walkTop(body)
	if err != nil {
		return body, rep, err
	}

	// 2. Tools, then the system messages, in the hash and the findings.
	var h xxhash.Digest
	h.Reset()
	_, _ = h.WriteString(t.Model)
	_, _ = h.Write([]byte{0})
	if len(top.tools) > 0 && top.tools[0] == '[' {
		if err := s.walkTools(body, top.tools, &h, &rep); err != nil {
			return body, rep, err
		}
	}
	nTools := len(s.units)
	if t.IsolateOnly {
		s.edits, rep.SchemasSorted = s.edits[:0], 0
	}
	if len(top.msgs) == 0 || top.msgs[0] != '[' {
		return body, rep, errBadJSON
	}
	if top.msgErr != nil {
		// A bad message fails Plan with the findings of the messages before it, unless the
		// array does not split into elements: that fails before any message is looked at.
		if _, _, bad := countElements(top.msgs); bad == nil {
			rep.Breakers = append(rep.Breakers, s.findings...)
		}
		return body, rep, top.msgErr
	}
	rep.Breakers = append(rep.Breakers, s.findings...)
	for _, u := range s.sys {
		_, _ = h.Write(body[u.from:u.to])
	}
	rep.PrefixHash = h.Sum64()
	nSys := len(s.sys)
	s.units = append(append(s.units, s.sys...), s.conv...)
	all := s.units
	cumB, cumT := 0, 0
	for i := range all {
		cumB += all[i].blocks
		cumT += all[i].tokens
		all[i].blocks, all[i].tokens = cumB, cumT
	}
	rep.TotalTokens = cumT
	if np := nTools + nSys; np > 0 {
		rep.PrefixTokens = all[np-1].tokens
	}
	var hexHash [16]byte // rep.PrefixHash in hex, part of the tracker keys
	prefixHex := strconv.AppendUint(hexHash[:0], rep.PrefixHash, 16)

	minTok := int(t.Price.CacheMinTokens)
	if minTok <= 0 {
		minTok = defaultMinTokens
	}
	// 3. Breakpoints for Anthropic-format targets.
	cached := false // the upstream will cache some prefix of this request
	if anthropicFormat(t) {
		switch {
		case hasCallerMarkers(body):
			rep.CallerMarkers, cached = true, true
		case rep.TotalTokens < minTok:
			rep.BelowMinimum = true
		case t.IsolateOnly:
		default:
			prefix, conv := ev.MarkersPay(t.Workspace, t.Model)
			rep.MarkersStoodDown = !prefix || !conv
			var kb [64]byte
			reuseKey := append(append(append(kb[:0], t.Workspace...), 0), prefixHex...)
			long := ev.LongGap(reuseKey) && allow1h(t)
			s.edits = placeBreakpoints(all, nTools, nSys, minTok, long, t.Salt != "", prefix, conv, &rep, s.edits)
			cached = len(rep.Breakpoints) > 0
		}
	} else if t.SaltAutomatic && !keyAllowed(t) {
		// Automatic prefix caching (Gemini and OpenAI-compatible upstreams) caches any prompt
		// from the minimum on. (OpenAI itself is scoped by the workspace's prompt_cache_key.)
		cached = rep.TotalTokens >= minTok
	}
	if t.Salt != "" && cached {
		s.edits = append(s.edits, saltEdit(body, top.msgs, t.Salt))
		rep.Salted = true
	}

	// 4. prompt_cache_key for OpenAI models that accept it.
	if keyAllowed(t) {
		if v := top.key; t.Salt != "" && v != nil && len(v) > 2 && v[0] == '"' {
			// The caller's own key, scoped to its workspace: OpenAI routes (and so caches) by
			// key and prefix, and another tenant must not be able to name this one's key.
			var kb [64]byte
			start := len(s.ins)
			s.ins = strconv.AppendQuote(s.ins, string(appendKey(kb[:0], "btlw-", t.Salt, v)))
			o := offset(body, v)
			s.edits = append(s.edits, edit{Start: o, End: o + len(v), Repl: s.ins[start:]})
			rep.CallerKeyScoped = true
		} else if !t.IsolateOnly && (v == nil || string(v) == "null") {
			var kb [64]byte
			key := appendKey(kb[:0], "btl-", t.Workspace, prefixHex)
			// One key per workspace and prefix; shards only while the evidence says the key
			// overflows and sharding helps. A conversation keeps its shard (its first message
			// picks it), so its own history stays on one machine.
			tk := ev.Shards(key)
			rep.CacheKeyBase, rep.KeyWarm = string(key), tk.Warm
			if tk.Shards > 1 {
				key = strconv.AppendUint(append(key, "-s"...), xxhash.Sum64(top.firstConv)%uint64(tk.Shards), 10)
			}
			rep.PromptCacheKey = string(key)
			start := len(s.ins)
			if v != nil { // an explicit null
				s.ins = strconv.AppendQuote(s.ins, rep.PromptCacheKey)
				o := offset(body, v)
				s.edits = append(s.edits, edit{Start: o, End: o + len(v), Repl: s.ins[start:]})
			} else { // the first member
				// Just after the opening brace, which may follow whitespace.
				at := skipSpace(body, 0) + 1
				s.ins = strconv.AppendQuote(append(s.ins, `"prompt_cache_key":`...), rep.PromptCacheKey)
				if body[skipSpace(body, at)] != '}' {
					s.ins = append(s.ins, ',')
				}
				s.edits = append(s.edits, edit{Start: at, End: at, Repl: s.ins[start:]})
			}
		}
	}
	if len(extra) > 0 {
		// The caller's edits first: at a shared position they stay ahead of the plan's.
		s.edits = append(append(make([]edit, 0, len(extra)+len(s.edits)), extra...), s.edits...)
	}
	return apply(s.edits), rep, nil
}

// topLevel is what Plan reads at the top level of a body.
type topLevel struct {
	tools, msgs, key []byte // the values (nil when absent; the last of a duplicated key counts)
	firstConv        []byte // the first conversation message
	msgErr           error  // set when the walk of the messages failed
}

// walkTop walks the top-level object of body (body[0] is '{'). It walks the messages where
// they are, so that their bytes are read once, and keeps what it finds in s until the tools,
// which come first in render order (and so in the hash and the findings), have been walked.
// A bad message is reported in msgErr: Plan fails, but only after the checks that come
// first (a malformed body, the tools).
func (s *scratch) walkTop(body []byte) (topLevel, error) {
	var top topLevel
	it := objectAt(body, skipSpace(body, 0)) // plan checked that a '{' follows any whitespace
	for {
		k, at, ok := it.key()
		if !ok {
			break
		}
		switch string(name(k)) {
		case "messages":
			s.sys, s.conv, s.findings = s.sys[:0], s.conv[:0], s.findings[:0]
			top.firstConv, top.msgErr = nil, nil
			if at < len(body) && body[at] == '[' {
				end, firstConv, err := s.walkMessages(body, at)
				if err == nil {
					top.msgs, top.firstConv = body[at:end], firstConv
					it.endValue(end)
					continue
				}
				top.msgErr = err
			}
			top.msgs, _ = it.value()
		case "tools":
			top.tools, _ = it.value()
		case "prompt_cache_key":
			top.key, _ = it.value()
		default:
			it.value()
		}
	}
	return top, it.err
}

// walkTools appends a unit per tool to s.units, hashes the tools, sorts their parameter
// schemas into canonical key order (as edits) and scans their descriptions for breakers.
// Each tool is hashed and estimated as it will be sent, with its schema canonical.
func (s *scratch) walkTools(body, tools []byte, h *xxhash.Digest, rep *Report) error {
	// A malformed array fails before any tool is looked at.
	if _, _, err := countElements(tools); err != nil {
		return err
	}
	it := arrayIter(tools)
	for i := 0; ; i++ {
		tool, ok := it.next()
		if !ok {
			return nil
		}
		u := unit{tool: true, idx: i, blocks: 1}
		sent := len(tool) // its length once its schema is canonical
		hashed := false
		if len(tool) > 0 && tool[0] == '{' {
			var params, desc []byte
			if fn := find(tool, "function"); len(fn) > 0 && fn[0] == '{' {
				params, desc = find2(fn, "parameters", "description")
			}
			if len(params) > 0 && params[0] == '{' {
				start := len(s.ins)
				var changed bool
				var err error
				if s.ins, changed, err = canonical(s.ins, params, &s.stack); err != nil {
					// A bad schema fails Plan before any description counts.
					rep.Breakers = nil
					return err
				}
				if changed {
					c := s.ins[start:]
					o := offset(body, params)
					s.edits = append(s.edits, edit{Start: o, End: o + len(params), Repl: c})
					rep.SchemasSorted++
					po := o - offset(body, tool)
					_, _ = h.Write(tool[:po])
					_, _ = h.Write(c)
					_, _ = h.Write(tool[po+len(params):])
					hashed = true
					sent += len(c) - len(params)
				} else {
					s.ins = s.ins[:start]
				}
			}
			if len(desc) > 1 && desc[0] == '"' {
				rep.Breakers = scan(desc[1:len(desc)-1], "tools", i, rep.Breakers)
			}
			u.mark, u.at = markInsert, offset(body, tool)+len(tool)-1
			u.empty = len(bytes.TrimSpace(tool[1:len(tool)-1])) == 0
		}
		if !hashed {
			_, _ = h.Write(tool)
		}
		u.tokens = tokens.Estimate(sent)
		s.units = append(s.units, u)
	}
}

// walkMessages walks the messages array at body[at] (a '['): it appends a unit per message
// to s.sys or s.conv and the breakers found in system messages to s.findings. It returns
// the index just past the array (it delimits the array as it walks, see arrayAt) and the
// first conversation message.
func (s *scratch) walkMessages(body []byte, at int) (end int, firstConv []byte, err error) {
	mi := arrayAt(body, at)
	for i := 0; ; i++ {
		start, ok := mi.start()
		if !ok {
			return mi.i, firstConv, mi.err
		}
		if body[start] != '{' {
			return 0, nil, errBadJSON
		}
		var role, content, lastPart []byte
		var contentErr error
		nCalls, nParts := 0, 0
		it := objectAt(body, start)
		for {
			k, at, ok := it.key()
			if !ok {
				break
			}
			// Arrays are counted as they are delimited; a malformed one is delimited by
			// skipping it, and fails the message only if it is the content that counts.
			switch string(name(k)) {
			case "role":
				role, _ = it.value()
			case "content":
				contentErr = nil
				if at < len(body) && body[at] == '[' {
					n, last, end, err := walkArray(body, at)
					if err == nil {
						content, nParts, lastPart = body[at:end], n, last
						it.endValue(end)
						continue
					}
					contentErr = err
				}
				content, _ = it.value()
			case "tool_calls":
				if at < len(body) && body[at] == '[' {
					if n, _, end, err := walkArray(body, at); err == nil {
						nCalls = n
						it.endValue(end)
						continue
					}
				}
				it.value()
			default:
				it.value()
			}
		}
		if it.err != nil {
			return 0, nil, it.err
		}
		m := body[start:it.i]
		if !mi.finish(it.i) {
			return 0, nil, mi.err
		}
		system := false
		if len(role) > 1 && role[0] == '"' {
			r := name(role)
			system = string(r) == "system" || string(r) == "developer"
		}
		u := unit{idx: i, tokens: tokens.Estimate(len(m)), blocks: nCalls, from: start, to: it.i,
			assistant: len(role) > 1 && string(name(role)) == "assistant"}
		if len(content) > 0 {
			switch content[0] {
			case '"':
				if len(content) > 2 {
					u.blocks++
					if system {
						s.findings = scan(content[1:len(content)-1], "system", i, s.findings)
					}
					if nCalls == 0 {
						u.mark, u.at = markWrap, offset(body, content)
						u.end = u.at + len(content)
					}
				}
			case '[':
				if contentErr != nil {
					return 0, nil, contentErr
				}
				u.blocks += nParts
				if system {
					pi := arrayIter(content)
					for pt, ok := pi.next(); ok; pt, ok = pi.next() {
						if len(pt) > 0 && pt[0] == '{' {
							if tx := find(pt, "text"); len(tx) > 1 && tx[0] == '"' {
								s.findings = scan(tx[1:len(tx)-1], "system", i, s.findings)
							}
						}
					}
				}
				if nParts > 0 && nCalls == 0 && partMarkable(lastPart) {
					u.mark, u.at = markInsert, offset(body, lastPart)+len(lastPart)-1
				}
			}
		}
		if system {
			s.sys = append(s.sys, u)
		} else {
			if firstConv == nil {
				firstConv = m
			}
			s.conv = append(s.conv, u)
		}
	}
}

func partMarkable(pt []byte) bool {
	if len(pt) == 0 || pt[0] != '{' {
		return false
	}
	ty, tx := find2(pt, "type", "text")
	switch string(ty) {
	case `"text"`:
		return len(tx) > 2 && tx[0] == '"'
	case `"image_url"`:
		return true
	}
	return false
}

// choice is a unit picked for a breakpoint (an index into all) and its TTL.
type choice struct {
	unit int
	ttl  string
}

// placeBreakpoints picks at most MaxBreakpoints markers: the rolling last message, the end of
// system (or tools), intermediates so consecutive markers are at most Lookback blocks apart,
// then the end of tools. Markers whose prefix is below minTok are skipped. The prefix markers
// take 1h when long is set; message markers 5m, so 1h markers always precede 5m ones. With
// isolate no tool is marked: tools render before the workspace salt, so a prefix ending in
// them would be shared across workspaces.
// prefix and conv say which kinds the evidence allows: markers on the stable prefix (system,
// tools) and on the conversation (the rolling last message, the previous turn's end,
// intermediates).
func placeBreakpoints(all []unit, nTools, nSys, minTok int, long, isolate, prefix, conv bool, rep *Report, edits []edit) []edit {
	var chosen [MaxBreakpoints]choice // in the order picked
	n := 0
	// choose adds unit i; one picked twice keeps one slot and the latest TTL.
	choose := func(i int, ttl string) {
		for k := range n {
			if chosen[k].unit == i {
				chosen[k].ttl = ttl
				return
			}
		}
		chosen[n].unit, chosen[n].ttl = i, ttl
		n++
	}
	ok := func(i int) bool {
		return i >= 0 && all[i].mark != noMark && all[i].tokens >= minTok && !(isolate && all[i].tool)
	}
	prefixTTL := "5m"
	if long {
		prefixTTL = "1h"
	}
	last := -1
	for i := len(all) - 1; i >= nTools+nSys && conv; i-- {
		if ok(i) {
			last = i
			break
		}
	}
	if last >= 0 {
		choose(last, "5m")
	}
	anchor := -1
	for i := nTools + nSys - 1; i >= 0; i-- {
		if ok(i) {
			anchor = i
			break
		}
	}
	if anchor >= 0 && n < MaxBreakpoints && prefix {
		choose(anchor, prefixTTL)
		rep.PrefixMarked, rep.MarkedPrefixTokens = true, all[anchor].tokens
	}
	// The previous request's rolling marker: the message before the last assistant turn ended
	// the conversation last time. Marking it again reads what that request wrote on an
	// upstream that looks up only the marked positions (Bedrock's explicit cache points), at
	// no cost where the provider also looks back (its segment is already cached).
	prev := -1
	if last >= 0 && conv {
		for i := last - 1; i > nTools+nSys; i-- {
			if all[i].assistant {
				if ok(i-1) && i-1 > anchor {
					prev = i - 1
				}
				break
			}
		}
	}
	if prev >= 0 && n < MaxBreakpoints {
		choose(prev, "5m")
	}
	if last >= 0 {
		floor := 0
		if anchor >= 0 {
			floor = all[anchor].blocks
		}
		cur := last
		if prev >= 0 {
			cur = prev
		}
		for n < MaxBreakpoints && all[cur].blocks-floor > Lookback {
			pick := -1
			for i := nTools + nSys; i < cur; i++ { // earliest marker within reach of cur
				if ok(i) && all[i].blocks >= all[cur].blocks-Lookback {
					pick = i
					break
				}
			}
			if pick < 0 { // nothing in reach: the latest markable before cur still shortens the gap
				for i := cur - 1; i >= nTools+nSys; i-- {
					if ok(i) {
						pick = i
						break
					}
				}
			}
			if pick < 0 || (anchor >= 0 && pick <= anchor) {
				break
			}
			choose(pick, "5m")
			cur = pick
		}
	}
	if nTools > 0 && anchor >= nTools && n < MaxBreakpoints && ok(nTools-1) && prefix {
		choose(nTools-1, prefixTTL)
	}
	if n == 0 {
		return edits
	}
	rep.ConvMarked = last >= 0
	// Markers and the Report list them in render order.
	picked := chosen[:n]
	slices.SortFunc(picked, func(a, b choice) int { return a.unit - b.unit })
	rep.Breakpoints = make([]Breakpoint, 0, n)
	for _, c := range picked {
		u := &all[c.unit]
		edits = u.markEdits(edits, c.ttl == "1h")
		rep.Breakpoints = append(rep.Breakpoints, Breakpoint{Where: u.where(), Block: u.blocks, TTL: c.ttl, PrefixTokens: u.tokens})
	}
	return edits
}

// hasCallerMarkers reports a "cache_control" key anywhere in the body. Inside a JSON string
// the quotes would be escaped, so a match is a key (or, rarely, a false positive that only
// makes Plan stand down).
func hasCallerMarkers(body []byte) bool {
	const k = `"cache_control"`
	for off := 0; ; {
		i := indexCacheControl(body, off)
		if i < 0 {
			return false
		}
		j := skipSpace(body, i+len(k))
		if j < len(body) && body[j] == ':' {
			return true
		}
		off = i + len(k)
	}
}

// indexCacheControl returns the index of the first "cache_control" (quotes included) at or
// after off in body, or -1. It looks for the tail _control" and checks the head before it:
// bytes.Index scans for the first byte of its pattern and falls back to a much slower search
// after many false starts, which a '"' soon has in JSON; '_' is far rarer.
func indexCacheControl(body []byte, off int) int {
	const head, tail = `"cache`, `_control"`
	for from := off + len(head); from <= len(body); {
		j := bytes.Index(body[from:], []byte(tail))
		if j < 0 {
			return -1
		}
		j += from
		if string(body[j-len(head):j]) == head {
			return j - len(head)
		}
		from = j + 1
	}
	return -1
}

func lowerModel(m string) string {
	m = strings.ToLower(m)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	return m
}

func anthropicFormat(t Target) bool {
	switch t.Provider {
	case "anthropic", "bedrock", "vertex-claude", "vertex_claude":
		return true
	case "vertex":
		return strings.Contains(lowerModel(t.Model), "claude")
	}
	return false
}

// allow1h: Anthropic and Vertex take the 1h TTL on every cacheable Claude; Bedrock only on
// Claude 4.5 and later.
func allow1h(t Target) bool {
	if t.Provider != "bedrock" {
		return true
	}
	m := lowerModel(t.Model)
	if !strings.Contains(m, "claude") {
		return false
	}
	for _, v := range []string{"4-5", "4.5", "4-6", "4.6", "4-7", "4.7", "4-8", "4.8", "opus-5", "sonnet-5", "haiku-5", "fable-5", "mythos-5"} {
		if strings.Contains(m, v) {
			return true
		}
	}
	return false
}

// keyAllowed reports whether Plan sets prompt_cache_key for t: first-party OpenAI and the
// built-in simulator, which models OpenAI's key-scoped cache (never OpenAI-compatible third
// parties), and only models whose catalog entry lists the field, since a model that does not
// know it rejects the request.
func keyAllowed(t Target) bool {
	return (t.Provider == "openai" || t.Provider == "simulated") && t.Price.Accepts("prompt_cache_key")
}

// Isolate returns the salt that scopes a workspace's cached prefixes: a stable tag derived
// from the workspace id. Providers cache per account, so on an upstream key that several
// workspaces share, a tenant could otherwise learn from its own cache_read tokens whether
// another tenant sent a given prompt. With the salt first, every cached prefix starts with
// its workspace's tag, which no other workspace's request can begin with (each gets its own
// first). The tag need not be secret; it must be stable, so caches stay warm across nodes.
func Isolate(workspace string) string {
	sum := xxhash.Sum64String("btl-cache-scope\x00" + workspace)
	var b [16]byte
	return "btl-cache-scope " + string(strconv.AppendUint(b[:0], sum, 36))
}

// saltEdit inserts the salt as the first message of the messages array msgs.
func saltEdit(body, msgs []byte, salt string) edit {
	at := offset(body, msgs) + 1
	ins := strconv.AppendQuote([]byte(`{"role":"system","content":`), salt)
	ins = append(ins, '}')
	if body[skipSpace(body, at)] != ']' {
		ins = append(ins, ',')
	}
	return edit{Start: at, End: at, Repl: ins}
}

// appendKey appends a prompt_cache_key: prefix and the hex of a hash of scope and value.
func appendKey(dst []byte, prefix, scope string, value []byte) []byte {
	var kh xxhash.Digest
	kh.Reset()
	_, _ = kh.WriteString(scope)
	_, _ = kh.Write([]byte{0})
	_, _ = kh.Write(value)
	var sum [8]byte
	return hex.AppendEncode(append(dst, prefix...), kh.Sum(sum[:0]))
}
