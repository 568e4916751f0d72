package handlers

import (
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

func TestParseDollars(t *testing.T) {
	for in, want := range map[string]ledger.Micros{
		"0": 0, "1": 1_000_000, "12.5": 12_500_000, "0.000001": 1, "0.1234560": -1, "1e3": -1, "-1": -1,
		"": -1, ".5": -1, "1.": 1_000_000, "999999999999": 999_999_999_999_000_000, "9999999999999": -1, `"5"`: -1,
	} {
		got, err := parseDollars(in)
		if (want < 0) != (err != nil) || (err == nil && got != want) {
			t.Errorf("parseDollars(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestKeySpecFrom(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	inAnHour := now.Add(time.Hour)
	owner := ledger.Key{ID: "key_owner", Scopes: ledger.AllScopes}
	ci := ledger.Key{ID: "key_ci", Scopes: []ledger.Scope{ledger.ScopeInference, ledger.ScopeKeysWrite}, ExpiresAt: &inAnHour}
	i64 := func(v int64) *int64 { return &v }
	for _, c := range []struct {
		name   string
		caller ledger.Key
		req    createKeyRequest
		param  string // "" = accepted
		check  func(ledger.KeySpec) bool
	}{
		{"owner mints a root key", owner, createKeyRequest{}, "", func(s ledger.KeySpec) bool {
			return s.ParentID == "" && len(s.Scopes) == 1 && s.Scopes[0] == ledger.ScopeInference
		}},
		{"another key is the parent", ci, createKeyRequest{}, "", func(s ledger.KeySpec) bool { return s.ParentID == "key_ci" }},
		{"scope escalation", ci, createKeyRequest{Scopes: []string{"usage:read"}}, "scopes", nil},
		{"unknown scope", owner, createKeyRequest{Scopes: []string{"admin"}}, "scopes", nil},
		{"outlives the parent", ci, createKeyRequest{ExpiresIn: i64(7200)}, "expires_in", nil},
		{"within the parent", ci, createKeyRequest{ExpiresIn: i64(60)}, "", func(s ledger.KeySpec) bool { return s.ExpiresAt.Equal(now.Add(time.Minute)) }},
		{"overflowing lifetime", owner, createKeyRequest{ExpiresIn: i64(1 << 62)}, "expires_in", nil},
		{"ten years", owner, createKeyRequest{ExpiresIn: i64(int64(ledger.MaxKeyLifetime / time.Second))}, "", nil},
		{"rpm out of range", owner, createKeyRequest{RPM: i64(ledger.MaxRate + 1)}, "rpm", nil},
		{"limits carried", owner, createKeyRequest{RPM: i64(5), TPM: i64(7), Models: []string{"x"}}, "", func(s ledger.KeySpec) bool {
			return s.Limits.RPM == 5 && s.Limits.TPM == 7 && len(s.Limits.Models) == 1
		}},
	} {
		spec, perr := keySpecFrom(&c.req, &Exchange{KeyID: c.caller.ID, Key: c.caller}, now)
		switch {
		case c.param == "" && perr != nil:
			t.Errorf("%s: refused: %v", c.name, perr.Message)
		case c.param != "" && (perr == nil || perr.Param != c.param):
			t.Errorf("%s: %v, want an error naming %s", c.name, perr, c.param)
		case c.param == "" && c.check != nil && !c.check(spec):
			t.Errorf("%s: spec %+v", c.name, spec)
		}
	}
}
