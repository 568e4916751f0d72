package ledger

import (
	"errors"
	"os"
	"testing"
)

// segmentMarker reads the sync marker from a segment file's header.
func segmentMarker(t *testing.T, path string) syncMarker {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < segHeaderSize || string(b[:len(segMagic)]) != segMagic {
		t.Fatalf("segment header of %s: %v", path, err)
	}
	return syncMarker(b[len(segMagic):segHeaderSize])
}

var testMarker = syncMarker{1, 2, 3, 4, 5, 6, 7, 8}

func TestSpoolRecordRoundTrip(t *testing.T) {
	rows := []Row{testRow("ws_x", 1, 123), {}, {RequestID: "r", Stream: true, CostMicros: -5, Status: 502, ErrorCode: "upstream"}}
	var buf []byte
	for i := range rows {
		buf = appendRecord(buf, testMarker, &rows[i])
	}
	for i := range rows {
		got, n, err := decodeRecord(buf, testMarker)
		if err != nil {
			t.Fatal(err)
		}
		if got != rows[i] {
			t.Fatalf("row %d:\n got %+v\nwant %+v", i, got, rows[i])
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatal("leftover bytes")
	}
	rec := appendRecord(nil, testMarker, &rows[0])
	if _, _, err := decodeRecord(rec[:len(rec)-1], testMarker); !errors.Is(err, errShortRecord) {
		t.Fatalf("truncated: %v", err)
	}
	rec[len(rec)-1] ^= 1
	if _, _, err := decodeRecord(rec, testMarker); !errors.Is(err, errCorruptRecord) {
		t.Fatalf("flipped bit: %v", err)
	}
}

// FuzzSpoolDecode checks the decoder never panics or over-reads, and that whatever it
// accepts re-encodes to the same bytes.
func FuzzSpoolDecode(f *testing.F) {
	r := testRow("ws_x", 1, 123)
	f.Add(appendRecord(nil, testMarker, &r))
	f.Add(appendRecord(nil, testMarker, &Row{}))
	f.Add(append(testMarker[:], 1, 0, 0, 0, 0, 0, 0, 0, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		row, n, err := decodeRecord(b, testMarker)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		again := appendRecord(nil, testMarker, &row)
		row2, _, err := decodeRecord(again, testMarker)
		if err != nil || row2 != row {
			t.Fatalf("re-encode mismatch: %v", err)
		}
	})
}

func TestCursorToken(t *testing.T) {
	c := Cursor{Time: testRow("w", 3, 1).Time, RequestID: "req.with.dots"}
	got, err := ParseCursor(c.String())
	if err != nil || got != c {
		t.Fatalf("round trip %+v %v", got, err)
	}
	if z, err := ParseCursor(""); err != nil || !z.IsZero() || (Cursor{}).String() != "" {
		t.Fatal("zero cursor")
	}
	if _, err := ParseCursor("!!"); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
}
