// Package googleauth turns a Google service-account key into OAuth2 access tokens with the JWT
// bearer grant (RFC 7523; reference providers.md §5.4): an RS256-signed assertion is exchanged
// at the key's token_uri for a short-lived access token. Tokens are cached and refreshed five
// minutes before they expire; concurrent callers share one refresh. Neither the private key nor
// a token is ever logged or put into an error.
package googleauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Defaults from Google's documentation.
const (
	DefaultTokenURI = "https://oauth2.googleapis.com/token"
	CloudPlatform   = "https://www.googleapis.com/auth/cloud-platform"
	GrantType       = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// RefreshBefore is how long before expiry a cached token is replaced.
	RefreshBefore = 5 * time.Minute
	assertionTTL  = time.Hour
)

// ServiceAccount is the part of a service-account JSON key the grant uses.
type ServiceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// String never prints the key.
func (sa *ServiceAccount) String() string {
	return "googleauth.ServiceAccount{" + sa.ClientEmail + "}"
}

// ParseServiceAccount decodes a service-account JSON key and checks the fields the grant needs.
func ParseServiceAccount(b []byte) (*ServiceAccount, error) {
	var sa ServiceAccount
	if err := json.Unmarshal(b, &sa); err != nil {
		return nil, errors.New("googleauth: credentials are not valid JSON")
	}
	if sa.Type != "" && sa.Type != "service_account" {
		return nil, fmt.Errorf("googleauth: credentials type %q is not service_account", sa.Type)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, errors.New("googleauth: credentials lack client_email or private_key")
	}
	return &sa, nil
}

// ReadServiceAccount reads a service-account key file.
func ReadServiceAccount(path string) (*ServiceAccount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("googleauth: reading credentials file: %w", err)
	}
	return ParseServiceAccount(b)
}

// ParsePrivateKey decodes a PEM PKCS#8 (or PKCS#1) RSA private key.
func ParsePrivateKey(pemKey string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(pemKey))
	if block == nil {
		return nil, errors.New("googleauth: private_key is not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("googleauth: private_key is not an RSA key")
		}
		return rk, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("googleauth: private_key could not be parsed")
}

// TokenSource yields a valid access token.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Options tune a Source. Zero values take defaults.
type Options struct {
	// TokenURI overrides the key's token_uri (tests point it at a fake endpoint).
	TokenURI string
	// Scope defaults to cloud-platform.
	Scope string
	// Client defaults to a client with a 30 s timeout.
	Client *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Source exchanges signed assertions for access tokens and caches them.
type Source struct {
	email, keyID, tokenURI, scope string
	key                           *rsa.PrivateKey
	client                        *http.Client
	now                           func() time.Time

	mu      sync.Mutex
	token   string
	expiry  time.Time
	flight  *flight
	fetches int
}

type flight struct {
	done  chan struct{}
	token string
	err   error
}

// NewSource builds a token source for a service account.
func NewSource(sa *ServiceAccount, opts Options) (*Source, error) {
	key, err := ParsePrivateKey(sa.PrivateKey)
	if err != nil {
		return nil, err
	}
	s := &Source{email: sa.ClientEmail, keyID: sa.PrivateKeyID, key: key, tokenURI: opts.TokenURI,
		scope: opts.Scope, client: opts.Client, now: opts.Now}
	if s.tokenURI == "" {
		s.tokenURI = sa.TokenURI
	}
	if s.tokenURI == "" {
		s.tokenURI = DefaultTokenURI
	}
	if u, err := url.Parse(s.tokenURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("googleauth: token_uri must be an http(s) URL")
	}
	if s.scope == "" {
		s.scope = CloudPlatform
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second}
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Token returns a cached token, or fetches one. Concurrent callers share a single fetch, which
// runs detached from any one caller's cancellation; a caller whose ctx ends stops waiting.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.token != "" && s.now().Before(s.expiry.Add(-RefreshBefore)) {
		t := s.token
		s.mu.Unlock()
		return t, nil
	}
	f := s.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		s.flight = f
		s.fetches++
		go s.refresh(context.WithoutCancel(ctx), f)
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Invalidate drops the cached token, e.g. after the upstream answered 401.
func (s *Source) Invalidate() {
	s.mu.Lock()
	s.token, s.expiry = "", time.Time{}
	s.mu.Unlock()
}

// Fetches reports how many token requests were made (for tests and metrics).
func (s *Source) Fetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

func (s *Source) refresh(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, exp, err := s.fetch(ctx)
	s.mu.Lock()
	if err == nil {
		s.token, s.expiry = tok, exp
	}
	s.flight = nil
	s.mu.Unlock()
	f.token, f.err = tok, err
	close(f.done)
}

// TokenError is a failed token exchange. Code is OAuth's error code (invalid_grant …).
type TokenError struct {
	Status      int
	Code        string
	Description string
	Err         error // transport failure, when there was no response
}

func (e *TokenError) Error() string {
	if e.Err != nil {
		return "googleauth: token request failed: " + e.Err.Error()
	}
	msg := fmt.Sprintf("googleauth: token endpoint answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

func (e *TokenError) Unwrap() error { return e.Err }

// Temporary reports whether retrying later may help (transport failures, 5xx, 429).
func (e *TokenError) Temporary() bool {
	return e.Err != nil || e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

func (s *Source) fetch(ctx context.Context) (string, time.Time, error) {
	now := s.now()
	assertion, err := s.Assertion(now)
	if err != nil {
		return "", time.Time{}, err
	}
	form := url.Values{"grant_type": {GrantType}, "assertion": {assertion}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURI, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, &TokenError{Err: errors.New("bad token_uri")}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error would repeat the URL only; it holds no secret.
		return "", time.Time{}, &TokenError{Err: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body struct {
		AccessToken      string `json:"access_token"`
		ExpiresIn        int64  `json:"expires_in"`
		TokenType        string `json:"token_type"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	_ = json.Unmarshal(raw, &body)
	if resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		return "", time.Time{}, &TokenError{Status: resp.StatusCode, Code: body.Error, Description: truncate(body.ErrorDescription, 200)}
	}
	if body.ExpiresIn <= 0 {
		body.ExpiresIn = 3600
	}
	return body.AccessToken, now.Add(time.Duration(body.ExpiresIn) * time.Second), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Claims are the JWT claims of a bearer-grant assertion.
type Claims struct {
	Iss   string `json:"iss"`
	Scope string `json:"scope"`
	Aud   string `json:"aud"`
	Iat   int64  `json:"iat"`
	Exp   int64  `json:"exp"`
	Sub   string `json:"sub,omitempty"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid,omitempty"`
}

// Assertion builds the signed JWT for the grant, issued at now. aud is the token URI.
func (s *Source) Assertion(now time.Time) (string, error) {
	h, _ := json.Marshal(header{Alg: "RS256", Typ: "JWT", Kid: s.keyID})
	c, _ := json.Marshal(Claims{Iss: s.email, Scope: s.scope, Aud: s.tokenURI, Iat: now.Unix(), Exp: now.Add(assertionTTL).Unix()})
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", errors.New("googleauth: signing the assertion failed")
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// Verification failures of VerifyAssertion.
var (
	ErrMalformedJWT = errors.New("googleauth: malformed JWT")
	ErrBadSignature = errors.New("googleauth: invalid JWT signature")
	ErrBadClaims    = errors.New("googleauth: invalid JWT claims")
)

// VerifyAssertion checks an RS256 assertion as Google's token endpoint does: the signature
// with the issuer's public key (looked up by iss), audience, issue and expiry times (lifetime at
// most one hour, small clock skew allowed) and a non-empty scope. It returns the claims.
func VerifyAssertion(jwt string, publicKey func(iss string) (*rsa.PublicKey, bool), aud string, now time.Time) (*Claims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, ErrMalformedJWT
	}
	enc := base64.RawURLEncoding
	hb, err1 := enc.DecodeString(parts[0])
	cb, err2 := enc.DecodeString(parts[1])
	sig, err3 := enc.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, ErrMalformedJWT
	}
	var h header
	var c Claims
	if json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		return nil, ErrMalformedJWT
	}
	if h.Alg != "RS256" {
		return nil, ErrMalformedJWT
	}
	pub, ok := publicKey(c.Iss)
	if !ok {
		return nil, ErrBadClaims
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return nil, ErrBadSignature
	}
	const skew = 60
	t := now.Unix()
	if c.Aud != aud || c.Scope == "" || c.Iat > t+skew || c.Exp < t-skew || c.Exp <= c.Iat || c.Exp-c.Iat > 3600 {
		return nil, ErrBadClaims
	}
	return &c, nil
}
