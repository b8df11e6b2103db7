//go:build !linux

package bench

import "time"

// pollPause: see poll_linux_test.go; elsewhere a plain sleep.
func pollPause() { time.Sleep(20 * time.Microsecond) }

func quietPause(d time.Duration) { time.Sleep(d) }
