package budget

import (
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

func TestApply(t *testing.T) {
	cat := catalog.Default()
	price := func(m string) catalog.Price { p, _ := cat.Lookup(m); return p }
	cases := []struct {
		name, body string
		t          Target
		want       string
	}{
		{"gpt-4o", `{"model":"gpt-4o","messages":[] , "x":1.50}`, Target{"openai", "gpt-4o", price("gpt-4o")},
			`{"max_tokens":4096,"model":"gpt-4o","messages":[] , "x":1.50}`},
		{"gpt-5 reasoning", `{"model":"gpt-5","messages":[]}`, Target{"openai", "gpt-5", price("gpt-5")},
			`{"max_completion_tokens":32768,"model":"gpt-5","messages":[]}`},
		{"o3 no price", `{"messages":[]}`, Target{"openai", "o3", catalog.Price{}},
			`{"max_completion_tokens":32768,"messages":[]}`},
		{"clamped", `{"messages":[]}`, Target{"anthropic", "claude-3-haiku", catalog.Price{MaxOutput: 2048}},
			`{"max_tokens":2048,"messages":[]}`},
		{"reasoning claude", `{"messages":[]}`, Target{"anthropic", "c", catalog.Price{MaxOutput: 64000, Caps: catalog.Caps{Reasoning: true}}},
			`{"max_tokens":32768,"messages":[]}`},
		{"third party reasoning uses max_tokens", `{"messages":[]}`, Target{"openai_compatible", "o3", catalog.Price{}},
			`{"max_tokens":32768,"messages":[]}`},
		{"null counts as absent", `{"max_tokens":null,"messages":[]}`, Target{"openai", "gpt-4o", catalog.Price{}},
			`{"max_tokens":4096,"messages":[]}`},
		{"caller cap", `{"max_tokens":7,"messages":[]}`, Target{"openai", "gpt-5", price("gpt-5")}, `{"max_tokens":7,"messages":[]}`},
		{"caller completion cap", `{"messages":[], "max_completion_tokens": 999999}`, Target{"openai", "gpt-4o", price("gpt-4o")},
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
