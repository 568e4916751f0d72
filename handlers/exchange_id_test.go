package handlers

import (
	"testing"
	"time"
)

func TestRequestIDsSortByTime(t *testing.T) {
	base := time.UnixMilli(1_790_000_000_000)
	prev := requestIDAt(base)
	for i := 1; i < 2000; i++ {
		id := requestIDAt(base.Add(time.Duration(i) * time.Millisecond))
		if len(id) != len(prev) {
			t.Fatalf("id length changed: %q vs %q", id, prev)
		}
		if id <= prev {
			t.Fatalf("id %q made %d ms later sorts before %q", id, i, prev)
		}
		prev = id
	}
	seen := map[string]bool{}
	for range 10000 {
		id := requestIDAt(base)
		if seen[id] {
			t.Fatalf("duplicate id %q within one millisecond", id)
		}
		seen[id] = true
	}
}
