//go:build !linux

package shm

import "time"

func futexSleep(addr *uint32, val uint32, d time.Duration) { time.Sleep(min(d, time.Millisecond)) }

func futexWakeAll(addr *uint32) {}

const haveFutex = false
