// Package benchcpu measures process CPU time in benchmarks, which stays meaningful on a
// shared, oversubscribed machine where wall-clock ns/op mostly measures waiting.
package benchcpu

import (
	"syscall"
	"time"
)

// Now returns the process's user+system CPU time.
func Now() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
