package providers

import (
	"context"
	"testing"
)

func TestRefAllowed(t *testing.T) {
	allowed := []string{"gs://acme/shared/", "s3://acme-bucket/", "file-ok"}
	for ref, want := range map[string]bool{
		"gs://acme/shared/cat.png":         true,
		"GS://acme/shared/cat.png":         true,
		"gs://acme/shared/deep/dir/x.png":  true,
		"s3://acme-bucket/k.png":           true,
		"file-ok":                          true,
		"gs://acme/private/x.png":          false,
		"gs://acme/shared":                 false,
		"gs://acme-evil/shared/x.png":      false,
		"gs://acme/shared/../private/x":    false,
		"gs://acme/shared/./x":             false,
		"gs://acme/SHARED/x.png":           false, // object names are case-sensitive
		"s3://acme/shared/x.png":           false,
		"file-ok2":                         false,
		"file-o":                           false,
		"gs://operator-secrets/sa-key.png": false,
		"":                                 false,
	} {
		if got := RefAllowed(ref, allowed); got != want {
			t.Errorf("RefAllowed(%q) = %v, want %v", ref, got, want)
		}
	}
	if RefAllowed("gs://acme/shared/x", nil) {
		t.Error("nothing is allowed by default")
	}
	if AllowedRef(context.Background(), "gs://acme/shared/x") {
		t.Error("a context without an allowance allows nothing")
	}
	if !AllowedRef(WithAllowedRefs(context.Background(), allowed), "gs://acme/shared/x") {
		t.Error("allowance in context ignored")
	}
}

func TestCheckRefPrefix(t *testing.T) {
	for p, ok := range map[string]bool{
		"gs://acme/":         true,
		"gs://acme/images/":  true,
		"s3://bucket/a/b/":   true,
		"file-abc":           true,
		"gs://acme":          false, // would also allow gs://acme-private/…
		"gs://acme/images":   false,
		"gs:///":             false,
		"gs://acme/../":      false,
		"":                   false,
		"gs://acme/ x/":      false,
		"gs://acme/images/.": false,
	} {
		if err := CheckRefPrefix(p); (err == nil) != ok {
			t.Errorf("CheckRefPrefix(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
