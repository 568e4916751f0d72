package cacheplan

import "strconv"

// ResponsesKey is the prompt_cache_key of a Responses API request that goes to OpenAI as it
// is (no chat translation, so Plan never sees it), under workspace isolation. OpenAI routes
// and caches by key and prefix, and every workspace reaches it through the operator's one
// API key: the caller's own key is scoped to its workspace as Plan scopes it on chat, so no
// tenant can name another's key; with none, the key is derived from the workspace and the
// instructions (the stable head of a Responses prompt), so a tenant's unkeyed requests never
// share a cache entry with another tenant's. derive is false for a model that does not accept
// the field: then a caller's key is still scoped, and none is added.
func ResponsesKey(workspace, salt, callerKey string, instructions []byte, derive bool) string {
	var kb [64]byte
	if callerKey != "" {
		return string(appendKey(kb[:0], "btlw-", salt, []byte(strconv.Quote(callerKey))))
	}
	if !derive {
		return ""
	}
	return string(appendKey(kb[:0], "btl-", workspace, instructions))
}
