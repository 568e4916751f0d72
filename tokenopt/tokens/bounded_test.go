package tokens

import (
	"context"
	"strings"
	"testing"

	tiktoken "github.com/pkoukk/tiktoken-go"
)

// recordEncode wraps encode for one test: it reports the total bytes encoded and the longest
// run without whitespace handed to tiktoken in one call (the quadratic part of BPE).
func recordEncode(t *testing.T) (total, longestRun *int) {
	total, longestRun = new(int), new(int)
	old := encode
	encode = func(tk *tiktoken.Tiktoken, s string) int {
		*total += len(s)
		run := 0
		for i := 0; i < len(s); i++ {
			if isSpace(s[i]) {
				run = 0
				continue
			}
			run++
			*longestRun = max(*longestRun, run)
		}
		return old(tk, s)
	}
	t.Cleanup(func() { encode = old })
	return total, longestRun
}

// TestCountLongRunIsBounded is the count_tokens CPU attack: 1 MB without a space used to be
// one BPE piece (minutes of CPU). Now no piece is longer than MaxRun and at most ExactLimit
// bytes are encoded; the rest is extrapolated.
func TestCountLongRunIsBounded(t *testing.T) {
	for name, text := range map[string]string{
		"one letter": strings.Repeat("a", 1<<20),
		"base64ish":  strings.Repeat("QUJDRGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODkrLw", 1<<20/46),
		"cjk":        strings.Repeat("漢字かな交じり文", 1<<20/24),
	} {
		t.Run(name, func(t *testing.T) {
			total, longest := recordEncode(t)
			n := Count("gpt-4o", text)
			if *longest > MaxRun {
				t.Errorf("a piece of %d bytes without whitespace reached BPE (max %d)", *longest, MaxRun)
			}
			if *total > ExactLimit {
				t.Errorf("encoded %d bytes exactly, limit %d", *total, ExactLimit)
			}
			// Plausible: between a token per 16 bytes and a token per byte.
			if n < len(text)/16 || n > len(text) {
				t.Errorf("count %d for %d bytes is implausible", n, len(text))
			}
		})
	}
}

// TestCountExactBelowLimit: ordinary text under ExactLimit counts exactly as tiktoken does,
// whatever the segmenting; above it the extrapolation stays within 1%.
func TestCountExactBelowLimit(t *testing.T) {
	tk, err := get(O200k)
	if err != nil {
		t.Fatal(err)
	}
	prose := strings.Repeat("The quick brown fox jumps over the lazy dog, then naps.\nAnd again: ", 3500)[:200<<10]
	if got, want := Count("gpt-4o", prose), len(tk.EncodeOrdinary(prose)); got != want {
		t.Errorf("Count = %d, tiktoken = %d", got, want)
	}
	long := strings.Repeat("Ledger rows are append-only and idempotent by request id. ", 8000)
	got, want := Count("gpt-4o", long), len(tk.EncodeOrdinary(long))
	if d := float64(got-want) / float64(want); d < -0.01 || d > 0.01 {
		t.Errorf("Count = %d, tiktoken = %d (%.2f%% off)", got, want, 100*d)
	}
}

// countdownCtx reports Canceled once Err has been asked more than `left` times: a client that
// leaves while the count runs, without a clock.
type countdownCtx struct {
	context.Context
	left int
}

func (c *countdownCtx) Err() error {
	if c.left--; c.left < 0 {
		return context.Canceled
	}
	return nil
}

// TestCountContextStops: a cancelled count stops at the next segment instead of finishing.
func TestCountContextStops(t *testing.T) {
	total, _ := recordEncode(t)
	text := strings.Repeat("word ", ExactLimit/5)
	_, err := CountContext(&countdownCtx{Context: context.Background(), left: 2}, "gpt-4o", text)
	if err != context.Canceled {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if *total > 2*segment {
		t.Errorf("encoded %d bytes after the context was done (at most %d expected)", *total, 2*segment)
	}
	if _, err := CountContext(&countdownCtx{Context: context.Background()}, "gpt-4o", text); err == nil {
		t.Error("an already-cancelled context still counted")
	}
}
