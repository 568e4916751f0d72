package handlers

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

func authFixture(b *testing.B) (*Auth, string) {
	store, err := ledger.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "auth.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	_, secret, err := store.CreateWorkspace(context.Background(), "bench", ledger.Credit)
	if err != nil {
		b.Fatal(err)
	}
	keys := NewKeyCache(store)
	b.Cleanup(keys.Close)
	h := &Auth{led: &Ledger{Store: store, Keys: keys}, logger: zap.NewNop()}
	// Warm the cache (ristretto admits entries asynchronously).
	for range 100 {
		if _, err := keys.Lookup(context.Background(), secret); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	return h, secret
}

// BenchmarkAuthCacheHit is btl_auth's whole cost for a request whose key is cached: route
// scope lookup, header parse, SHA-256, cache hit, scope check, identity published.
func BenchmarkAuthCacheHit(b *testing.B) {
	h, secret := authFixture(b)
	r, _ := http.NewRequest(http.MethodPost, PathChat, nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req := r.WithContext(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{}))
		if err := h.ServeHTTP(w, req, nextNop); err != nil {
			b.Fatal(err)
		}
	}
}
