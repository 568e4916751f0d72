package providers

import (
	"net/http"
	"testing"
	"time"
)

func TestKeyPool(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewKeyPool([]string{"a", "b", "c"}, []int{2, 1, 1})
	p.now = func() time.Time { return now }
	counts := map[string]int{}
	for i := range 4000 {
		_, k := p.Pick(uint64(i) * 0x9e3779b97f4a7c15)
		counts[k]++
	}
	if r := float64(counts["a"]) / 4000; r < 0.45 || r > 0.55 {
		t.Fatalf("weight 2:1:1 gave a=%.2f (%v)", r, counts)
	}
	// Affinity is stable.
	i1, _ := p.Pick(42)
	i2, _ := p.Pick(42)
	if i1 != i2 {
		t.Fatal("affinity not stable")
	}
	// A 429 with Retry-After cools the key; the conversation moves, then comes back.
	p.Observe(i1, http.StatusTooManyRequests, http.Header{"Retry-After": {"2"}})
	if j, _ := p.Pick(42); j == i1 {
		t.Fatal("picked a cooling key")
	}
	now = now.Add(3 * time.Second)
	if j, _ := p.Pick(42); j != i1 {
		t.Fatal("key did not recover")
	}
	// Exhausted rate-limit headers cool until the reset.
	p.Observe(0, 200, http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"1s"}})
	for i := range 100 {
		if j, _ := p.Pick(uint64(i)); j == 0 {
			t.Fatal("exhausted key picked")
		}
	}
	// All cooling: the soonest to recover.
	p.Observe(1, 401, nil)
	p.Observe(2, 429, http.Header{"Retry-After": {"30"}})
	if j, _ := p.Pick(7); j != 0 {
		t.Fatalf("want the soonest key, got %d", j)
	}
}
