package ledger

import (
	"testing"
	"time"
)

func TestAdmitsModel(t *testing.T) {
	cases := []struct {
		list    []string
		name    string
		targets []string
		want    bool
	}{
		{nil, "anything", []string{"openai/gpt-4o"}, true},
		{[]string{"btl-fast"}, "btl-fast", []string{"openai/gpt-4o-mini", "local/llama"}, true},
		{[]string{"btl-fast"}, "btl-big", []string{"openai/gpt-4o"}, false},
		{[]string{"btl-fast"}, "openai/gpt-4o-mini", []string{"openai/gpt-4o-mini"}, false},
		{[]string{"openai/*"}, "btl-fast", []string{"openai/gpt-4o-mini"}, true},
		{[]string{"openai/*"}, "btl-fast", []string{"openai/gpt-4o-mini", "local/llama"}, false}, // a slug needs all its candidates
		{[]string{"openai/gpt-4o"}, "openai/gpt-4o", []string{"openai/gpt-4o"}, true},
		{[]string{"openai/gpt-4o"}, "gpt-4o", []string{"openai/gpt-4o", "openrouter/openai/gpt-4o"}, false},
		{[]string{"gpt-4o"}, "gpt-4o", nil, true},                              // a bare id names the request
		{[]string{"gpt-4o"}, "openai/gpt-4o", []string{"openai/gpt-4o"}, true}, // and that model from any provider
		{[]string{"openrouter/*"}, "openrouter/anthropic/claude", []string{"openrouter/anthropic/claude"}, true},
		{[]string{"openrouter/anthropic/*"}, "openrouter/anthropic/claude", []string{"openrouter/anthropic/claude"}, false}, // one level only
		{[]string{"openai/*"}, "unknown-model", nil, false},
	}
	for _, c := range cases {
		if got := (KeyLimits{Models: c.list}).AdmitsModel(c.name, c.targets); got != c.want {
			t.Errorf("%v admits %s %v = %v, want %v", c.list, c.name, c.targets, got, c.want)
		}
	}
}

func TestCovers(t *testing.T) {
	parent := KeyLimits{Models: []string{"btl-fast", "openai/*", "gpt-4o"}}
	for entry, want := range map[string]bool{
		"btl-fast": true, "openai/*": true, "openai/gpt-4.1": true, "azure/gpt-4o": true,
		"btl-big": false, "anthropic/*": false, "anthropic/claude": false, "gpt-4.1": false,
	} {
		if got := parent.covers(entry); got != want {
			t.Errorf("covers(%s) = %v, want %v", entry, got, want)
		}
	}
	if !(KeyLimits{}).covers("anything/*") {
		t.Error("an empty list covers everything")
	}
}

func TestPeriods(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 59, 0, time.FixedZone("x", 3600))
	for _, c := range []struct {
		period     string
		start, end time.Time
	}{
		{PeriodDay, time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{PeriodMonth, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{PeriodTotal, time.Time{}, time.Time{}},
	} {
		if s, e := PeriodStart(c.period, at), PeriodEnd(c.period, at); !s.Equal(c.start) || !e.Equal(c.end) {
			t.Errorf("%s: %v – %v, want %v – %v", c.period, s, e, c.start, c.end)
		}
	}
}
