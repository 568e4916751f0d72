package ledger

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"time"
)

// Spool record framing:
//
//	[4 bytes little-endian payload length][4 bytes CRC-32C of payload][payload]
//
// The payload is a compact binary encoding of a Row (format version byte, then each field
// as a uvarint-prefixed string or a zig-zag varint). Binary instead of JSON keeps Append at
// a few hundred nanoseconds; the CRC and the length bound let recovery tell a torn last
// record (crash mid-write) from good data.
const (
	recordHeaderSize = 8
	maxRecordSize    = 1 << 20 // a row is ~200 bytes; anything bigger is corruption
	rowFormatV1      = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errShortRecord means the buffer ends inside a record (torn write or not yet written).
	errShortRecord = errors.New("ledger: spool: short record")
	// errCorruptRecord means the bytes cannot be a record written by appendRecord.
	errCorruptRecord = errors.New("ledger: spool: corrupt record")
)

// appendRecord appends r's framed record to dst.
func appendRecord(dst []byte, r *Row) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst = encodeRow(dst, r)
	payload := dst[start+recordHeaderSize:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// decodeRecord decodes the record at the start of b and returns it with its total size.
func decodeRecord(b []byte) (Row, int, error) {
	if len(b) < recordHeaderSize {
		return Row{}, 0, errShortRecord
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > maxRecordSize {
		return Row{}, 0, errCorruptRecord
	}
	if uint64(len(b)-recordHeaderSize) < uint64(n) {
		return Row{}, 0, errShortRecord
	}
	payload := b[recordHeaderSize : recordHeaderSize+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return Row{}, 0, errCorruptRecord
	}
	r, err := decodeRow(payload)
	if err != nil {
		return Row{}, 0, err
	}
	return r, recordHeaderSize + int(n), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func encodeRow(b []byte, r *Row) []byte {
	b = append(b, rowFormatV1)
	b = appendString(b, r.RequestID)
	ts := int64(math.MinInt64) // zero time marker
	if !r.Time.IsZero() {
		ts = r.Time.UnixMicro()
	}
	b = binary.AppendVarint(b, ts)
	for _, s := range [...]string{r.WorkspaceID, r.KeyID, r.NodeID, r.RequestedModel, r.Provider, r.UpstreamModel} {
		b = appendString(b, s)
	}
	for _, v := range [...]int64{
		r.InputUncached, r.CacheRead, r.CacheWrite5m, r.CacheWrite1h, r.Output, r.Reasoning,
		int64(r.CostMicros), int64(r.BaselineMicros),
		int64(r.SavePromptCache), int64(r.SaveResponseCache), int64(r.SaveCoalesce), int64(r.SaveCompression),
		int64(r.SaveDedupe), int64(r.SaveOutputBudget), int64(r.SaveRouting),
		int64(r.Status), int64(r.Attempts), r.LatencyUs, r.TTFBUs,
	} {
		b = binary.AppendVarint(b, v)
	}
	stream := byte(0)
	if r.Stream {
		stream = 1
	}
	b = append(b, stream)
	b = appendString(b, r.CacheOutcome)
	return appendString(b, r.ErrorCode)
}

type rowDecoder struct {
	b   []byte
	err error
}

func (d *rowDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *rowDecoder) str() string {
	if d.err != nil {
		return ""
	}
	l, n := binary.Uvarint(d.b)
	if n <= 0 || l > uint64(len(d.b)-n) {
		d.err = errCorruptRecord
		return ""
	}
	s := string(d.b[n : n+int(l)])
	d.b = d.b[n+int(l):]
	return s
}

func (d *rowDecoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorruptRecord
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func decodeRow(p []byte) (Row, error) {
	d := rowDecoder{b: p}
	if d.byte() != rowFormatV1 {
		return Row{}, errCorruptRecord
	}
	var r Row
	r.RequestID = d.str()
	if ts := d.varint(); ts != math.MinInt64 {
		r.Time = time.UnixMicro(ts).UTC()
	}
	r.WorkspaceID, r.KeyID, r.NodeID = d.str(), d.str(), d.str()
	r.RequestedModel, r.Provider, r.UpstreamModel = d.str(), d.str(), d.str()
	r.InputUncached, r.CacheRead, r.CacheWrite5m = d.varint(), d.varint(), d.varint()
	r.CacheWrite1h, r.Output, r.Reasoning = d.varint(), d.varint(), d.varint()
	r.CostMicros, r.BaselineMicros = Micros(d.varint()), Micros(d.varint())
	r.SavePromptCache, r.SaveResponseCache, r.SaveCoalesce = Micros(d.varint()), Micros(d.varint()), Micros(d.varint())
	r.SaveCompression, r.SaveDedupe = Micros(d.varint()), Micros(d.varint())
	r.SaveOutputBudget, r.SaveRouting = Micros(d.varint()), Micros(d.varint())
	r.Status, r.Attempts = int(d.varint()), int(d.varint())
	r.LatencyUs, r.TTFBUs = d.varint(), d.varint()
	switch d.byte() {
	case 0:
	case 1:
		r.Stream = true
	default:
		if d.err == nil {
			d.err = errCorruptRecord
		}
	}
	r.CacheOutcome, r.ErrorCode = d.str(), d.str()
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptRecord
	}
	if d.err != nil {
		return Row{}, d.err
	}
	return r, nil
}
