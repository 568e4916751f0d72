package ledger

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"time"
	"unicode/utf8"
)

// Spool framing. Segments written by this version start with a header and frame every
// record behind the segment's sync marker:
//
//	segment header: "BTLSPL02" + 8-byte random sync marker
//	record:         [marker 8][payload length 4, LE][CRC-32C of length and payload 4][payload]
//
// The payload is a compact binary encoding of a Row (format version byte, then each field
// as a uvarint-prefixed string or a zig-zag varint). Binary instead of JSON keeps Append at
// a few hundred nanoseconds; the CRC and the length bound let recovery tell a torn last
// record (crash mid-write) from good data. The marker is random per segment and never leaves
// the spool, so nothing a client sends can forge a record boundary: after corruption the
// reader skips to the next marker whose record checks out, and one bad record costs only
// itself (Avro container files resynchronise the same way).
//
// Segments written before the marker existed (version 1: no header, records
// [length][CRC of payload][payload]) are still read, so a spool left by an older version
// replays after an upgrade.
const (
	segMagic         = "BTLSPL02"
	segHeaderSize    = 16
	markerSize       = 8
	recordHeaderV1   = 8
	recordHeaderSize = markerSize + 8
	maxRecordSize    = 1 << 20 // what a reader accepts; the writer stays far below (MaxRecordBytes)
	rowFormatV1      = 1
)

// MaxFieldBytes bounds every string a row carries (ids, model and provider names, error
// codes). Longer values are cut at a rune boundary before they are spooled, so a record can
// never outgrow what readers accept, whatever a client sends; the HTTP edge refuses
// oversized identifiers with a 400 long before this applies.
const MaxFieldBytes = 512

// MaxRecordBytes is the largest framed record encodeRow can produce: nine strings at
// MaxFieldBytes with their length prefixes, nineteen varints, the flags, and the header.
// Spool space is reserved in units of it.
const MaxRecordBytes = recordHeaderSize + 1 + 9*(MaxFieldBytes+binary.MaxVarintLen16) + 20*binary.MaxVarintLen64 + 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errShortRecord means the buffer ends inside a record (torn write or not yet written).
	errShortRecord = errors.New("ledger: spool: short record")
	// errCorruptRecord means the bytes cannot be a record written by appendRecord.
	errCorruptRecord = errors.New("ledger: spool: corrupt record")
)

type syncMarker [markerSize]byte

// appendRecord appends r's framed record to dst.
func appendRecord(dst []byte, m syncMarker, r *Row) []byte {
	start := len(dst)
	dst = append(dst, m[:]...)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst = encodeRow(dst, r)
	payload := dst[start+recordHeaderSize:]
	lenBytes := dst[start+markerSize : start+markerSize+4]
	binary.LittleEndian.PutUint32(lenBytes, uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+markerSize+4:], recordCRC(lenBytes, payload))
	return dst
}

func recordCRC(lenBytes, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(lenBytes, castagnoli), castagnoli, payload)
}

// decodeRecord decodes the record at the start of b and returns it with its total size.
func decodeRecord(b []byte, m syncMarker) (Row, int, error) {
	if len(b) < recordHeaderSize {
		return Row{}, 0, errShortRecord
	}
	if syncMarker(b[:markerSize]) != m {
		return Row{}, 0, errCorruptRecord
	}
	lenBytes := b[markerSize : markerSize+4]
	n := binary.LittleEndian.Uint32(lenBytes)
	if n == 0 || n > maxRecordSize {
		return Row{}, 0, errCorruptRecord
	}
	if uint64(len(b)-recordHeaderSize) < uint64(n) {
		return Row{}, 0, errShortRecord
	}
	payload := b[recordHeaderSize : recordHeaderSize+int(n)]
	if recordCRC(lenBytes, payload) != binary.LittleEndian.Uint32(b[markerSize+4:]) {
		return Row{}, 0, errCorruptRecord
	}
	r, err := decodeRow(payload, true, nil)
	if err != nil {
		return Row{}, 0, err
	}
	return r, recordHeaderSize + int(n), nil
}

// boundText makes s valid UTF-8 without NUL bytes (as the stores keep it) and at most
// MaxFieldBytes long, cut at a rune boundary.
func boundText(s string) string {
	s = cleanText(s)
	if len(s) <= MaxFieldBytes {
		return s
	}
	cut := MaxFieldBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func appendString(b []byte, s string) []byte {
	s = boundText(s)
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
	b       []byte
	err     error
	bounded bool              // strings longer than MaxFieldBytes are corruption (current format)
	intern  map[string]string // repeated values (workspace, key, model …) share one string
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
	if n <= 0 || l > uint64(len(d.b)-n) || (d.bounded && l > MaxFieldBytes) {
		d.err = errCorruptRecord
		return ""
	}
	raw := d.b[n : n+int(l)]
	d.b = d.b[n+int(l):]
	if d.intern == nil {
		return string(raw)
	}
	if s, ok := d.intern[string(raw)]; ok { // no allocation for the lookup
		return s
	}
	s := string(raw)
	d.intern[s] = s
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

// decodeRow decodes a payload; bounded rejects strings the current encoder cannot write.
// With intern, repeated field values share memory (the request id, unique, is not interned).
func decodeRow(p []byte, bounded bool, intern map[string]string) (Row, error) {
	d := rowDecoder{b: p, bounded: bounded}
	if d.byte() != rowFormatV1 {
		return Row{}, errCorruptRecord
	}
	var r Row
	r.RequestID = d.str()
	d.intern = intern
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
