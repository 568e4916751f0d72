package ledger

import (
	"bufio"
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

// segReader reads records sequentially from one segment, never past a caller-given limit
// (the writer's published end), so it never sees a record that is still being written.
type segReader struct {
	f       *os.File
	br      *bufio.Reader
	seg     uint64
	off     int64
	hdr     [recordHeaderSize]byte
	payload []byte
}

func openSegReader(dir string, seg uint64, off int64) (*segReader, error) {
	f, err := os.Open(segmentPath(dir, seg))
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &segReader{f: f, br: bufio.NewReaderSize(f, 256<<10), seg: seg, off: off}, nil
}

func (s *segReader) close() {
	if s != nil && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// next returns the next record before limit; ok is false at limit. errShortRecord and
// errCorruptRecord leave s.off at the start of the bad record.
func (s *segReader) next(limit int64) (row Row, size int, ok bool, err error) {
	if s.off >= limit {
		return Row{}, 0, false, nil
	}
	if limit-s.off < recordHeaderSize {
		return Row{}, 0, false, errShortRecord
	}
	if _, err := io.ReadFull(s.br, s.hdr[:]); err != nil {
		return Row{}, 0, false, shortIfEOF(err)
	}
	n := binary.LittleEndian.Uint32(s.hdr[:])
	if n == 0 || n > maxRecordSize {
		return Row{}, 0, false, errCorruptRecord
	}
	if limit-s.off-recordHeaderSize < int64(n) {
		return Row{}, 0, false, errShortRecord
	}
	if cap(s.payload) < int(n) {
		s.payload = make([]byte, n)
	}
	p := s.payload[:n]
	if _, err := io.ReadFull(s.br, p); err != nil {
		return Row{}, 0, false, shortIfEOF(err)
	}
	if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(s.hdr[4:]) {
		return Row{}, 0, false, errCorruptRecord
	}
	row, err = decodeRow(p)
	if err != nil {
		return Row{}, 0, false, err
	}
	size = recordHeaderSize + int(n)
	s.off += int64(size)
	return row, size, true, nil
}

func shortIfEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errShortRecord
	}
	return err
}

// recoverSegment validates a segment from off and truncates it after the last good record,
// which removes a torn write left by a crash. It returns the good records and bytes from off,
// and how many bytes were cut.
func recoverSegment(dir string, seg uint64, off int64) (rows, good, cut int64, err error) {
	path := segmentPath(dir, seg)
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, 0, err
	}
	size := st.Size()
	if off > size {
		off = size
	}
	r, err := openSegReader(dir, seg, off)
	if err != nil {
		return 0, 0, 0, err
	}
	for {
		_, _, ok, rerr := r.next(size)
		if rerr != nil {
			if !errors.Is(rerr, errShortRecord) && !errors.Is(rerr, errCorruptRecord) {
				r.close()
				return 0, 0, 0, rerr
			}
			break
		}
		if !ok {
			break
		}
		rows++
	}
	valid := r.off
	r.close()
	if valid < size {
		if err := os.Truncate(path, valid); err != nil {
			return 0, 0, 0, err
		}
	}
	return rows, valid - off, size - valid, nil
}
