package googleauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

func key(t *testing.T) *rsa.PrivateKey {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

func saJSON(t *testing.T, tokenURI string) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(key(t))
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	b, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "p", "private_key_id": "kid1",
		"private_key": pemKey, "client_email": "sa@p.iam.gserviceaccount.com", "token_uri": tokenURI})
	return b
}

type fakeEndpoint struct {
	srv     *httptest.Server
	calls   atomic.Int32
	fail    atomic.Bool
	delay   time.Duration
	expires int
	now     func() time.Time
}

func newFake(t *testing.T) *fakeEndpoint {
	f := &fakeEndpoint{expires: 3600, now: time.Now}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.calls.Add(1)
		time.Sleep(f.delay)
		if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != GrantType {
			http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
			return
		}
		_, err := VerifyAssertion(r.Form.Get("assertion"), func(iss string) (*rsa.PublicKey, bool) {
			return &key(t).PublicKey, iss == "sa@p.iam.gserviceaccount.com"
		}, f.srv.URL+"/token", f.now())
		if err != nil || f.fail.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"ya29.tok%d","expires_in":%d,"token_type":"Bearer"}`, n, f.expires)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func TestTokenCachedAndRefreshed(t *testing.T) {
	f := newFake(t)
	sa, err := ParseServiceAccount(saJSON(t, f.srv.URL+"/token"))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().Unix())
	now := func() time.Time { return time.Unix(clock.Load(), 0) }
	f.now = now
	src, err := NewSource(sa, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := src.Token(ctx)
	if err != nil || tok != "ya29.tok1" {
		t.Fatalf("first: %q %v", tok, err)
	}
	clock.Add(3600 - 301) // still more than 5 minutes left
	if tok, _ := src.Token(ctx); tok != "ya29.tok1" {
		t.Fatalf("cached token not reused: %q", tok)
	}
	clock.Add(2) // within 5 minutes of expiry: refresh
	if tok, _ := src.Token(ctx); tok != "ya29.tok2" {
		t.Fatalf("not refreshed: %q", tok)
	}
	src.Invalidate()
	if tok, _ := src.Token(ctx); tok != "ya29.tok3" {
		t.Fatalf("not refetched after Invalidate: %q", tok)
	}
}

func TestSingleFlight(t *testing.T) {
	f := newFake(t)
	f.delay = 50 * time.Millisecond
	sa, _ := ParseServiceAccount(saJSON(t, "https://unused.example/token"))
	src, err := NewSource(sa, Options{TokenURI: f.srv.URL + "/token"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	toks := make([]string, 20)
	for i := range toks {
		wg.Go(func() {
			tok, err := src.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		})
	}
	// A caller that gives up does not cancel the shared fetch.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.Token(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	wg.Wait()
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	for _, tok := range toks {
		if tok != "ya29.tok1" {
			t.Fatalf("token %q", tok)
		}
	}
}

func TestTokenErrors(t *testing.T) {
	f := newFake(t)
	f.fail.Store(true)
	raw := saJSON(t, f.srv.URL+"/token")
	sa, _ := ParseServiceAccount(raw)
	src, _ := NewSource(sa, Options{})
	_, err := src.Token(context.Background())
	var te *TokenError
	if !errors.As(err, &te) || te.Code != "invalid_grant" || te.Status != 400 || te.Temporary() {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "eyJ") {
		t.Fatalf("error leaks: %v", err)
	}
	if strings.Contains(fmt.Sprint(sa), "PRIVATE") {
		t.Fatal("ServiceAccount String leaks the key")
	}
	// Failures are not cached: the next call tries again.
	f.fail.Store(false)
	if tok, err := src.Token(context.Background()); err != nil || tok == "" {
		t.Fatalf("retry: %v", err)
	}

	// Unreachable endpoint.
	src2, _ := NewSource(sa, Options{TokenURI: "http://127.0.0.1:1/token"})
	if _, err := src2.Token(context.Background()); !errors.As(err, &te) || !te.Temporary() {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{`nope`, `{"type":"authorized_user"}`, `{"client_email":"a"}`} {
		if _, err := ParseServiceAccount([]byte(in)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
	if _, err := NewSource(&ServiceAccount{ClientEmail: "a", PrivateKey: "garbage"}, Options{}); err == nil {
		t.Error("bad key accepted")
	}
	sa, _ := ParseServiceAccount(saJSON(t, "ftp://x"))
	if _, err := NewSource(sa, Options{}); err == nil {
		t.Error("ftp token_uri accepted")
	}
}

func TestVerifyAssertion(t *testing.T) {
	sa, _ := ParseServiceAccount(saJSON(t, "https://oauth2.googleapis.com/token"))
	src, _ := NewSource(sa, Options{})
	now := time.Unix(1_800_000_000, 0)
	jwt, err := src.Assertion(now)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	pub := func(k *rsa.PrivateKey) func(string) (*rsa.PublicKey, bool) {
		return func(string) (*rsa.PublicKey, bool) { return &k.PublicKey, true }
	}
	tests := []struct {
		name string
		jwt  string
		key  func(string) (*rsa.PublicKey, bool)
		aud  string
		at   time.Time
		want error
	}{
		{"ok", jwt, pub(key(t)), DefaultTokenURI, now, nil},
		{"wrong key", jwt, pub(other), DefaultTokenURI, now, ErrBadSignature},
		{"wrong aud", jwt, pub(key(t)), "https://other/token", now, ErrBadClaims},
		{"expired", jwt, pub(key(t)), DefaultTokenURI, now.Add(2 * time.Hour), ErrBadClaims},
		{"future", jwt, pub(key(t)), DefaultTokenURI, now.Add(-time.Hour), ErrBadClaims},
		{"tampered", jwt[:len(jwt)-4] + "AAAA", pub(key(t)), DefaultTokenURI, now, ErrBadSignature},
		{"garbage", "a.b", pub(key(t)), DefaultTokenURI, now, ErrMalformedJWT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := VerifyAssertion(tc.jwt, tc.key, tc.aud, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v want %v", err, tc.want)
			}
			if err == nil && (c.Iss != "sa@p.iam.gserviceaccount.com" || c.Scope != CloudPlatform) {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}
