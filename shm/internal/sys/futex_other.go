//go:build !linux

package sys

import "time"

func FutexSleep(addr *uint32, val uint32, d time.Duration) { time.Sleep(min(d, time.Millisecond)) }

func FutexWakeAll(addr *uint32) {}

const HaveFutex = false
