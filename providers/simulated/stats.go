package simulated

import (
	"sync"
	"sync/atomic"
)

// Stats are the simulator's counters since New or Reset.
type Stats struct {
	// Requests counts chat-completion requests received, whatever their outcome.
	Requests int64 `json:"requests"`
	// StreamRequests counts those that asked for a stream (and parsed).
	StreamRequests int64 `json:"stream_requests"`
	// Answered counts requests that got a completion (stream started or body written).
	Answered int64 `json:"answered"`
	// Rejected counts validation failures (400, 401, 413).
	Rejected int64 `json:"rejected"`
	// Token totals of answered requests; PromptTokens includes CachedTokens.
	PromptTokens     int64 `json:"prompt_tokens"`
	CachedTokens     int64 `json:"cached_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	// ErrorsInjected counts faults from directives and random rates. Faults breaks them
	// down by kind ("status_503", "cut", "stream_error") and also counts holds ("hold"),
	// which are not errors.
	ErrorsInjected int64            `json:"errors_injected"`
	Faults         map[string]int64 `json:"faults"`
	// Keys breaks answered requests down by API key ("" when none was sent).
	Keys map[string]KeyStats `json:"keys"`
	// CacheEntries is the current number of prefix-cache boundary entries.
	CacheEntries int `json:"cache_entries"`
}

// KeyStats is the per-API-key part of Stats.
type KeyStats struct {
	Requests         int64 `json:"requests"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CachedTokens     int64 `json:"cached_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

type statsCounters struct {
	requests, streams, answered, rejected atomic.Int64
	prompt, cached, completion            atomic.Int64
	injected                              atomic.Int64

	mu     sync.Mutex
	keys   map[string]*KeyStats
	faults map[string]int64
}

func (c *statsCounters) answer(key string, prompt, cached, completion int) {
	c.answered.Add(1)
	c.prompt.Add(int64(prompt))
	c.cached.Add(int64(cached))
	c.completion.Add(int64(completion))
	c.mu.Lock()
	k := c.keys[key]
	if k == nil {
		k = &KeyStats{}
		c.keys[key] = k
	}
	k.Requests++
	k.PromptTokens += int64(prompt)
	k.CachedTokens += int64(cached)
	k.CompletionTokens += int64(completion)
	c.mu.Unlock()
}

func (c *statsCounters) fault(kind string) {
	c.injected.Add(1)
	c.note(kind)
}

// note counts an event by kind without counting it as an injected error.
func (c *statsCounters) note(kind string) {
	c.mu.Lock()
	if c.faults == nil {
		c.faults = map[string]int64{}
	}
	c.faults[kind]++
	c.mu.Unlock()
}

func (c *statsCounters) reset() {
	for _, a := range []*atomic.Int64{&c.requests, &c.streams, &c.answered, &c.rejected, &c.prompt, &c.cached, &c.completion, &c.injected} {
		a.Store(0)
	}
	c.mu.Lock()
	c.keys = map[string]*KeyStats{}
	c.faults = nil
	c.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		Requests:         c.requests.Load(),
		StreamRequests:   c.streams.Load(),
		Answered:         c.answered.Load(),
		Rejected:         c.rejected.Load(),
		PromptTokens:     c.prompt.Load(),
		CachedTokens:     c.cached.Load(),
		CompletionTokens: c.completion.Load(),
		ErrorsInjected:   c.injected.Load(),
		Faults:           map[string]int64{},
		Keys:             map[string]KeyStats{},
		CacheEntries:     s.cache.len(),
	}
	c.mu.Lock()
	for k, v := range c.keys {
		st.Keys[k] = *v
	}
	for k, v := range c.faults {
		st.Faults[k] = v
	}
	c.mu.Unlock()
	return st
}
