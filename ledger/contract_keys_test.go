package ledger

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func ownerKeyOf(t *testing.T, s Store, secret string) Key {
	t.Helper()
	k, err := s.LookupKey(context.Background(), HashKey(secret))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testKeyLimits(t *testing.T, s Store) {
	ctx := context.Background()
	ws, _, err := s.CreateWorkspace(ctx, "limits", 0)
	if err != nil {
		t.Fatal(err)
	}
	lim := KeyLimits{Models: []string{" btl-fast ", "openai/*", "btl-fast", "bedrock/anthropic.claude-v2:1", "claude@2025"},
		RPM: 60, TPM: 1000, BudgetMicros: 5 * Credit, BudgetPeriod: PeriodDay}
	k, sec, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "limited", Scopes: []Scope{ScopeInference}, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	want := KeyLimits{Models: []string{"btl-fast", "openai/*", "bedrock/anthropic.claude-v2:1", "claude@2025"},
		RPM: 60, TPM: 1000, BudgetMicros: 5 * Credit, BudgetPeriod: PeriodDay}
	got := ownerKeyOf(t, s, sec)
	for _, l := range []KeyLimits{k.Limits, got.Limits} {
		if !slices.Equal(l.Models, want.Models) || l.RPM != want.RPM || l.TPM != want.TPM || l.BudgetMicros != want.BudgetMicros || l.BudgetPeriod != want.BudgetPeriod {
			t.Fatalf("limits = %+v, want %+v", l, want)
		}
	}
	if got.ParentID != "" || len(got.Ancestors) != 0 {
		t.Fatalf("a root key has no parent: %+v", got)
	}
	keys, _ := s.ListKeys(ctx, ws.ID)
	if i := slices.IndexFunc(keys, func(x Key) bool { return x.ID == k.ID }); i < 0 || keys[i].Limits.BudgetMicros != 5*Credit || len(keys[i].Limits.Models) != 4 {
		t.Fatalf("ListKeys lost the limits: %+v", keys)
	}
	// A budget without a period is a total budget.
	k2, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, Limits: KeyLimits{BudgetMicros: Credit}})
	if err != nil || k2.Limits.BudgetPeriod != PeriodTotal {
		t.Fatalf("default period: %v %+v", err, k2.Limits)
	}

	far := time.Now().Add(MaxKeyLifetime + time.Hour)
	bad := map[string]KeySpec{
		"negative rpm":        {Limits: KeyLimits{RPM: -1}},
		"huge tpm":            {Limits: KeyLimits{TPM: MaxRate + 1}},
		"huge budget":         {Limits: KeyLimits{BudgetMicros: MaxBudget + 1}},
		"negative budget":     {Limits: KeyLimits{BudgetMicros: -1}},
		"unknown period":      {Limits: KeyLimits{BudgetMicros: Credit, BudgetPeriod: "week"}},
		"period no budget":    {Limits: KeyLimits{BudgetPeriod: PeriodDay}},
		"space in model":      {Limits: KeyLimits{Models: []string{"gpt 4o"}}},
		"bare star":           {Limits: KeyLimits{Models: []string{"*"}}},
		"star inside":         {Limits: KeyLimits{Models: []string{"openai/gpt-*"}}},
		"empty model":         {Limits: KeyLimits{Models: []string{""}}},
		"formula model":       {Limits: KeyLimits{Models: []string{"=HYPERLINK(1)"}}},
		"too many models":     {Limits: KeyLimits{Models: strings.Split(strings.Repeat("m,", maxModelEntries)+"m0", ",")}},
		"name with CRLF":      {Name: "a\r\nb"},
		"expiry beyond range": {ExpiresAt: &far},
	}
	for name, spec := range bad {
		if spec.Scopes == nil {
			spec.Scopes = []Scope{ScopeInference}
		}
		if _, _, err := s.CreateKey(ctx, ws.ID, spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func testKeyLifecycle(t *testing.T, s Store) {
	ctx := context.Background()
	ws, ownerSecret, err := s.CreateWorkspace(ctx, "life", 0)
	if err != nil {
		t.Fatal(err)
	}
	owner := ownerKeyOf(t, s, ownerSecret)
	inOneHour := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	parent, parentSecret, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "ci", Scopes: []Scope{ScopeInference, ScopeKeysWrite},
		ExpiresAt: &inOneHour, ParentID: owner.ID, Limits: KeyLimits{Models: []string{"openai/*", "btl-fast"}, RPM: 10}})
	if err != nil {
		t.Fatal(err)
	}
	// A child naming no expiry and no models inherits its parent's: it cannot outlive it.
	child, childSecret, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID})
	if err != nil {
		t.Fatal(err)
	}
	if child.ExpiresAt == nil || !child.ExpiresAt.Equal(inOneHour) || !slices.Equal(child.Limits.Models, parent.Limits.Models) {
		t.Fatalf("child did not inherit expiry/models: %+v", child)
	}
	got := ownerKeyOf(t, s, childSecret)
	if got.ParentID != parent.ID || len(got.Ancestors) != 2 || got.Ancestors[0].ID != parent.ID || got.Ancestors[0].Limits.RPM != 10 || got.Ancestors[1].ID != owner.ID {
		t.Fatalf("child's ancestors: %+v", got)
	}
	inTwoHours := time.Now().Add(2 * time.Hour)
	other, _, _ := s.CreateWorkspace(ctx, "other", 0)
	refused := map[string]struct {
		ws   string
		spec KeySpec
		want error
	}{
		"outlives parent":       {ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID, ExpiresAt: &inTwoHours}, ErrInvalid},
		"scope parent lacks":    {ws.ID, KeySpec{Scopes: []Scope{ScopeUsageRead}, ParentID: parent.ID}, ErrInvalid},
		"model parent lacks":    {ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID, Limits: KeyLimits{Models: []string{"anthropic/claude"}}}, ErrInvalid},
		"parent of another ws":  {other.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID}, ErrNotFound},
		"unknown parent":        {ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: "key_nope"}, ErrNotFound},
		"wider than provider/*": {ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID, Limits: KeyLimits{Models: []string{"btl-balanced"}}}, ErrInvalid},
	}
	for name, c := range refused {
		if _, _, err := s.CreateKey(ctx, c.ws, c.spec); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	narrower, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID, Limits: KeyLimits{Models: []string{"openai/gpt-4o"}}})
	if err != nil || !slices.Equal(narrower.Limits.Models, []string{"openai/gpt-4o"}) {
		t.Fatalf("a narrower model list: %v %+v", err, narrower.Limits)
	}

	// Depth is bounded.
	id := owner.ID
	depth := 0
	for ; depth < MaxKeyDepth+1; depth++ {
		k, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: AllScopes, ParentID: id})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatal(err)
			}
			break
		}
		id = k.ID
	}
	if depth != MaxKeyDepth-1 {
		t.Fatalf("minted %d levels below the owner, want %d", depth, MaxKeyDepth-1)
	}

	// Revoking the parent revokes everything minted under it, announced for each key.
	before := time.Now().Add(-time.Second)
	if err := s.RevokeKey(ctx, ws.ID, parent.ID); err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{parentSecret, childSecret} {
		if _, err := s.LookupKey(ctx, HashKey(sec)); !errors.Is(err, ErrRevoked) {
			t.Fatalf("after revoking the parent: %v", err)
		}
	}
	revs, _ := s.RevokedSince(ctx, before)
	if len(revs) != 3 {
		t.Fatalf("RevokedSince after a cascade: %d, want parent, child and the narrower child", len(revs))
	}
	if _, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: parent.ID}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("child of a revoked key: %v", err)
	}

	// The last owner key (every scope, no expiry) cannot be revoked, nor can a key above it.
	if err := s.RevokeKey(ctx, ws.ID, owner.ID); !errors.Is(err, ErrLastOwnerKey) {
		t.Fatalf("revoking the last owner: %v", err)
	}
	if _, err := s.LookupKey(ctx, HashKey(ownerSecret)); err != nil {
		t.Fatalf("the refused revocation changed something: %v", err)
	}
	// An owner-scoped key that expires does not keep the workspace manageable.
	if _, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: AllScopes, ExpiresAt: &inOneHour}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeKey(ctx, ws.ID, owner.ID); !errors.Is(err, ErrLastOwnerKey) {
		t.Fatalf("revoking the last non-expiring owner: %v", err)
	}
	second, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Name: "owner 2", Scopes: AllScopes})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeKey(ctx, ws.ID, owner.ID); err != nil {
		t.Fatalf("revoking one of two owners: %v", err)
	}
	if err := s.RevokeKey(ctx, ws.ID, second.ID); !errors.Is(err, ErrLastOwnerKey) {
		t.Fatalf("revoking the remaining owner: %v", err)
	}
}

func testKeySpend(t *testing.T, s Store) {
	ctx := context.Background()
	ws, _, err := s.CreateWorkspace(ctx, "spend", 100*Credit)
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: AllScopes})
	b, _, err := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}, ParentID: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := s.CreateKey(ctx, ws.ID, KeySpec{Scopes: []Scope{ScopeInference}})
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	row := func(key, node string, at time.Time, cost Micros) Row {
		r := testRow(ws.ID, 0, cost)
		r.KeyID, r.NodeID, r.Time = key, node, at
		return r
	}
	rows := []Row{
		row(a.ID, "n1", t0.Add(time.Hour), 10),
		row(b.ID, "n2", t0.Add(2*time.Hour), 20),
		row(b.ID, "n1", t0.Add(3*time.Hour), 1),
		row(c.ID, "n1", t0.Add(time.Hour), 40),
		row(a.ID, "n1", t0.Add(-time.Hour), 5), // before the period
	}
	if err := s.InsertRows(ctx, "n1", rows); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key   string
		since time.Time
		want  KeySpend
	}{
		{a.ID, t0, KeySpend{Node: 11, Others: 20}},
		{b.ID, t0, KeySpend{Node: 1, Others: 20}},
		{c.ID, t0, KeySpend{Node: 40}},
		{a.ID, time.Time{}, KeySpend{Node: 16, Others: 20}},
		{a.ID, t0.Add(150 * time.Minute), KeySpend{Node: 1}},
	} {
		got, err := s.KeySpend(ctx, ws.ID, tc.key, tc.since, "n1")
		if err != nil || got != tc.want {
			t.Errorf("KeySpend(%s, %v) = %+v, %v; want %+v", tc.key, tc.since, got, err, tc.want)
		}
	}
	other, _, _ := s.CreateWorkspace(ctx, "other", 0)
	if got, err := s.KeySpend(ctx, other.ID, a.ID, time.Time{}, "n1"); err != nil || got != (KeySpend{}) {
		t.Fatalf("another workspace sees a key's spend: %+v %v", got, err)
	}
}

func testRateWindows(t *testing.T, s Store) {
	ctx := context.Background()
	w := time.Now().UTC().Truncate(time.Minute)
	take := func(bucket string, window time.Time, n, limit, wantUsed int64, wantOK bool) {
		t.Helper()
		used, ok, err := s.TakeRate(ctx, bucket, window, n, limit)
		if err != nil || used != wantUsed || ok != wantOK {
			t.Fatalf("TakeRate(%s, %d, %d) = %d %v %v; want %d %v", bucket, n, limit, used, ok, err, wantUsed, wantOK)
		}
	}
	take("k:req", w, 5, 10, 5, true)
	take("k:req", w, 5, 10, 10, true)
	take("k:req", w, 1, 10, 10, false)
	take("k:req", w, 11, 10, 10, false)
	take("k:req", w, 3, 0, 13, true) // no limit: an after-the-fact charge always lands
	take("k:req", w.Add(time.Minute), 1, 10, 1, true)
	take("k:tok", w, 11, 10, 0, false) // never fits, and creates nothing
	take("k:tok", w, 10, 10, 10, true)
	if n, err := s.PurgeRate(ctx, w.Add(time.Minute)); err != nil || n != 2 {
		t.Fatalf("PurgeRate = %d %v, want the two windows of the first minute", n, err)
	}
	take("k:req", w, 1, 10, 1, true)

	// Concurrent takers never push a window past its limit.
	var wg sync.WaitGroup
	var granted atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok, err := s.TakeRate(ctx, "race", w, 1, 10); err == nil && ok {
				granted.Add(1)
			}
		}()
	}
	wg.Wait()
	if granted.Load() != 10 {
		t.Fatalf("granted %d of a limit of 10", granted.Load())
	}
}

func testWorkspaceLimits(t *testing.T, s Store) {
	ctx := context.Background()
	ws := mustWorkspace(t, s, 0)
	if err := s.SetWorkspaceLimits(ctx, ws.ID, WorkspaceLimits{RPM: 100, TPM: 5000}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Workspace(ctx, ws.ID)
	if err != nil || got.Limits != (WorkspaceLimits{RPM: 100, TPM: 5000}) {
		t.Fatalf("Workspace limits: %+v %v", got.Limits, err)
	}
	if err := s.SetWorkspaceLimits(ctx, ws.ID, WorkspaceLimits{RPM: -1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative rpm: %v", err)
	}
	if err := s.SetWorkspaceLimits(ctx, "ws_nope", WorkspaceLimits{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown workspace: %v", err)
	}
	all, err := s.ListWorkspaces(ctx)
	if err != nil || !slices.ContainsFunc(all, func(w Workspace) bool { return w.ID == ws.ID && w.Limits.RPM == 100 }) {
		t.Fatalf("ListWorkspaces: %v %+v", err, all)
	}
}
