package migrator

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// logCapture is a JSON logger whose output the test can read.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&lockedWriter{w: &c.buf, mu: &c.mu}, nil))
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// indexValid reports whether the index exists and whether it is valid.
func indexValid(t testing.TB, conn *pgx.Conn, qualified string) (exists, valid bool) {
	t.Helper()
	err := conn.QueryRow(t.Context(),
		`SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)`, qualified).Scan(&valid)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false
	}
	require.NoError(t, err)
	return true, valid
}

// waitForIndexBuild waits until a CREATE INDEX CONCURRENTLY on table (in conn's database) has
// created its index and waits for older writers, and returns the pid of its session.
func waitForIndexBuild(t testing.TB, conn *pgx.Conn, table string) int32 {
	t.Helper()
	var pid int32
	waitFor(t, 30*time.Second, "the index build on "+table+" to wait for writers", func() bool {
		err := conn.QueryRow(t.Context(), `
			SELECT pid FROM pg_stat_progress_create_index
			WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND relid = to_regclass($1) AND index_relid <> 0
				AND phase = 'waiting for writers before build'`, table).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		require.NoError(t, err)
		return true
	})
	return pid
}

const itemsTable = "-- +goose Up\nCREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL);\n" +
	"INSERT INTO items SELECT g, 'sku-' || g FROM generate_series(1, 1000) g;\n"

// TestInvalidIndexFromInterruptedBuildIsRebuilt kills a CREATE INDEX CONCURRENTLY in a NO
// TRANSACTION migration mid-build: goose does not record the version and the index stays
// INVALID. The next run drops it, so that the migration's IF NOT EXISTS builds it again.
func TestInvalidIndexFromInterruptedBuildIsRebuilt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	target := Target{DatabaseURL: dbURL}
	files := map[string]string{
		"00001_items.sql": itemsTable,
		"00002_items_sku_idx.sql": "-- +goose NO TRANSACTION\n-- +goose Up\n" +
			"CREATE INDEX CONCURRENTLY IF NOT EXISTS items_sku_idx ON items (sku);\n",
	}
	_, err := newMigrator(t, Config{FS: sqlFS(map[string]string{"00001_items.sql": itemsTable})}).Migrate(ctx, target)
	require.NoError(t, err)

	var logs logCapture
	// lock_timeout off: the build waits for the blocking writer until it is killed.
	m := newMigrator(t, Config{FS: sqlFS(files), TenantLockTimeout: -1, Logger: logs.logger()})

	// An open transaction that wrote to items holds the build in its first wait, after the
	// index was created in the catalog.
	blocker, err := connect(t, dbURL).Begin(ctx)
	require.NoError(t, err)
	_, err = blocker.Exec(ctx, `INSERT INTO items VALUES (0, 'sku-0')`)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := m.Migrate(ctx, target)
		done <- err
	}()
	pid := waitForIndexBuild(t, conn, "items")
	require.True(t, queryBool(t, conn, `SELECT pg_terminate_backend($1)`, pid))
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the interrupted run did not return")
	}
	require.Error(t, err)
	require.True(t, IsRetryable(err), "killed connection: %v", err)
	require.NoError(t, blocker.Rollback(ctx))

	exists, valid := indexValid(t, conn, "public.items_sku_idx")
	require.True(t, exists)
	require.False(t, valid, "the interrupted build leaves an invalid index")
	require.Equal(t, []int64{0, 1}, appliedVersions(t, conn, "public"), "goose did not record version 2")

	res, err := m.Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{2}, res.Applied)
	exists, valid = indexValid(t, conn, "public.items_sku_idx")
	require.True(t, exists)
	require.True(t, valid, "the repaired run built a valid index")
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "public"))

	out := logs.String()
	require.Contains(t, out, `"level":"WARN","msg":"dropped invalid index`)
	require.Contains(t, out, `"index":"\"public\".\"items_sku_idx\""`)
	require.Contains(t, out, `"table":"\"public\".\"items\""`)
}

// TestInvalidIndexReportedOrRepaired leaves an invalid index deterministically (a unique index
// built concurrently over duplicates) in a schema tenant, then checks that KeepInvalidIndexes
// reports it, that the default repairs it, and that indexes outside the run's concern are left
// alone: in another schema, partitioned ones, and any index when nothing is pending.
func TestInvalidIndexReportedOrRepaired(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	target := Target{DatabaseURL: dbURL, Schema: "acme"}
	v1 := "-- +goose Up\nCREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\n" +
		"INSERT INTO users VALUES (1, 'a@example.com'), (2, 'a@example.com');\n" +
		"CREATE TABLE events (at date NOT NULL) PARTITION BY RANGE (at);\n" +
		"CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');\n" +
		// Invalid by design until the partitions' indexes are attached.
		"CREATE INDEX events_at_idx ON ONLY events (at);\n"
	v2 := "-- +goose NO TRANSACTION\n-- +goose Up\n" +
		"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (email);\n"
	files := map[string]string{"00001_users.sql": v1, "00002_users_email_key.sql": v2}

	// The build fails on the duplicates and leaves users_email_key INVALID.
	_, err := newMigrator(t, Config{FS: sqlFS(files)}).Migrate(ctx, target)
	require.ErrorContains(t, err, "apply migration 2 (00002_users_email_key.sql)")
	require.False(t, IsRetryable(err))
	exists, valid := indexValid(t, conn, "acme.users_email_key")
	require.True(t, exists)
	require.False(t, valid)
	exists, valid = indexValid(t, conn, "acme.events_at_idx")
	require.True(t, exists)
	require.False(t, valid, "a partitioned index created ON ONLY is invalid")
	// An invalid index in a schema that is not the tenant's.
	exec(t, conn, `CREATE SCHEMA other; CREATE TABLE other.t (x int); INSERT INTO other.t VALUES (1), (1)`)
	_, err = conn.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY t_x_key ON other.t (x)`)
	require.Error(t, err)

	// Nothing pending: nothing is checked or dropped, even with KeepInvalidIndexes.
	_, err = newMigrator(t, Config{FS: sqlFS(map[string]string{"00001_users.sql": v1}), KeepInvalidIndexes: true}).Migrate(ctx, target)
	require.NoError(t, err)

	// Someone removes the duplicates; the migration is run again.
	exec(t, conn, `DELETE FROM acme.users WHERE id = 2`)

	// KeepInvalidIndexes: a clear, permanent error naming the index and the fix; nothing applied.
	res, err := newMigrator(t, Config{FS: sqlFS(files), KeepInvalidIndexes: true}).Migrate(ctx, target)
	require.ErrorIs(t, err, ErrInvalidIndexes)
	var idxErr *InvalidIndexesError
	require.ErrorAs(t, err, &idxErr)
	require.Equal(t, []InvalidIndex{{Schema: "acme", Name: "users_email_key", Table: "users"}}, idxErr.Indexes)
	require.False(t, IsRetryable(err))
	require.Contains(t, err.Error(), `"acme"."users_email_key" on "acme"."users"`)
	require.Contains(t, err.Error(), `DROP INDEX CONCURRENTLY "acme"."users_email_key";`)
	require.Empty(t, res.Applied)
	require.Equal(t, int64(1), res.Version)
	exists, valid = indexValid(t, conn, "acme.users_email_key")
	require.True(t, exists)
	require.False(t, valid)

	// The default drops it; the migration builds it again, valid this time.
	var logs logCapture
	res, err = newMigrator(t, Config{FS: sqlFS(files), Logger: logs.logger()}).Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{2}, res.Applied)
	exists, valid = indexValid(t, conn, "acme.users_email_key")
	require.True(t, exists)
	require.True(t, valid)
	_, err = conn.Exec(ctx, `INSERT INTO acme.users VALUES (3, 'a@example.com')`)
	require.Error(t, err, "the rebuilt unique index is enforced")
	require.Contains(t, logs.String(), `"index":"\"acme\".\"users_email_key\""`)

	// Untouched: the partitioned index and the other schema's index.
	exists, valid = indexValid(t, conn, "acme.events_at_idx")
	require.True(t, exists)
	require.False(t, valid)
	exists, valid = indexValid(t, conn, "other.t_x_key")
	require.True(t, exists)
	require.False(t, valid)
	require.Equal(t, 1, strings.Count(logs.String(), "dropped invalid index"))
}

// TestInvalidIndexBeingBuiltIsLeftAlone: an index another session is building is invalid until
// the build ends; a run with migrations pending must neither drop it nor wait for it.
func TestInvalidIndexBeingBuiltIsLeftAlone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	target := Target{DatabaseURL: dbURL}
	_, err := newMigrator(t, Config{FS: sqlFS(map[string]string{"00001_items.sql": itemsTable})}).Migrate(ctx, target)
	require.NoError(t, err)

	// The application builds an index, held in its first wait by an open writer.
	blocker, err := connect(t, dbURL).Begin(ctx)
	require.NoError(t, err)
	_, err = blocker.Exec(ctx, `INSERT INTO items VALUES (0, 'sku-0')`)
	require.NoError(t, err)
	builder := connect(t, dbURL)
	built := make(chan error, 1)
	go func() {
		_, err := builder.Exec(ctx, `CREATE INDEX CONCURRENTLY items_app_idx ON items (sku)`)
		built <- err
	}()
	waitForIndexBuild(t, conn, "items")

	var logs logCapture
	m := newMigrator(t, Config{
		FS: sqlFS(map[string]string{
			"00001_items.sql": itemsTable,
			"00002_other.sql": "-- +goose Up\nCREATE TABLE other (id int);\n",
		}),
		Logger: logs.logger(),
	})
	res, err := m.Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{2}, res.Applied)
	require.Contains(t, logs.String(), "invalid index is being built by another session; left alone")
	require.NotContains(t, logs.String(), "dropped invalid index")

	require.NoError(t, blocker.Rollback(ctx))
	select {
	case err = <-built:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the application's build did not finish")
	}
	exists, valid := indexValid(t, conn, "public.items_app_idx")
	require.True(t, exists)
	require.True(t, valid)
}

// TestInvalidIndexOutsideSearchPathIsRepaired: for a database-per-tenant target the repair
// covers every schema of the tenant's database, not only those its session's search_path names
// now (a run with another search_path, or one before the schema existed, built the index).
func TestInvalidIndexOutsideSearchPathIsRepaired(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	v1 := "-- +goose Up\nCREATE SCHEMA app;\nCREATE TABLE app.users (id bigint PRIMARY KEY, email text NOT NULL);\n" +
		"INSERT INTO app.users VALUES (1, 'a@example.com'), (2, 'a@example.com');\n"
	v2 := "-- +goose NO TRANSACTION\n-- +goose Up\n" +
		"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON app.users (email);\n"
	files := map[string]string{"00001_users.sql": v1, "00002_users_email_key.sql": v2}
	target := Target{DatabaseURL: withQuery(t, dbURL, map[string]string{"search_path": "public"})}

	_, err := newMigrator(t, Config{FS: sqlFS(files)}).Migrate(ctx, target)
	require.ErrorContains(t, err, "apply migration 2")
	exists, valid := indexValid(t, conn, "app.users_email_key")
	require.True(t, exists)
	require.False(t, valid)
	exec(t, conn, `DELETE FROM app.users WHERE id = 2`)

	res, err := newMigrator(t, Config{FS: sqlFS(files)}).Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{2}, res.Applied)
	exists, valid = indexValid(t, conn, "app.users_email_key")
	require.True(t, exists)
	require.True(t, valid, "dropped and built again")
}

// TestInvalidIndexOfTableMovedIntoSchemaIsFound: a schema tenant's invalid indexes are found
// through the relations that depend on its schema (pg_depend), not by reading every schema's
// indexes; a table moved into the schema with ALTER TABLE ... SET SCHEMA is one of them.
func TestInvalidIndexOfTableMovedIntoSchemaIsFound(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	target := Target{DatabaseURL: dbURL, Schema: "acme"}
	v1 := "-- +goose Up\nCREATE TABLE users (id bigint PRIMARY KEY);\n"
	_, err := newMigrator(t, Config{FS: sqlFS(map[string]string{"00001_users.sql": v1})}).Migrate(ctx, target)
	require.NoError(t, err)

	exec(t, conn, `CREATE TABLE public.moved (x int); INSERT INTO public.moved VALUES (1), (1)`)
	_, err = conn.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY moved_x_key ON public.moved (x)`)
	require.Error(t, err)
	exec(t, conn, `ALTER TABLE public.moved SET SCHEMA acme`)

	files := map[string]string{"00001_users.sql": v1, "00002_noop.sql": "-- +goose Up\nSELECT 1;\n"}
	_, err = newMigrator(t, Config{FS: sqlFS(files), KeepInvalidIndexes: true}).Migrate(ctx, target)
	var idxErr *InvalidIndexesError
	require.ErrorAs(t, err, &idxErr)
	require.Equal(t, []InvalidIndex{{Schema: "acme", Name: "moved_x_key", Table: "moved"}}, idxErr.Indexes)
}
