package sigv4

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const (
	vecAKID   = "AKIDEXAMPLE"
	vecSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	vecBody   = `{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":256}}`
	vecModel  = "anthropic.claude-3-5-sonnet-20240620-v1:0"
)

var vecTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func vectorRequest(t *testing.T) *http.Request {
	t.Helper()
	path, raw := ModelPath(vecModel, "converse")
	u := &url.URL{Scheme: "https", Host: "bedrock-runtime.us-east-1.amazonaws.com", Path: path, RawPath: raw}
	req, err := http.NewRequest(http.MethodPost, u.String(), bytes.NewReader([]byte(vecBody)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

// The documented vector (providers.md §4.2), cross-checked there against botocore.
func TestVector(t *testing.T) {
	req := vectorRequest(t)
	if got := req.URL.EscapedPath(); got != "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse" {
		t.Fatalf("wire path %s", got)
	}
	if got := req.URL.RequestURI(); got != "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse" {
		t.Fatalf("request URI %s", got)
	}
	s := &Signer{Credentials: Credentials{AccessKeyID: vecAKID, SecretAccessKey: vecSecret}, Region: "us-east-1", Service: "bedrock",
		Now: func() time.Time { return vecTime }}
	if err := s.Sign(req, []byte(vecBody)); err != nil {
		t.Fatal(err)
	}
	wantCreq := "POST\n/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse\n\n" +
		"content-type:application/json\nhost:bedrock-runtime.us-east-1.amazonaws.com\nx-amz-date:20260101T000000Z\n\n" +
		"content-type;host;x-amz-date\nd8695502972bd4d482308b656a524b7a7efcebba591a06801fadba6b39700dd1"
	creq := CanonicalRequest(req, []string{"content-type", "host", "x-amz-date"}, hashHex([]byte(vecBody)))
	if creq != wantCreq {
		t.Fatalf("canonical request:\n%s\nwant\n%s", creq, wantCreq)
	}
	sts := StringToSign(vecTime, "20260101/us-east-1/bedrock/aws4_request", creq)
	if !strings.HasSuffix(sts, "d3c23d89e1abe784975240f521d04c9ac7abe48eb9eabf658f9853f452ae0b8a") {
		t.Fatalf("string to sign:\n%s", sts)
	}
	want := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=b91368dfe92e4b8aca9dfb64b3f759eb3d2edeaf79d7232f86d0e39cf59653ee"
	if got := req.Header.Get("Authorization"); got != want {
		t.Fatalf("authorization:\n%s\nwant\n%s", got, want)
	}
}

func TestEscapeAndQuery(t *testing.T) {
	for in, want := range map[string]string{
		"abc-_.~XYZ09": "abc-_.~XYZ09",
		"a:b":          "a%3Ab",
		"a/b c+":       "a%2Fb%20c%2B",
		"é":            "%C3%A9",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := CanonicalQuery("b=2&a=z&a=y&c"); got != "a=y&a=z&b=2&c=" {
		t.Errorf("query %q", got)
	}
	u, _ := url.Parse("https://h")
	if CanonicalURI(u) != "/" {
		t.Error("empty path")
	}
}

func TestVerify(t *testing.T) {
	secrets := map[string][2]string{vecAKID: {vecSecret, ""}, "ASIATEMP": {"tempsecret", "tok123"}}
	v := &Verifier{Region: "us-east-1", Service: "bedrock", Now: func() time.Time { return vecTime.Add(time.Minute) },
		Secret: func(id string) (string, string, bool) { s, ok := secrets[id]; return s[0], s[1], ok }}
	sign := func(c Credentials, region string, sha bool, at time.Time) *http.Request {
		req := vectorRequest(t)
		s := &Signer{Credentials: c, Region: region, Service: "bedrock", ContentSHA256: sha, Now: func() time.Time { return at }}
		if err := s.Sign(req, []byte(vecBody)); err != nil {
			t.Fatal(err)
		}
		return req
	}
	good := Credentials{AccessKeyID: vecAKID, SecretAccessKey: vecSecret}
	temp := Credentials{AccessKeyID: "ASIATEMP", SecretAccessKey: "tempsecret", SessionToken: "tok123"}
	tests := []struct {
		name string
		req  func() *http.Request
		body string
		want error
	}{
		{"ok", func() *http.Request { return sign(good, "us-east-1", false, vecTime) }, vecBody, nil},
		{"ok with content sha", func() *http.Request { return sign(good, "us-east-1", true, vecTime) }, vecBody, nil},
		{"ok session token", func() *http.Request { return sign(temp, "us-east-1", false, vecTime) }, vecBody, nil},
		{"wrong secret", func() *http.Request {
			return sign(Credentials{AccessKeyID: vecAKID, SecretAccessKey: "nope"}, "us-east-1", false, vecTime)
		}, vecBody, ErrSignature},
		{"body changed", func() *http.Request { return sign(good, "us-east-1", false, vecTime) }, vecBody + " ", ErrSignature},
		{"body changed sha", func() *http.Request { return sign(good, "us-east-1", true, vecTime) }, vecBody + " ", ErrPayloadMismatch},
		{"header changed", func() *http.Request {
			r := sign(good, "us-east-1", false, vecTime)
			r.Header.Set("Content-Type", "text/plain")
			return r
		}, vecBody, ErrSignature},
		{"path single-encoded", func() *http.Request {
			r := sign(good, "us-east-1", false, vecTime)
			r.URL.RawPath = "" // as if the client sent a raw ':'
			return r
		}, vecBody, ErrSignature},
		{"wrong region", func() *http.Request { return sign(good, "eu-west-1", false, vecTime) }, vecBody, ErrScope},
		{"unknown key", func() *http.Request {
			return sign(Credentials{AccessKeyID: "AKIDOTHER", SecretAccessKey: vecSecret}, "us-east-1", false, vecTime)
		}, vecBody, ErrUnknownKey},
		{"token missing", func() *http.Request {
			return sign(Credentials{AccessKeyID: "ASIATEMP", SecretAccessKey: "tempsecret"}, "us-east-1", false, vecTime)
		}, vecBody, ErrUnknownKey},
		{"expired", func() *http.Request { return sign(good, "us-east-1", false, vecTime.Add(-time.Hour)) }, vecBody, ErrExpired},
		{"no auth", func() *http.Request { return vectorRequest(t) }, vecBody, ErrMissingAuth},
		{"garbled", func() *http.Request {
			r := vectorRequest(t)
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
			return r
		}, vecBody, ErrIncomplete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(tc.req(), []byte(tc.body))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCredentialsFrom(t *testing.T) {
	env := map[string]string{"AWS_ACCESS_KEY_ID": "ENVID", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_SESSION_TOKEN": "envtok"}
	getenv := func(k string) string { return env[k] }
	c, err := CredentialsFrom(map[string]string{"access_key_id": "OPT", "secret_access_key": "s"}, getenv)
	if err != nil || c.AccessKeyID != "OPT" || c.SessionToken != "" {
		t.Fatalf("options: %v %v", c, err)
	}
	c, err = CredentialsFrom(nil, getenv)
	if err != nil || c.AccessKeyID != "ENVID" || c.SessionToken != "envtok" {
		t.Fatalf("env: %v %v", c, err)
	}
	if _, err := CredentialsFrom(map[string]string{"access_key_id": "OPT"}, getenv); err != ErrNoCredentials {
		t.Fatalf("half options: %v", err)
	}
	if s := c.String() + " " + (&Verifier{}).String(); strings.Contains(s, "envsecret") || strings.Contains(s, "envtok") {
		t.Fatalf("String leaks: %s", s)
	}
}
