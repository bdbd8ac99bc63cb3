package pgserver

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrNoBinaries is returned by FindBinDir, and so by Start, when no directory holds the
// PostgreSQL server programs initdb, pg_ctl and postgres.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH " +
	"or in /usr/lib/postgresql/*/bin: install the Debian package `postgresql` (apt-get install postgresql)")

// debianRoot is where Debian and Ubuntu install one bin directory per PostgreSQL major version.
const debianRoot = "/usr/lib/postgresql"

// FindBinDir returns the directory that holds initdb, pg_ctl and postgres: the directory of
// the initdb found on PATH if it holds all three, else the highest version of
// /usr/lib/postgresql/VERSION/bin. It returns ErrNoBinaries when there is none.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if dir, err := filepath.Abs(filepath.Dir(p)); err == nil && hasBinaries(dir) {
			return dir, nil
		}
	}
	if dir := highestVersionBinDir(debianRoot); dir != "" {
		return dir, nil
	}
	return "", ErrNoBinaries
}

// highestVersionBinDir returns root/VERSION/bin with the highest VERSION that holds the
// server programs, or "" if none does.
func highestVersionBinDir(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	var best string
	var bestVersion []int
	for _, e := range entries {
		version, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		dir := filepath.Join(root, e.Name(), "bin")
		if !hasBinaries(dir) {
			continue
		}
		if best == "" || slices.Compare(version, bestVersion) > 0 {
			best, bestVersion = dir, version
		}
	}
	return best
}

// parseVersion parses a directory name such as "15" or "9.6".
func parseVersion(name string) ([]int, bool) {
	var version []int
	for part := range strings.SplitSeq(name, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		version = append(version, n)
	}
	return version, true
}

// hasBinaries reports whether dir holds executable initdb, pg_ctl and postgres.
func hasBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}
