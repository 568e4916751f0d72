// Package ledger is BTL Runtime's money and record store: workspaces, API keys, credit grants,
// cross-node credit leases, append-only ledger rows and usage summaries, with a PostgreSQL and
// an embedded SQLite backend behind one Store interface, plus a crash-safe write-ahead spool
// (Writer) that moves rows off the request path.
//
// Money is integer micro-dollars (Micros) everywhere; nothing in this package uses floats.
// The package imports neither Caddy nor any other package of this repository, so it can be
// tested and reused without a server.
package ledger

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Micros is an amount of money in micro-dollars: 1 credit = $1 = 1_000_000 Micros.
// Integers keep sums exact; conversion to decimal dollars happens only at the JSON edge.
type Micros int64

// Credit is one credit ($1) in Micros.
const Credit Micros = 1_000_000

// String formats m as decimal dollars with six fractional digits, e.g. "1.250000".
func (m Micros) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign = "-"
		u = uint64(-m) // also right for MinInt64 thanks to two's complement
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/1_000_000, u%1_000_000)
}

// Exported sentinel errors. Callers match them with errors.Is.
var (
	// ErrNotFound means the workspace, key or lease does not exist (or belongs to another
	// workspace: we do not reveal which).
	ErrNotFound = errors.New("ledger: not found")
	// ErrInsufficientCredits means the balance (or what can still be leased) cannot cover the
	// amount; handlers map it to 402 insufficient_quota.
	ErrInsufficientCredits = errors.New("ledger: insufficient credits")
	// ErrRevoked is returned (with the key record) by LookupKey for a revoked key.
	ErrRevoked = errors.New("ledger: key revoked")
	// ErrExpired is returned by LookupKey for an expired key and by RenewLease for a lapsed lease.
	ErrExpired = errors.New("ledger: expired")
	// ErrInvalid wraps argument validation failures (unknown scope, zero grant, bad group-by).
	ErrInvalid = errors.New("ledger: invalid argument")
	// ErrClosed is returned by a Writer or Credits after Close.
	ErrClosed = errors.New("ledger: closed")
	// ErrLastOwnerKey is returned by RevokeKey when the revocation would leave the workspace
	// without an owner key (every scope, no expiry, not revoked): nobody could manage it.
	ErrLastOwnerKey = errors.New("ledger: the workspace's last owner key cannot be revoked")
	// ErrBudgetExceeded is returned by Budgets.Reserve when a key's spend cap (its own or an
	// ancestor's) cannot cover the amount; handlers map it to 402 insufficient_quota.
	ErrBudgetExceeded = errors.New("ledger: key budget exceeded")
)

// Scope is a permission carried by an API key.
type Scope string

// The scopes of the design contract. The workspace owner key has all three.
const (
	ScopeInference Scope = "inference"
	ScopeUsageRead Scope = "usage:read"
	ScopeKeysWrite Scope = "keys:write"
)

// AllScopes lists every scope, in a stable order.
var AllScopes = []Scope{ScopeInference, ScopeUsageRead, ScopeKeysWrite}

// Workspace is a billing unit: keys belong to it and rows are charged to it.
// Balance is always Granted − Spent, both kept in the same transactions as the grant and
// ledger rows that change them.
type Workspace struct {
	ID        string
	Name      string
	CreatedAt time.Time
	Granted   Micros
	Spent     Micros
	Limits    WorkspaceLimits
}

// WorkspaceLimits bound the whole workspace, whatever key calls; 0 means no limit.
type WorkspaceLimits struct {
	RPM int64 `json:"rpm"` // requests per minute
	TPM int64 `json:"tpm"` // tokens per minute
}

// Balance is Granted − Spent.
func (w Workspace) Balance() Micros { return w.Granted - w.Spent }

// Key is an API key record. Only the SHA-256 of the secret is stored; Prefix (the first 12
// characters of the secret) lets people recognise a key in listings.
type Key struct {
	ID          string
	WorkspaceID string
	Name        string
	Prefix      string
	Hash        [32]byte
	Scopes      []Scope
	CreatedAt   time.Time
	ExpiresAt   *time.Time
	RevokedAt   *time.Time
	// ParentID is the key that minted this one through the API ("" for owner and CLI keys).
	// A child never outlives its parent and is revoked with it.
	ParentID string
	Limits   KeyLimits
	// Ancestors are the keys above this one, parent first, with their limits. Only LookupKey
	// fills it: a key's use counts against each ancestor's limits too, so minting children
	// can never widen what a key may do.
	Ancestors []KeyAncestor
}

// KeyLimits are what a key may do; the zero value is "no limits". They are fixed when the key
// is created.
type KeyLimits struct {
	// Models is the allow-list; empty admits any model. An entry is a public slug, a pinned
	// "provider/model", "provider/*" (any model of that provider) or a bare upstream model id
	// (that model from any provider).
	Models []string
	// RPM and TPM are requests and tokens per minute (0: none).
	RPM, TPM int64
	// BudgetMicros caps the spend of the key and the keys it minted per BudgetPeriod (0: none).
	BudgetMicros Micros
	// BudgetPeriod is "day" or "month" (UTC calendar periods) or "total".
	BudgetPeriod string
}

// KeyAncestor is a key above another in the chain of keys that minted it.
type KeyAncestor struct {
	ID     string
	Limits KeyLimits
}

// KeySpec describes a key to create.
type KeySpec struct {
	Name   string
	Scopes []Scope
	// ExpiresAt may be nil (no expiry). With a ParentID it may not be later than the parent's
	// expiry, and nil means the parent's.
	ExpiresAt *time.Time
	// ParentID is the key minting this one ("" for owner and CLI keys). The parent must be a
	// usable key of the same workspace holding every scope and model the child asks for.
	ParentID string
	Limits   KeyLimits
}

// KeySpend is what a key and the keys it minted spent since some time, split into this
// node's rows and the other nodes' (see Budgets).
type KeySpend struct {
	Node, Others Micros
}

// Has reports whether the key carries scope s.
func (k Key) Has(s Scope) bool {
	for _, x := range k.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

// Check returns ErrRevoked or ErrExpired when the key must not be used at time now.
func (k Key) Check(now time.Time) error {
	if k.RevokedAt != nil {
		return ErrRevoked
	}
	if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
		return ErrExpired
	}
	return nil
}

// Revocation identifies a revoked key, for invalidating auth caches.
type Revocation struct {
	KeyID     string
	Hash      [32]byte
	RevokedAt time.Time
}

// Lease is the result of a lease operation: the part of a workspace's balance one node may
// spend without asking the database.
type Lease struct {
	// Granted is how much this call added (AcquireLease) or released (ReleaseLease).
	Granted Micros
	// Amount is the node's whole lease after the call.
	Amount Micros
	// ExpiresAt is the database's expiry of the lease (database clock).
	ExpiresAt time.Time
	// Reset is true when AcquireLease found the node's previous lease expired and started a
	// new one (the old amount no longer counts), so callers must not add Granted to a local
	// copy of the old amount.
	Reset bool
}

// Usage is the provider-independent token usage normal form.
type Usage struct {
	InputUncached int64
	CacheRead     int64
	CacheWrite5m  int64
	CacheWrite1h  int64
	Output        int64
	Reasoning     int64
}

func (u *Usage) add(o Usage) {
	u.InputUncached += o.InputUncached
	u.CacheRead += o.CacheRead
	u.CacheWrite5m += o.CacheWrite5m
	u.CacheWrite1h += o.CacheWrite1h
	u.Output += o.Output
	u.Reasoning += o.Reasoning
}

// Savings is what each optimisation lever saved, in Micros, relative to the baseline.
type Savings struct {
	SavePromptCache   Micros
	SaveResponseCache Micros
	SaveCoalesce      Micros
	SaveCompression   Micros
	SaveDedupe        Micros
	SaveOutputBudget  Micros
	SaveRouting       Micros
}

func (s *Savings) add(o Savings) {
	s.SavePromptCache += o.SavePromptCache
	s.SaveResponseCache += o.SaveResponseCache
	s.SaveCoalesce += o.SaveCoalesce
	s.SaveCompression += o.SaveCompression
	s.SaveDedupe += o.SaveDedupe
	s.SaveOutputBudget += o.SaveOutputBudget
	s.SaveRouting += o.SaveRouting
}

// Row is one ledger row: one request, append-only, idempotent by RequestID. Usage and
// Savings are embedded so their fields read as row.Output, row.SaveDedupe, ….
type Row struct {
	RequestID      string
	Time           time.Time // stored with microsecond precision, UTC
	WorkspaceID    string
	KeyID          string
	NodeID         string
	RequestedModel string
	Provider       string
	UpstreamModel  string
	Usage
	CostMicros     Micros
	BaselineMicros Micros
	Savings
	Status       int    // HTTP status sent to the client
	CacheOutcome string // hit|miss|coalesced|bypass
	Attempts     int
	LatencyUs    int64 // total latency, microseconds
	TTFBUs       int64 // time to first byte, microseconds
	Stream       bool
	ErrorCode    string
}

// ReleaseAll passed to ReleaseLease gives back the whole lease.
const ReleaseAll Micros = 1<<63 - 1

// Cursor pages ListRows (newest first). The zero Cursor starts at the newest row.
type Cursor struct {
	Time      time.Time
	RequestID string
}

// IsZero reports whether c is the starting cursor.
func (c Cursor) IsZero() bool { return c.RequestID == "" && c.Time.IsZero() }

// String encodes the cursor as an opaque URL-safe token for APIs ("" for the zero cursor).
func (c Cursor) String() string {
	if c.IsZero() {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.Time.UnixMicro(), 10) + "." + c.RequestID))
}

// ParseCursor decodes Cursor.String; "" is the zero cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: cursor", ErrInvalid)
	}
	ts, id, ok := strings.Cut(string(b), ".")
	us, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" {
		return Cursor{}, fmt.Errorf("%w: cursor", ErrInvalid)
	}
	return Cursor{Time: time.UnixMicro(us).UTC(), RequestID: id}, nil
}

// Store is the persistence boundary. Both implementations (Postgres, SQLite) pass the same
// contract tests. Methods are safe for concurrent use.
type Store interface {
	// Ping checks that the database is reachable.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error

	// CreateWorkspace creates a workspace, an owner key with every scope (its secret is
	// returned once and never stored) and, when initialCredits > 0, an initial grant.
	CreateWorkspace(ctx context.Context, name string, initialCredits Micros) (Workspace, string, error)
	// Workspace returns one workspace or ErrNotFound.
	Workspace(ctx context.Context, ws string) (Workspace, error)

	// ListWorkspaces lists every workspace, oldest first (for operators).
	ListWorkspaces(ctx context.Context) ([]Workspace, error)
	// SetWorkspaceLimits replaces the workspace's rate limits.
	SetWorkspaceLimits(ctx context.Context, ws string, limits WorkspaceLimits) error

	// CreateKey adds a key to workspace ws. Invalid specs (unknown scope, limits out of
	// range, a child asking for more than its parent holds or outliving it) are ErrInvalid;
	// an unknown workspace or parent is ErrNotFound. It returns the secret once.
	CreateKey(ctx context.Context, ws string, spec KeySpec) (Key, string, error)
	// LookupKey finds a key by the SHA-256 of its secret, with its Ancestors. It returns
	// ErrNotFound for an unknown hash, and the key together with ErrRevoked or ErrExpired for
	// an unusable one.
	LookupKey(ctx context.Context, hash [32]byte) (Key, error)
	// ListKeys lists the workspace's keys (revoked ones included), oldest first.
	ListKeys(ctx context.Context, ws string) ([]Key, error)
	// RevokeKey revokes a key of workspace ws and every key minted under it (idempotent). A
	// key of another workspace is ErrNotFound; a revocation that would leave no owner key
	// (every scope, no expiry) is ErrLastOwnerKey and changes nothing. Every revoked key is
	// announced to WatchRevocations subscribers.
	RevokeKey(ctx context.Context, ws, keyID string) error
	// RevokedSince lists keys revoked at or after t (for polling auth caches).
	RevokedSince(ctx context.Context, t time.Time) ([]Revocation, error)
	// WatchRevocations calls fn with the hash of every key revoked from now on, until ctx
	// is done (it blocks; run it in a goroutine). PostgreSQL uses LISTEN/NOTIFY and catches up
	// with RevokedSince after a reconnect; SQLite polls RevokedSince every 500ms.
	// It returns ctx.Err() when ctx ends.
	WatchRevocations(ctx context.Context, fn func(keyHash [32]byte)) error

	// Grant adds amount to the workspace, once per idempotencyKey (e.g. a Stripe event id).
	// A replay returns applied=false and changes nothing. An empty idempotencyKey means
	// "not idempotent": a unique one is generated.
	Grant(ctx context.Context, ws string, amount Micros, source, idempotencyKey string) (applied bool, err error)
	// Balance is granted − spent for the workspace.
	Balance(ctx context.Context, ws string) (Micros, error)

	// AcquireLease adds up to want to node's lease on ws, at least min, or fails with
	// ErrInsufficientCredits and changes nothing. The database keeps
	// granted − spent − Σ unexpired leases ≥ 0. The whole lease's expiry becomes now+ttl.
	AcquireLease(ctx context.Context, ws, node string, want, min Micros, ttl time.Duration) (Lease, error)
	// RenewLease extends an unexpired lease to now+ttl. A lapsed lease is dropped and
	// ErrExpired returned; a missing one is ErrNotFound.
	RenewLease(ctx context.Context, ws, node string, ttl time.Duration) (Lease, error)
	// ReleaseLease gives back up to amount (> 0) of node's lease; the row goes when it reaches
	// 0, so ReleaseAll releases everything. Lease.Granted is what was actually released.
	ReleaseLease(ctx context.Context, ws, node string, amount Micros) (Lease, error)

	// InsertRows appends ledger rows, ignoring request ids already present. In the same
	// transaction, for the rows actually inserted, it adds their cost to each workspace's
	// spent and subtracts it (floor 0) from node's lease on that workspace, so replays never
	// double-charge.
	InsertRows(ctx context.Context, node string, rows []Row) error

	// Summary aggregates the workspace's rows with from ≤ time < to, grouped by groupBy
	// ("", "day", "model", "provider", "key").
	Summary(ctx context.Context, ws string, from, to time.Time, groupBy string) (Summary, error)
	// ListRows pages rows newest first; pass the returned cursor to get the next page
	// (a zero cursor means there is no next page).
	ListRows(ctx context.Context, ws string, from, to time.Time, limit int, after Cursor) ([]Row, Cursor, error)
	// ExportRows streams rows oldest first to fn without loading the range into memory;
	// an error from fn stops the export and is returned.
	ExportRows(ctx context.Context, ws string, from, to time.Time, fn func(Row) error) error

	// KeySpend sums the cost of the rows of key keyID and of every key minted under it, in
	// workspace ws, with time ≥ since, split into node's rows and the other nodes'.
	KeySpend(ctx context.Context, ws, keyID string, since time.Time, node string) (KeySpend, error)

	// TakeRate adds n to bucket's counter for the minute starting at window if the counter
	// stays ≤ limit (limit ≤ 0: unconditionally), all or nothing. It returns the counter
	// after the call and whether n was added.
	TakeRate(ctx context.Context, bucket string, window time.Time, n, limit int64) (used int64, ok bool, err error)
	// PurgeRate deletes rate windows that started before t.
	PurgeRate(ctx context.Context, before time.Time) (int64, error)

	// PutResponse stores or replaces a Responses API object of a workspace.
	PutResponse(ctx context.Context, r StoredResponse) error
	// GetResponse returns the workspace's response by id. Another workspace's id and an
	// expired response are ErrNotFound.
	GetResponse(ctx context.Context, ws, id string) (StoredResponse, error)
	// DeleteResponse deletes the workspace's response, or returns ErrNotFound.
	DeleteResponse(ctx context.Context, ws, id string) error
	// PurgeResponses deletes the responses that expired at or before now and says how many.
	PurgeResponses(ctx context.Context, now time.Time) (int64, error)
}
