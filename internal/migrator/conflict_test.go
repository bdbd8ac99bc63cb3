package migrator

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// A migration that runs ALTER ROLE ... SET while another session holds the
// role's settings row fails with "tuple concurrently updated" once that
// session commits. Migrate runs it again and succeeds, in the same call. In
// TransactionModeTenant the files before it in its group commit first, and the
// retry runs it in a transaction of its own (as every later run of the
// Migrator will), then groups the rest.
func TestMigrateRetriesCatalogConflict(t *testing.T) {
	t.Parallel()
	for mode, want := range map[TransactionMode][][]int64{
		TransactionModeFile:   {{0}, {1}, {2}, {3}, {4}},
		TransactionModeTenant: {{0}, {1}, {2}, {3, 4}},
	} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			testRetriesCatalogConflict(t, mode, want)
		})
	}
}

func testRetriesCatalogConflict(t *testing.T, mode TransactionMode, wantTransactions [][]int64) {
	ctx := context.Background()
	admin := connect(t, serverURL(t))
	role := "tm_conflict_" + randomSuffix(t)
	ident := pgx.Identifier{role}.Sanitize()
	exec(t, admin, "CREATE ROLE "+ident+" NOLOGIN")
	exec(t, admin, "ALTER ROLE "+ident+" SET work_mem = '4MB'") // creates the settings row
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident) })

	dbURL := newTestDB(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	dbName := strings.TrimPrefix(u.Path, "/")
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_a.sql":    "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_role.sql": fmt.Sprintf("-- +goose Up\nALTER ROLE %s SET statement_timeout = '30s';\nCREATE TABLE b (id int);\n", ident),
		"00003_c.sql":    "-- +goose Up\nCREATE TABLE c (id int);\n",
		"00004_d.sql":    "-- +goose Up\nCREATE TABLE d (id int);\n",
	}), TransactionMode: mode})

	// Another session updates the row and holds it.
	holder := connect(t, serverURL(t))
	exec(t, holder, "BEGIN")
	exec(t, holder, "ALTER ROLE "+ident+" SET work_mem = '8MB'")

	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
		done <- result{res, err}
	}()
	waitFor(t, 10*time.Second, "the migration to wait for the settings row", func() bool {
		return queryBool(t, admin, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE 'ALTER ROLE%')`, dbName)
	})
	exec(t, holder, "COMMIT")

	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Equal(t, []int64{1, 2, 3, 4}, r.res.Applied)
		require.Equal(t, int64(4), r.res.Version)
	case <-time.After(30 * time.Second):
		t.Fatal("Migrate did not return")
	}
	conn := connect(t, dbURL)
	require.True(t, tableExists(t, conn, "public", "b"))
	require.Equal(t, wantTransactions, transactions(versionRows(t, conn, "public")))
}

func TestCatalogConflictClassification(t *testing.T) {
	t.Parallel()
	conn := connect(t, serverURL(t))
	raise := func(using string) error {
		_, err := conn.Exec(t.Context(), "DO $$ BEGIN RAISE EXCEPTION USING "+using+"; END $$")
		require.Error(t, err)
		return err
	}
	for _, tc := range []struct {
		using              string
		conflict, retrying bool
	}{
		{`ERRCODE = 'XX000', MESSAGE = 'tuple concurrently updated'`, true, true},
		{`ERRCODE = '23505', MESSAGE = 'duplicate key value violates unique constraint "pg_authid_rolname_index"', SCHEMA = 'pg_catalog', TABLE = 'pg_authid'`, true, true},
		{`ERRCODE = '23505', MESSAGE = 'duplicate key value violates unique constraint "users_pkey"', SCHEMA = 'public', TABLE = 'users'`, false, false},
		{`ERRCODE = '40001', MESSAGE = 'could not serialize access'`, false, true},
		{`ERRCODE = 'XX000', MESSAGE = 'cache lookup failed for relation 1'`, false, false},
	} {
		err := raise(tc.using)
		require.Equal(t, tc.conflict, isCatalogConflict(err), tc.using)
		require.Equal(t, tc.retrying, IsRetryable(err), tc.using)
	}
}
