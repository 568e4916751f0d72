// Package evidence is the closed loop behind the token-efficiency levers. For each
// (workspace, target model) it keeps what the gateway did to a request (cache markers, a
// prompt_cache_key and its shard, an output cap) and what the upstream then reported (cache
// reads and writes, output tokens, the finish reason), and it answers the questions the levers
// ask before acting:
//
//   - OutputCap: the cap for a request that gave none, learned from the lengths of answers that
//     finished on their own ("stop"), never above a conservative default until enough of them
//     were seen;
//   - MarkersPay: whether cache_control markers have paid for their write premium with reads;
//   - Shards: how many shards a prompt_cache_key gets — one, until the reported cache hits of a
//     busy key fall measurably below what its prefix should get, and back to one when sharding
//     did not help;
//   - LongGap: whether a prefix is reused after gaps a 5-minute cache entry would not survive;
//   - ReadShare: how much of the prompt the upstream actually served from its cache.
//
// A Store is safe for concurrent use and bounded in memory: each table forgets entries idle
// for an hour once it is full, and starts over if that is not enough.
package evidence

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// Tuning of the levers' decisions. Each is a measured quantity, not a guess about a provider.
const (
	// NaturalSamples is how many natural answer lengths are kept per target; MinNatural how
	// many must be seen before a learned cap replaces the default.
	NaturalSamples = 256
	MinNatural     = 32
	// CapFloor is the smallest learned cap: short answers say little about a longer one.
	CapFloor = 1024

	// ShardRate is the per-minute rate of one prompt_cache_key above which OpenAI documents
	// overflow to other machines (tokenopt.md §1.1). Below it a key is never sharded.
	ShardRate = 15
	// MaxShards bounds the shards of one key.
	MaxShards = 16
	// keyWarmFor is how long a key's prefix is expected to stay cached after a request
	// (OpenAI's in-memory retention is 5–10 minutes; the shorter end is the safe one).
	keyWarmFor = 5 * time.Minute
	// keyWindow is how many warm observations one sharding decision looks at.
	keyWindow = 16
	// overflowShare: a warm key whose cached share of its prefix falls below this has
	// overflowed (or lost its cache); helpedBy is the improvement a trial must show.
	overflowShare = 0.5
	helpedBy      = 0.15
	// shardBackoff is the first pause before trying to shard a key again after a trial that
	// did not help; it doubles up to a day.
	shardBackoff    = 30 * time.Minute
	maxShardBackoff = 24 * time.Hour

	// markerWindow: cache markers are judged over this many requests that carried them;
	// markerStandDown is how long they stay off after they did not pay.
	markerWindow    = 8
	markerStandDown = 15 * time.Minute

	maxEntries = 1 << 14
	idleAfter  = time.Hour
)

// Observation is one answered request: what the levers did and what the upstream reported.
type Observation struct {
	Workspace, Model string
	// Price is the target model's catalog entry (cache economics); zero when unknown.
	Price catalog.Price

	// Markers counts the cache_control markers the gateway added (0 when the caller set its
	// own or none were placed). PrefixMarked and ConvMarked say which kinds were among them:
	// on the stable prefix (tools, system) and on the conversation (the rolling last message,
	// the previous turn's end, intermediates); MarkedPrefixShare is the part of the prompt up
	// to the last prefix marker, by the gateway's estimate, which splits what the upstream
	// reported between the two.
	Markers                  int
	PrefixMarked, ConvMarked bool
	MarkedPrefixShare        float64
	// CacheKey is the prompt_cache_key base the gateway derived ("" when it set none), and
	// KeyWarm whether that key had been used recently enough for its prefix to be cached.
	CacheKey string
	KeyWarm  bool
	// PrefixShare is the part of the prompt the stable prefix (tools and system) takes, by the
	// gateway's estimate: the share a warm cache should serve at least.
	PrefixShare float64
	// MinCacheTokens is the upstream's smallest cacheable prefix (0: 1024).
	MinCacheTokens int64

	// GatewayCap is the output cap the gateway set (0: the caller gave one, or none was set).
	// CallerCapped is set when the caller gave its own cap.
	GatewayCap   int64
	CallerCapped bool

	// What the upstream reported.
	Prompt, CacheRead, CacheWrite5m, CacheWrite1h, Output int64
	Finish                                                string
	// EmptyContent: the answer carried no text and no tool call.
	EmptyContent bool
}

// Outcome says what one observation showed.
type Outcome struct {
	// CutByGateway: the answer stopped at the cap the gateway set.
	CutByGateway bool
	// EmptyLength: ... and had produced nothing by then.
	EmptyLength bool
}

// Stats is a snapshot of one target's record.
type Stats struct {
	Requests                                 int64
	Prompt, CacheRead, CacheWrite, Output    int64
	Stops, Lengths, GatewayCuts, EmptyLength int64
	Natural                                  int // natural answer lengths seen (up to NaturalSamples kept)
	// Prefix and Conv are the two kinds of cache markers' accounts.
	Prefix, Conv MarkerAccount
}

// MarkerAccount is what one kind of cache marker earned: reads at the cached rate instead of
// the input rate, less the premium its writes paid over the input rate.
type MarkerAccount struct {
	Requests   int
	NetMicros  int64
	StandingBy bool // stood down: not placed until Until
	Until      time.Time
	StandDowns int
}

// KeyStats is a snapshot of one prompt_cache_key's sharding state.
type KeyStats struct {
	Shards   int
	Trial    bool
	Rate     int
	Share    float64 // cached share of the expected prefix in the current window (-1: none yet)
	Baseline float64 // share before the current or last trial
	Trials   int
	Undone   int // trials that did not help
}

// Store is the evidence record. The zero value is not usable: call New.
type Store struct {
	now func() time.Time

	mu       sync.Mutex
	targets  map[targetKey]*target
	keys     map[string]*keyState
	prefixes map[string]*reuse
}

// New returns an empty store on the wall clock.
func New() *Store {
	return &Store{now: time.Now, targets: map[targetKey]*target{}, keys: map[string]*keyState{}, prefixes: map[string]*reuse{}}
}

// SetClock replaces the clock, for simulations that run in virtual time (the savings
// benchmark drives the gateway and the simulated upstream from one clock).
func (s *Store) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

type targetKey struct{ workspace, model string }

type target struct {
	last time.Time
	Stats
	// samples are the latest answer lengths: natural ones, and answers the gateway's cap cut,
	// stored negated (censored: the answer would have been at least that long).
	samples  [NaturalSamples]int32
	nSamples int
	nNatural int
	capAt    int  // nSamples when learned was computed
	cutSince bool // a censored sample came in since
	learned  int64
}

// target returns the record for (ws, model), creating it. Callers hold s.mu.
func (s *Store) target(ws, model string, now time.Time) *target {
	k := targetKey{ws, model}
	t, ok := s.targets[k]
	if !ok {
		if len(s.targets) >= maxEntries {
			evictIdle(s.targets, now, func(t *target) time.Time { return t.last })
		}
		t = &target{}
		s.targets[k] = t
	}
	t.last = now
	return t
}

// evictIdle drops entries idle for idleAfter, or everything when that frees nothing.
func evictIdle[K comparable, V any](m map[K]V, now time.Time, last func(V) time.Time) {
	for k, v := range m {
		if now.Sub(last(v)) > idleAfter {
			delete(m, k)
		}
	}
	if len(m) >= maxEntries {
		clear(m)
	}
}

// Observe records one answered request and feeds the decisions that depend on it.
func (s *Store) Observe(o Observation) Outcome {
	var out Outcome
	capped := o.GatewayCap > 0
	if o.Finish == "length" && capped {
		out.CutByGateway = true
		out.EmptyLength = o.EmptyContent
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	t := s.target(o.Workspace, o.Model, now)
	t.Requests++
	t.Prompt += o.Prompt
	t.CacheRead += o.CacheRead
	t.CacheWrite += o.CacheWrite5m + o.CacheWrite1h
	t.Output += o.Output
	switch o.Finish {
	case "stop":
		t.Stops++
		// Only answers nobody but the gateway could have capped describe the traffic the
		// learned cap applies to; a caller's own cap shapes its answers.
		if !o.CallerCapped && o.Output > 0 {
			t.push(int32(min(o.Output, 1<<30)))
			t.nNatural++
			t.Natural = min(t.nNatural, NaturalSamples)
		}
	case "length":
		t.Lengths++
	}
	if out.CutByGateway {
		t.GatewayCuts++
		// The cap said nothing about how long the answer wanted to be, only that it was
		// longer: a learned cap that cuts answers must give way (OutputCap).
		t.push(-int32(min(o.GatewayCap, 1<<30)))
		t.cutSince = true
	}
	if out.EmptyLength {
		t.EmptyLength++
	}
	if o.Markers > 0 {
		t.observeMarkers(o, now)
	}
	if o.CacheKey != "" {
		s.observeKey(o, now)
	}
	return out
}

// observeMarkers splits one request's cache usage between its prefix and conversation
// markers and adds each part's economics to its account. Reads come from the front of the
// prompt: up to the last prefix marker they are the prefix markers' doing, past it the
// conversation markers'. Writes run from where the read ended to the last marker.
func (t *target) observeMarkers(o Observation, now time.Time) {
	p := o.Price
	if p.Input <= 0 {
		return // unpriced: nothing to judge by
	}
	write := o.CacheWrite5m + o.CacheWrite1h
	a := int64(0) // tokens up to the last prefix marker
	switch {
	case o.PrefixMarked && o.ConvMarked:
		a = int64(o.MarkedPrefixShare * float64(o.Prompt))
	case o.PrefixMarked:
		a = o.Prompt
	}
	prefixRead := min(o.CacheRead, a)
	prefixWrite := min(max(a-o.CacheRead, 0), write)
	// The premium of a write over plain input, per token (the 1h share at its own rate).
	premium := func(w int64) int64 {
		if write == 0 {
			return 0
		}
		w1 := w * o.CacheWrite1h / write
		return (w-w1)*int64(max(p.CacheWrite5m-p.Input, 0)) + w1*int64(max(p.CacheWrite1h-p.Input, 0))
	}
	saved := int64(p.Input - p.CachedInput)
	if o.PrefixMarked {
		t.Prefix.add(prefixRead*saved-premium(prefixWrite), now)
	}
	if o.ConvMarked {
		t.Conv.add((o.CacheRead-prefixRead)*saved-premium(write-prefixWrite), now)
	}
}

func (m *MarkerAccount) add(net int64, now time.Time) {
	m.Requests++
	m.NetMicros += net / 1_000_000
	if m.Requests >= markerWindow && m.NetMicros <= 0 {
		m.StandingBy, m.Until = true, now.Add(markerStandDown)
		m.StandDowns++
		m.Requests, m.NetMicros = 0, 0
	}
	if m.Requests >= 8*markerWindow { // a decaying window: old evidence weighs half
		m.Requests /= 2
		m.NetMicros /= 2
	}
}

// on reports whether markers of this kind may be placed, ending a stand-down that is over.
func (m *MarkerAccount) on(now time.Time) bool {
	if m.StandingBy && !now.Before(m.Until) {
		m.StandingBy = false
	}
	return !m.StandingBy
}

// MarkersPay reports which kinds of cache markers the gateway should add for (ws, model):
// each kind until it has been seen not to pay, then not for a while, then again to
// re-measure.
func (s *Store) MarkersPay(ws, model string) (prefix, conv bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[targetKey{ws, model}]
	if !ok {
		return true, true
	}
	now := s.now()
	return t.Prefix.on(now), t.Conv.on(now)
}

func (t *target) push(v int32) {
	t.samples[t.nSamples%NaturalSamples] = v
	t.nSamples++
}

// OutputCap is the cap for a request to (ws, model) that gave none: def until MinNatural
// answers finished on their own, then the 99th percentile of the latest answer lengths × 1.5
// (at least CapFloor), and never above modelMax (when known). learned says which.
//
// Answers the gateway's cap cut are in the percentile at the cap they hit: when more than 1%
// of answers are cut, the cap grows by half at each look, up to def (or to where it already
// was, if natural answers had taken it above def), so a learned cap never keeps cutting answers
// that the default would have let finish, while a runaway answer cannot raise it past def.
func (s *Store) OutputCap(ws, model string, def, modelMax int64) (cap int64, learned bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[targetKey{ws, model}]
	if !ok || t.nNatural < MinNatural {
		return def, false
	}
	// The percentile is recomputed every 16 new samples or after a cut, not on every request.
	if t.learned == 0 || t.nSamples-t.capAt >= 16 || t.cutSince {
		n := min(t.nSamples, NaturalSamples)
		xs := make([]int32, n)
		copy(xs, t.samples[:n])
		slices.SortFunc(xs, func(a, b int32) int { return cmp.Compare(abs32(a), abs32(b)) })
		margin := func(v int64) int64 { return (v*3/2 + 255) / 256 * 256 }
		// What the natural answers alone justify...
		var c int64
		natural := slices.DeleteFunc(slices.Clone(xs), func(v int32) bool { return v < 0 })
		if len(natural) > 0 {
			c = margin(int64(natural[(len(natural)*99+99)/100-1]))
		}
		// ...and, when the percentile over all answers is a cut one, half again toward def.
		if at := xs[(n*99+99)/100-1]; at < 0 {
			v := int64(-at)
			c = max(c, min(margin(v), max(v, def)))
		}
		t.learned, t.capAt, t.cutSince = max(c, CapFloor), t.nSamples, false
	}
	c := t.learned
	if modelMax > 0 {
		c = min(c, modelMax)
	}
	return c, true
}

// Stats returns a snapshot of (ws, model)'s record.
func (s *Store) Stats(ws, model string) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.targets[targetKey{ws, model}]; ok {
		return t.Stats
	}
	return Stats{}
}

// ReadShare is the share of prompt tokens (ws, model)'s upstream served from its cache, and
// whether enough traffic was seen to say.
func (s *Store) ReadShare(ws, model string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[targetKey{ws, model}]
	if !ok || t.Requests < 4 || t.Prompt <= 0 {
		return 0, false
	}
	return float64(t.CacheRead) / float64(t.Prompt+t.CacheWrite), true
}

// reuse tracks one prefix's reuse gaps.
type reuse struct {
	last    time.Time
	longGap bool
}

// LongGap records a use of a cacheable prefix and reports whether it has been reused after
// gaps longer than 5 minutes (but within an hour), where a 1h TTL keeps the entry alive and
// 5m would not.
func (s *Store) LongGap(key []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e, seen := s.prefixes[string(key)] // no allocation: only a new entry copies the key
	if !seen {
		if len(s.prefixes) >= maxEntries {
			evictIdle(s.prefixes, now, func(r *reuse) time.Time { return r.last })
		}
		e = &reuse{}
		s.prefixes[string(key)] = e
	} else {
		switch gap := now.Sub(e.last); {
		case gap > time.Hour:
			e.longGap = false
		case gap > 5*time.Minute:
			e.longGap = true
		}
	}
	e.last = now
	return e.longGap
}

// Default is the process-wide record the handlers use. It lives as long as the process, so
// what was learned survives config reloads (like the token calibrations).
var Default = New()

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}
