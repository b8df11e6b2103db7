package main

import (
	"os"
	"os/exec"
	"syscall"
	"time"
	"unsafe"
)

const (
	floorName = "go-floor"
	floorEnv  = "SHMHOSTCPU_FLOOR_WAITER"
)

// floorWaiter is the process the go-floor column measures: one goroutine
// reading its standard input (a pipe) through the netpoller, with the
// read itself a RawSyscall as tapes-host's waits are (a syscall.Read would
// also wake the runtime's monitor thread), and nothing else.
func floorWaiter() {
	if err := syscall.SetNonblock(0, true); err != nil {
		os.Exit(1)
	}
	rc, err := os.NewFile(0, "stdin").SyscallConn()
	if err != nil {
		os.Exit(1)
	}
	var buf [64]byte
	var n uintptr
	var errno syscall.Errno
	read := func(fd uintptr) bool {
		n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		return errno != syscall.EAGAIN
	}
	for {
		if err := rc.Read(read); err != nil || (errno == 0 && n == 0) {
			return // the pipe closed: shmhostcpu is done with us
		}
	}
}

var (
	floorStop   func()
	floorWindow time.Duration
)

// startFloor starts the floor waiter and wakes it as often as a host whose
// workers record rate events a second in all wakes: per event up to one a
// window, then per window (the host's coalescing), never for none.
func startFloor(rate int, window time.Duration) (pid int, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	c := exec.Command(self)
	c.Env = append(os.Environ(), floorEnv+"=1")
	c.Stderr = os.Stderr
	in, err := c.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := c.Start(); err != nil {
		return 0, err
	}
	started(c)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		if rate == 0 {
			<-done
			return
		}
		t := time.NewTicker(max(time.Second/time.Duration(rate), window))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				in.Write([]byte{1})
			}
		}
	}()
	floorStop = func() {
		close(done)
		<-ended
		in.Close()
		c.Wait()
		liveMu.Lock()
		delete(live, c)
		liveMu.Unlock()
	}
	return c.Process.Pid, nil
}

func stopFloor() { floorStop() }
