package providers

import "strings"

// Redaction of credentials in logs. The gateway's keys arrive as Authorization: Bearer btl_…
// or x-api-key (Anthropic SDKs); provider SDKs and proxies put theirs in api-key (Azure),
// x-goog-api-key and ?key= (Google), cookies, or anywhere a client chooses. Caddy redacts only
// Authorization and cookies by default, so these decide what else never reaches a log.

// Redacted replaces a secret in logs.
const Redacted = "REDACTED"

var secretHeaderNames = map[string]bool{
	"authorization": true, "proxy-authorization": true, "x-api-key": true, "api-key": true,
	"x-goog-api-key": true, "cookie": true, "set-cookie": true, "x-amz-security-token": true,
	"openai-api-key": true, "anthropic-api-key": true,
}

// SecretHeader reports whether a header with this name carries a credential by convention.
func SecretHeader(name string) bool { return secretHeaderNames[strings.ToLower(name)] }

// secretQueryNames are query parameters that carry credentials by convention.
var secretQueryNames = map[string]bool{
	"key": true, "api_key": true, "api-key": true, "apikey": true, "x-api-key": true,
	"access_token": true, "token": true, "auth": true, "secret": true,
}

// LooksSecret reports whether a value holds a credential whatever its header or parameter:
// a btl key anywhere in it, or a word starting like a provider's key or token.
func LooksSecret(v string) bool {
	if strings.Contains(v, "btl_") {
		return true
	}
	for _, w := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '=' || r == ',' || r == ':' || r == '"' }) {
		for _, p := range []string{"sk-", "AIza", "ya29.", "xoxb-", "ghp_"} {
			if strings.HasPrefix(w, p) {
				return true
			}
		}
	}
	return false
}

// RedactURI replaces the values of query parameters that carry credentials (by name, or
// because they look like one) in a request URI; the path is kept.
func RedactURI(uri string) string {
	q := strings.IndexByte(uri, '?')
	if q < 0 {
		if LooksSecret(uri) {
			return Redacted // a key in the path itself: keep nothing of it
		}
		return uri
	}
	path, query := uri[:q], uri[q+1:]
	if LooksSecret(path) {
		path = Redacted
	}
	var b strings.Builder
	b.Grow(len(uri))
	b.WriteString(path)
	b.WriteByte('?')
	for i, pair := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		name, value, hasValue := strings.Cut(pair, "=")
		switch {
		case LooksSecret(name):
			b.WriteString(Redacted)
		case hasValue && (secretQueryNames[strings.ToLower(name)] || LooksSecret(value)):
			b.WriteString(name)
			b.WriteString("=" + Redacted)
		default:
			b.WriteString(pair)
		}
	}
	return b.String()
}
