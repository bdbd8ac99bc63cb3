package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServeBadConfigIsUsageError: README "Exit codes": 2 on a usage or
// configuration error. A tenant host regexp that does not compile or has no
// group, and a negative --shutdown-timeout, are configuration errors,
// refused before anything connects.
func TestServeBadConfigIsUsageError(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a connection attempt would be exit 1.
	db := "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
	migrations := writeMigrations(t, map[string]string{"00001_one.sql": "CREATE TABLE one (id int);"})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--tenant-host-regexp", "("}, "tenant host regexp"},
		{[]string{"serve", "--tenant-host-regexp", `^[a-z]+\.example\.com$`}, "needs a group"},
		{[]string{"serve", "--shutdown-timeout", "-5s"}, "--shutdown-timeout"},
	} {
		args := append(tc.args, "--database-url", db, "--encryption-key", "cli-test-key-0123456789", "--migrations", migrations, "--listen", "127.0.0.1:0")
		r := runCLI(t, args...)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, tc.want, "%v", tc.args)
	}
}
