package simulated

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

// FNV-1a 64, written out so it can be continued across calls without allocating.
const (
	fnvOffset uint64 = 14695981039346656037
	fnvPrime  uint64 = 1099511628211
)

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is a finalizer (splitmix64) that spreads bits before a value is used as an id.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

const hexDigits = "0123456789abcdef"

func appendHex(dst []byte, h uint64) []byte {
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, hexDigits[(h>>uint(i))&0xf])
	}
	return dst
}

// Prefix caching follows OpenAI: eligible from 1024 tokens, hits grow in 128-token steps.
const (
	cacheMinTokens = 1024
	cacheStep      = 128
)

// bound is the hash of the canonical prompt up to one cache boundary (in tokens).
type bound struct {
	tokens int
	hash   uint64
}

// Prefix hashing runs over 8-byte little-endian words (xor, multiply, rotate), about eight
// times faster than byte-wise FNV; the bytes past the last whole word are folded into a copy
// of the state byte-wise. The hash of a prefix therefore depends only on its bytes, not on
// where a pass was split.
const wordPrime = 0x9E3779B97F4A7C15

func wordHash(h uint64, b []byte) uint64 {
	for len(b) >= 8 {
		h ^= binary.LittleEndian.Uint64(b)
		h = bits.RotateLeft64(h*wordPrime, 29)
		b = b[8:]
	}
	return h
}

// prefixHasher hashes growing prefixes of one buffer.
type prefixHasher struct {
	buf []byte
	h   uint64
	w   int // bytes folded into h, a multiple of 8
}

// sum returns the hash of buf[:end]; end must not decrease between calls.
func (p *prefixHasher) sum(end int) uint64 {
	full := end &^ 7
	if full > p.w {
		p.h = wordHash(p.h, p.buf[p.w:full])
		p.w = full
	}
	return mix64(fnvBytes(p.h, p.buf[p.w:end]) ^ uint64(end))
}

// prefixBounds hashes the canonical prompt once, recording the hash at every boundary
// 1024+128k ≤ total, and returns the hash of the whole prompt too. Token positions follow the
// counting rule: the bytes of message m (0-based) carry 3·(m+1) tokens of overhead, so the
// prefix of c bytes inside message m spans floor(c/4) + 3·(m+1) whole tokens.
func prefixBounds(dst []bound, canon []byte, starts []int, total int) ([]bound, uint64) {
	dst = dst[:0]
	ph := prefixHasher{buf: canon, h: fnvOffset}
	if total < cacheMinTokens {
		return dst, ph.sum(len(canon))
	}
	next := cacheMinTokens
	for seg := 0; seg <= len(starts) && next <= total; seg++ {
		a, b := 0, len(canon)
		if seg > 0 {
			a = starts[seg-1]
		}
		if seg < len(starts) {
			b = starts[seg]
		}
		overhead := 3 * seg
		for next <= total {
			target := max(4*(next-overhead), a)
			if target > b {
				break
			}
			dst = append(dst, bound{next, ph.sum(target)})
			next += cacheStep
		}
	}
	all := ph.sum(len(canon))
	for ; next <= total; next += cacheStep {
		dst = append(dst, bound{next, all})
	}
	return dst, all
}

// prefixCache maps (key, boundary, prefix hash) to an expiry time in unix nanoseconds.
type prefixCache struct {
	mu  sync.Mutex
	m   map[uint64]int64
	max int
}

func newPrefixCache(maxEntries int) *prefixCache {
	return &prefixCache{m: make(map[uint64]int64, min(maxEntries, 4096)), max: maxEntries}
}

// boundKey scopes a boundary hash to one API key.
func boundKey(b bound, key uint64) uint64 { return mix64(b.hash^key) ^ uint64(b.tokens) }

// lookupStore returns the largest cached boundary among bs (sorted ascending) that is
// unexpired at now, then stores every boundary with expiry now+ttl.
func (c *prefixCache) lookupStore(bs []bound, key uint64, now, ttl int64) int {
	if len(bs) == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cached := 0
	for i := len(bs) - 1; i >= 0; i-- {
		if exp, ok := c.m[boundKey(bs[i], key)]; ok && exp > now {
			cached = bs[i].tokens
			break
		}
	}
	if len(c.m)+len(bs) > c.max {
		c.evict(now, ttl, len(bs))
	}
	exp := now + ttl
	for _, b := range bs {
		c.m[boundKey(b, key)] = exp
	}
	return cached
}

// evict drops expired entries, then the least recently refreshed half of the TTL window,
// then arbitrary entries, until need more entries fit under 3/4 of the cap.
func (c *prefixCache) evict(now, ttl int64, need int) {
	target := c.max*3/4 - need
	for k, exp := range c.m {
		if exp <= now {
			delete(c.m, k)
		}
	}
	for cut := now + ttl/2; len(c.m) > target && cut < now+ttl; cut += ttl / 4 {
		for k, exp := range c.m {
			if exp <= cut {
				delete(c.m, k)
			}
		}
		if ttl < 4 {
			break
		}
	}
	for k := range c.m {
		if len(c.m) <= target {
			break
		}
		delete(c.m, k)
	}
}

func (c *prefixCache) reset() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

func (c *prefixCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
