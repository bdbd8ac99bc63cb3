package migrator

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestURLOptionsTimeoutsTakePrecedence: "A lock_timeout (statement_timeout) given in the
// tenant's URL takes precedence" (Config.TenantLockTimeout, Config.StatementTimeout). libpq's
// usual way to give one is options=-c lock_timeout=...; PostgreSQL applies the startup packet's
// own parameters after options, so the migrator's defaults must not be sent over them.
func TestURLOptionsTimeoutsTakePrecedence(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE settings AS SELECT current_setting('lock_timeout') AS lt, current_setting('statement_timeout') AS st;\n",
	})})
	sep := "?"
	if strings.Contains(dbURL, "?") {
		sep = "&"
	}
	url := dbURL + sep + "options=-c%20lock_timeout%3D1234ms%20-c%20statement_timeout%3D4321ms"
	_, err := m.Migrate(t.Context(), Target{DatabaseURL: url})
	require.NoError(t, err)
	var lt, st string
	require.NoError(t, connect(t, dbURL).QueryRow(t.Context(), "SELECT lt, st FROM settings").Scan(&lt, &st))
	require.Equal(t, "1234ms", lt, "the URL's lock_timeout")
	require.Equal(t, "4321ms", st, "the URL's statement_timeout")
}
