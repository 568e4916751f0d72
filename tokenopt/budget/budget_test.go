package budget

import (
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/tokenopt/evidence"
)

func TestApply(t *testing.T) {
	cat := catalog.Default()
	price := func(m string) catalog.Price { p, _ := cat.Lookup(m); return p }
	cases := []struct {
		name, body string
		t          Target
		want       string
	}{
		{"gpt-4o", `{"model":"gpt-4o","messages":[] , "x":1.50}`, Target{Provider: "openai", Model: "gpt-4o", Price: price("gpt-4o")},
			`{"max_tokens":4096,"model":"gpt-4o","messages":[] , "x":1.50}`},
		{"gpt-5 reasoning", `{"model":"gpt-5","messages":[]}`, Target{Provider: "openai", Model: "gpt-5", Price: price("gpt-5")},
			`{"max_completion_tokens":32768,"model":"gpt-5","messages":[]}`},
		{"o3 no price", `{"messages":[]}`, Target{Provider: "openai", Model: "o3"},
			`{"max_completion_tokens":32768,"messages":[]}`},
		{"clamped", `{"messages":[]}`, Target{Provider: "anthropic", Model: "claude-3-haiku", Price: catalog.Price{MaxOutput: 2048}},
			`{"max_tokens":2048,"messages":[]}`},
		// A model that can reason but was not asked to gets what a careful direct caller sets.
		{"claude without thinking", `{"messages":[]}`, Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Price: catalog.Price{MaxOutput: 64000, Caps: catalog.Caps{Reasoning: true}}},
			`{"max_tokens":4096,"messages":[]}`},
		{"claude asked to think", `{"messages":[],"reasoning_effort":"high"}`, Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Price: catalog.Price{MaxOutput: 64000, Caps: catalog.Caps{Reasoning: true}}},
			`{"max_tokens":32768,"messages":[],"reasoning_effort":"high"}`},
		{"thinking object", `{"thinking":{"type":"enabled","budget_tokens":2048},"messages":[]}`, Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Price: catalog.Price{MaxOutput: 64000}},
			`{"max_tokens":32768,"thinking":{"type":"enabled","budget_tokens":2048},"messages":[]}`},
		{"thinking disabled", `{"thinking":{"type":"disabled"},"messages":[]}`, Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Price: catalog.Price{MaxOutput: 64000}},
			`{"max_tokens":4096,"thinking":{"type":"disabled"},"messages":[]}`},
		{"effort none", `{"reasoning_effort":"none","messages":[]}`, Target{Provider: "openai", Model: "gpt-4.1"},
			`{"max_tokens":4096,"reasoning_effort":"none","messages":[]}`},
		{"gemini 2.5 flash thinks by default", `{"messages":[]}`, Target{Provider: "gemini", Model: "gemini-2.5-flash", Price: catalog.Price{MaxOutput: 65535}},
			`{"max_tokens":32768,"messages":[]}`},
		{"gemini flash-lite does not", `{"messages":[]}`, Target{Provider: "gemini", Model: "gemini-2.5-flash-lite", Price: catalog.Price{MaxOutput: 65535}},
			`{"max_tokens":4096,"messages":[]}`},
		{"third party reasoning uses max_tokens", `{"messages":[]}`, Target{Provider: "openai_compatible", Model: "o3"},
			`{"max_tokens":32768,"messages":[]}`},
		{"null counts as absent", `{"max_tokens":null,"messages":[]}`, Target{Provider: "openai", Model: "gpt-4o"},
			`{"max_tokens":4096,"messages":[]}`},
		{"caller cap", `{"max_tokens":7,"messages":[]}`, Target{Provider: "openai", Model: "gpt-5", Price: price("gpt-5")}, `{"max_tokens":7,"messages":[]}`},
		{"caller completion cap", `{"messages":[], "max_completion_tokens": 999999}`, Target{Provider: "openai", Model: "gpt-4o", Price: price("gpt-4o")},
			`{"messages":[], "max_completion_tokens": 999999}`},
	}
	for _, c := range cases {
		got, res, err := Apply([]byte(c.body), c.t)
		if err != nil || string(got) != c.want {
			t.Errorf("%s: got %s (%v), want %s", c.name, got, err, c.want)
		}
		if res.CallerCap != (c.body == c.want) {
			t.Errorf("%s: result %+v", c.name, res)
		}
		again, _, _ := Apply(got, c.t)
		if string(again) != string(got) {
			t.Errorf("%s: not idempotent", c.name)
		}
	}
	if _, _, err := Apply([]byte(`[1]`), Target{}); err == nil {
		t.Error("want error on non-object")
	}
}

func TestEmptyLength(t *testing.T) {
	for _, c := range []struct {
		fr, content string
		want        bool
	}{{"length", "", true}, {"length", " \n", true}, {"length", "x", false}, {"stop", "", false}} {
		if EmptyLength(c.fr, c.content) != c.want {
			t.Errorf("%+v", c)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	for b.Loop() {
		_, _, _ = Apply(body, Target{Provider: "openai", Model: "gpt-4o"})
	}
}

// TestLearnedCap: without reasoning, the cap follows the workspace's natural answer lengths
// once enough were seen, and stays at the default before that.
func TestLearnedCap(t *testing.T) {
	ev := evidence.New()
	tg := Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Price: catalog.Price{MaxOutput: 64000}, Workspace: "ws", Evidence: ev}
	body := []byte(`{"messages":[]}`)
	if _, r, _ := Apply(body, tg); r.Cap != ChatCap || r.Learned {
		t.Fatalf("before evidence: %+v", r)
	}
	for range evidence.MinNatural {
		ev.Observe(evidence.Observation{Workspace: "ws", Model: "claude-sonnet-4-5", GatewayCap: ChatCap, Output: 6000, Finish: "stop"})
	}
	if _, r, _ := Apply(body, tg); r.Cap != 9216 || !r.Learned {
		t.Fatalf("after 6000-token answers: %+v", r)
	}
	// Reasoning requests keep the reasoning cap; other workspaces the default.
	if _, r, _ := Apply([]byte(`{"reasoning_effort":"low","messages":[]}`), tg); r.Cap != ReasoningCap || r.Learned {
		t.Fatalf("reasoning: %+v", r)
	}
	tg.Workspace = "other"
	if _, r, _ := Apply(body, tg); r.Cap != ChatCap {
		t.Fatalf("other workspace: %+v", r)
	}
}

// TestDecideOnTheViewIsApply: the edit Decide makes from a view's members is what Apply
// writes after its own walk.
func TestDecideOnTheViewIsApply(t *testing.T) {
	tg := Target{Provider: "openai", Model: "gpt-5-mini"}
	for _, b := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"max_completion_tokens": null, "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}`,
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":null,"max_tokens":null}`,
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":12}`,
		`{"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"disabled"},"max_tokens":null}`,
	} {
		for _, tg := range []Target{tg, {Provider: "anthropic", Model: "claude-sonnet-4-5"}} {
			want, wantR, _ := Apply([]byte(b), tg)
			v, err := conv.Parse([]byte(b))
			if err != nil {
				t.Fatal(err)
			}
			e, ok, r, err := Decide(v.Body, v.Top, tg)
			if err != nil || r != wantR {
				t.Fatalf("%s: result %+v err %v, want %+v", b, r, err, wantR)
			}
			got := v.Body
			if ok {
				got = conv.Apply(v.Body, []conv.Edit{e})
			}
			if string(got) != string(want) {
				t.Fatalf("%s: got %s, want %s", b, got, want)
			}
		}
	}
}
