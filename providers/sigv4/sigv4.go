// Package sigv4 signs HTTP requests with AWS Signature Version 4 (reference providers.md §4.2)
// and verifies such signatures, for the simulated Bedrock upstream. It implements what the
// gateway needs for Bedrock (and any non-S3 service): path segments encoded twice in the
// canonical request, a signed body hash, optional session tokens. It never logs or returns
// secrets; errors name the failing step only.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// Algorithm is the only signing algorithm supported.
const Algorithm = "AWS4-HMAC-SHA256"

// TimeFormat is the X-Amz-Date layout.
const TimeFormat = "20060102T150405Z"

const dateFormat = "20060102"

// Credentials are an AWS access key pair and an optional session token. String() redacts them.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// String never prints the secret or the token.
func (c Credentials) String() string {
	return "sigv4.Credentials{AccessKeyID:" + c.AccessKeyID + ", …}"
}

// GoString keeps %#v from printing secrets too.
func (c Credentials) GoString() string { return c.String() }

// ErrNoCredentials means neither options nor the environment carried an access key pair.
var ErrNoCredentials = errors.New("sigv4: no AWS credentials: set access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")

// CredentialsFrom reads access_key_id, secret_access_key and session_token from opts, falling
// back as a whole to the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
// environment variables when the options carry no key id. getenv defaults to os.Getenv.
func CredentialsFrom(opts map[string]string, getenv func(string) string) (Credentials, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Credentials{AccessKeyID: opts["access_key_id"], SecretAccessKey: opts["secret_access_key"], SessionToken: opts["session_token"]}
	if c.AccessKeyID == "" && c.SecretAccessKey == "" {
		c = Credentials{AccessKeyID: getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: getenv("AWS_SESSION_TOKEN")}
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return Credentials{}, ErrNoCredentials
	}
	return c, nil
}

// Signer signs requests for one service and region.
type Signer struct {
	Credentials Credentials
	Region      string
	Service     string
	// ContentSHA256 adds and signs x-amz-content-sha256 (the body hash) as a header too.
	ContentSHA256 bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Sign sets X-Amz-Date, X-Amz-Security-Token (with temporary credentials), optionally
// X-Amz-Content-Sha256, and Authorization on req. body must be the exact bytes sent. Signed
// headers are host, content-type and every x-amz-* header present.
func (s *Signer) Sign(req *http.Request, body []byte) error {
	if s.Credentials.AccessKeyID == "" || s.Credentials.SecretAccessKey == "" {
		return ErrNoCredentials
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now().UTC()
	req.Header.Del("Authorization")
	req.Header.Set("X-Amz-Date", t.Format(TimeFormat))
	if s.Credentials.SessionToken != "" {
		req.Header.Set("X-Amz-Security-Token", s.Credentials.SessionToken)
	} else {
		req.Header.Del("X-Amz-Security-Token")
	}
	payloadHash := hashHex(body)
	if s.ContentSHA256 {
		req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	}
	names := signableHeaders(req)
	scope := t.Format(dateFormat) + "/" + s.Region + "/" + s.Service + "/aws4_request"
	creq := CanonicalRequest(req, names, payloadHash)
	sts := StringToSign(t, scope, creq)
	sig := hex.EncodeToString(hmacSHA256(SigningKey(s.Credentials.SecretAccessKey, t, s.Region, s.Service), []byte(sts)))
	req.Header.Set("Authorization", Algorithm+" Credential="+s.Credentials.AccessKeyID+"/"+scope+
		", SignedHeaders="+strings.Join(names, ";")+", Signature="+sig)
	return nil
}

// signableHeaders lists the lowercase header names to sign, sorted.
func signableHeaders(req *http.Request) []string {
	names := []string{"host"}
	for k := range req.Header {
		lk := strings.ToLower(k)
		if lk == "content-type" || strings.HasPrefix(lk, "x-amz-") {
			names = append(names, lk)
		}
	}
	sort.Strings(names)
	return names
}

// CanonicalRequest builds the canonical request for the named (lowercase, sorted) headers.
func CanonicalRequest(req *http.Request, signed []string, payloadHash string) string {
	var b strings.Builder
	b.WriteString(req.Method)
	b.WriteByte('\n')
	b.WriteString(CanonicalURI(req.URL))
	b.WriteByte('\n')
	b.WriteString(CanonicalQuery(req.URL.RawQuery))
	b.WriteByte('\n')
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(headerValue(req, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

func headerValue(req *http.Request, name string) string {
	if name == "host" {
		h := req.Host
		if h == "" && req.URL != nil {
			h = req.URL.Host
		}
		return normalizeSpace(h)
	}
	vals := req.Header.Values(name)
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = normalizeSpace(v)
	}
	return strings.Join(out, ",")
}

// normalizeSpace trims v and collapses inner runs of spaces.
func normalizeSpace(v string) string {
	return strings.Join(strings.Fields(v), " ")
}

// CanonicalURI is the request path as sent (escaped once), with every segment escaped again,
// as SigV4 requires for all services but S3. "" becomes "/".
func CanonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = Escape(s)
	}
	return strings.Join(segs, "/")
}

// CanonicalQuery sorts and re-encodes a raw query string.
func CanonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var pairs []kv
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		pairs = append(pairs, kv{Escape(k), Escape(v)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

// Escape is RFC 3986 percent-encoding as SigV4 defines it: A-Z a-z 0-9 - _ . ~ stay, everything
// else becomes %XX with uppercase hex. Use it for a path segment on the wire too (url.PathEscape
// leaves ':' alone, which Bedrock model ids contain).
func Escape(s string) string {
	const hexd = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexd[c>>4], hexd[c&15])
		}
	}
	return string(b)
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// StringToSign builds the string to sign for a canonical request.
func StringToSign(t time.Time, scope, canonicalRequest string) string {
	return Algorithm + "\n" + t.UTC().Format(TimeFormat) + "\n" + scope + "\n" + hashHex([]byte(canonicalRequest))
}

// SigningKey derives the per-day, per-region, per-service key.
func SigningKey(secret string, t time.Time, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), []byte(t.UTC().Format(dateFormat)))
	k = hmacSHA256(k, []byte(region))
	k = hmacSHA256(k, []byte(service))
	return hmacSHA256(k, []byte("aws4_request"))
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

func hashHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Verification failures. The AWS error name a server should answer with is in Code.
var (
	ErrMissingAuth     = &VerifyError{Code: "MissingAuthenticationTokenException", Msg: "missing authentication token"}
	ErrIncomplete      = &VerifyError{Code: "IncompleteSignatureException", Msg: "the authorization header is malformed"}
	ErrUnknownKey      = &VerifyError{Code: "UnrecognizedClientException", Msg: "the security token included in the request is invalid"}
	ErrExpired         = &VerifyError{Code: "InvalidSignatureException", Msg: "signature expired: the request time is too far from the server time"}
	ErrScope           = &VerifyError{Code: "InvalidSignatureException", Msg: "credential scope does not match the region or service"}
	ErrSignature       = &VerifyError{Code: "InvalidSignatureException", Msg: "the request signature we calculated does not match the signature you provided"}
	ErrPayloadMismatch = &VerifyError{Code: "InvalidSignatureException", Msg: "x-amz-content-sha256 does not match the body"}
)

// VerifyError is a signature verification failure.
type VerifyError struct {
	Code string
	Msg  string
}

func (e *VerifyError) Error() string { return "sigv4: " + e.Msg }

// Verifier checks SigV4 signatures, as an AWS service does.
type Verifier struct {
	Region  string
	Service string
	// Secret returns the secret (and session token, "" when none is expected) of an access key id.
	Secret func(accessKeyID string) (secret, sessionToken string, ok bool)
	// MaxSkew bounds |request time - now| (default 5 minutes).
	MaxSkew time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Verify checks req's Authorization header against body. It returns a *VerifyError.
func (v *Verifier) Verify(req *http.Request, body []byte) error {
	auth := req.Header.Get("Authorization")
	if auth == "" {
		return ErrMissingAuth
	}
	rest, ok := strings.CutPrefix(auth, Algorithm+" ")
	if !ok {
		return ErrIncomplete
	}
	var cred, signedList, sig string
	for f := range strings.SplitSeq(rest, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(f), "=")
		switch k {
		case "Credential":
			cred = val
		case "SignedHeaders":
			signedList = val
		case "Signature":
			sig = val
		}
	}
	if cred == "" || signedList == "" || sig == "" {
		return ErrIncomplete
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return ErrIncomplete
	}
	akid, day, region, service := parts[0], parts[1], parts[2], parts[3]
	if region != v.Region || service != v.Service {
		return ErrScope
	}
	secret, token, ok := v.Secret(akid)
	if !ok {
		return ErrUnknownKey
	}
	if token != "" && !hmac.Equal([]byte(req.Header.Get("X-Amz-Security-Token")), []byte(token)) {
		return ErrUnknownKey
	}
	t, err := time.Parse(TimeFormat, req.Header.Get("X-Amz-Date"))
	if err != nil || t.Format(dateFormat) != day {
		return ErrIncomplete
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.MaxSkew
	if skew <= 0 {
		skew = 5 * time.Minute
	}
	if d := now().Sub(t); d > skew || d < -skew {
		return ErrExpired
	}
	signed := strings.Split(signedList, ";")
	if !sort.StringsAreSorted(signed) || !contains(signed, "host") || !contains(signed, "x-amz-date") {
		return ErrIncomplete
	}
	if token != "" && !contains(signed, "x-amz-security-token") {
		return ErrIncomplete
	}
	payloadHash := hashHex(body)
	if h := req.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payloadHash {
		return ErrPayloadMismatch
	}
	creq := CanonicalRequest(req, signed, payloadHash)
	scope := day + "/" + region + "/" + service + "/aws4_request"
	want := hex.EncodeToString(hmacSHA256(SigningKey(secret, t, region, service), []byte(StringToSign(t, scope, creq))))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return ErrSignature
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ModelPath returns the Bedrock runtime path for a model id and operation with the id escaped
// as one segment, and the decoded path: set URL.Path and URL.RawPath to them so the id's ':'
// and '/' travel as %3A and %2F and the signature covers exactly what is sent.
func ModelPath(modelID, op string) (path, rawPath string) {
	return "/model/" + modelID + "/" + op, "/model/" + Escape(modelID) + "/" + op
}

// String formats a Verifier without its secret source.
func (v *Verifier) String() string { return fmt.Sprintf("sigv4.Verifier{%s/%s}", v.Region, v.Service) }
