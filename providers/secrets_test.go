package providers

import "testing"

func TestSecretHeadersAndValues(t *testing.T) {
	for _, h := range []string{"Authorization", "x-api-key", "X-Api-Key", "api-key", "X-Goog-Api-Key", "Cookie", "Proxy-Authorization"} {
		if !SecretHeader(h) {
			t.Errorf("%s is not treated as secret", h)
		}
	}
	for _, h := range []string{"Content-Type", "User-Agent", "X-Btl-Route"} {
		if SecretHeader(h) {
			t.Errorf("%s treated as secret", h)
		}
	}
	for v, want := range map[string]bool{
		"btl_abc123":                 true,
		"Bearer btl_abc123":          true,
		"token=btl_abc":              true,
		"sk-proj-abc":                true,
		"Bearer sk-ant-api03-x":      true,
		"AIzaSyExample":              true,
		"ya29.a0AfH6":                true,
		"application/json":           false,
		"OpenAI/Python 1.2.3":        false,
		"task-list":                  false,
		"Mozilla/5.0 (X11; Linux x)": false,
	} {
		if got := LooksSecret(v); got != want {
			t.Errorf("LooksSecret(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/chat/completions":                     "/v1/chat/completions",
		"/v1/usage/summary?from=2026-01-01":        "/v1/usage/summary?from=2026-01-01",
		"/v1/models?key=AIzaSecret":                "/v1/models?key=REDACTED",
		"/v1/models?api_key=x&limit=5":             "/v1/models?api_key=REDACTED&limit=5",
		"/v1/models?note=btl_secretvalue&limit=5":  "/v1/models?note=REDACTED&limit=5",
		"/v1/models?btl_secret":                    "/v1/models?REDACTED",
		"/v1/keys/btl_secretinthepath":             "REDACTED",
		"/v1/keys/btl_secret?limit=1":              "REDACTED?limit=1",
		"/v1/usage/requests?cursor=abc&Token=sk-x": "/v1/usage/requests?cursor=abc&Token=REDACTED",
	} {
		if got := RedactURI(in); got != want {
			t.Errorf("RedactURI(%q) = %q, want %q", in, got, want)
		}
	}
}
