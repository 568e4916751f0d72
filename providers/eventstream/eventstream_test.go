package eventstream

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// Vectors from providers.md §4.6.
func TestEncodeVectors(t *testing.T) {
	v1, _ := AppendMessage(nil, nil, []byte(`{"foo": "bar"}`))
	if got, want := hex.EncodeToString(v1), "0000001e00000000baf2f68a7b22666f6f223a2022626172227dae7258e4"; got != want {
		t.Errorf("vector 1:\n got %s\nwant %s", got, want)
	}

	v2, _ := AppendMessage(nil, []Header{StringHeader("content-type", "application/json")}, []byte(`{"foo": "bar"}`))
	if len(v2) != 62 || binary.BigEndian.Uint32(v2[4:]) != 32 || binary.BigEndian.Uint32(v2[8:]) != 0x405df946 ||
		binary.BigEndian.Uint32(v2[58:]) != 0x6fa2bf3b {
		t.Errorf("vector 2: %x", v2)
	}

	v3 := AppendEvent(nil, "contentBlockDelta", []byte(`{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abcd"}`))
	want3 := "0000009f00000057c37babff0b3a6576656e742d74797065070011636f6e74656e74426c6f636b44656c74610d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b22636f6e74656e74426c6f636b496e646578223a302c2264656c7461223a7b2274657874223a224869227d2c2270223a2261626364227df2ace5ff"
	if got := hex.EncodeToString(v3); got != want3 {
		t.Errorf("vector 3:\n got %s\nwant %s", got, want3)
	}

	v4 := AppendException(nil, "throttlingException", []byte(`{"message":"Too many requests, please wait before trying again."}`))
	if len(v4) != 178 || !strings.HasPrefix(hex.EncodeToString(v4), "000000b2000000613590d5d3") ||
		!strings.HasSuffix(hex.EncodeToString(v4), "1d4f6dc6") {
		t.Errorf("vector 4: %x", v4)
	}
}

func allHeaderTypes() []Header {
	return []Header{
		{Name: "t", Type: TypeBoolTrue},
		{Name: "f", Type: TypeBoolFalse},
		{Name: "b", Type: TypeByte, Value: []byte{7}},
		{Name: "i16", Type: TypeInt16, Value: []byte{0, 1}},
		{Name: "i32", Type: TypeInt32, Value: []byte{0, 0, 0, 1}},
		{Name: "i64", Type: TypeInt64, Value: make([]byte, 8)},
		{Name: "bytes", Type: TypeBytes, Value: []byte("raw")},
		{Name: "ts", Type: TypeTimestamp, Value: make([]byte, 8)},
		{Name: "uuid", Type: TypeUUID, Value: make([]byte, 16)},
		StringHeader(":message-type", "event"),
		StringHeader(":event-type", "messageStop"),
	}
}

func TestRoundTripSplitReads(t *testing.T) {
	var stream []byte
	stream = AppendEvent(stream, "messageStart", []byte(`{"role":"assistant"}`))
	stream, _ = AppendMessage(stream, allHeaderTypes(), []byte(`{"stopReason":"end_turn"}`))
	stream = AppendException(stream, "throttlingException", []byte(`{"message":"slow down"}`))
	stream = AppendEvent(stream, "metadata", nil)

	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one-byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data-err": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			d := NewDecoder(mk())
			m, err := d.Next()
			if err != nil || m.MessageType() != "event" || m.EventType() != "messageStart" || string(m.Payload) != `{"role":"assistant"}` {
				t.Fatalf("frame 1: %v %+v", err, m)
			}
			m, err = d.Next()
			if err != nil || m.EventType() != "messageStop" || len(m.Headers) != 11 || string(m.Payload) != `{"stopReason":"end_turn"}` {
				t.Fatalf("frame 2: %v %+v", err, m)
			}
			if h := m.Headers[6]; h.Name != "bytes" || string(h.Value) != "raw" {
				t.Fatalf("bytes header: %+v", h)
			}
			m, err = d.Next()
			if err != nil || m.MessageType() != "exception" || m.ExceptionType() != "throttlingException" {
				t.Fatalf("frame 3: %v %+v", err, m)
			}
			m, err = d.Next()
			if err != nil || m.EventType() != "metadata" || len(m.Payload) != 0 {
				t.Fatalf("frame 4: %v %+v", err, m)
			}
			if _, err := d.Next(); err != io.EOF {
				t.Fatalf("end: %v", err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := AppendEvent(nil, "contentBlockDelta", []byte(`{"delta":{"text":"Hi"}}`))
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		return b
	}
	withCRC := func(b []byte) []byte { // recompute both CRCs of a doctored frame
		binary.BigEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[:8]))
		binary.BigEndian.PutUint32(b[len(b)-4:], crc32.ChecksumIEEE(b[:len(b)-4]))
		return b
	}
	tooShort := withCRC(func() []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[4:], uint32(len(b))) // headers longer than the frame
		return b
	}())
	badType := withCRC(func() []byte {
		b := bytes.Clone(good)
		b[12+1+len(":event-type")] = 42
		return b
	}())
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"prelude crc", flip(9), 0, ErrPreludeCRC},
		{"length corrupted", flip(3), 0, ErrPreludeCRC},
		{"message crc", flip(len(good) - 1), 0, ErrMessageCRC},
		{"payload corrupted", flip(len(good) - 8), 0, ErrMessageCRC},
		{"headers length", tooShort, 0, ErrMalformed},
		{"unknown header type", badType, 0, ErrMalformed},
		{"too large", good, 32, ErrFrameTooLarge},
		{"truncated prelude", good[:5], 0, io.ErrUnexpectedEOF},
		{"truncated body", good[:len(good)-3], 0, io.ErrUnexpectedEOF},
		{"empty", nil, 0, io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = DefaultMaxFrame
			}
			d := NewDecoderSize(iotest.OneByteReader(bytes.NewReader(tc.in)), max)
			_, err := d.Next()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if _, err2 := d.Next(); !errors.Is(err2, tc.want) {
				t.Fatalf("error not sticky: %v", err2)
			}
		})
	}
}

func TestEncodeRejectsBadHeaders(t *testing.T) {
	for _, h := range []Header{
		{Name: "", Type: TypeString},
		{Name: strings.Repeat("n", 256), Type: TypeString},
		{Name: "x", Type: TypeInt32, Value: []byte{1}},
		{Name: "x", Type: 99},
		{Name: "x", Type: TypeString, String: strings.Repeat("v", 70000)},
	} {
		if _, err := AppendMessage(nil, []Header{h}, nil); err == nil {
			t.Errorf("header %q type %d accepted", h.Name, h.Type)
		}
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add(AppendEvent(nil, "contentBlockDelta", []byte(`{"delta":{"text":"Hi"}}`)))
	f.Add(AppendException(nil, "throttlingException", []byte(`{"message":"x"}`)))
	all, _ := AppendMessage(nil, allHeaderTypes(), []byte("p"))
	f.Add(all)
	f.Add([]byte{0, 0, 0, 16, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoderSize(iotest.HalfReader(bytes.NewReader(data)), 1<<16)
		for range 64 {
			m, err := d.Next()
			if err != nil {
				return
			}
			// Whatever decodes must re-encode to the same bytes.
			re, err := AppendMessage(nil, m.Headers, m.Payload)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			d2 := NewDecoder(bytes.NewReader(re))
			m2, err := d2.Next()
			if err != nil || !bytes.Equal(m2.Payload, m.Payload) || len(m2.Headers) != len(m.Headers) {
				t.Fatalf("round trip: %v", err)
			}
		}
	})
}
