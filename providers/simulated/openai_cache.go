package simulated

import (
	"sync"
	"time"
)

// OpenAICache selects how the OpenAI side scopes its automatic prefix cache. OpenAI documents
// that prompt_cache_key "is combined with the prefix hash" to route a request to a machine,
// and that above about 15 requests a minute for one prefix+key combination requests overflow
// to other machines and miss (tokenopt.md §1.1). The models below bracket that description,
// so a gateway's use of the key can be shown to win or to lose:
type OpenAICache string

const (
	// CacheByKey (the default) scopes the cache by API key and prompt_cache_key, with no
	// capacity limit: a key never overflows, and a new key (or a new shard of one) starts cold.
	CacheByKey OpenAICache = "key"
	// CacheOverflow gives each machine its own cache. A request is routed by its API key,
	// prompt_cache_key and the hash of its first 256 tokens to a home machine; while that route
	// has seen more than MachineRPM requests in the last minute, the excess spills to other
	// machines, which serve their own routes: a spilled request misses, and what it computed
	// is not kept.
	CacheOverflow OpenAICache = "overflow"
	// CacheOverflowIgnoresKey is CacheOverflow on an upstream that routes by the prefix alone,
	// as an OpenAI-compatible server that does not know prompt_cache_key would: sharding the key
	// changes nothing there.
	CacheOverflowIgnoresKey OpenAICache = "overflow-ignores-key"
)

// Defaults of the overflow models.
const (
	DefaultMachines   = 64 // home machines: routes that share one share its cache
	DefaultMachineRPM = 15
	// routeHeadBytes is the prefix that picks the machine: about 256 tokens.
	routeHeadBytes = 1024
)

// SetOpenAICache switches the OpenAI cache model (and clears the OpenAI cache).
func (s *Server) SetOpenAICache(m OpenAICache) {
	s.routes.mu.Lock()
	s.routes.mode = m
	clear(s.routes.m)
	s.routes.mu.Unlock()
	s.cache.reset()
}

// CacheKeys counts the chat requests received per prompt_cache_key ("" for none).
func (s *Server) CacheKeys() map[string]int {
	s.routes.mu.Lock()
	defer s.routes.mu.Unlock()
	out := make(map[string]int, len(s.routes.keys))
	for k, v := range s.routes.keys {
		out[k] = v
	}
	return out
}

// cacheRoutes is the OpenAI side's routing state.
type cacheRoutes struct {
	mu       sync.Mutex
	mode     OpenAICache
	machines int
	rpm      int
	m        map[uint64]*routeRate
	keys     map[string]int
}

// routeRate keeps the times of a route's last MachineRPM admitted requests.
type routeRate struct {
	times []int64
	n     int
}

const maxRoutes = 1 << 16

// scope returns the cache scope of one request (the hash its prefix entries are stored
// under), or spilled when the request overflowed its route and can use no cache.
func (c *cacheRoutes) scope(apiKey, cacheKey string, canon []byte, now time.Time) (scope uint64, spilled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]int{}
	}
	if len(c.keys) < maxRoutes {
		c.keys[cacheKey]++
	}
	acct := fnvString(fnvOffset, apiKey)
	switch c.mode {
	case CacheOverflow, CacheOverflowIgnoresKey:
	default:
		return mix64(fnvString(acct^0x6b, cacheKey)), false
	}
	route := acct
	if c.mode == CacheOverflow {
		route = fnvString(route^0x6b, cacheKey)
	}
	route = mix64(fnvBytes(route, canon[:min(len(canon), routeHeadBytes)]))
	if c.m == nil || len(c.m) >= maxRoutes {
		c.m = map[uint64]*routeRate{}
	}
	r := c.m[route]
	if r == nil {
		r = &routeRate{times: make([]int64, c.rpm)}
		c.m[route] = r
	}
	t := now.UnixNano()
	inMinute := 0
	for i := range min(r.n, len(r.times)) {
		if t-r.times[i] < int64(time.Minute) {
			inMinute++
		}
	}
	if inMinute >= c.rpm {
		return 0, true // the home machine is busy with this route's last minute
	}
	r.times[r.n%len(r.times)] = t
	r.n++
	machine := route % uint64(c.machines)
	return mix64(acct ^ (machine + 1)), false
}
