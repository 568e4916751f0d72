package cacheplan

import (
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

func TestResponsesKey(t *testing.T) {
	a, b := Isolate("ws_a"), Isolate("ws_b")
	instr := []byte(`"You are the support bot."`)
	cases := []struct {
		name       string
		ws, salt   string
		callerKey  string
		derive     bool
		wantPrefix string
	}{
		{"caller key scoped", "ws_a", a, "support-bot", true, "btlw-"},
		{"caller key scoped even where none would be derived", "ws_a", a, "support-bot", false, "btlw-"},
		{"derived for a model that accepts the field", "ws_a", a, "", true, "btl-"},
		{"none for a model that does not", "ws_a", a, "", false, ""},
	}
	for _, c := range cases {
		got := ResponsesKey(c.ws, c.salt, c.callerKey, instr, c.derive)
		if c.wantPrefix == "" {
			if got != "" {
				t.Errorf("%s: %q, want none", c.name, got)
			}
			continue
		}
		if !strings.HasPrefix(got, c.wantPrefix) {
			t.Errorf("%s: %q, want prefix %q", c.name, got, c.wantPrefix)
		}
		if got != ResponsesKey(c.ws, c.salt, c.callerKey, instr, c.derive) {
			t.Errorf("%s: not stable", c.name)
		}
	}
	// Two workspaces never share a key, whether the caller named one or not.
	if ResponsesKey("ws_a", a, "support-bot", instr, true) == ResponsesKey("ws_b", b, "support-bot", instr, true) {
		t.Error("the same caller key maps to one key in two workspaces")
	}
	if ResponsesKey("ws_a", a, "", instr, true) == ResponsesKey("ws_b", b, "", instr, true) {
		t.Error("the same instructions map to one derived key in two workspaces")
	}
	// Within a workspace, the same caller key is the same scoped key as on chat (Plan).
	body := []byte(`{"model":"gpt-4.1","prompt_cache_key":"support-bot","messages":[{"role":"user","content":"hi"}]}`)
	p := NewPlanner()
	out, rep, err := p.Plan(body, Target{Provider: "openai", Model: "gpt-4.1", Workspace: "ws_a", Salt: a, Price: keyed})
	if err != nil || !rep.CallerKeyScoped {
		t.Fatalf("plan: %v %+v", err, rep)
	}
	if want := ResponsesKey("ws_a", a, "support-bot", nil, true); !strings.Contains(string(out), `"`+want+`"`) {
		t.Fatalf("chat scoped the key as %s, Responses as %s", out, want)
	}
}

func TestPlanIsolateOnly(t *testing.T) {
	salt := Isolate("ws_a")
	long := strings.Repeat("policy text ", 600)
	anth := Target{Provider: "anthropic", Model: "claude-sonnet-4-5", Workspace: "ws_a", Salt: salt, IsolateOnly: true,
		Price: catalog.Price{CacheMinTokens: 1024}}
	oai := Target{Provider: "openai", Model: "gpt-4.1", Workspace: "ws_a", Salt: salt, IsolateOnly: true, Price: keyed}
	tools := `"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}],`
	cases := []struct {
		name      string
		t         Target
		body      string
		salted    bool
		unchanged bool
	}{
		{"caller markers get the salt, and nothing else", anth,
			`{"model":"m",` + tools + `"messages":[{"role":"system","content":[{"type":"text","text":"` + long + `","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"hi"}]}`, true, false},
		{"no markers: untouched (no breakpoint, no schema rewrite)", anth,
			`{"model":"m",` + tools + `"messages":[{"role":"system","content":"` + long + `"},{"role":"user","content":"hi"}]}`, false, true},
		{"a named key is scoped", oai,
			`{"model":"m","prompt_cache_key":"support-bot","messages":[{"role":"user","content":"` + long + `"}]}`, false, false},
		{"no key: none derived", oai,
			`{"model":"m","messages":[{"role":"user","content":"` + long + `"}]}`, false, true},
	}
	for _, c := range cases {
		out, rep, err := NewPlanner().Plan([]byte(c.body), c.t)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.unchanged != (string(out) == c.body) || rep.Salted != c.salted || len(rep.Breakpoints) != 0 || rep.SchemasSorted != 0 {
			t.Errorf("%s: salted %v, breakpoints %d, sorted %d:\n%s", c.name, rep.Salted, len(rep.Breakpoints), rep.SchemasSorted, out)
		}
		if strings.Contains(string(out), `"support-bot"`) {
			t.Errorf("%s: the caller's key went out unscoped", c.name)
		}
	}
}
