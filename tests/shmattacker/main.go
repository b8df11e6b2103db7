// Command shmattacker is a hostile worker for the end-to-end attack tests:
// it maps the shm file named by TAPES_SHM, written from docs/shm-layout.md
// alone, and abuses the words every worker may write, in a loop, until
// killed. It records nothing. Modes:
//
//	wake    FUTEX_WAKE on hostWait, which it leaves as it is
//	store0  store 0 into hostWait, then FUTEX_WAKE, as an honest waker does
//	claim   add 1 to claimWaits and wake the host, as a worker waiting for a slot does
//	bells   keep every doorbell bit set, never waking the host
//	awake   set every doorbell bit whenever hostWait is not 1 (the host is awake)
package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Header offsets (docs/shm-layout.md, "Header").
const (
	offHostWait   = 64
	offClaimWaits = 72
	offBells      = 128
	bellWords     = 64 // 512 bytes: one bit per slot, 4096 slots at most
	headerBytes   = 640
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: TAPES_SHM=FILE shmattacker wake|store0|claim|bells|awake")
		os.Exit(2)
	}
	f, err := os.OpenFile(os.Getenv("TAPES_SHM"), os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmattacker:", err)
		os.Exit(1)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, headerBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmattacker:", err)
		os.Exit(1)
	}
	word := (*uint32)(unsafe.Pointer(&m[offHostWait]))
	wake := func() {
		syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<31-1, 0, 0, 0)
	}
	ring := func() {
		for k := range bellWords {
			if b := (*uint64)(unsafe.Pointer(&m[offBells+8*k])); atomic.LoadUint64(b) != ^uint64(0) {
				atomic.OrUint64(b, ^uint64(0))
			}
		}
	}
	fmt.Println("attacking")
	switch mode := os.Args[1]; mode {
	case "wake":
		for {
			wake()
		}
	case "store0":
		for {
			atomic.StoreUint32(word, 0)
			wake()
		}
	case "claim":
		waits := (*uint64)(unsafe.Pointer(&m[offClaimWaits]))
		for {
			atomic.AddUint64(waits, 1)
			if atomic.CompareAndSwapUint32(word, 1, 0) {
				wake()
			}
		}
	case "bells":
		for {
			ring()
		}
	case "awake":
		for {
			if atomic.LoadUint32(word) != 1 {
				ring()
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "shmattacker: unknown mode", mode)
		os.Exit(2)
	}
}
