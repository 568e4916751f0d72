package handlers

import (
	"bytes"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// TestIndexAheadRewritesAlike: a long conversation seen for the first time, whose index is
// shared with another goroutine, is rewritten exactly as when one goroutine indexes it all.
func TestIndexAheadRewritesAlike(t *testing.T) {
	body := []byte(nextTurn(optimizeBody(100_000), 1))
	run := func(split bool) ([]byte, int64, int64) {
		defer func(v int) { aheadMinBytes = v }(aheadMinBytes)
		if !split {
			aheadMinBytes = 1 << 62
		}
		forgetConversations()
		req, err := providers.ParseChatRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		out, newest, history, ok := dedupeConversation(req)
		if !ok {
			t.Fatal("nothing deduped")
		}
		return out, newest, history
	}
	one, n1, h1 := run(false)
	split, n2, h2 := run(true)
	if !bytes.Equal(one, split) || n1 != n2 || h1 != h2 {
		t.Fatalf("split indexing rewrote differently: %d bytes (%d, %d) vs %d bytes (%d, %d)", len(one), n1, h1, len(split), n2, h2)
	}
	if h1 == 0 {
		t.Fatal("the history had nothing to dedupe: the test proves nothing")
	}
}
