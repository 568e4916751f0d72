package dedupe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/benchcpu"
	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/msgjson"
)

type msg struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
}

func encode(t testing.TB, ms []msg) []byte {
	b, err := json.Marshal(map[string]any{"model": "m", "messages": ms})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawMessages(t testing.TB, b []byte) []json.RawMessage {
	var r struct{ Messages []json.RawMessage }
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, b)
	}
	return r.Messages
}

func lastContent(t testing.TB, b []byte) string {
	ms := rawMessages(t, b)
	var m msg
	if err := json.Unmarshal(ms[len(ms)-1], &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m.Content.(string)
	return s
}

var vocab = strings.Fields(`the gateway routes requests to providers and records usage for every workspace while
caching prompts reduces cost latency tokens model answer context window retrieval document chunk policy
billing invoice customer support refund account region storage replica backup schedule`)

func para(r *rand.Rand, words int) string {
	w := make([]string, words)
	for i := range w {
		w[i] = vocab[r.IntN(len(vocab))]
	}
	return strings.Join(w, " ") + "."
}

func TestGoldenExactDuplicate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	pricing := para(r, 80)
	faq := para(r, 80)
	first := "Source: wiki/pricing\n" + pricing + "\n\nSource: wiki/faq\n" + faq
	newer := "Context:\nSource: wiki/pricing\n" + strings.ToUpper(pricing[:1]) + pricing[1:] + "\n\nSource: wiki/new\n" + para(r, 60) + "\n\nQuestion: what is the price?"
	body := encode(t, []msg{{"system", "sys"}, {"user", first}, {"assistant", "ok"}, {"user", newer}})
	out, rep, err := Dedupe(body, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(newer, strings.ToUpper(pricing[:1])+pricing[1:], `[duplicate of the document "Source: wiki/pricing" in message 2 — omitted by gateway]`, 1)
	if got := lastContent(t, out); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if rep.ExactDups != 1 || rep.TokensSaved <= 0 || rep.ChunksSeen < 2 {
		t.Fatalf("report %+v", rep)
	}
	in, o := rawMessages(t, body), rawMessages(t, out)
	for i := 0; i < len(in)-1; i++ {
		if !bytes.Equal(in[i], o[i]) {
			t.Fatalf("message %d changed", i)
		}
	}
	// Bytes before the messages array and after it are kept.
	if !bytes.HasPrefix(out, body[:bytes.Index(body, []byte(`"messages"`))]) {
		t.Fatal("prefix changed")
	}
}

func TestNearDuplicates(t *testing.T) {
	if a, b := salient([]byte("The refund window is 30 days.")), salient([]byte("The refund window is not 30 days.")); slices.Equal(a, b) {
		t.Fatalf("a negation is not salient: %q vs %q", a, b)
	}
	r := rand.New(rand.NewPCG(2, 2))
	base := para(r, 120) + " The refund window is 30 days and the fee is $12.50 since 2026-01-15."
	// Same facts, different boilerplate whitespace and one filler word changed.
	same := strings.Replace(base, "the ", "the  ", 3)
	same = strings.Replace(same, " gateway ", " gateway\n", 1)
	wSame := strings.Fields(same)
	wSame[5] = "policy"
	same = strings.Join(wSame, " ")
	changed := strings.Replace(base, "$12.50", "$14.00", 1)
	// Whether a change of 3 of ~130 shingles lands within the default MaxHamming (3) depends on
	// the hash; the changed-fact cases widen it so that they are always found near, and must
	// then be kept for their salient tokens.
	near := Options{MaxHamming: 16}
	for _, tc := range []struct {
		name          string
		newest        string
		opts          Options
		removed, kept int
	}{
		{"near same facts", "[1] " + same, Options{}, 1, 0},
		{"changed number kept", "[1] " + changed, near, 0, 1},
		{"changed date kept", "[1] " + strings.Replace(base, "2026-01-15", "2026-02-15", 1), near, 0, 1},
		{"negation kept", "[1] " + strings.Replace(base, "The refund window is", "The refund window is not", 1), near, 0, 1},
		// With the default distance a changed fact may not be near at all; it stays literal.
		{"changed number, default distance", "[1] " + changed, Options{}, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := encode(t, []msg{{"user", "[1] " + base}, {"assistant", "ok"}, {"user", tc.newest}})
			out, rep, err := Dedupe(body, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.NearDupsRemoved != tc.removed || (tc.kept >= 0 && rep.NearDupsKept != tc.kept) || rep.ExactDups != 0 {
				t.Fatalf("report %+v", rep)
			}
			got := lastContent(t, out)
			if tc.kept != 0 && got != tc.newest {
				t.Fatalf("changed fact collapsed: %q", got)
			}
			if tc.removed == 1 && got != `[1] [duplicate of the document "[1]" in message 1 — omitted by gateway]` {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestShortChunksAndOtherRoles(t *testing.T) {
	body := encode(t, []msg{{"user", "yes\n\nok thanks"}, {"assistant", "fine"}, {"user", "yes\n\nok thanks"}})
	out, _, _ := Dedupe(body, Options{})
	if !bytes.Equal(out, body) {
		t.Fatal("short chunks replaced")
	}
	r := rand.New(rand.NewPCG(3, 3))
	p := para(r, 100)
	body = encode(t, []msg{{"user", p}, {"assistant", p}})
	if out, _, _ := Dedupe(body, Options{}); !bytes.Equal(out, body) {
		t.Fatal("assistant message rewritten")
	}
}

func TestDocumentsAndWithinMessage(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	d1, d2 := para(r, 70), para(r, 70)
	earlier := `<documents><document index="1"><source>kb/a.md</source>` + d1 + `</document></documents>`
	newest := `<document index="1"><source>kb/a.md</source>` + d1 + "</document>\n<document index=\"2\">" + d2 + "</document>\n<document index=\"3\">" + d2 + "</document>"
	body := encode(t, []msg{{"user", earlier}, {"assistant", "ok"}, {"user", []any{map[string]any{"type": "text", "text": newest}}}})
	out, rep, err := Dedupe(body, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Content []struct{ Text string }
	}
	ms := rawMessages(t, out)
	_ = json.Unmarshal(ms[2], &m)
	want := `<document index="1"><source>kb/a.md</source>[duplicate of the document "kb/a.md" in message 1 — omitted by gateway]</document>` +
		"\n<document index=\"2\">" + d2 + "</document>\n<document index=\"3\">[duplicate of the document \"index='3'\" earlier in this message — omitted by gateway]</document>"
	if m.Content[0].Text != want {
		t.Fatalf("got\n%s\nwant\n%s", m.Content[0].Text, want)
	}
	if rep.ExactDups != 2 {
		t.Fatalf("report %+v", rep)
	}
}

func TestWholeToolOutputRepeated(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	file := para(r, 50) + "\n" + para(r, 50)
	body := []byte(`{"messages":[{"role":"tool","tool_call_id":"a","content":` + jstr(file) + `},{"role":"assistant","content":"x"},{"role":"tool","tool_call_id":"b","content":` + jstr(file) + `}]}`)
	out, rep, _ := Dedupe(body, Options{})
	if got := lastContent(t, out); got != "[duplicate of a passage in message 1 — omitted by gateway]" || rep.ExactDups != 1 {
		t.Fatalf("got %q %+v", got, rep)
	}
}

func jstr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// genRAG builds a multi-turn RAG conversation: each user turn pastes k chunks drawn from a
// corpus with planted facts; some repeated chunks have their fact changed.
func genRAG(seed uint64, turns int) ([]msg, []string) {
	r := rand.New(rand.NewPCG(seed, 11))
	corpus := make([]string, 12)
	for i := range corpus {
		corpus[i] = fmt.Sprintf("%s The access code for vault %d is %d.", para(r, 60+r.IntN(40)), i, 1000+r.IntN(9000))
	}
	ms := []msg{{"system", "Answer from the documents."}}
	var newest []string
	for t := 0; t < turns; t++ {
		var sb strings.Builder
		newest = newest[:0]
		for k := 0; k < 4; k++ {
			i := r.IntN(len(corpus))
			c := corpus[i]
			if r.IntN(4) == 0 { // a changed fact
				c = strings.Replace(c, "is ", fmt.Sprintf("is %d", r.IntN(10)), 1)
				c = c[:len(c)-1] + fmt.Sprintf(" Updated %d.", 2020+r.IntN(6))
			}
			newest = append(newest, c)
			fmt.Fprintf(&sb, "### Source: doc-%d\n%s\n\n", i, c)
		}
		sb.WriteString("Question?")
		ms = append(ms, msg{"user", sb.String()}, msg{"assistant", "answer " + para(r, 10)})
	}
	return ms[:len(ms)-1], newest
}

func TestPlantedFacts(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		ms, chunks := genRAG(seed, 2+int(seed%6))
		body := encode(t, ms)
		out, rep, err := Dedupe(body, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rawMessages(t, out)) != len(ms) {
			t.Fatal("message count changed")
		}
		got := lastContent(t, out)
		var earlier strings.Builder
		for _, m := range ms[:len(ms)-1] {
			earlier.WriteString(m.Content.(string))
		}
		for _, c := range chunks {
			// Every sentence that states a fact.
			for _, sent := range strings.SplitAfter(c, ".") {
				if !strings.ContainsAny(sent, "0123456789") {
					continue
				}
				sent = strings.TrimSpace(sent)
				if strings.Contains(got, sent) {
					continue
				}
				if strings.Contains(earlier.String(), c) || strings.Count(ms[len(ms)-1].Content.(string), c) > 1 {
					continue // an exact duplicate whose other copy is still present
				}
				t.Fatalf("seed %d: planted fact %q lost (report %+v)", seed, sent, rep)
			}
		}
		again, _, _ := Dedupe(out, Options{})
		if !bytes.Equal(again, out) {
			t.Fatalf("seed %d: not idempotent", seed)
		}
	}
}

func TestSimHashProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	a := []byte(para(r, 200))
	if h := simHash(a); h != simHash(append([]byte(nil), a...)) {
		t.Fatal("not deterministic")
	}
	b := []byte(para(r, 200))
	if d := hamming(simHash(a), simHash(b)); d <= 3 {
		t.Fatalf("unrelated texts at distance %d", d)
	}
}

func FuzzDedupe(f *testing.F) {
	ms, _ := genRAG(1, 3)
	f.Add(encode(f, ms))
	f.Add([]byte(`{"messages":[{"role":"user","content":"<doc a>x</doc>"},{"role":"user","content":[{"type":"text","text":"<document>\u00e9</document>"}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		o := Options{MinChunkTokens: 2}
		out, _, err := Dedupe(body, o)
		if err != nil || !json.Valid(body) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid output: %s", out)
		}
		var a, b struct{ Messages []json.RawMessage }
		if json.Unmarshal(body, &a) == nil {
			if json.Unmarshal(out, &b) != nil || len(a.Messages) != len(b.Messages) {
				t.Fatal("message count changed")
			}
		}
		again, _, _ := Dedupe(out, o)
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%s\n%s", out, again)
		}
		// A Conversation fed the earlier messages rewrites the last one as Dedupe does.
		if len(a.Messages) >= 2 {
			conv := NewConversation(o)
			for _, m := range a.Messages[:len(a.Messages)-1] {
				conv.Add(m)
			}
			got, _, did := conv.Rewrite(a.Messages[len(a.Messages)-1])
			if want := b.Messages[len(b.Messages)-1]; !bytes.Equal(got, want) || did != !bytes.Equal(out, body) {
				t.Fatalf("Conversation rewrote %s (changed %v), Dedupe %s", got, did, want)
			}
		}
		// The index cache changes nothing, cold or warm.
		o.Cache = fuzzCache
		for range 2 {
			if cached, _, _ := Dedupe(body, o); !bytes.Equal(cached, out) {
				t.Fatalf("cached index changed the output:\n%s\n%s", out, cached)
			}
		}
	})
}

var fuzzCache = NewIndexCache(1 << 20)

// TestIndexCacheSameResult: a growing RAG conversation deduped turn by turn through one
// cache gives, at every turn, the bytes and report of an uncached run.
func TestIndexCacheSameResult(t *testing.T) {
	cache := NewIndexCache(64 << 20)
	for seed := uint64(1); seed <= 4; seed++ {
		ms, _ := genRAG(seed, 8)
		for turn := 2; turn <= len(ms); turn++ {
			body := encode(t, ms[:turn])
			want, wrep, werr := Dedupe(body, Options{})
			got, grep, gerr := Dedupe(body, Options{Cache: cache})
			if !bytes.Equal(got, want) || grep != wrep || (werr == nil) != (gerr == nil) {
				t.Fatalf("seed %d turn %d: cached %+v %v, uncached %+v %v", seed, turn, grep, gerr, wrep, werr)
			}
		}
	}
	// A cache too small for one message still gives the same answer.
	ms, _ := genRAG(9, 6)
	body := encode(t, ms)
	want, _, _ := Dedupe(body, Options{})
	if got, _, _ := Dedupe(body, Options{Cache: NewIndexCache(1)}); !bytes.Equal(got, want) {
		t.Fatal("a full cache changed the output")
	}
}

func benchDedupe(b *testing.B, tokens int) {
	r := rand.New(rand.NewPCG(8, 8))
	var ms []msg
	var chunks []string
	for n := 0; n < tokens*4; {
		var sb strings.Builder
		for k := 0; k < 4; k++ {
			c := para(r, 60)
			if len(chunks) > 0 && r.IntN(2) == 0 {
				c = chunks[r.IntN(len(chunks))]
			}
			chunks = append(chunks, c)
			fmt.Fprintf(&sb, "[%d] %s\n\n", k+1, c)
		}
		ms = append(ms, msg{"user", sb.String()}, msg{"assistant", "ok"})
		n += sb.Len()
	}
	ms = ms[:len(ms)-1]
	body := encode(b, ms)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var rep Report
	// The index cache holds the history, as it does for a conversation's next turn.
	opts := Options{Cache: NewIndexCache(64 << 20)}
	start := benchcpu.Now()
	for b.Loop() {
		_, rep, _ = Dedupe(body, opts)
	}
	b.ReportMetric(float64(benchcpu.Now()-start)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(rep.ExactDups+rep.NearDupsRemoved), "replaced")
}

func BenchmarkDedupe1k(b *testing.B)   { benchDedupe(b, 1000) }
func BenchmarkDedupe100k(b *testing.B) { benchDedupe(b, 100000) }

// FuzzChunkHashes: the fused pass computes normHash's hash and word count.
func FuzzChunkHashes(f *testing.F) {
	for _, s := range []string{"", "one", "two words", "The Quick  brown\tfox jumps über ÉTÉ", strings.Repeat("a b c ", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		norm, n, _ := chunkHashes(b)
		if wn, wwords := normHash(b); norm != wn || n != wwords {
			t.Fatalf("chunkHashes(%q) = %x %d, normHash %x %d", b, norm, n, wn, wwords)
		}
	})
}

// simHash is chunkHashes' SimHash alone.
func simHash(b []byte) uint64 {
	_, _, sim := chunkHashes(b)
	return sim
}

// TestRevertedFactStaysLiteral: a document pasted (code A), then updated (code B), then pasted
// as it first was must not become a reference to its first copy: the newest literal version
// in the prompt would then be the superseded one. Without the update in between, it may.
func TestRevertedFactStaysLiteral(t *testing.T) {
	filler := strings.Repeat("The vault procedures describe rotation, escrow and audit of every access code in detail. ", 6)
	doc := func(label, code string) string {
		return fmt.Sprintf("<document source=%q>\n%s The access code for vault 7 is %s. %s\n</document>", label, filler, code, filler)
	}
	cases := []struct {
		name       string
		history    []string // documents pasted in earlier user turns
		last       string   // the newest user turn
		wantLit    string   // must appear literally in the newest message
		wantDedupe bool
	}{
		{"reverted: same label", []string{doc("kb/vault", "4417"), doc("kb/vault", "9902")}, doc("kb/vault", "4417"), "4417", false},
		{"reverted: relabelled near duplicate", []string{doc("kb/vault", "4417"), doc("kb/vault-v2", "9902")}, doc("kb/vault", "4417"), "4417", false},
		{"reverted within the newest message", []string{doc("kb/vault", "4417")}, doc("kb/vault", "9902") + "\n" + doc("kb/vault", "4417"), "4417", false},
		{"plain repeat", []string{doc("kb/vault", "4417"), doc("kb/other", strings.Repeat("unrelated words about billing and invoices ", 30))}, doc("kb/vault", "4417"), "", true},
		{"repeat of the newest version", []string{doc("kb/vault", "4417"), doc("kb/vault", "9902")}, doc("kb/vault", "9902"), "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms := []msg{{"system", "Answer from the documents."}}
			for _, d := range c.history {
				ms = append(ms, msg{"user", d}, msg{"assistant", "Noted."})
			}
			ms = append(ms, msg{"user", c.last + "\nWhat is the access code for vault 7?"})
			out, rep, err := Dedupe(encode(t, ms), Options{})
			if err != nil {
				t.Fatal(err)
			}
			last := lastContent(t, out)
			if c.wantLit != "" && !strings.Contains(last, "vault 7 is "+c.wantLit) {
				t.Fatalf("the newest copy lost its literal text (%+v):\n%s", rep, last)
			}
			if deduped := strings.Contains(last, refPrefix); deduped != c.wantDedupe {
				t.Fatalf("deduped %v, want %v (%+v):\n%s", deduped, c.wantDedupe, rep, last)
			}
		})
	}
}

// TestSlidingWindowOverReferences: a RAG conversation whose every turn re-pastes a window of
// documents, deduped turn by turn as the gateway does (each message against the rewritten
// ones before it). A document the gateway already turned into a reference on an earlier turn
// is not "another version" of itself: on the next turn it is a reference again, to its one
// literal copy. A real update (the same label with different content) after that copy still
// keeps a re-paste of the old version literal.
func TestSlidingWindowOverReferences(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	docs := make([]string, 8)
	for i := range docs {
		docs[i] = fmt.Sprintf("<document source=\"kb/%d\">\n%s The code for vault %d is %04d. %s\n</document>", i, para(r, 120), i, 1000+i, para(r, 120))
	}
	window := func(from int) string {
		return strings.Join(docs[from:from+4], "\n") + "\nWhich vault codes appear above?"
	}
	message := func(text string) []byte {
		b, _ := json.Marshal(msg{"user", text})
		return b
	}
	c := NewConversation(Options{})
	c.Add(message("Answer from the documents."))
	var last string
	for turn := range 4 {
		raw := message(window(turn))
		out, _, _ := c.Rewrite(raw)
		var m msg
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		last = m.Content.(string)
		if turn > 0 {
			if n := strings.Count(last, refPrefix); n != 3 {
				t.Fatalf("turn %d: %d of the 3 documents already in the conversation became references, want 3:\n%s", turn, n, last)
			}
			if !strings.Contains(last, fmt.Sprintf("vault %d is %04d", turn+3, 1000+turn+3)) {
				t.Fatalf("turn %d: the new document is not literal:\n%s", turn, last)
			}
		}
		c.Add(out)
		c.Add([]byte(`{"role":"assistant","content":"Noted."}`))
	}
	// An update of document 5 after its copy: a re-paste of the old version stays literal.
	updated := strings.Replace(docs[5], "is 1005", "is 7777", 1)
	c.Add(message(updated))
	out, _, _ := c.Rewrite(message(docs[5] + "\nWhat is the code for vault 5 now?"))
	if strings.Contains(string(out), refPrefix) || !strings.Contains(string(out), "vault 5 is 1005") {
		t.Fatalf("a re-paste after an update lost its literal text:\n%s", out)
	}
}

// TestCachedEntriesOwnTheirBytes: an index entry outlives the request it was built from, so
// it keeps its own copy of the text: a near duplicate is still judged on the cached copy's
// facts after the first request's buffer is overwritten. Both ways into the cache are
// covered: a message indexed as history, and one Rewrite read unchanged and Add adopted
// (its text, which has escapes, was decoded into a buffer the next Rewrite reuses).
func TestCachedEntriesOwnTheirBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	filler := para(r, 120)
	// The first copy with and without characters JSON escapes: kept as decoded, or as a
	// slice of the request.
	for _, escaped := range []bool{false, true} {
		base := "[1] " + filler + " The refund window is 30 days and the fee is $12.50 since 2026-01-15."
		if escaped {
			base = strings.Replace(base, " The refund", "\n\"The refund", 1)
		}
		words := strings.Fields(base)
		words[5] = "policy" // one filler word changed: near, with the same facts
		same := strings.Join(words, " ")
		other := "[2] " + strings.Repeat("Unrelated \"quoted\" text about 7 other things.\n", 40)
		raws := rawMessages(t, encode(t, []msg{{"system", "Answer from the documents."}, {"user", base}, {"user", same}, {"user", other}}))
		cachedOwnTheirBytes(t, raws[0], raws[1], raws[2], raws[3])
	}
}

// cachedOwnTheirBytes is TestCachedEntriesOwnTheirBytes for one first copy.
func cachedOwnTheirBytes(t *testing.T, system, firstRaw, newest, third []byte) {
	for _, adopt := range []bool{false, true} {
		cache := NewIndexCache(1 << 20)
		first := bytes.Clone(firstRaw)
		c := NewConversation(Options{Cache: cache})
		c.Add(system)
		if adopt {
			if _, _, changed := c.Rewrite(first); changed {
				t.Fatal("the first copy changed")
			}
		}
		c.Add(first)
		if _, rep, _ := c.Rewrite(newest); rep.NearDupsRemoved != 1 {
			t.Fatalf("adopt=%v: the near duplicate was not found: %+v", adopt, rep)
		}
		c.Add(newest)
		c.Rewrite(third) // reuses the conversation's buffers
		for i := range first {
			first[i] = 'x' // the first request's buffer, reused
		}
		c = NewConversation(Options{Cache: cache})
		c.Add(system)
		c.Add(bytes.Clone(firstRaw))
		if _, rep, _ := c.Rewrite(newest); rep.NearDupsRemoved != 1 {
			t.Fatalf("adopt=%v: the cached entry lost its text: %+v", adopt, rep)
		}
	}
}

// TestSourceCountedWhole: entries that keep slices of the request body (Options.Source) count
// the whole body against the cache's bound, once per generation of the cache, instead of
// their text.
func TestSourceCountedWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var ms []msg
	for i := range 6 {
		ms = append(ms, msg{"tool", fmt.Sprintf("[%d] %s", i, para(r, 200))})
	}
	ms = append(ms, msg{"user", "[9] " + para(r, 200)})
	body := encode(t, ms)
	_, parsed, err := msgjson.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte // slices of body, as the gateway hands them over
	for _, m := range parsed {
		raws = append(raws, m.Raw)
	}
	for _, source := range []bool{false, true} {
		cache := NewIndexCache(64 << 20)
		opts := Options{Cache: cache}
		if source {
			opts.Source = body
		}
		c := NewConversation(opts)
		text := 0
		for _, raw := range raws[:len(raws)-1] {
			c.Add(raw)
			text += len(raw)
		}
		c.Rewrite(raws[len(raws)-1])
		cache.mu.Lock()
		size, n := cache.size, len(cache.m)
		cache.mu.Unlock()
		overhead := n * (64 + 96) // one chunk per message, no labels beyond "[n]"
		switch {
		case n != len(raws)-1:
			t.Fatalf("source=%v: %d entries cached, want %d", source, n, len(raws)-1)
		case source && (size < len(body) || size > len(body)+overhead+64):
			t.Fatalf("source: cache counts %d bytes for a %d-byte body", size, len(body))
		case !source && (size < text*9/10 || size > text+overhead):
			t.Fatalf("copies: cache counts %d bytes for %d bytes of messages", size, text)
		}
		// Another conversation on the same body adds nothing: the body is counted already.
		c = NewConversation(opts)
		c.Add(raws[0])
		rest := raws[1 : len(raws)-1]
		c.IndexAhead(rest, make([]bool, len(rest)))() // indexes them all: the conversation claims none
		c.Rewrite(raws[len(raws)-1])
		cache.mu.Lock()
		again := cache.size
		cache.mu.Unlock()
		if again != size {
			t.Fatalf("source=%v: the same messages again grew the count from %d to %d", source, size, again)
		}
		// A message that is not a slice of the Source (one the caller rewrote) is copied and
		// counted.
		elsewhere := "[7] " + para(r, 150)
		other := rawMessages(t, encode(t, []msg{{"tool", elsewhere}}))[0]
		if source {
			opts.Source = []byte("{}") // a body other holds nothing of
		}
		c = NewConversation(opts)
		c.Add(other)
		c.Rewrite(raws[len(raws)-1])
		cache.mu.Lock()
		grown := cache.size - again
		cache.mu.Unlock()
		if grown < len(elsewhere)*9/10 {
			t.Fatalf("source=%v: a %d-byte message from elsewhere counted %d bytes", source, len(elsewhere), grown)
		}
	}
}

// TestIndexAheadSameResult: a conversation whose later messages another goroutine indexed or
// hashed first (here all of them, before the conversation reaches any) rewrites every
// message as one that did all the work itself.
func TestIndexAheadSameResult(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	docs := []string{para(r, 80), para(r, 90), para(r, 70)}
	var ms []msg
	ms = append(ms, msg{"system", "Answer from the documents."})
	for i := range 12 {
		// Every other user message has no character JSON escapes, so its text is a slice of
		// the body rather than a decoded copy.
		user := fmt.Sprintf("[%d] %s", i%3, docs[i%3])
		if i%2 == 1 {
			user = fmt.Sprintf("step %d: <document source=\"kb/%d\">%s</document>\nthanks", i, i%3, docs[i%3])
		}
		ms = append(ms, msg{"user", user}, msg{"tool", fmt.Sprintf("[%d] %s", i, para(r, 60))})
	}
	body := encode(t, ms)
	sent := bytes.Clone(body)
	_, parsed, err := msgjson.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte // slices of one body, as the gateway hands them over
	for _, m := range parsed {
		raws = append(raws, m.Raw)
	}
	run := func(ahead bool) (outs [][]byte, reps []Report) {
		c := NewConversation(Options{Cache: NewIndexCache(64 << 20)})
		c.Add(raws[0])
		if ahead {
			rest := make([][]byte, 0, len(raws)-1)
			rewrites := make([]bool, 0, len(raws)-1)
			for i, raw := range raws[1:] {
				rest = append(rest, raw)
				rewrites = append(rewrites, i%2 == 0) // the user messages
			}
			c.IndexAhead(rest, rewrites)() // the other side takes every message
		}
		for i, raw := range raws[1:] {
			if i%2 == 1 {
				c.Add(raw)
				continue
			}
			out, rep, _ := c.Rewrite(raw)
			outs, reps = append(outs, out), append(reps, rep)
			c.Add(out)
		}
		return outs, reps
	}
	want, wantReps := run(false)
	got, gotReps := run(true)
	replaced := 0
	for i := range want {
		if !bytes.Equal(got[i], want[i]) || gotReps[i] != wantReps[i] {
			t.Fatalf("message %d: %s (%+v), want %s (%+v)", i, got[i], gotReps[i], want[i], wantReps[i])
		}
		replaced += wantReps[i].ExactDups
	}
	if replaced == 0 {
		t.Fatal("nothing was replaced: the test proves nothing")
	}
	if !bytes.Equal(body, sent) {
		t.Fatal("the request body was written to")
	}
}

// FuzzIndexAhead: however a never-seen conversation's messages are made (escaped or not,
// repeated or not, documents or plain text) and whichever side of IndexAhead takes which
// message, Rewrite writes the same bytes and reports the same as without it, and the request
// body, which entries borrow from (Options.Source), is never written to.
func FuzzIndexAhead(f *testing.F) {
	f.Add([]byte("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda\x00<b>quoted \"text\"</b>\nnew line\x00short"), uint8(3))
	f.Add([]byte("one two three four five six seven eight nine ten eleven twelve thirteen"), uint8(17))
	f.Add([]byte("tab\there and a \\ backslash, repeated words words words words words\x00x"), uint8(250))
	f.Fuzz(func(t *testing.T, data []byte, shape uint8) {
		pieces := bytes.Split(data, []byte{0})
		pieces = pieces[:min(len(pieces), 8)]
		ms := []msg{{"system", "Answer from the documents."}}
		for i := range 2 + int(shape%12) {
			p := string(pieces[i%len(pieces)])
			user := p
			if (i+int(shape))%2 == 1 {
				user = fmt.Sprintf("step %d: <document source=\"kb/%d\">%s</document>", i, i%len(pieces), p)
			}
			tool := string(pieces[(i*(int(shape>>4)+1)+1)%len(pieces)])
			ms = append(ms, msg{"user", user}, msg{"tool", tool})
		}
		body := encode(t, ms)
		sent := bytes.Clone(body)
		_, parsed, err := msgjson.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		raws := make([][]byte, len(parsed))
		for i, m := range parsed {
			raws[i] = m.Raw
		}
		// mode 0: no IndexAhead; 1: the other side takes every message first; 2: it runs
		// on its own goroutine, as the gateway runs it.
		run := func(mode int) (outs [][]byte, reps []Report) {
			c := NewConversation(Options{Cache: NewIndexCache(64 << 20), Source: body})
			c.Add(raws[0])
			var done chan struct{}
			if mode > 0 {
				rewrites := make([]bool, len(raws)-1)
				for i := range rewrites {
					rewrites[i] = i%2 == 0 // the user messages
				}
				ahead := c.IndexAhead(raws[1:], rewrites)
				if mode == 1 {
					ahead()
				} else {
					done = make(chan struct{})
					go func() { defer close(done); ahead() }()
				}
			}
			for i, raw := range raws[1:] {
				if i%2 == 1 {
					c.Add(raw)
					continue
				}
				out, rep, _ := c.Rewrite(raw)
				outs, reps = append(outs, bytes.Clone(out)), append(reps, rep)
				c.Add(out)
			}
			if done != nil {
				<-done
			}
			return outs, reps
		}
		want, wantReps := run(0)
		for mode := 1; mode <= 2; mode++ {
			got, gotReps := run(mode)
			for i := range want {
				if !bytes.Equal(got[i], want[i]) || gotReps[i] != wantReps[i] {
					t.Fatalf("mode %d, message %d: %s (%+v), want %s (%+v)", mode, i, got[i], gotReps[i], want[i], wantReps[i])
				}
			}
		}
		if !bytes.Equal(body, sent) {
			t.Fatal("the request body was written to")
		}
	})
}
