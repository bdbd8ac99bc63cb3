package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBadConfigFlagsAreUsageErrors: a version table that is not
// schema-qualified and a negative count are refused with exit 2 and a
// message naming what is wrong, before anything connects.
func TestBadConfigFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a connection attempt would be exit 1.
	db := "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
	migrations := writeMigrations(t, map[string]string{"00001_one.sql": "CREATE TABLE one (id int);"})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--all", "--version-table", "goose_db_version"}, "--version-table (VERSION_TABLE): invalid version table \"goose_db_version\": want a schema-qualified name"},
		{[]string{"migrate", "--all", "--version-table", "a.b.c"}, "schema-qualified"},
		{[]string{"serve", "--max-attempts", "-1"}, "--max-attempts must be at least 1"},
		{[]string{"serve", "--inline-concurrency", "-3"}, "--inline-concurrency must be at least 1"},
		{[]string{"serve", "--history-retention", "-1h"}, "--history-retention must not be negative"},
	} {
		args := append(tc.args, "--database-url", db, "--encryption-key", "cli-test-key-0123456789", "--migrations", migrations)
		r := runCLI(t, args...)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, tc.want, "%v", tc.args)
	}
}
