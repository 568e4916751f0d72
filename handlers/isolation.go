package handlers

import (
	"context"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// tenantLimits is implemented by a Runtime that configures what one tenant's request may make
// the gateway do on the operator's behalf: which provider-side references (gs://…, file ids) a
// workspace may pass, and how much image inlining one request may cost.
type tenantLimits interface {
	AllowedProviderRefs(workspace string) []string
	ImageLimits() providers.ImageLimits
}

// isolate refuses provider-side references the operator did not allow for the caller's
// workspace and returns the context for the request's upstream attempts: it carries that
// allowance (adapters check it again) and one image budget shared by every retry and failover.
func isolate(ctx context.Context, rt Runtime, ex *Exchange, req *providers.ChatRequest) (context.Context, *providers.Error) {
	var allowed []string
	var limits providers.ImageLimits
	if tl, ok := rt.(tenantLimits); ok {
		allowed, limits = tl.AllowedProviderRefs(ex.WorkspaceID), tl.ImageLimits()
	}
	if err := providers.CheckRefs(req.ProviderRefs, allowed); err != nil {
		return ctx, err
	}
	if len(allowed) > 0 {
		ctx = providers.WithAllowedRefs(ctx, allowed)
	}
	return providers.WithImageBudget(ctx, providers.NewImageBudget(limits)), nil
}
