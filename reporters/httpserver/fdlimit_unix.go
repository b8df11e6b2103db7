//go:build unix

package httpserver

import "syscall"

// fdLimit returns the soft RLIMIT_NOFILE, if there is a meaningful one.
func fdLimit() (int, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0, false
	}
	return int(rl.Cur), true
}
