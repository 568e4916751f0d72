package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A reload gives every config a fresh registry: the same collectors go into each, and the
// counts carry on.
func TestRegisterEachRegistryCountersContinue(t *testing.T) {
	s := newSet()
	r1 := prometheus.NewPedanticRegistry()
	if err := s.Register(r1); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(r1); err != nil {
		t.Fatalf("second registration into the same registry: %v", err)
	}
	s.SetLedgerSource(func() LedgerStats { return LedgerStats{PendingRows: 7, SpoolBytes: 4096, InsertErrors: 2} })
	req := Request{Provider: "openai", ModelClass: "btl-fast", Status: 200, CacheOutcome: "hit",
		Tokens: [6]int64{10, 20, 0, 0, 5, 1}, CostMicros: 1500, BaselineMicros: 2000, Savings: [7]int64{400, 100},
		Latency: 300 * time.Millisecond, TTFT: 80 * time.Millisecond, Upstream: true}
	s.Observe(req)
	s.Observe(Request{Status: 404, ModelClass: "pinned"})
	s.CreditRefused()

	r2 := prometheus.NewPedanticRegistry()
	if err := s.Register(r2); err != nil {
		t.Fatal(err)
	}
	s.Observe(req)
	for _, reg := range []*prometheus.Registry{r1, r2} {
		if n, err := testutil.GatherAndCount(reg, "btl_requests_total"); err != nil || n != 2 {
			t.Fatalf("request series: %d %v", n, err)
		}
	}
	checks := []struct {
		c    prometheus.Collector
		want float64
	}{
		{s.requests.WithLabelValues("openai", "btl-fast", "2xx"), 2},
		{s.requests.WithLabelValues("none", "pinned", "4xx"), 1},
		{s.tokens.WithLabelValues("cache_read"), 40},
		{s.cost.WithLabelValues("openai"), 3000},
		{s.baseline.WithLabelValues("openai"), 4000},
		{s.savings.WithLabelValues("prompt_cache"), 800},
		{s.savings.WithLabelValues("response_cache"), 200},
		{s.cache.WithLabelValues("hit"), 2},
		{s.refused, 1},
		{s.pending, 7},
		{s.spool, 4096},
		{s.insertErrs, 2},
	}
	for i, c := range checks {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("check %d: %v, want %v", i, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(s.latency); n != 1 {
		t.Errorf("latency series: %d", n)
	}
}

func TestStatusClass(t *testing.T) {
	for status, want := range map[int]string{200: "2xx", 402: "4xx", 499: "4xx", 503: "5xx", 0: "other", 1000: "other"} {
		if got := StatusClass(status); got != want {
			t.Errorf("StatusClass(%d) = %s, want %s", status, got, want)
		}
	}
}

func TestDefaultIsOnePerProcess(t *testing.T) {
	first, second := Default(), Default()
	if first != second || first == nil {
		t.Fatal("Default made two sets")
	}
}
