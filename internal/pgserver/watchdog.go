package pgserver

import (
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
)

// watchdogScript waits in the background for process $1 to exit, then stops the cluster
// in directory $2 with the pg_ctl command line in $3... and deletes $2. The outer shell
// exits at once, leaving the subshell to init, so nobody has to wait for it.
const watchdogScript = `
(
	pid=$1 dir=$2
	shift 2
	while kill -0 "$pid" 2>/dev/null || [ -d "/proc/$pid" ]; do sleep 0.5; done
	if [ -f "$dir/data/postmaster.pid" ]; then
		"$@" stop -D "$dir/data" -m fast -w -t 60 -s ||
			"$@" stop -D "$dir/data" -m immediate -w -t 60 -s
	fi
	rm -rf "$dir"
) </dev/null >/dev/null 2>&1 &
`

// RemoveAfterExit starts a detached watchdog process, in a session of its own, that waits
// for process pid to exit, then stops the cluster in dir (if it runs) and deletes dir,
// whether or not it holds a cluster yet. It stops the cluster with the pg_ctl of
// FindBinDir. It lets a cluster outlive the process that started it, and still go away:
// pgtest shares one cluster among the test binaries of a go test run and removes it when
// the go command exits.
func RemoveAfterExit(dir string, pid int) error {
	binDir, err := FindBinDir()
	if err != nil {
		return fmt.Errorf("start watchdog for %s: %w", dir, err)
	}
	r, err := newRunner(binDir)
	if err != nil {
		return fmt.Errorf("start watchdog for %s: %w", dir, err)
	}
	args := append([]string{"-c", watchdogScript, "pgserver-watchdog", strconv.Itoa(pid), dir}, r.argv("pg_ctl")...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("start watchdog for %s: %w", dir, err)
	}
	return nil
}
