package sys

import (
	"os"
	"syscall"
)

const (
	madvRemove        = 0x9  // MADV_REMOVE: free the backing pages; they read as zero
	madvPopulateWrite = 0x17 // MADV_POPULATE_WRITE (Linux 5.14): fault pages in, writable
)

// pageRange returns the page-aligned interior of b[from:to].
func pageRange(from, to int) (int, int) {
	ps := os.Getpagesize()
	return (from + ps - 1) / ps * ps, to / ps * ps
}

// Populate faults in m[from:to] with one system call. On a virtual machine a
// page fault can cost tens of microseconds, and a ring's pages are otherwise
// faulted one by one by both processes on their first lap. Failure (an old
// kernel) only loses the optimisation.
func Populate(m []byte, from, to int) {
	a, b := pageRange(from, to)
	if a < b {
		syscall.Madvise(m[a:b], madvPopulateWrite)
	}
}

// ZeroRange zeroes m[from:to], giving whole pages back to tmpfs instead of
// writing them, so reclaiming a large idle ring neither touches nor keeps
// memory.
func ZeroRange(m []byte, from, to int) {
	a, b := pageRange(from, to)
	if a >= b || syscall.Madvise(m[a:b], madvRemove) != nil {
		clear(m[from:to])
		return
	}
	clear(m[from:a])
	clear(m[b:to])
}
