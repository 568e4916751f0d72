package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Test databases:
//   - SQLite: a fresh file in t.TempDir().
//   - PostgreSQL: BTL_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
//     one fresh schema per test (search_path set through the DSN), dropped afterwards.
//     Unreachable server: t.Fatal when CI is set (CI must never skip silently), else t.Skip.

const defaultTestDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func testDSN() string {
	if v := os.Getenv("BTL_TEST_DATABASE_URL"); v != "" {
		return v
	}
	return defaultTestDSN
}

func withSearchPath(dsn, schema string) string {
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dsn + " search_path=" + schema
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newPGStore returns a migrated Postgres store in its own schema.
func newPGStore(tb testing.TB) *Postgres {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dsn := testDSN()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("PostgreSQL unreachable at %s (CI must not skip): %v", dsn, err)
		}
		tb.Skipf("PostgreSQL unreachable at %s: %v", dsn, err)
	}
	schema := "t_" + randHex(6)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	s, err := OpenPostgres(ctx, withSearchPath(dsn, schema))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema: %v", err)
		}
		admin.Close(ctx)
	})
	return s
}

func newSQLiteStore(tb testing.TB) *SQLite {
	tb.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(tb.TempDir(), "btl.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

var rowSeq atomic.Int64

// testRow builds a distinctive row.
func testRow(ws string, i int, cost Micros) Row {
	return Row{
		RequestID:      fmt.Sprintf("req_%s_%d_%d", randHex(4), i, rowSeq.Add(1)),
		Time:           time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		WorkspaceID:    ws,
		KeyID:          "key_a",
		NodeID:         "n1",
		RequestedModel: "btl-frontier",
		Provider:       "openai",
		UpstreamModel:  "gpt-5",
		Usage:          Usage{InputUncached: 100, CacheRead: 20, CacheWrite5m: 3, CacheWrite1h: 4, Output: 50, Reasoning: 7},
		CostMicros:     cost,
		BaselineMicros: cost + 10,
		Savings:        Savings{SavePromptCache: 1, SaveResponseCache: 2, SaveCoalesce: 3, SaveCompression: 4, SaveDedupe: 5, SaveOutputBudget: 6, SaveRouting: 7},
		Status:         200,
		CacheOutcome:   "miss",
		Attempts:       1,
		LatencyUs:      1234,
		TTFBUs:         456,
		Stream:         i%2 == 0,
		ErrorCode:      "",
	}
}

func mustWorkspace(t testing.TB, s Store, credits Micros) Workspace {
	t.Helper()
	w, _, err := s.CreateWorkspace(context.Background(), "test", credits)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func countRows(t testing.TB, s Store, ws string) (int64, Micros) {
	t.Helper()
	sum, err := s.Summary(context.Background(), ws, time.Time{}, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	return sum.Total.Requests, sum.Total.Cost
}
