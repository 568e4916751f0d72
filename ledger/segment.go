package ledger

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// spoolPos is a place in the spool: a segment number and a byte offset in it. Offsets are
// always record boundaries.
type spoolPos struct {
	Seg uint64 `json:"segment"`
	Off int64  `json:"offset"`
}

const (
	segmentSuffix  = ".seg"
	checkpointName = "checkpoint.json"
	lockName       = "LOCK"
)

func segmentPath(dir string, seg uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", seg, segmentSuffix))
}

// listSegments returns the segment numbers present in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, segmentSuffix), 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, n)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	return segs, nil
}

// readCheckpoint returns the last committed position; a missing or unreadable checkpoint
// means "replay everything", which idempotent inserts make safe.
func readCheckpoint(dir string) spoolPos {
	b, err := os.ReadFile(filepath.Join(dir, checkpointName))
	if err != nil {
		return spoolPos{}
	}
	var p spoolPos
	if json.Unmarshal(b, &p) != nil || p.Off < 0 {
		return spoolPos{}
	}
	return p
}

// writeCheckpoint replaces the checkpoint atomically (write + rename). It is not fsynced:
// losing it on power failure only causes a harmless replay.
func writeCheckpoint(dir string, p spoolPos) error {
	b, _ := json.Marshal(p)
	tmp := filepath.Join(dir, checkpointName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, checkpointName))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// newMarker returns a fresh random sync marker.
func newMarker() (syncMarker, error) {
	var m syncMarker
	_, err := rand.Read(m[:])
	return m, err
}

// createSegment creates segment seg and writes its header; the file is positioned for appends.
func createSegment(dir string, seg uint64) (*os.File, syncMarker, error) {
	m, err := newMarker()
	if err != nil {
		return nil, m, err
	}
	f, err := os.OpenFile(segmentPath(dir, seg), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, m, err
	}
	hdr := append([]byte(segMagic), m[:]...)
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		_ = os.Remove(segmentPath(dir, seg))
		return nil, m, err
	}
	return f, m, nil
}

// segFormat reads a segment's header: v2 with its marker, or a version 1 segment (no header).
// A header cut short by a crash reads as v2 with no records (dataStart past the end).
func segFormat(f *os.File) (v2 bool, m syncMarker, err error) {
	var hdr [segHeaderSize]byte
	n, err := f.ReadAt(hdr[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, m, err
	}
	if n > 0 && string(hdr[:min(n, len(segMagic))]) == segMagic[:min(n, len(segMagic))] {
		copy(m[:], hdr[len(segMagic):])
		return true, m, nil
	}
	return false, m, nil
}

// segReader reads records sequentially from one segment, never past a caller-given limit
// (the writer's published end), so it never sees a record that is still being written.
type segReader struct {
	f       *os.File
	br      *bufio.Reader
	seg     uint64
	off     int64
	v2      bool
	marker  syncMarker
	hdr     [recordHeaderSize]byte
	payload []byte
	intern  map[string]string
}

func openSegReader(dir string, seg uint64, off int64) (*segReader, error) {
	f, err := os.Open(segmentPath(dir, seg))
	if err != nil {
		return nil, err
	}
	v2, m, err := segFormat(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if v2 && off < segHeaderSize {
		off = segHeaderSize
	}
	s := &segReader{f: f, br: bufio.NewReaderSize(f, 256<<10), seg: seg, v2: v2, marker: m, intern: map[string]string{}}
	if err := s.seek(off); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (s *segReader) seek(off int64) error {
	if _, err := s.f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	s.br.Reset(s.f)
	s.off = off
	return nil
}

func (s *segReader) close() {
	if s != nil && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// next returns the next record before limit; ok is false at limit. errShortRecord and
// errCorruptRecord leave s.off at the start of the bad record (the buffered reader is then
// out of step: resync or seek before reading on).
func (s *segReader) next(limit int64) (row Row, size int, ok bool, err error) {
	if s.off >= limit {
		return Row{}, 0, false, nil
	}
	hs := int64(recordHeaderV1)
	if s.v2 {
		hs = recordHeaderSize
	}
	if limit-s.off < hs {
		return Row{}, 0, false, errShortRecord
	}
	hdr := s.hdr[:hs]
	if _, err := io.ReadFull(s.br, hdr); err != nil {
		return Row{}, 0, false, shortIfEOF(err)
	}
	if s.v2 && syncMarker(hdr[:markerSize]) != s.marker {
		return Row{}, 0, false, errCorruptRecord
	}
	lenBytes := hdr[hs-8 : hs-4]
	n := binary.LittleEndian.Uint32(lenBytes)
	if n == 0 || n > maxRecordSize {
		return Row{}, 0, false, errCorruptRecord
	}
	if limit-s.off-hs < int64(n) {
		return Row{}, 0, false, errShortRecord
	}
	if cap(s.payload) < int(n) {
		s.payload = make([]byte, n)
	}
	p := s.payload[:n]
	if _, err := io.ReadFull(s.br, p); err != nil {
		return Row{}, 0, false, shortIfEOF(err)
	}
	want := binary.LittleEndian.Uint32(hdr[hs-4:])
	if s.v2 && recordCRC(lenBytes, p) != want || !s.v2 && crc32.Checksum(p, castagnoli) != want {
		return Row{}, 0, false, errCorruptRecord
	}
	if len(s.intern) > 1<<12 { // bounded: ids of many tenants must not pile up
		clear(s.intern)
	}
	row, err = decodeRow(p, s.v2, s.intern)
	if err != nil {
		return Row{}, 0, false, err
	}
	size = int(hs) + int(n)
	s.off += int64(size)
	return row, size, true, nil
}

// resync looks for the next intact record after the bad one at s.off and before limit, and
// positions the reader on it. Only marked (v2) segments can resynchronise; found is false
// when no intact record follows (a torn tail), leaving s.off where it was.
func (s *segReader) resync(limit int64) (found bool, err error) {
	if !s.v2 {
		return false, nil
	}
	const window = 64 << 10
	buf := make([]byte, window+markerSize)
	for from := s.off + 1; from+recordHeaderSize <= limit; {
		n, rerr := s.f.ReadAt(buf[:min(int64(len(buf)), limit-from)], from)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return false, rerr
		}
		chunk := buf[:n]
		for i := 0; ; {
			j := bytes.Index(chunk[i:], s.marker[:])
			if j < 0 {
				break
			}
			at := from + int64(i+j)
			if s.intactAt(at, limit) {
				return true, s.seek(at)
			}
			i += j + 1
		}
		if int64(n) <= markerSize {
			break
		}
		from += int64(n) - markerSize + 1 // overlap: a marker may straddle two windows
	}
	return false, s.seek(s.off)
}

// intactAt reports whether a complete, checked record starts at off.
func (s *segReader) intactAt(off, limit int64) bool {
	var hdr [recordHeaderSize]byte
	if _, err := s.f.ReadAt(hdr[:], off); err != nil {
		return false
	}
	n := int64(binary.LittleEndian.Uint32(hdr[markerSize:]))
	if n == 0 || n > maxRecordSize || off+recordHeaderSize+n > limit {
		return false
	}
	rec := make([]byte, recordHeaderSize+n)
	if _, err := s.f.ReadAt(rec, off); err != nil {
		return false
	}
	_, _, err := decodeRecord(rec, s.marker)
	return err == nil
}

func shortIfEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errShortRecord
	}
	return err
}

// recoverSegment validates a segment from off. Damage followed by intact records is skipped
// (it stays on disk and the reader skips it again); damage at the end, which is what a crash
// in the middle of write(2) leaves, is truncated. It returns the intact records from off,
// the offset after the last of them, and the bytes cut or skipped as damaged.
func recoverSegment(dir string, seg uint64, off int64) (rows, end, damaged int64, err error) {
	path := segmentPath(dir, seg)
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, 0, err
	}
	size := st.Size()
	r, err := openSegReader(dir, seg, min(off, size))
	if err != nil {
		return 0, 0, 0, err
	}
	defer r.close()
	for {
		_, _, ok, rerr := r.next(size)
		if rerr == nil {
			if !ok {
				break
			}
			rows++
			continue
		}
		if !errors.Is(rerr, errShortRecord) && !errors.Is(rerr, errCorruptRecord) {
			return 0, 0, 0, rerr
		}
		bad := r.off
		found, serr := r.resync(size)
		if serr != nil {
			return 0, 0, 0, serr
		}
		if !found {
			break
		}
		damaged += r.off - bad
	}
	end = min(max(r.off, off), size)
	if end < size {
		damaged += size - end
		if err := os.Truncate(path, end); err != nil {
			return 0, 0, 0, err
		}
	}
	return rows, end, damaged, nil
}
