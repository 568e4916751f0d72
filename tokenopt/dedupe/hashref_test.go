package dedupe

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The word hashing as first written, one callback per word and one byte at a time: the
// reference the block scanner must match bit for bit (the near-duplicate thresholds and every
// test's distances were set on these values).

// refWordHasher hashes one word eight bytes at a time: bytes are packed into a word-sized
// block and only a full block goes through a multiply, instead of one per byte.
type refWordHasher struct {
	h, acc uint64
	n      int
}

func (w *refWordHasher) add(b byte) {
	w.acc = w.acc<<8 | uint64(b)
	if w.n++; w.n == 8 {
		w.h = (w.h ^ w.acc) * 0xff51afd7ed558ccd
		w.h ^= w.h >> 32
		w.acc, w.n = 0, 0
	}
}

// sum is the word's hash; the hasher starts over.
func (w *refWordHasher) sum() uint64 {
	h := mix(w.h ^ w.acc ^ uint64(w.n)<<56)
	*w = refWordHasher{h: wordSeed}
	return h
}

// eachWord calls fn with the folded hash of each word of b.
func refEachWord(b []byte, fn func(h uint64)) {
	w := refWordHasher{h: wordSeed}
	in := false
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			i++
			f := foldASCII[c]
			if f == 0 {
				if in {
					fn(w.sum())
					in = false
				}
				continue
			}
			w.add(f)
			in = true
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		i += size
		if unicode.IsSpace(r) {
			if in {
				fn(w.sum())
				in = false
			}
			continue
		}
		// A rune goes in as three bytes with the high bit set, which no ASCII byte has.
		r = unicode.ToLower(r)
		w.add(byte(0x80 | r>>14&0x7f))
		w.add(byte(0x80 | r>>7&0x7f))
		w.add(byte(0x80 | r&0x7f))
		in = true
	}
	if in {
		fn(w.sum())
	}
}

// normHash hashes the whitespace-collapsed, case-folded text; n is its word count.
func refNormHash(b []byte) (uint64, int) {
	acc := uint64(normSeed)
	n := 0
	refEachWord(b, func(h uint64) {
		acc = chain(acc, h)
		n++
	})
	return mix(acc ^ uint64(n)), n
}

// chunkHashes is normHash and a SimHash (Charikar's, 64 bits, over word 3-shingles) in one
// pass over the words: every chunk is hashed both ways, and the word scan is most of the
// cost. SimHash bit counts are kept in byte lanes (8 features' bits per uint64 add) and
// flushed every 255 features.
func refChunkHashes(b []byte) (norm uint64, words int, sim uint64) {
	norm = normSeed
	var counts [64]int
	var lanes [8]uint64
	pending := 0
	total := 0
	var w0, w1 uint64
	flush := func() {
		for j := 0; j < 8; j++ {
			v := lanes[j]
			for k := 0; k < 8; k++ {
				counts[k*8+j] += int(v >> (8 * k) & 0xFF)
			}
			lanes[j] = 0
		}
		pending = 0
	}
	feature := func(f uint64) {
		for j := 0; j < 8; j++ {
			lanes[j] += f >> j & 0x0101010101010101
		}
		pending++
		total++
		if pending == 255 {
			flush()
		}
	}
	refEachWord(b, func(h uint64) {
		norm = chain(norm, h)
		words++
		if words >= 3 {
			feature(mix(w0*31 ^ w1*17 ^ h))
		}
		w0, w1 = w1, h
	})
	if words < 3 && words > 0 {
		feature(mix(w0 ^ w1))
	}
	norm = mix(norm ^ uint64(words))
	flush()
	for i := 0; i < 64; i++ {
		if 2*counts[i] > total {
			sim |= 1 << i
		}
	}
	return norm, words, sim
}

// FuzzHashesMatchReference: the block scanner gives the reference's hashes, word counts and
// SimHashes, on any bytes (invalid UTF-8, Unicode spaces and texts longer than a block).
func FuzzHashesMatchReference(f *testing.F) {
	for _, s := range []string{"", " ", "one", "two words", "The Quick  brown\tfox jumps über ÉTÉ\u00a0x\u2003y",
		"abcdefghijklmnopq rstuvwxyz0123456", "\xff\xfe a\x00b", strings.Repeat("a b c ", 300), strings.Repeat("x", 1000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, w, sim := chunkHashes(b)
		rn, rw, rsim := refChunkHashes(b)
		if n != rn || w != rw || sim != rsim {
			t.Fatalf("chunkHashes(%q) = %x %d %x, reference %x %d %x", b, n, w, sim, rn, rw, rsim)
		}
		if n, w := normHash(b); n != rn || w != rw {
			t.Fatalf("normHash(%q) = %x %d, reference %x %d", b, n, w, rn, rw)
		}
		if n, w := refNormHash(b); n != rn || w != rw {
			t.Fatalf("the references disagree on %q: %x %d and %x %d", b, n, w, rn, rw)
		}
	})
}

// BenchmarkChunkHashes: the block scanner against the reference, on a tool's log output
// (short words, as most of a long agent conversation is).
func BenchmarkChunkHashes(b *testing.B) {
	text := []byte(strings.Repeat("log line 7: request served in 12ms from region eu-west; ", 40))
	for _, c := range []struct {
		name string
		fn   func([]byte) (uint64, int, uint64)
	}{{"reference", refChunkHashes}, {"scanner", chunkHashes}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				c.fn(text)
			}
		})
	}
}

// FuzzTextHashes: one pass over a text gives its normHash and each chunk's chunkHashes, for
// the chunks chunk finds (documents whose tags touch their words, labelled sections,
// paragraphs, empty documents).
func FuzzTextHashes(f *testing.F) {
	for _, s := range []string{
		"plain text", "step 3: <document source=\"kb/3\">Refunds are issued.</document> thanks",
		"<doc>a b c</doc><doc>d e f</doc>x", "<document></document> after", "<doc>  </doc>",
		"# Title\nbody one two\n## Next\nthree four", "[1] first passage\n[2] second passage",
		"para one\n\npara two\n\n\npara three", "1. item one\n2. item two", "---\nabove\n---\nbelow",
		"<doc>über ÉTÉ\u00a0x\vy\u2003z</doc>\u00a0tail", "Source: a\nbody\nSource: b\nmore",
		"<document source=x><source>S</source>body</document>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		chunks := chunk(text)
		out := make([]known, len(chunks))
		whole, n := textHashes(text, chunks, out)
		if ww, wn := normHash(text); whole != ww || n != wn {
			t.Fatalf("whole %q: %x %d, normHash %x %d", text, whole, n, ww, wn)
		}
		for i, c := range chunks {
			h, w, sim := chunkHashes(text[c.bodyStart:c.bodyEnd])
			if k := out[i]; k.exact != h || k.words != w || k.sim != sim {
				t.Fatalf("chunk %d %q of %q: %x %d %x, chunkHashes %x %d %x", i, text[c.bodyStart:c.bodyEnd], text, k.exact, k.words, k.sim, h, w, sim)
			}
		}
	})
}
