package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFuzzTargets runs every fuzz target of the module for a while, one
// `go test -fuzz` per target (go test fuzzes one target per invocation).
// Opt-in: TENANTMIGRATE_FUZZ=1, each target for TENANTMIGRATE_FUZZTIME
// (default 30s). A failure leaves the failing input in the package's
// testdata/fuzz, as go test -fuzz does; commit it with the fix.
func TestFuzzTargets(t *testing.T) {
	if os.Getenv("TENANTMIGRATE_FUZZ") != "1" {
		t.Skip("opt-in: set TENANTMIGRATE_FUZZ=1 to fuzz every target for TENANTMIGRATE_FUZZTIME (default 30s) each; see RELIABILITY.md")
	}
	fuzzTime := os.Getenv("TENANTMIGRATE_FUZZTIME")
	if fuzzTime == "" {
		fuzzTime = "30s"
	}
	_, err := time.ParseDuration(fuzzTime)
	require.NoError(t, err, "TENANTMIGRATE_FUZZTIME")

	root := moduleRoot(t)
	list := exec.Command(goTool(), "test", "-list", "^Fuzz", "./...")
	list.Dir = root
	out, err := list.CombinedOutput()
	require.NoError(t, err, "go test -list:\n%s", out)
	targets := parseFuzzList(string(out))
	require.NotEmpty(t, targets, "no fuzz targets found:\n%s", out)

	for _, tg := range targets {
		t.Run(tg.pkg+"."+tg.name, func(t *testing.T) {
			cmd := exec.Command(goTool(), "test", "-run=^$", "-fuzz=^"+tg.name+"$", "-fuzztime="+fuzzTime, tg.pkg)
			cmd.Dir = root
			start := time.Now()
			out, err := cmd.CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[max(0, len(lines)-3):]
			require.NoError(t, err, "fuzzing %s.%s failed:\n%s", tg.pkg, tg.name, out)
			t.Logf("%s in %s: %s", tg.name, time.Since(start).Round(time.Second), strings.Join(last, " | "))
		})
	}
}

// fuzzTarget is one fuzz target of a package.
type fuzzTarget struct{ pkg, name string }

// parseFuzzList reads the output of `go test -list ^Fuzz ./...`: the names
// of a package's targets, then a line "ok  <package> ..." (or "?" for a
// package without tests).
func parseFuzzList(out string) []fuzzTarget {
	var targets []fuzzTarget
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case len(fields) == 1 && strings.HasPrefix(line, "Fuzz"):
			names = append(names, line)
		case len(fields) >= 2 && (fields[0] == "ok" || fields[0] == "?"):
			for _, n := range names {
				targets = append(targets, fuzzTarget{pkg: fields[1], name: n})
			}
			names = nil
		}
	}
	return targets
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	require.NoError(t, err)
	gomod := string(bytes.TrimSpace(out))
	require.NotEmpty(t, gomod, "not in a module")
	return filepath.Dir(gomod)
}
