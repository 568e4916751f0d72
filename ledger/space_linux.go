package ledger

import (
	"errors"
	"os"
	"syscall"
)

// fallocate reserves disk blocks for [off, off+size) of f without changing its size
// (FALLOC_FL_KEEP_SIZE), so appends into that range cannot fail for lack of space. Readers
// and recovery go by the file size, which only written records extend.
func fallocate(f *os.File, off, size int64) error {
	const keepSize = 0x1 // FALLOC_FL_KEEP_SIZE
	for {
		err := syscall.Fallocate(int(f.Fd()), keepSize, off, size)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
			return freeSpaceCheck(f.Name(), size)
		}
		return err
	}
}
