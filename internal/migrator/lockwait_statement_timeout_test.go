package migrator

import (
	"os"
	"testing"
	"time"

	gmpostgres "github.com/golang-migrate/migrate/v4/database/postgres"
	"github.com/stretchr/testify/require"
)

// TestGolangMigrateLockWaitWithStatementTimeout: with --statement-timeout below
// --lock-timeout, a golang-migrate run that finds `migrate` holding the tenant's lock must still
// wait --lock-timeout and fail with ErrLockTimeout (retryable), as RELIABILITY.md §10 says, not
// with statement_timeout's 57014 (permanent) after the statement timeout.
func TestGolangMigrateLockWaitWithStatementTimeout(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)
	require.NoError(t, golangMigrate(t, gmDir(t, 1, nil), gmurl).Up())

	drv, err := (&gmpostgres.Postgres{}).Open(gmurl)
	require.NoError(t, err)
	t.Cleanup(func() { _ = drv.Close() })
	require.NoError(t, drv.Lock())

	m := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 3, nil)), LockTimeout: 2 * time.Second, StatementTimeout: 300 * time.Millisecond})
	started := time.Now()
	_, err = m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	waited := time.Since(started)
	t.Logf("Migrate after %s: %v", waited, err)
	require.ErrorIs(t, err, ErrLockTimeout)
	require.True(t, IsRetryable(err))
	require.NoError(t, drv.Unlock())
}

// TestForceLockWaitWithStatementTimeout: the same for Force of a goose source, whose
// ownLock waits with pg_advisory_lock under lock_timeout, but also under statement_timeout.
func TestForceLockWaitWithStatementTimeout(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
	}), LockTimeout: 2 * time.Second, StatementTimeout: 300 * time.Millisecond})
	_, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	require.NoError(t, err)

	holder := connect(t, dbURL)
	exec(t, holder, "SELECT pg_advisory_lock($1)", lockKey(""))
	_, err = m.Force(t.Context(), Target{DatabaseURL: dbURL}, 0)
	t.Logf("Force: %v", err)
	require.ErrorIs(t, err, ErrLockTimeout)
	require.True(t, IsRetryable(err))
}
