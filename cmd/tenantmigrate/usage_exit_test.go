package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestShortMultibyteKeyIsUsageError: a current encryption key of fewer
// than 16 characters is a configuration error (exit 2) naming the flag,
// also when its UTF-8 form has 16 bytes or more, as for the previous keys.
func TestShortMultibyteKeyIsUsageError(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a connection attempt would be exit 1.
	db := "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
	r := runCLI(t, "tenants", "list", "--database-url", db, "--encryption-key", "ééééééééé") // 9 characters, 18 bytes
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "--encryption-key (ENCRYPTION_KEY) must be at least 16 characters")
}

// TestUnparsableDatabaseURLIsUsageError: a --database-url (or
// DATABASE_URL) the driver cannot parse is a configuration error: exit 2,
// as README's exit codes say, before anything connects; still without its
// password.
func TestUnparsableDatabaseURLIsUsageError(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"postgres://u:" + cliPassword + "@127.0.0.1:badport/x",
		"postgres://u:" + cliPassword + "@127.0.0.1/x?sslmode=bogus",
	} {
		r := runCLI(t, "tenants", "list", "--database-url", u, "--encryption-key", testKey)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, "parse control-plane database URL")
		require.NotContains(t, r.stderr, cliPassword)
	}
}
