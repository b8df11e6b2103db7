//go:build unix && !linux

package main

import (
	"os/exec"
	"syscall"
)

// Without PR_SET_PDEATHSIG, workers outlive a supervisor killed with
// SIGKILL on these systems; they still get their own process group.
func workerSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

type spawner struct{}

func newSpawner() *spawner                    { return &spawner{} }
func (sp *spawner) start(cmd *exec.Cmd) error { return cmd.Start() }
func (sp *spawner) close()                    {}
