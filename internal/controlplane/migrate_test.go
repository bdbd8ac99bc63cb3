package controlplane

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// tableExists reports whether schema.table exists.
func tableExists(t *testing.T, pool *pgxpool.Pool, schema, table string) bool {
	t.Helper()
	var exists bool
	require.NoError(t, pool.QueryRow(testContext(t),
		`SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`,
		schema, table).Scan(&exists))
	return exists
}

// requireMigrated checks the tables Migrate creates, and that each goose and
// River version was applied once.
func requireMigrated(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := testContext(t)
	for _, table := range []string{"tenants", "controlplane_version", "river_job", "river_migration", "river_leader"} {
		require.True(t, tableExists(t, pool, Schema, table), "table %s.%s", Schema, table)
	}
	require.False(t, tableExists(t, pool, "public", "river_job"), "River must not migrate into public")

	var gooseRows, gooseVersions, gooseMax int64
	require.NoError(t, pool.QueryRow(ctx, `
		SELECT count(*), count(DISTINCT version_id), max(version_id)
		FROM tenantmigrate.controlplane_version WHERE version_id > 0`).Scan(&gooseRows, &gooseVersions, &gooseMax))
	require.Equal(t, gooseVersions, gooseRows, "a goose version applied twice")
	_, want, err := SchemaVersions(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, want, gooseMax, "the last embedded migration")

	var riverRows, riverVersions int64
	require.NoError(t, pool.QueryRow(ctx, `
		SELECT count(*), count(DISTINCT version) FROM tenantmigrate.river_migration`).Scan(&riverRows, &riverVersions))
	require.Equal(t, riverVersions, riverRows)
	require.Positive(t, riverRows)

	var schemas int
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, Schema).Scan(&schemas))
	require.Equal(t, 1, schemas)
}

func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, newTestDB(t))
	ctx := testContext(t)

	require.NoError(t, Migrate(ctx, pool))
	require.NoError(t, Migrate(ctx, pool))
	requireMigrated(t, pool)

	// The lock was released: nothing still holds it.
	var held int
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&held))
	require.Zero(t, held)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	ctx := testContext(t)

	pools := make([]*pgxpool.Pool, 4)
	for i := range pools {
		pools[i] = newTestPool(t, dbURL)
	}
	var g errgroup.Group
	for _, pool := range pools {
		g.Go(func() error { return Migrate(ctx, pool) })
	}
	require.NoError(t, g.Wait())
	requireMigrated(t, pools[0])
}

func TestMigrateSingleConnectionPool(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, newTestDB(t)+"&pool_max_conns=1")
	require.NoError(t, Migrate(testContext(t), pool))
	requireMigrated(t, pool)
}

func TestMigrateCanceled(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, newTestDB(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, Migrate(ctx, pool), context.Canceled)
}

// latestEmbeddedVersion is the highest version of the embedded control-plane
// migrations (NNNNN_name.sql), so the checks above need no edit per migration.
func latestEmbeddedVersion(t *testing.T) int64 {
	t.Helper()
	entries, err := migrationsFS.ReadDir("migrations")
	require.NoError(t, err)
	var latest int64
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		require.NoError(t, err, e.Name())
		latest = max(latest, v)
	}
	return latest
}
