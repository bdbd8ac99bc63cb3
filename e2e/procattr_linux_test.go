package e2e

import "syscall"

// dieWithParent makes the kernel kill a started process when the test
// binary dies, e.g. on a test timeout, so no server outlives the run.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
