package simulated

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// discardWriter is a minimal ResponseWriter + Flusher, so benchmarks measure the simulator
// rather than httptest.ResponseRecorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int)   { w.status = s }
func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	w.n += len(b)
	return len(b), nil
}
func (w *discardWriter) Flush() {}

func benchServe(b *testing.B, body string) {
	s := New(Options{Now: func() time.Time { return fixedNow }})
	raw := []byte(body)
	req, _ := http.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer sk-bench")
	rd := bytes.NewReader(raw)
	w := &discardWriter{h: http.Header{}}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rd.Reset(raw)
		req.Body = io.NopCloser(rd)
		req.ContentLength = int64(len(raw))
		clear(w.h)
		w.status, w.n = 0, 0
		s.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

var benchChat = chatBody("", "system", "You are a helpful assistant that answers briefly.", "user", "What is the capital of France, and why is it famous?")

func BenchmarkChatNonStream(b *testing.B) { benchServe(b, benchChat) }

func BenchmarkChatStream(b *testing.B) {
	benchServe(b, strings.Replace(benchChat, `"model"`, `"stream":true,"stream_options":{"include_usage":true},"model"`, 1))
}

// A 2k-token cached prefix: the prefix-cache path with ~8 boundaries per request.
func BenchmarkChatNonStreamCached(b *testing.B) {
	benchServe(b, chatBody("", "system", longPrompt(1300, "You are helpful."), "user", "Question?"))
}

func BenchmarkChatTools(b *testing.B) {
	benchServe(b, chatBody(weatherTools, "user", "Weather in Paris?"))
}

// Through a real HTTP server and client, as the gateway sees it.
func BenchmarkChatNonStreamHTTP(b *testing.B) {
	_, ts := newTest(b, Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp := post(b, ts, "/v1/chat/completions", "k", benchChat)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
