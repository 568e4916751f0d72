package routing

import (
	"sync"
	"time"
)

// stickiness remembers which target served a conversation last and how large its prompt was,
// so the next turn can go where the provider's prompt cache is warm. Entries expire with the
// target's cache TTL; the map is bounded.
type stickiness struct {
	mu  sync.Mutex
	m   map[uint64]stickyEntry
	max int
}

type stickyEntry struct {
	target       string
	until        time.Time
	promptTokens int64
}

func newStickiness(max int) *stickiness {
	return &stickiness{m: make(map[uint64]stickyEntry), max: max}
}

func (s *stickiness) get(conv uint64, now time.Time) (stickyEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[conv]
	if !ok || now.After(e.until) {
		return stickyEntry{}, false
	}
	return e, true
}

func (s *stickiness) put(conv uint64, e stickyEntry, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		// Drop expired entries first; if none, an arbitrary tenth (map order is random).
		n := 0
		for k, v := range s.m {
			if now.After(v.until) {
				delete(s.m, k)
				n++
			}
		}
		for k := range s.m {
			if n >= s.max/10 {
				break
			}
			delete(s.m, k)
			n++
		}
	}
	s.m[conv] = e
}

// process-wide, like health: a reload must not make every conversation cold.
var sticky = newStickiness(1 << 18)
