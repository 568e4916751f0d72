package evidence

import (
	"fmt"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

func clocked() (*Store, *time.Time) {
	now := time.Unix(1_800_000_000, 0)
	s := New()
	s.SetClock(func() time.Time { return now })
	return s, &now
}

func TestOutputCapLearnsFromNaturalAnswers(t *testing.T) {
	s, _ := clocked()
	const def, modelMax = 4096, 64000
	if c, learned := s.OutputCap("ws", "m", def, modelMax); c != def || learned {
		t.Fatalf("no evidence: %d %v", c, learned)
	}
	// Answers cut by the caller's own cap, or by a length limit, say nothing about natural length.
	for range 100 {
		s.Observe(Observation{Workspace: "ws", Model: "m", CallerCapped: true, Output: 9000, Finish: "stop"})
		s.Observe(Observation{Workspace: "ws", Model: "m", GatewayCap: def, Output: def, Finish: "length"})
	}
	if c, learned := s.OutputCap("ws", "m", def, modelMax); c != def || learned {
		t.Fatalf("caller-capped and cut answers must not teach: %d %v", c, learned)
	}
	cases := []struct {
		name   string
		output func(i int) int64
		want   int64
	}{
		{"short answers: floor", func(i int) int64 { return 100 + int64(i) }, CapFloor},
		{"long answers raise it", func(i int) int64 { return 5000 + int64(i%10) }, 7680},
		{"clamped to the model maximum", func(i int) int64 { return 60000 }, modelMax},
	}
	for _, c := range cases {
		ws := c.name
		for i := range MinNatural - 1 {
			s.Observe(Observation{Workspace: ws, Model: "m", GatewayCap: def, Output: c.output(i), Finish: "stop"})
		}
		if got, learned := s.OutputCap(ws, "m", def, modelMax); got != def || learned {
			t.Errorf("%s: learned from %d samples: %d", c.name, MinNatural-1, got)
		}
		s.Observe(Observation{Workspace: ws, Model: "m", GatewayCap: def, Output: c.output(MinNatural), Finish: "stop"})
		if got, learned := s.OutputCap(ws, "m", def, modelMax); got != c.want || !learned {
			t.Errorf("%s: cap %d (learned %v), want %d", c.name, got, learned, c.want)
		}
		// Another workspace on the same model learns nothing from this one.
		if got, learned := s.OutputCap("other "+ws, "m", def, modelMax); got != def || learned {
			t.Errorf("%s: leaked to another workspace: %d", c.name, got)
		}
	}
}

// TestLearnedCapGivesWayToCuts: a learned cap that starts cutting answers (the workspace's
// traffic changed) grows back to the default, and cuts alone never take it past the default
// nor lower a cap that natural answers raised above it.
func TestLearnedCapGivesWayToCuts(t *testing.T) {
	s, _ := clocked()
	const def, modelMax = 4096, 64000
	for range 100 {
		s.Observe(Observation{Workspace: "short", Model: "m", GatewayCap: def, Output: 200, Finish: "stop"})
	}
	c, learned := s.OutputCap("short", "m", def, modelMax)
	if c != CapFloor || !learned {
		t.Fatalf("short answers: cap %d %v", c, learned)
	}
	var seen []int64
	for range 40 { // every answer now runs into the learned cap
		s.Observe(Observation{Workspace: "short", Model: "m", GatewayCap: c, Output: c, Finish: "length"})
		c, _ = s.OutputCap("short", "m", def, modelMax)
		seen = append(seen, c)
	}
	if c != def {
		t.Fatalf("cut answers: the cap went %v, want it back at %d", seen, def)
	}

	for range 100 {
		s.Observe(Observation{Workspace: "long", Model: "m", GatewayCap: def, Output: 5000, Finish: "stop"})
	}
	long, _ := s.OutputCap("long", "m", def, modelMax)
	if long <= def {
		t.Fatalf("long natural answers: cap %d", long)
	}
	for range 10 {
		s.Observe(Observation{Workspace: "long", Model: "m", GatewayCap: long, Output: long, Finish: "length"})
		if c, _ := s.OutputCap("long", "m", def, modelMax); c != long {
			t.Fatalf("a runaway at a learned cap of %d moved it to %d", long, c)
		}
	}
}

func TestCutsAreCounted(t *testing.T) {
	s, _ := clocked()
	for _, c := range []struct {
		o         Observation
		cut, empt bool
	}{
		{Observation{GatewayCap: 4096, Finish: "length", Output: 4096}, true, false},
		{Observation{GatewayCap: 4096, Finish: "length", EmptyContent: true}, true, true},
		{Observation{CallerCapped: true, Finish: "length"}, false, false},
		{Observation{GatewayCap: 4096, Finish: "stop"}, false, false},
	} {
		c.o.Workspace, c.o.Model = "ws", "m"
		if got := s.Observe(c.o); got.CutByGateway != c.cut || got.EmptyLength != c.empt {
			t.Errorf("%+v: %+v", c.o, got)
		}
	}
	if st := s.Stats("ws", "m"); st.GatewayCuts != 2 || st.EmptyLength != 1 || st.Lengths != 3 || st.Requests != 4 {
		t.Fatalf("%+v", st)
	}
}

var claude = catalog.Price{Input: 3_000_000, CachedInput: 300_000, CacheWrite5m: 3_750_000, CacheWrite1h: 6_000_000}

func TestMarkersStandDownWhereTheyDoNotPay(t *testing.T) {
	s, now := clocked()
	obs := func(ws string, read, w5 int64) {
		s.Observe(Observation{Workspace: ws, Model: "c", Price: claude, Markers: 2, PrefixMarked: true, ConvMarked: true,
			MarkedPrefixShare: 0.5, Prompt: 10000, CacheRead: read, CacheWrite5m: w5})
	}
	// Both kinds pay: each request reads what the one before wrote.
	for range 20 {
		obs("ws", 9500, 500)
	}
	if p, c := s.MarkersPay("ws", "c"); !p || !c {
		t.Fatalf("markers that are read back must stay: %v %v", p, c)
	}
	// An upstream that reads only at the marked positions the previous request also marked:
	// the prefix is read, the conversation is written again every time.
	for range markerWindow {
		obs("bedrock-like", 5000, 5000)
	}
	if p, c := s.MarkersPay("bedrock-like", "c"); !p || c {
		t.Fatalf("want the prefix kept and the conversation markers stood down: %v %v", p, c)
	}
	// One-shot traffic: every marker writes, nothing is ever read.
	for range markerWindow {
		obs("one-shot", 0, 10000)
	}
	if p, c := s.MarkersPay("one-shot", "c"); p || c {
		t.Fatalf("markers whose writes are never read must stand down: %v %v", p, c)
	}
	if p, c := s.MarkersPay("ws", "c"); !p || !c {
		t.Fatal("another workspace's evidence must not stand this one down")
	}
	*now = now.Add(markerStandDown + time.Second)
	if p, c := s.MarkersPay("one-shot", "c"); !p || !c {
		t.Fatal("after the stand-down the markers are measured again")
	}
	// Unpriced targets are not judged.
	for range 3 * markerWindow {
		s.Observe(Observation{Workspace: "ws3", Model: "x", Markers: 1, PrefixMarked: true, Prompt: 3000, CacheWrite5m: 3000})
	}
	if p, _ := s.MarkersPay("ws3", "x"); !p {
		t.Fatal("no price, no verdict")
	}
}

// upstream models a cache for the sharding tests: given the shards a key has, what share of
// the prefix comes back cached.
type upstream func(shards int) float64

// drive sends n requests at the given per-minute rate under key and reports the shard counts
// the store chose, request by request.
func drive(s *Store, now *time.Time, key string, n, perMinute int, up upstream) []int {
	out := make([]int, n)
	for i := range n {
		*now = now.Add(time.Minute / time.Duration(perMinute))
		tk := s.Shards([]byte(key))
		out[i] = tk.Shards
		prompt := int64(10000)
		s.Observe(Observation{Workspace: "ws", Model: "gpt", CacheKey: key, KeyWarm: tk.Warm, PrefixShare: 0.8,
			Prompt: prompt, CacheRead: int64(up(tk.Shards) * 8000)})
	}
	return out
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func TestShardingFollowsEvidence(t *testing.T) {
	cases := []struct {
		name      string
		rate      int
		up        upstream
		wantSplit bool // shards in use at the end
		wantTried bool
	}{
		// OpenAI's cache scoped by (key, prompt_cache_key): hits stay, however busy the key.
		{"hits hold at a high rate", 60, func(int) float64 { return 1 }, false, false},
		// Overflow above 15/min: one key loses its hits, shards under the rate keep them.
		{"overflow, shards help", 60, func(n int) float64 {
			if n*ShardRate >= 60 {
				return 1
			}
			return 0.2
		}, true, true},
		// Hits fall for a reason sharding does not fix (the upstream evicts, or ignores the
		// key): the trial is undone.
		{"hits fall, shards do not help", 60, func(int) float64 { return 0.2 }, false, true},
		// A quiet key with poor hits is not the overflow sharding fixes.
		{"quiet key", 10, func(int) float64 { return 0.2 }, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, now := clocked()
			shards := drive(s, now, "btl-k", 200, c.rate, c.up)
			ks := s.KeyStats("btl-k")
			if got := shards[len(shards)-1] > 1; got != c.wantSplit {
				t.Errorf("split at the end: %v, want %v (%+v)", got, c.wantSplit, ks)
			}
			if tried := maxOf(shards) > 1; tried != c.wantTried {
				t.Errorf("tried: %v, want %v (%+v)", tried, c.wantTried, ks)
			}
			for i := range keyWindow {
				if shards[i] > 1 {
					t.Fatalf("request %d sharded before a full window of evidence", i)
				}
			}
			if c.wantTried && !c.wantSplit && (ks.Undone == 0 || ks.Trials != 1) {
				t.Errorf("a trial that did not help must be undone and not retried at once: %+v", ks)
			}
		})
	}
}

func TestBounded(t *testing.T) {
	s, now := clocked()
	for i := range maxEntries + 10 {
		*now = now.Add(time.Millisecond)
		s.Observe(Observation{Workspace: fmt.Sprint(i), Model: "m", Finish: "stop", Output: 1})
		s.Shards([]byte(fmt.Sprint(i)))
		s.LongGap([]byte(fmt.Sprint(i)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.targets) > maxEntries || len(s.keys) > maxEntries || len(s.prefixes) > maxEntries {
		t.Fatalf("unbounded: %d %d %d", len(s.targets), len(s.keys), len(s.prefixes))
	}
}

// BenchmarkRequest is the evidence work of one request: the lookups the plan and the budget
// make, and the observation on completion.
func BenchmarkRequest(b *testing.B) {
	s := New()
	key := []byte("btl-0123456789abcdef")
	o := Observation{Workspace: "ws_bench", Model: "claude-sonnet-4-5", Price: claude, Markers: 2, PrefixMarked: true, ConvMarked: true,
		MarkedPrefixShare: 0.5, Prompt: 10000, CacheRead: 9000, CacheWrite5m: 500, GatewayCap: 4096, Output: 300, Finish: "stop"}
	b.ReportAllocs()
	for b.Loop() {
		s.MarkersPay(o.Workspace, o.Model)
		s.LongGap(key)
		s.Shards(key)
		s.OutputCap(o.Workspace, o.Model, 4096, 64000)
		s.Observe(o)
	}
}
