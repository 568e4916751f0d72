package providers

import (
	"strings"
	"testing"
)

func TestCheckIdentifier(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"gpt-4o-mini", true},
		{"openai/gpt-4o-mini", true},
		{"anthropic.claude-sonnet-4-5-20250929-v1:0", true},
		{"claude-sonnet-4-5@20250929", true},
		{"ci key (nightly) – Zürich 東京", true},
		{"=HYPERLINK(\"http://x\")", true}, // printable: the CSV export neutralises it
		{"", true},
		{"gpt-4o\r\nX-Injected: 1", false},
		{"gpt-4o\n", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"c1\u0085next-line", false},
		{"bidi\u202eoverride", false},
		{"bad\xffutf8", false},
		{strings.Repeat("m", MaxIdentifierBytes), true},
		{strings.Repeat("m", MaxIdentifierBytes+1), false},
	} {
		err := CheckIdentifier("model", tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("CheckIdentifier(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
		if err != nil && (err.Status != 400 || err.Param != "model") {
			t.Errorf("CheckIdentifier(%q): status %d param %q", tc.v, err.Status, err.Param)
		}
	}
}
