package respcache

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func utf8ValidString(s string) bool { return utf8.ValidString(s) }

// chatBody builds a realistic request of about tokens tokens (4 bytes each, the usual English
// ratio): a system prompt, tools and alternating turns with quotes and newlines (escapes).
func chatBody(tokens int) []byte {
	words := strings.Fields("the quick brown fox jumps over the lazy dog while \"quoted\" text\nand newlines appear")
	msgs := []map[string]any{{"role": "system", "content": "You are helpful. Answer briefly."}}
	perMsg := 1600 // bytes per message
	for i := 0; i*perMsg < tokens*4; i++ {
		var b strings.Builder
		for j := 0; b.Len() < perMsg; j++ {
			b.WriteString(words[(i+j)%len(words)])
			b.WriteByte(' ')
		}
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs = append(msgs, map[string]any{"role": role, "content": b.String()})
	}
	body, _ := json.Marshal(map[string]any{"model": "gpt-4.1", "temperature": 0, "stream": true, "messages": msgs,
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "search",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"q": map[string]any{"type": "string"}}}}}}})
	return body
}

func BenchmarkKey(b *testing.B) {
	for _, tokens := range []int{1_000, 100_000} {
		body := chatBody(tokens)
		b.Run(fmt.Sprintf("tokens=%d/bytes=%d", tokens, len(body)), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := MakeKey("ws", body, Policy{}); !ok {
					b.Fatal("not cacheable")
				}
			}
		})
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New(64<<20, time.Hour)
	defer c.Close()
	k, _ := MakeKey("ws", chatBody(1000), Policy{})
	c.Put(k, richCompletion(), richUsage())
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := c.Get(k); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkWriteStream(b *testing.B) {
	c := New(64<<20, time.Hour)
	defer c.Close()
	k, _ := MakeKey("ws", chatBody(1000), Policy{})
	c.Put(k, richCompletion(), richUsage())
	e, _ := c.Get(k)
	b.ReportAllocs()
	for b.Loop() {
		_ = e.WriteStream(discard{}, true, nil)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
