package tokens

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

type noNet struct{ t *testing.T }

func (n noNet) RoundTrip(r *http.Request) (*http.Response, error) {
	n.t.Errorf("network request during token counting: %s", r.URL)
	return nil, errors.New("network disabled in tests")
}

// TestOffline fails if any encoding were fetched with the default (downloading) loader: the
// HTTP transport and the dialer refuse, and the on-disk cache the default loader would read
// points at an empty directory. It must run before anything else loads an encoding, so it
// checks both encodings from a clean state in this process.
func TestOffline(t *testing.T) {
	t.Setenv("TIKTOKEN_CACHE_DIR", t.TempDir())
	t.Setenv("DATA_GYM_CACHE_DIR", t.TempDir())
	old := http.DefaultTransport
	http.DefaultTransport = noNet{t}
	oldClient := http.DefaultClient.Transport
	http.DefaultClient.Transport = noNet{t}
	oldDial := net.DefaultResolver.Dial
	net.DefaultResolver.PreferGo = true
	net.DefaultResolver.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		t.Errorf("DNS lookup during token counting: %s", address)
		return nil, errors.New("network disabled in tests")
	}
	defer func() {
		http.DefaultTransport, http.DefaultClient.Transport, net.DefaultResolver.Dial = old, oldClient, oldDial
	}()
	if n := Count("gpt-4o", "hello world"); n != 2 {
		t.Fatalf("o200k hello world = %d, want 2", n)
	}
	if n := Count("gpt-4", "hello world"); n != 2 {
		t.Fatalf("cl100k hello world = %d, want 2", n)
	}
	if n := Count("claude-sonnet-4-5", "hello world"); n != 2 {
		t.Fatalf("fallback = %d", n)
	}
}

func TestEncodingFor(t *testing.T) {
	for model, want := range map[string]string{
		"gpt-4o": O200k, "gpt-4o-mini-2024-07-18": O200k, "gpt-4.1-nano": O200k, "gpt-5": O200k,
		"gpt-5.6-luna": O200k, "o1": O200k, "o3-mini": O200k, "o4-mini": O200k, "openai/gpt-4o": O200k,
		"gpt-4": CL100k, "gpt-4-turbo": CL100k, "gpt-3.5-turbo": CL100k, "gpt-4-0613": CL100k,
		"claude-sonnet-4-5": O200k, "gemini-2.5-pro": O200k, "": O200k,
	} {
		if got := EncodingFor(model); got != want {
			t.Errorf("EncodingFor(%q) = %s, want %s", model, got, want)
		}
	}
}

func TestCountKnown(t *testing.T) {
	// cl100k value from OpenAI's cookbook; o200k has no published value for this string.
	if n := Count("gpt-4o", "tiktoken is great!"); n < 4 || n > 7 {
		t.Errorf("o200k = %d", n)
	}
	if n := Count("gpt-3.5-turbo", "tiktoken is great!"); n != 6 {
		t.Errorf("cl100k = %d, want 6", n)
	}
	if n := Count("gpt-4o", "<|endoftext|>"); n == 0 {
		t.Error("special tokens must count as text, not panic or vanish")
	}
	if Count("gpt-4o", "") != 0 {
		t.Error("empty")
	}
}

func TestCountChat(t *testing.T) {
	// OpenAI cookbook: these two messages are 3+3+3 overhead plus content.
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are helpful."},{"role":"user","name":"bob","content":"Hi"}]}`)
	got := CountChat("gpt-4o", body)
	want := ReplyPrimer + 2*PerMessage + PerName + Count("gpt-4o", "system\nYou are helpful.\nbobuser\nHi\n")
	if got != want {
		t.Errorf("CountChat = %d, want %d", got, want)
	}
	img := []byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},{"type":"image_url","image_url":{"url":"https://x/z.png"}}]}]}`)
	if got := CountChat("gpt-4o", img); got != ReplyPrimer+PerMessage+ImageLow+ImageHigh+Count("gpt-4o", "user\nlook\n") {
		t.Errorf("images: %d", got)
	}
	if got := CountChat("gpt-4o", []byte(`not json`)); got != Estimate(8) {
		t.Errorf("bad body: %d", got)
	}
	tools := []byte(`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`)
	if CountChat("gpt-4o", tools) <= CountChat("gpt-4o", []byte(`{"messages":[{"role":"user","content":"x"}]}`)) {
		t.Error("tools must add tokens")
	}
}

func TestCalibrator(t *testing.T) {
	c := NewCalibrator(0.5, 0.5, 2)
	if c.Ratio("claude") != 1 || c.Adjust("claude", 100) != 100 {
		t.Fatal("unobserved ratio must be 1")
	}
	c.Observe("claude", 100, 120)
	if r := c.Ratio("claude"); r != 1.2 {
		t.Fatalf("first observation: %v", r)
	}
	c.Observe("claude", 100, 140)
	if r := c.Ratio("claude"); r < 1.2999 || r > 1.3001 {
		t.Fatalf("ewma: %v", r)
	}
	c.Observe("claude", 100, 100000) // clamped to 2
	if r := c.Ratio("claude"); r < 1.6499 || r > 1.6501 {
		t.Fatalf("clamp: %v", r)
	}
	c.Observe("claude", 0, 10)
	c.Observe("claude", 10, 0)
	if r := c.Ratio("claude"); r < 1.6499 || r > 1.6501 {
		t.Fatalf("ignored observations changed the ratio: %v", r)
	}
	if c.Adjust("claude", 1000) != 1650 || c.Ratio("gemini") != 1 {
		t.Fatal("adjust / per model")
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				c.Observe("m", 100, 100+i+j%7)
				_ = c.Adjust("m", 10)
			}
		})
	}
	wg.Wait()
}

func BenchmarkCount1k(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 100) // ~1k tokens
	Count("gpt-4o", "warm")
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		Count("gpt-4o", text)
	}
}

func BenchmarkCountChat100k(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","messages":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"role":"user","content":"` + strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 120) + `"}`)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	Count("gpt-4o", "warm")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		CountChat("gpt-4o", body)
	}
}
