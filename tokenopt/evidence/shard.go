package evidence

import (
	"math"
	"time"
)

// A prompt_cache_key is sharded only on evidence. OpenAI routes a request by its
// prompt_cache_key and the hash of its prefix, and documents that above about 15 requests a
// minute for one combination requests overflow to other machines, which do not have the
// prefix cached. Sharding the key spreads a busy prefix over several machines that each stay
// warm — but every new shard pays the whole prefix once, and where the upstream's cache is
// scoped by the key (or ignores it) sharding only adds cold starts. So:
//
//  1. unsharded: every window of keyWindow warm requests compares the cached tokens the
//     upstream reported with what the prefix should get. A key that is busy (above ShardRate)
//     and got less than overflowShare of it starts a trial with enough shards to bring each
//     under the rate.
//  2. trial: the next window (longer with more shards, which all start cold) is compared
//     with the one before. Better by helpedBy: keep the shards. Otherwise undo, and do not try
//     again for shardBackoff (doubling).
//  3. sharded: a key whose rate fell under ShardRate, or whose shards stopped helping, goes
//     back to one key.
type keyState struct {
	first  time.Time
	last   time.Time
	times  [rateRing]time.Time // recent request times, for the rate
	nTimes int

	phase    uint8
	shards   int
	exp, got float64 // the current window: expected and cached prefix tokens
	n        int
	baseline float64
	retryAt  time.Time
	backoff  time.Duration
	trials   int
	undone   int
	share    float64
}

const (
	phaseOne uint8 = iota
	phaseTrial
	phaseSharded
)

// rateRing bounds the request times kept per key; above that many a minute the rate is
// extrapolated from the ring's span.
const rateRing = 64

// rate is the requests of the last minute, this one included; for a key younger than a
// minute, its requests so far scaled to a minute.
func (k *keyState) rate(now time.Time) int {
	n := min(k.nTimes, rateRing)
	in := 0
	oldest := now
	for i := range n {
		if t := k.times[i]; now.Sub(t) < time.Minute {
			in++
			if t.Before(oldest) {
				oldest = t
			}
		}
	}
	span := now.Sub(oldest)
	if age := now.Sub(k.first); age < time.Minute {
		span = max(age, time.Second)
	} else if in < rateRing {
		return in
	}
	if span <= 0 {
		return in
	}
	return int(math.Ceil(float64(in) * float64(time.Minute) / float64(span)))
}

// Ticket is what Shards decided for one request.
type Ticket struct {
	// Shards is how many shards the key is split into (1: not sharded).
	Shards int
	// Warm: the key was used within the time its prefix should still be cached.
	Warm bool
}

// Shards records a request under the prompt_cache_key base key and returns how many shards
// the key has now.
func (s *Store) Shards(key []byte) Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	k, ok := s.keys[string(key)]
	if !ok {
		if len(s.keys) >= maxEntries {
			evictIdle(s.keys, now, func(k *keyState) time.Time { return k.last })
		}
		k = &keyState{shards: 1, share: -1, first: now}
		s.keys[string(key)] = k
	}
	warm := ok && now.Sub(k.last) < keyWarmFor
	k.last = now
	k.times[k.nTimes%rateRing] = now
	k.nTimes++
	return Ticket{Shards: max(k.shards, 1), Warm: warm}
}

// observeKey feeds one answered request into its key's sharding decision. Callers hold s.mu.
func (s *Store) observeKey(o Observation, now time.Time) {
	k, ok := s.keys[o.CacheKey]
	if !ok || !o.KeyWarm || o.Prompt <= 0 {
		return
	}
	minTok := o.MinCacheTokens
	if minTok <= 0 {
		minTok = 1024
	}
	// What a warm cache should serve: the stable prefix, rounded down to OpenAI's 128-token
	// steps, when it reaches the minimum.
	expected := int64(o.PrefixShare*float64(o.Prompt)) / 128 * 128
	if expected < minTok {
		return
	}
	k.exp += float64(expected)
	k.got += float64(min(o.CacheRead, expected))
	k.n++
	need := keyWindow
	if k.phase == phaseTrial {
		need = max(keyWindow, 4*k.shards)
	}
	if k.n < need {
		return
	}
	share := k.got / k.exp
	k.share = share
	k.exp, k.got, k.n = 0, 0, 0
	rate := k.rate(now)
	switch k.phase {
	case phaseOne:
		if share < overflowShare && rate > ShardRate && !now.Before(k.retryAt) {
			// Half again as many shards as the rate needs: conversations hash onto shards
			// unevenly, and a shard over the rate overflows like the key did.
			k.shards = min(max(int(math.Ceil(float64(rate)*1.5/ShardRate)), 2), MaxShards)
			k.phase, k.baseline = phaseTrial, share
			k.trials++
		}
	case phaseTrial:
		if share >= k.baseline+helpedBy {
			k.phase = phaseSharded
			return
		}
		k.undo(now)
	case phaseSharded:
		switch {
		case share < k.baseline+helpedBy/2:
			k.undo(now) // the shards stopped helping
		case rate <= ShardRate:
			k.phase, k.shards = phaseOne, 1 // nothing left to spread
		}
	}
}

// undo goes back to one key and waits before another trial.
func (k *keyState) undo(now time.Time) {
	k.phase, k.shards = phaseOne, 1
	k.undone++
	k.backoff = min(max(2*k.backoff, shardBackoff), maxShardBackoff)
	k.retryAt = now.Add(k.backoff)
}

// KeyStats returns a snapshot of a prompt_cache_key's sharding state.
func (s *Store) KeyStats(key string) KeyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[key]
	if !ok {
		return KeyStats{Shards: 1, Share: -1}
	}
	return KeyStats{Shards: max(k.shards, 1), Trial: k.phase == phaseTrial, Rate: k.rate(s.now()), Share: k.share,
		Baseline: k.baseline, Trials: k.trials, Undone: k.undone}
}
