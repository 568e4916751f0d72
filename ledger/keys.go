package ledger

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"strings"
	"time"
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
