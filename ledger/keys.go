package ledger

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// keySecretPrefix marks BTL secrets so scanners and humans recognise leaked keys.
const keySecretPrefix = "btl_"

// keyDisplayLen is how much of a secret is kept in clear for listings: "btl_" plus 8 chars
// (48 bits) identifies a key to a human without helping an attacker.
const keyDisplayLen = 12

// GenerateKey returns a new secret "btl_" + base64url(32 random bytes, no padding) and its
// SHA-256, which is all the store keeps.
func GenerateKey() (secret string, hash [32]byte) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it aborts the program instead)
	secret = keySecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, HashKey(secret)
}

// HashKey is the SHA-256 of the full secret. Secrets have 256 bits of entropy, so a fast
// unsalted hash is enough and lets lookups use an index.
func HashKey(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

func keyDisplayPrefix(secret string) string {
	if len(secret) <= keyDisplayLen {
		return secret
	}
	return secret[:keyDisplayLen]
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix + 20 chars of lowercase base32 (96 random bits): unguessable and
// safe in URLs.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + idEncoding.EncodeToString(b[:])
}

func validateScopes(scopes []Scope) error {
	if len(scopes) == 0 {
		return fmt.Errorf("%w: a key needs at least one scope", ErrInvalid)
	}
	for _, s := range scopes {
		switch s {
		case ScopeInference, ScopeUsageRead, ScopeKeysWrite:
		default:
			return fmt.Errorf("%w: unknown scope %q", ErrInvalid, s)
		}
	}
	return nil
}

func scopesToStrings(scopes []Scope) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = string(s)
	}
	return out
}

func stringsToScopes(ss []string) []Scope {
	out := make([]Scope, len(ss))
	for i, s := range ss {
		out[i] = Scope(s)
	}
	return out
}

// cleanText makes a string storable in PostgreSQL text (valid UTF-8, no NUL). Both backends
// apply it so they store the same thing, and so a bad model name can never wedge the
// writer's retry loop with a permanent error.
func cleanText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// farFuture stands in for an open upper bound.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// normRange maps zero bounds to "everything" and truncates to the stored precision.
func normRange(from, to time.Time) (time.Time, time.Time) {
	if from.IsZero() {
		from = time.Unix(0, 0)
	}
	if to.IsZero() {
		to = farFuture
	}
	return from.UTC().Truncate(time.Microsecond), to.UTC().Truncate(time.Microsecond)
}

// Bounds of the key record. They keep every number far from overflow (a budget of $1e9 is
// 1e15 µ$; a lifetime of ten years is far below time.Duration's 292 years) and identifiers
// printable.
const (
	// MaxKeyDepth is the longest chain of keys, a root key and the keys minted under it.
	MaxKeyDepth = 5
	// MaxRate bounds RPM and TPM.
	MaxRate = 1_000_000_000
	// MaxBudget bounds a key's spend cap.
	MaxBudget = 1_000_000_000 * Credit
	// MaxKeyLifetime bounds how far ahead a key may expire.
	MaxKeyLifetime  = 10 * 365 * 24 * time.Hour
	maxModelEntries = 64
	maxModelEntry   = 256
	maxKeyName      = 256
)

// Budget periods.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
	PeriodTotal = "total"
)

// PeriodStart is the start of the budget period containing t: UTC midnight, the first of the
// UTC month, or the zero time for "total".
func PeriodStart(period string, t time.Time) time.Time {
	t = t.UTC()
	switch period {
	case PeriodDay:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}

// PeriodEnd is when the budget period containing t ends (the zero time for "total").
func PeriodEnd(period string, t time.Time) time.Time {
	start := PeriodStart(period, t)
	switch period {
	case PeriodDay:
		return start.AddDate(0, 0, 1)
	case PeriodMonth:
		return start.AddDate(0, 1, 0)
	}
	return time.Time{}
}

// IsRootOwner reports whether the key is an owner key: every scope and no expiry. Such a key
// speaks for the workspace: the keys it mints are root keys (no parent), so an owner key can
// be rotated without revoking the workspace's other keys, and one always has to remain.
func (k Key) IsRootOwner() bool { return k.IsOwner() && k.ExpiresAt == nil }

// IsOwner reports whether the key holds every scope.
func (k Key) IsOwner() bool {
	for _, s := range AllScopes {
		if !k.Has(s) {
			return false
		}
	}
	return true
}

// LimitChain is the key's own limits followed by its ancestors', parent first.
func (k Key) LimitChain() []KeyAncestor {
	out := make([]KeyAncestor, 0, 1+len(k.Ancestors))
	out = append(out, KeyAncestor{ID: k.ID, Limits: k.Limits})
	return append(out, k.Ancestors...)
}

// AdmitsModel reports whether the allow-list admits a request for model name, which the
// gateway routes to targets ("provider/model"). A name on the list is admitted; otherwise
// every target must be: listed as "provider/model", under a listed "provider/*", or by its
// bare model id. So a slug is admitted when listed or when all of its candidates are.
func (l KeyLimits) AdmitsModel(name string, targets []string) bool {
	if len(l.Models) == 0 || slices.Contains(l.Models, name) {
		return true
	}
	if len(targets) == 0 {
		return false
	}
	for _, t := range targets {
		if !l.admitsTarget(t) {
			return false
		}
	}
	return true
}

func (l KeyLimits) admitsTarget(target string) bool {
	provider, model, ok := strings.Cut(target, "/")
	for _, m := range l.Models {
		if m == target || (ok && (m == provider+"/*" || (m == model && !strings.Contains(m, "/")))) {
			return true
		}
	}
	return false
}

// covers reports whether every request an allow-list entry admits is admitted by l, so a
// parent can hand the entry to a child.
func (l KeyLimits) covers(entry string) bool {
	if len(l.Models) == 0 || slices.Contains(l.Models, entry) {
		return true
	}
	provider, model, ok := strings.Cut(entry, "/")
	bare := model != "*" && !strings.Contains(model, "/")
	return ok && (slices.Contains(l.Models, provider+"/*") || (bare && slices.Contains(l.Models, model)))
}

// normalize validates the limits and returns them with trimmed, de-duplicated models.
func (l KeyLimits) normalize() (KeyLimits, error) {
	if l.RPM < 0 || l.RPM > MaxRate || l.TPM < 0 || l.TPM > MaxRate {
		return l, fmt.Errorf("%w: rpm and tpm must be between 0 and %d", ErrInvalid, MaxRate)
	}
	if l.BudgetMicros < 0 || l.BudgetMicros > MaxBudget {
		return l, fmt.Errorf("%w: a budget must be between 0 and %s dollars", ErrInvalid, MaxBudget)
	}
	switch l.BudgetPeriod {
	case "":
		if l.BudgetMicros > 0 {
			l.BudgetPeriod = PeriodTotal
		}
	case PeriodDay, PeriodMonth, PeriodTotal:
		if l.BudgetMicros == 0 {
			return l, fmt.Errorf("%w: a budget period needs a budget", ErrInvalid)
		}
	default:
		return l, fmt.Errorf("%w: budget period %q (want day, month or total)", ErrInvalid, l.BudgetPeriod)
	}
	if len(l.Models) > maxModelEntries {
		return l, fmt.Errorf("%w: at most %d models", ErrInvalid, maxModelEntries)
	}
	models := make([]string, 0, len(l.Models))
	for _, m := range l.Models {
		m = strings.TrimSpace(m)
		if err := validModelEntry(m); err != nil {
			return l, err
		}
		if !slices.Contains(models, m) {
			models = append(models, m)
		}
	}
	l.Models = models
	return l, nil
}

// validModelEntry accepts slugs and model ids ("gpt-4o", "anthropic.claude-v2:1",
// "claude@2025", "openrouter/anthropic/claude-sonnet-4.5") and "provider/*".
func validModelEntry(m string) error {
	if m == "" || len(m) > maxModelEntry {
		return fmt.Errorf("%w: a model entry must be 1 to %d characters", ErrInvalid, maxModelEntry)
	}
	body := strings.TrimSuffix(m, "/*")
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@/+-", c) >= 0) {
			return fmt.Errorf("%w: model entry %q: only letters, digits and . _ : @ / + - are allowed, and * only as a whole model (\"provider/*\")", ErrInvalid, m)
		}
	}
	if body == "" || body[0] == '/' || body[len(body)-1] == '/' {
		return fmt.Errorf("%w: model entry %q is not a model, provider/model or provider/*", ErrInvalid, m)
	}
	return nil
}

// prepareKey validates a key spec against its parent (nil for a root key) and returns it
// normalized: a child inherits its parent's expiry and model list when it names none.
func prepareKey(spec KeySpec, parent *Key, now time.Time) (KeySpec, error) {
	if len(spec.Name) > maxKeyName || strings.ContainsFunc(spec.Name, unicode.IsControl) {
		return spec, fmt.Errorf("%w: a key name must be at most %d characters without control characters", ErrInvalid, maxKeyName)
	}
	if err := validateScopes(spec.Scopes); err != nil {
		return spec, err
	}
	lim, err := spec.Limits.normalize()
	if err != nil {
		return spec, err
	}
	spec.Limits = lim
	spec.Scopes = slices.Clone(spec.Scopes)
	if spec.ExpiresAt != nil {
		e := spec.ExpiresAt.UTC().Truncate(time.Microsecond)
		if e.After(now.Add(MaxKeyLifetime)) {
			return spec, fmt.Errorf("%w: a key may expire at most %d years ahead", ErrInvalid, MaxKeyLifetime/(365*24*time.Hour))
		}
		spec.ExpiresAt = &e
	}
	if parent == nil {
		return spec, nil
	}
	if err := parent.Check(now); err != nil {
		return spec, fmt.Errorf("%w: the parent key %s is not usable (%v)", ErrInvalid, parent.ID, err)
	}
	if len(parent.Ancestors)+1 >= MaxKeyDepth {
		return spec, fmt.Errorf("%w: a chain of keys minting keys is at most %d keys long", ErrInvalid, MaxKeyDepth)
	}
	for _, s := range spec.Scopes {
		if !parent.Has(s) {
			return spec, fmt.Errorf("%w: cannot grant scope %q: the parent key does not hold it", ErrInvalid, s)
		}
	}
	for _, m := range spec.Limits.Models {
		if !parent.Limits.covers(m) {
			return spec, fmt.Errorf("%w: cannot grant model %q: the parent key may not use it", ErrInvalid, m)
		}
	}
	if len(spec.Limits.Models) == 0 {
		spec.Limits.Models = slices.Clone(parent.Limits.Models)
	}
	if pe := parent.ExpiresAt; pe != nil {
		switch {
		case spec.ExpiresAt == nil:
			e := *pe
			spec.ExpiresAt = &e
		case spec.ExpiresAt.After(*pe):
			return spec, fmt.Errorf("%w: the key would expire at %s, after the key creating it (%s); a key cannot outlive its parent",
				ErrInvalid, spec.ExpiresAt.Format(time.RFC3339), pe.UTC().Format(time.RFC3339))
		}
	}
	return spec, nil
}

// isRootOwner reports whether a key keeps a workspace manageable: every scope, no expiry.
func isRootOwner(k Key, now time.Time) bool { return k.IsRootOwner() && k.Check(now) == nil }

// revocationSet is the key root and every key minted under it, from all of a workspace's
// keys. It is ErrNotFound when root is not among them, and ErrLastOwnerKey when the set holds
// a usable root owner key and no other would remain.
func revocationSet(keys []Key, root string, now time.Time) (map[string]bool, error) {
	if !slices.ContainsFunc(keys, func(k Key) bool { return k.ID == root }) {
		return nil, ErrNotFound
	}
	set := map[string]bool{root: true}
	for grew := true; grew; { // a fixed point: chains are at most MaxKeyDepth long
		grew = false
		for _, k := range keys {
			if !set[k.ID] && k.ParentID != "" && set[k.ParentID] {
				set[k.ID], grew = true, true
			}
		}
	}
	losesOwner, keepsOwner := false, false
	for _, k := range keys {
		if isRootOwner(k, now) {
			losesOwner = losesOwner || set[k.ID]
			keepsOwner = keepsOwner || !set[k.ID]
		}
	}
	if losesOwner && !keepsOwner {
		return nil, ErrLastOwnerKey
	}
	return set, nil
}

func (l WorkspaceLimits) validate() error {
	if l.RPM < 0 || l.RPM > MaxRate || l.TPM < 0 || l.TPM > MaxRate {
		return fmt.Errorf("%w: rpm and tpm must be between 0 and %d", ErrInvalid, MaxRate)
	}
	return nil
}
