package providers

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// KeyPool spreads calls over several API keys of one provider: by weight, away from keys the
// provider is rate limiting (429, or rate-limit headers saying none are left) or rejecting,
// and — for a conversation — consistently onto the same key, since provider prompt caches
// are scoped to the key's organisation.
type KeyPool struct {
	keys []poolKey
	now  func() time.Time
}

type poolKey struct {
	secret    string
	weight    float64
	coolUntil atomic.Int64 // unix nanoseconds; 0 = available
}

// NewKeyPool makes a pool; weights may be nil (all 1) or parallel to keys.
func NewKeyPool(keys []string, weights []int) *KeyPool {
	p := &KeyPool{keys: make([]poolKey, len(keys)), now: time.Now}
	for i, k := range keys {
		p.keys[i].secret = k
		p.keys[i].weight = 1
		if i < len(weights) && weights[i] > 0 {
			p.keys[i].weight = float64(weights[i])
		}
	}
	return p
}

// Len is the number of keys.
func (p *KeyPool) Len() int { return len(p.keys) }

// Pick chooses a key. With an affinity (a conversation hash) the choice is weighted
// rendezvous hashing, so a conversation keeps its key while that key is available; without
// one, the affinity is random-ish per call (the caller passes a fresh value). Keys that are
// cooling down are skipped unless all are, then the one that recovers first is used.
func (p *KeyPool) Pick(affinity uint64) (int, string) {
	if len(p.keys) == 1 {
		return 0, p.keys[0].secret
	}
	now := p.now().UnixNano()
	best, bestScore := -1, math.Inf(-1)
	soonest, soonestAt := 0, int64(math.MaxInt64)
	for i := range p.keys {
		k := &p.keys[i]
		if cu := k.coolUntil.Load(); cu > now {
			if cu < soonestAt {
				soonest, soonestAt = i, cu
			}
			continue
		}
		u := (float64(splitmix64(affinity^uint64(i+1)*0x9e3779b97f4a7c15)>>11) + 0.5) / (1 << 53)
		score := -k.weight / math.Log(u) // weighted rendezvous: higher wins
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		best = soonest
	}
	return best, p.keys[best].secret
}

// Observe learns from a response on key i: a 429 or exhausted rate-limit headers cool the key
// until the provider says it resets; a rejected credential cools it for a minute.
func (p *KeyPool) Observe(i int, status int, h http.Header) {
	if i < 0 || i >= len(p.keys) || len(p.keys) == 1 {
		return
	}
	now := p.now()
	var until time.Time
	switch {
	case status == http.StatusTooManyRequests:
		wait := ParseRetryAfter(h, now)
		if wait <= 0 {
			wait = resetIn(h)
		}
		until = now.Add(max(wait, time.Second))
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		until = now.Add(time.Minute)
	case h.Get("X-Ratelimit-Remaining-Requests") == "0" || h.Get("X-Ratelimit-Remaining-Tokens") == "0":
		until = now.Add(max(resetIn(h), 100*time.Millisecond))
	default:
		return
	}
	p.keys[i].coolUntil.Store(until.UnixNano())
}

// resetIn reads OpenAI's x-ratelimit-reset-* durations ("1s", "6m0s", "12ms"), the longer of
// the two.
func resetIn(h http.Header) time.Duration {
	var d time.Duration
	for _, k := range []string{"X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens"} {
		if v := strings.TrimSpace(h.Get(k)); v != "" {
			if x, err := time.ParseDuration(v); err == nil {
				d = max(d, x)
			} else if s, err := strconv.ParseFloat(v, 64); err == nil {
				d = max(d, time.Duration(s*float64(time.Second)))
			}
		}
	}
	return d
}

// splitmix64 is a full-avalanche 64-bit mixer: nearby inputs give unrelated outputs.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
