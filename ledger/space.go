package ledger

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
)

// ErrSpoolFull means the spool's filesystem has no room for another row: requests must be
// refused before they cost anything, since their rows could not be made durable.
var ErrSpoolFull = errors.New("ledger: spool disk full")

// preallocate is fallocate, replaceable by tests that need a disk to fill up.
var preallocate = fallocate

// freeSpaceCheck is the fallback where blocks cannot be preallocated: the filesystem must
// have size bytes free for unprivileged writers.
func freeSpaceCheck(path string, size int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < size {
		return fmt.Errorf("%d bytes free, %d needed: %w", free, size, syscall.ENOSPC)
	}
	return nil
}
