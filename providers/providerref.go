package providers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// Provider-side references (gs://bucket/object, s3://…, file ids) are resolved by the
// provider with the operator's identity: a tenant naming one reads whatever the operator's
// service account can read. They are refused unless the operator allowed them for the
// workspace, as prefixes (gs://acme-images/) or exact file ids.

// CheckRefPrefix validates an allow-list entry: a URI prefix must name its bucket and end
// with "/" (so gs://acme does not also allow gs://acme-private/…); anything else is an
// exact file id.
func CheckRefPrefix(p string) error {
	if p == "" || strings.ContainsAny(p, " \t\r\n") {
		return fmt.Errorf("invalid provider reference %q", p)
	}
	if i := strings.Index(p, "://"); i >= 0 {
		rest := p[i+3:]
		if !strings.HasSuffix(p, "/") || strings.Index(rest, "/") < 1 {
			return fmt.Errorf("provider reference prefix %q must name a bucket and end with '/' (e.g. gs://bucket/ or gs://bucket/images/)", p)
		}
		if hasDotSegment(rest) {
			return fmt.Errorf("provider reference prefix %q must not contain '.' or '..' segments", p)
		}
	}
	return nil
}

// RefAllowed reports whether ref is covered by one of the allowed entries: a URI under a
// prefix (scheme compared without case), or a file id equal to an entry. A URI with "." or
// ".." segments is never allowed, whatever the prefix, in case a store normalises them.
func RefAllowed(ref string, allowed []string) bool {
	i := strings.Index(ref, "://")
	for _, a := range allowed {
		j := strings.Index(a, "://")
		switch {
		case i < 0 && j < 0:
			if ref == a {
				return true
			}
		case i >= 0 && j >= 0:
			if strings.EqualFold(ref[:i], a[:j]) && strings.HasPrefix(ref[i:], a[j:]) && !hasDotSegment(ref[i+3:]) {
				return true
			}
		}
	}
	return false
}

func hasDotSegment(path string) bool {
	for _, seg := range strings.Split(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// CheckRefs refuses the first reference not covered by allowed, with a 400 that does not
// say what the operator allows.
func CheckRefs(refs, allowed []string) *Error {
	for _, r := range refs {
		if !RefAllowed(r, allowed) {
			return Errorf(http.StatusBadRequest, "invalid_image_url", "messages",
				"references to provider-side storage (%s) are not allowed for this workspace; send an https or data: URL", refKind(r))
		}
	}
	return nil
}

func refKind(r string) string {
	if i := strings.Index(r, "://"); i > 0 && i <= 16 {
		return strings.ToLower(r[:i]) + "://"
	}
	if i := strings.Index(r, ":"); i > 0 && i <= 16 {
		return strings.ToLower(r[:i]) + ":"
	}
	return "a file id"
}

type allowedRefsKey struct{}

// WithAllowedRefs records the references the operator allows for this request's workspace,
// for adapters that translate them (Gemini's fileData).
func WithAllowedRefs(ctx context.Context, allowed []string) context.Context {
	return context.WithValue(ctx, allowedRefsKey{}, allowed)
}

// AllowedRef reports whether ref may be passed to the provider under ctx: only when
// WithAllowedRefs allowed it. Adapters check again so a path that skipped the handler's check
// still never forwards one.
func AllowedRef(ctx context.Context, ref string) bool {
	allowed, _ := ctx.Value(allowedRefsKey{}).([]string)
	return RefAllowed(ref, allowed)
}
