package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// osUser is the OS account that runs PostgreSQL when this process is root: postgres
// refuses to run as root.
const osUser = "postgres"

// runner runs the PostgreSQL programs of one bin directory, through runuser as the
// postgres OS user when this process is root.
type runner struct {
	binDir string
	// prefix is the command that runs a program as the postgres OS user; empty when
	// this process is not root.
	prefix []string
	// uid and gid own the cluster's files; -1 when this process is not root.
	uid, gid int
}

func newRunner(binDir string) (runner, error) {
	r := runner{binDir: binDir, uid: -1, gid: -1}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return r, fmt.Errorf("running as root, so PostgreSQL must run as the %q OS user: %w", osUser, err)
	}
	if r.uid, err = strconv.Atoi(u.Uid); err != nil {
		return r, fmt.Errorf("uid of %q: %w", osUser, err)
	}
	if r.gid, err = strconv.Atoi(u.Gid); err != nil {
		return r, fmt.Errorf("gid of %q: %w", osUser, err)
	}
	runuser, err := findRunuser()
	if err != nil {
		return r, err
	}
	r.prefix = []string{runuser, "-u", osUser, "--"}
	return r, nil
}

// findRunuser finds runuser (util-linux) on PATH or in the sbin directories, which a
// root PATH may lack.
func findRunuser() (string, error) {
	if p, err := exec.LookPath("runuser"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/runuser", "/sbin/runuser"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("running as root, so PostgreSQL must run through runuser, which is not installed (Debian package util-linux)")
}

// argv returns the command line that runs program with args.
func (r runner) argv(program string, args ...string) []string {
	argv := append([]string{}, r.prefix...)
	argv = append(argv, filepath.Join(r.binDir, program))
	return append(argv, args...)
}

// command returns a command that runs program in dir. dir must be readable by the
// user that runs the program.
func (r runner) command(ctx context.Context, dir, program string, args ...string) *exec.Cmd {
	argv := r.argv(program, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs program and returns an error holding its output if it fails.
func (r runner) run(ctx context.Context, dir, program string, args ...string) error {
	out, err := r.command(ctx, dir, program, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", program, args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// chown gives path, and everything under it, to the postgres OS user when this process
// is root.
func (r runner) chown(path string) error {
	if r.uid < 0 {
		return nil
	}
	return filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, r.uid, r.gid)
	})
}

// tail returns the last lines of s, at most maxLines lines.
func tail(s string, maxLines int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}
