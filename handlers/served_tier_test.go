package handlers

import "testing"

// TestServedTier: the tier an upstream reports is read with and without escapes, and only
// from the top level.
func TestServedTier(t *testing.T) {
	for body, want := range map[string]string{
		`{"id":"x","service_tier":"default","usage":{}}`:       "default",
		`{"service_tier":"fl\u0065x"}`:                         "flex",
		`{"service_tier":null}`:                                "",
		`{"usage":{"service_tier":"priority"}}`:                "",
		`{"choices":[{"delta":{"content":"service_tier"}}]}`:   "",
		`{"service_tier":"scale","service_tier_note":"other"}`: "scale",
	} {
		if got := servedTier([]byte(body)); got != want {
			t.Errorf("servedTier(%s) = %q, want %q", body, got, want)
		}
	}
}
