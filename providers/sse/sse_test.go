package sse

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

type ev struct{ name, data string }

func readAll(t *testing.T, r io.Reader, max int) ([]ev, error) {
	t.Helper()
	rd := NewReaderSize(r, max)
	var out []ev
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev{string(e.Name), string(e.Data)})
	}
}

func TestReader(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []ev
	}{
		{"openai", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []ev{{"", `{"a":1}`}, {"", "[DONE]"}}},
		{"crlf gemini", "data: {\"x\":1}\r\n\r\ndata: {\"y\":2}\r\n\r\n", []ev{{"", `{"x":1}`}, {"", `{"y":2}`}}},
		{"bare cr", "data: a\rdata: b\r\rdata: c\r\r", []ev{{"", "a\nb"}, {"", "c"}}},
		{"named anthropic", "event: ping\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			[]ev{{"ping", "{}"}, {"message_stop", `{"type":"message_stop"}`}}},
		{"comments openrouter", ": OPENROUTER PROCESSING\n\ndata: x\n\n", []ev{{"", "x"}}},
		{"multi data", "data: a\ndata: b\n\n", []ev{{"", "a\nb"}}},
		{"no space", "data:x\n\n", []ev{{"", "x"}}},
		{"no trailing blank", "data: last", []ev{{"", "last"}}},
		{"empty data", "data:\n\n", []ev{{"", ""}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(c.in), iotest.OneByteReader(strings.NewReader(c.in))} {
				got, err := readAll(t, r, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(c.want) {
					t.Fatalf("got %q want %q", got, c.want)
				}
				for i := range got {
					if got[i] != c.want[i] {
						t.Fatalf("event %d: got %q want %q", i, got[i], c.want[i])
					}
				}
			}
		})
	}
}

func TestReaderLargeAndLimit(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	got, err := readAll(t, strings.NewReader("data: "+big+"\n\n"), 1<<20)
	if err != nil || len(got) != 1 || got[0].data != big {
		t.Fatalf("large event: err=%v n=%d", err, len(got))
	}
	_, err = readAll(t, strings.NewReader("data: "+big+"\n\n"), 64<<10)
	if !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("want ErrEventTooLarge, got %v", err)
	}
}

func TestAppend(t *testing.T) {
	b := AppendEvent(nil, "x", []byte("{}"))
	if !bytes.Equal(b, []byte("event: x\ndata: {}\n\n")) {
		t.Fatalf("%q", b)
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("data: a\n\nevent: b\ndata: c\r\n\r\n: comment\rdata: d"))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := NewReaderSize(bytes.NewReader(in), 4096)
		for i := 0; i < len(in)+2; i++ {
			e, err := rd.Next()
			if err != nil {
				return
			}
			if len(e.Data) > 4096+1 {
				t.Fatalf("event larger than limit: %d", len(e.Data))
			}
		}
		t.Fatal("reader did not terminate")
	})
}

func BenchmarkReaderOpenAIChunk(b *testing.B) {
	chunk := "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"},\"finish_reason\":null}]}\n\n"
	in := []byte(strings.Repeat(chunk, 1000))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		rd := NewReader(bytes.NewReader(in))
		for {
			if _, err := rd.Next(); err != nil {
				break
			}
		}
	}
}

// TestReleasedReader: a released reader answers ErrReleased instead of reading through a
// buffer another stream now owns, and a second Release is harmless.
func TestReleasedReader(t *testing.T) {
	r := NewReader(strings.NewReader("data: one\n\ndata: two\n\n"))
	if ev, err := r.Next(); err != nil || string(ev.Data) != "one" {
		t.Fatalf("%q %v", ev.Data, err)
	}
	r.Release()
	r.Release()
	if _, err := r.Next(); err != ErrReleased {
		t.Fatalf("Next after Release: %v", err)
	}
	if r.Buffered() != 0 {
		t.Fatal("a released reader reports buffered bytes")
	}
	// The pooled buffer serves a new reader from a clean state.
	r2 := NewReader(strings.NewReader("data: three\n\n"))
	if ev, err := r2.Next(); err != nil || string(ev.Data) != "three" {
		t.Fatalf("%q %v", ev.Data, err)
	}
}
