package handlers

import (
	"bytes"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
	"github.com/badtheorylabs/btl-runtime/tokenopt/dedupe"
)

// dedupeConversation applies retrieval-chunk dedupe to every user message against what came
// before it — not only to the newest one — so a message is rewritten the same way on every
// later turn. The bytes a provider cached for turn t are then exactly the prefix of turn t+1,
// and dedupe stops trading prompt-cache hits for the tokens it removes. Each message's result
// is memoised by the hash of the conversation up to it, so a growing conversation costs one
// dedupe pass per turn, not one per message.
//
// It is the path for a body the conversation view cannot read (dedupeView is the usual one);
// both rewrite alike.
func dedupeConversation(req *providers.ChatRequest) (out []byte, fromNewest, fromHistory int64, ok bool) {
	body, messages := req.Body, req.Messages
	msgs := make([][]byte, 0, 64)
	if providers.EachElement(messages, func(_ int, m []byte) bool {
		msgs = append(msgs, m)
		return true
	}) != nil || len(msgs) < 2 {
		return nil, 0, 0, false
	}
	repl, fromNewest, fromHistory := dedupeMessages(body, msgs)
	if len(repl) == 0 {
		return nil, 0, 0, false
	}
	// One copy of the body, with the messages array rebuilt in place.
	size := len(body) - len(messages) + 2 + len(msgs) - 1
	for i, m := range msgs {
		if r, ok := repl[i]; ok {
			m = r
		}
		size += len(m)
	}
	out = make([]byte, 0, size)
	out = append(out, body[:req.MessagesAt]...)
	out = append(out, '[')
	for i, m := range msgs {
		if i > 0 {
			out = append(out, ',')
		}
		if r, ok := repl[i]; ok {
			m = r
		}
		out = append(out, m...)
	}
	out = append(out, ']')
	out = append(out, body[req.MessagesAt+len(messages):]...)
	return out, fromNewest, fromHistory, true
}

// dedupeView is dedupeConversation on the request's conversation view: it returns the change
// (the rewritten messages; the array written without whitespace, as dedupeConversation
// writes it) for the caller to write together with the other levers' in one copy.
func dedupeView(v *conv.View) (c conv.Change, fromNewest, fromHistory int64, ok bool) {
	if len(v.Msgs) < 2 {
		return c, 0, 0, false
	}
	repl, fromNewest, fromHistory := dedupeMessages(v.Body, v.Raws())
	if len(repl) == 0 {
		return c, 0, 0, false
	}
	c = conv.None()
	c.Repl, c.Compact = repl, true
	return c, fromNewest, fromHistory, true
}

// dedupeMessages rewrites the user messages of msgs, slices of body (see
// dedupeConversation), and returns the rewritten ones by index; msgs is used as scratch.
func dedupeMessages(body []byte, msgs [][]byte) (repl map[int][]byte, fromNewest, fromHistory int64) {
	rewritten := msgs // each earlier message as rewritten, which the index must see
	var h maphash.Hash
	h.SetSeed(memoSeed)
	// The conversation's index starts at the first memo miss and grows one message at a time,
	// so a conversation seen for the first time is indexed once, not once per user message.
	var conv *dedupe.Conversation
	added := 0
	var ahead sync.WaitGroup // a goroutine indexing the history too, when it is long
	defer ahead.Wait()
	seen := false // a user message's rewrite was memoised: the gateway has seen the conversation
	for i, m := range msgs {
		h.Write(m)
		if i == 0 || !isUserMessage(m) {
			continue
		}
		key := h.Sum64()
		r, hit := dedupeMemo.get(key)
		seen = seen || hit
		if !hit {
			if conv == nil {
				opts := dedupe.Options{Cache: dedupeIndex}
				if !seen {
					// Seen for the first time: its whole history is indexed now, and the
					// index keeps the body rather than a copy of most of it.
					opts.Source = body
				}
				conv = dedupe.NewConversation(opts)
				if run := indexAhead(conv, msgs, i); run != nil {
					ahead.Go(run)
				}
			}
			for ; added < i; added++ {
				conv.Add(rewritten[added])
			}
			out, rep, did := conv.Rewrite(m)
			r = nil // unchanged; a rewrite is a new slice, so the memo holds no request bytes
			if did && rep.TokensSaved > 0 {
				r = out
			}
			dedupeMemo.put(key, r)
		}
		if r == nil {
			continue
		}
		if repl == nil {
			repl = make(map[int][]byte)
		}
		repl[i] = r
		removed := max(int64(len(m)-len(r))/4, 0)
		if i == len(msgs)-1 {
			fromNewest += removed
		} else {
			fromHistory += removed
		}
		// Later messages are hashed as sent, before this rewrite: only the index sees it.
		rewritten[i] = r
	}
	return repl, fromNewest, fromHistory
}

// aheadMinBytes is the history a conversation must bring, from its first memo miss, for its
// indexing to be shared with another goroutine: starting one costs a few microseconds,
// indexing 64 KB about 200.
var aheadMinBytes = 64 << 10 // a variable so a test can turn the sharing off

// indexAhead hands the messages after msgs[from] to conv.IndexAhead: the user messages, which
// dedupe rewrites, to hash, the others to index. It returns the work for the other
// goroutine; nil when the history is too short to share.
func indexAhead(conv *dedupe.Conversation, msgs [][]byte, from int) (run func()) {
	total := 0
	for _, m := range msgs[from : len(msgs)-1] {
		total += len(m)
	}
	if total < aheadMinBytes {
		return nil
	}
	// A copy: dedupeMessages writes rewrites over msgs while the other goroutine reads.
	raws := slices.Clone(msgs[from+1 : len(msgs)-1])
	rewrites := make([]bool, len(raws))
	for i, m := range raws {
		rewrites[i] = isUserMessage(m)
	}
	return conv.IndexAhead(raws, rewrites)
}

var userRoleValue = []byte(`"user"`)

var rolePrefix = []byte(`{"role":`)

func isUserMessage(m []byte) bool {
	// Fast path: role first, as every SDK writes it; otherwise scan the object.
	if rest, ok := bytes.CutPrefix(m, rolePrefix); ok {
		return bytes.HasPrefix(rest, userRoleValue)
	}
	span, ok, _ := providers.FindTopLevel(m, "role")
	return ok && bytes.Equal(m[span.Start:span.End], userRoleValue)
}

// dedupeIndex keeps each earlier message's chunk index across turns, so a new turn indexes
// only its own message; bounded at 64 MiB of message text.
var dedupeIndex = dedupe.NewIndexCache(64 << 20)

// memoSeed keys the memo; the memo lives in this process only, so a random seed is fine.
var memoSeed = maphash.MakeSeed()

// memo is a small bounded map: when full it starts over (entries are cheap to recompute).
type memo struct {
	mu sync.Mutex
	m  map[uint64][]byte
}

const dedupeMemoEntries = 1 << 14

var dedupeMemo = &memo{m: map[uint64][]byte{}}

func (c *memo) get(k uint64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *memo) put(k uint64, v []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= dedupeMemoEntries {
		clear(c.m)
	}
	c.m[k] = v
}
