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
	"github.com/badtheorylabs/btl-runtime/ratelimit"
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

// BenchmarkAuthRateLimited is BenchmarkAuthCacheHit with rate limits on: the key has a
// requests-per-minute limit, so every request takes from its bucket (a slice of the minute
// leased from the store, spent in memory).
func BenchmarkAuthRateLimited(b *testing.B) {
	for _, rpm := range []int64{0, ledger.MaxRate} {
		name := "key_without_limit"
		if rpm > 0 {
			name = "key_with_rpm"
		}
		b.Run(name, func(b *testing.B) {
			h, owner := authFixture(b)
			ctx := context.Background()
			k, err := h.led.Store.LookupKey(ctx, ledger.HashKey(owner))
			if err != nil {
				b.Fatal(err)
			}
			_, secret, err := h.led.Store.CreateKey(ctx, k.WorkspaceID, ledger.KeySpec{Scopes: ledger.AllScopes, Limits: ledger.KeyLimits{RPM: rpm}})
			if err != nil {
				b.Fatal(err)
			}
			h.led.Limits = ratelimit.New(h.led.Store, ratelimit.Options{})
			b.Cleanup(h.led.Limits.Close)
			r, _ := http.NewRequest(http.MethodPost, PathChat, nil)
			r.Header.Set("Authorization", "Bearer "+secret)
			w := &discardWriter{h: http.Header{}}
			serve := func() {
				req := r.WithContext(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{}))
				if err := h.ServeHTTP(w, req, nextNop); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 { // cache the key and the workspace's limits
				serve()
				time.Sleep(time.Millisecond)
			}
			b.ReportAllocs()
			for b.Loop() {
				serve()
			}
		})
	}
}
