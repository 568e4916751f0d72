//go:build !linux

package ledger

import "os"

// fallocate cannot reserve blocks on this platform; it checks that the filesystem has the
// room (a weaker promise: another process may take the space first).
func fallocate(f *os.File, _, size int64) error { return freeSpaceCheck(f.Name(), size) }
