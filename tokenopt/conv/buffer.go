package conv

import (
	"strings"
	"unsafe"
)

// Buffer writes a body whose size is known in advance into memory that is not cleared
// first: every byte is written once, where a make([]byte, 0, n) would also zero all n of
// them — on a 100k-token body that second pass over fresh memory is most of what a copy
// costs. strings.Builder is the standard library's way to such memory.
type Buffer struct{ b strings.Builder }

// NewBuffer returns a Buffer for n bytes.
func NewBuffer(n int) *Buffer {
	w := new(Buffer)
	w.b.Grow(n)
	return w
}

// Write appends p.
func (w *Buffer) Write(p []byte) { w.b.Write(p) }

// Len is the number of bytes written.
func (w *Buffer) Len() int { return w.b.Len() }

// Bytes ends the writing and returns what was written. The Buffer must not be used after:
// the slice owns the memory.
func (w *Buffer) Bytes() []byte {
	s := w.b.String()
	w.b = strings.Builder{}
	if len(s) == 0 {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
