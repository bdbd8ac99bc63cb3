//go:build !linux

package e2e

import "syscall"

// dieWithParent is a no-op where the kernel cannot kill a child with its
// parent; cleanup stops the servers.
func dieWithParent() *syscall.SysProcAttr { return nil }
