package main

import (
	"os/exec"
	"runtime"
	"syscall"
)

// workerSysProcAttr puts a worker in its own process group and has the
// kernel SIGKILL it when its parent dies. SIGKILL, not SIGTERM: a worker
// that ignored SIGTERM would go on recording into a file nothing drains.
// What it committed before stays in its ring for the next host.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup signals the worker's whole process group (its pgid is its
// pid, from Setpgid).
func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

// spawner starts every worker from one OS thread that lives as long as the
// supervisor: PR_SET_PDEATHSIG fires when the *thread* that forked the
// child exits, not the process (see the Pdeathsig comment in package
// syscall), and Go may end an idle thread's life under a goroutine that
// locked it. A dedicated locked thread makes "the parent died" mean exactly
// "tapes-host died".
type spawner struct{ reqs chan spawnReq }

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func newSpawner() *spawner {
	sp := &spawner{reqs: make(chan spawnReq)}
	go func() {
		// Never unlocked: when close ends this goroutine, its thread exits
		// with it (after every worker has been waited for).
		runtime.LockOSThread()
		for r := range sp.reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return sp
}

func (sp *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	sp.reqs <- spawnReq{cmd, done}
	return <-done
}

func (sp *spawner) close() { close(sp.reqs) }
