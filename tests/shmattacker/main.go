// Command shmattacker is a hostile worker for the end-to-end attack tests:
// it maps the shm file named by TAPES_SHM, written from docs/shm-layout.md
// alone, and abuses the words every worker may write, in a loop, until
// killed. It records nothing but in stall mode. Modes:
//
//	wake    FUTEX_WAKE on hostWait, which it leaves as it is
//	store0  store 0 into hostWait, then FUTEX_WAKE, as an honest waker does
//	claim   add 1 to claimWaits and wake the host, as a worker waiting for a slot does
//	bells   keep every doorbell bit set, never waking the host
//	awake   set every doorbell bit whenever hostWait is not 1 (the host is awake)
//	stall   a real worker (its slot claimed by the shm client, one counter
//	        "stall.n" defined: id 0) that claims a record of its ring, rings,
//	        commits it (value 1) 10 ms later and claims the next at once
package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/tapes-go/tapes/shm"
)

// Header offsets (docs/shm-layout.md, "Header").
const (
	offHostWait   = 64
	offClaimWaits = 72
	offBells      = 128
	bellWords     = 64 // 512 bytes: one bit per slot, 4096 slots at most
	headerBytes   = 640
	offRingRecs   = 20 // u32 R
	offSlotSize   = 32 // u64 S
	offRingOffset = 52 // u32, within a slot
	offReserve    = 64 // within a slot
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: TAPES_SHM=FILE shmattacker wake|store0|claim|bells|awake|stall")
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
	if os.Args[1] == "stall" {
		stall(f)
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

// stall never returns: a worker whose every record the host finds claimed
// and not committed, for 10 ms each (docs/shm-layout.md, "Recording an
// event", cut in two).
func stall(f *os.File) {
	c, err := shm.OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmattacker:", err)
		os.Exit(1)
	}
	c.Counter("stall.n") // id 0: the first definition
	c.Flush()
	fi, err := f.Stat()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmattacker:", err)
		os.Exit(1)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmattacker:", err)
		os.Exit(1)
	}
	u32 := func(off int) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }
	u64 := func(off int) *uint64 { return (*uint64)(unsafe.Pointer(&m[off])) }
	i := c.Slot()
	base := headerBytes + i*int(*u64(offSlotSize))
	ring := base + int(*u32(offRingOffset))
	mask := uint64(*u32(offRingRecs) - 1)
	reserve := u64(base + offReserve)
	bell, bit := u64(offBells+8*(i/64)), uint64(1)<<(i%64)
	word := u32(offHostWait)
	fmt.Println("attacking")
	for {
		r := atomic.LoadUint64(reserve)
		if !atomic.CompareAndSwapUint64(reserve, r, r+1) {
			continue
		}
		atomic.OrUint64(bell, bit)
		if atomic.LoadUint32(word) != 0 && atomic.CompareAndSwapUint32(word, 1, 0) {
			syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<31-1, 0, 0, 0)
		}
		time.Sleep(10 * time.Millisecond)
		p := ring + int(r&mask)*16
		atomic.StoreUint64(u64(p+8), 1)
		atomic.StoreUint64(u64(p), 0|1<<32) // id 0, kind counter (1)
	}
}
