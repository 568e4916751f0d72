package coalesce

import (
	"testing"

	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/msgjson"
)

func TestDeterministic(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"temperature 0"}]`
	for _, tc := range []struct {
		name string
		body string
		want bool
	}{
		{"no temperature is the default 1", `{"model":"m",` + msgs + `}`, false},
		{"temperature null", `{"model":"m","temperature":null,` + msgs + `}`, false},
		{"temperature 0", `{"model":"m","temperature":0,` + msgs + `}`, true},
		{"temperature 0.0", `{"model":"m","temperature":0.0,` + msgs + `}`, true},
		{"temperature -0e3", `{"model":"m","temperature":-0e3,` + msgs + `}`, true},
		{"temperature 0.7", `{"model":"m","temperature":0.7,` + msgs + `}`, false},
		{"temperature 1e-9", `{"model":"m","temperature":1e-9,` + msgs + `}`, false},
		{"last duplicate wins: sampled", `{"temperature":0,"model":"m","temperature":1,` + msgs + `}`, false},
		{"last duplicate wins: deterministic", `{"temperature":1,"model":"m","temperature":0,` + msgs + `}`, true},
		{"escaped key", `{"model":"m","temperat\u0075re":0,` + msgs + `}`, true},
		{"escaped key sampled", `{"model":"m","temperature":0,"\u006e":2,` + msgs + `}`, false},
		{"n 1", `{"model":"m","temperature":0,"n":1,` + msgs + `}`, true},
		{"n null", `{"model":"m","temperature":0,"n":null,` + msgs + `}`, true},
		{"n 2", `{"model":"m","temperature":0,"n":2,` + msgs + `}`, false},
		{"n 2 before temperature", `{"n":2,"model":"m","temperature":0,` + msgs + `}`, false},
		{"top_p 1 is a no-op", `{"model":"m","temperature":0,"top_p":1,` + msgs + `}`, true},
		{"top_p 0.9", `{"model":"m","temperature":0,"top_p":0.9,` + msgs + `}`, false},
		{"top_k", `{"model":"m","temperature":0,"top_k":40,` + msgs + `}`, false},
		{"min_p", `{"model":"m","temperature":0,"min_p":0.1,` + msgs + `}`, false},
		{"best_of", `{"model":"m","temperature":0,"best_of":3,` + msgs + `}`, false},
		{"seed is fine", `{"model":"m","temperature":0,"seed":7,` + msgs + `}`, true},
		{"nested temperature does not count", `{"model":"m","metadata":{"temperature":"0"},` + msgs + `}`, false},
		{"not an object", `[1]`, false},
	} {
		if got := Deterministic([]byte(tc.body)); got != tc.want {
			t.Errorf("%s: Deterministic(%s) = %v, want %v", tc.name, tc.body, got, tc.want)
		}
		// The same verdict from the members a view of the body found.
		if _, _, top, err := msgjson.ParseAll(nil, nil, []byte(tc.body), nil, nil); err == nil {
			if got := DeterministicMembers([]byte(tc.body), top); got != tc.want {
				t.Errorf("%s: DeterministicMembers(%s) = %v, want %v", tc.name, tc.body, got, tc.want)
			}
		}
	}
}
