package controlplane

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"
)

func TestChecksumsRecordedOnce(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := newTestStore(t)

	sums, err := s.MigrationChecksums(ctx)
	require.NoError(t, err)
	require.Empty(t, sums)
	n, err := s.RecordMigrationChecksums(ctx, nil)
	require.NoError(t, err)
	require.Zero(t, n)

	n, err = s.RecordMigrationChecksums(ctx, []MigrationChecksum{
		{Version: 2, Name: "00002_b.sql", Checksum: "sha256:bb"},
		{Version: 1, Name: "00001_a.sql", Checksum: "sha256:aa"},
	})
	require.NoError(t, err)
	require.EqualValues(t, 2, n)

	// The first record of a version wins; only version 3 is new.
	n, err = s.RecordMigrationChecksums(ctx, []MigrationChecksum{
		{Version: 2, Name: "00002_edited.sql", Checksum: "sha256:changed"},
		{Version: 3, Name: "go migration 3", Checksum: "go"},
	})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	sums, err = s.MigrationChecksums(ctx)
	require.NoError(t, err)
	require.Len(t, sums, 3)
	for _, c := range sums {
		require.False(t, c.RecordedAt.IsZero())
	}
	require.Equal(t, []MigrationChecksum{
		{Version: 1, Name: "00001_a.sql", Checksum: "sha256:aa", RecordedAt: sums[0].RecordedAt},
		{Version: 2, Name: "00002_b.sql", Checksum: "sha256:bb", RecordedAt: sums[1].RecordedAt},
		{Version: 3, Name: "go migration 3", Checksum: "go", RecordedAt: sums[2].RecordedAt},
	}, sums)
}

func TestChecksumMaxMigrationsVersion(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := newTestStore(t)

	v, err := s.MaxMigrationsVersion(ctx)
	require.NoError(t, err)
	require.Zero(t, v, "no tenants")

	for _, id := range []string{"a", "b", "c"} {
		_, err := s.Create(ctx, Tenant{ID: id, DatabaseURL: "postgres://app:pw@db/" + id})
		require.NoError(t, err)
	}
	v, err = s.MaxMigrationsVersion(ctx)
	require.NoError(t, err)
	require.Zero(t, v, "never migrated")

	require.NoError(t, s.RecordSuccess(ctx, "a", currentOrigin(t, s, "a"), 3))
	require.NoError(t, s.RecordSuccess(ctx, "b", currentOrigin(t, s, "b"), 7))
	require.NoError(t, s.RecordFailure(ctx, "c", currentOrigin(t, s, "c"), ptr(int64(5)), StatusFailed, "boom"))
	v, err = s.MaxMigrationsVersion(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 7, v)
}

// TestChecksumTableAddedToExistingControlPlane: a control plane made by a
// build that had only migration 00001 (with tenants in it) is upgraded.
func TestChecksumTableAddedToExistingControlPlane(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	pool := newTestPool(t, newTestDB(t))

	// What the earlier build did: the schema, then goose with 00001 alone.
	first, err := fs.ReadFile(migrationsFS, "migrations/00001_tenants.sql")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{Schema}.Sanitize())
	require.NoError(t, err)
	db := stdlib.OpenDBFromPool(pool)
	old, err := goose.NewProvider(goose.DialectPostgres, db,
		fstest.MapFS{"00001_tenants.sql": {Data: first}},
		goose.WithTableName(VersionTable), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = old.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, old.Close())
	require.False(t, tableExists(t, pool, Schema, "migration_checksums"))
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
		VALUES ('acme', '\x00', 4, 'COMPLETED')`)
	require.NoError(t, err)

	require.NoError(t, Migrate(ctx, pool))
	requireMigrated(t, pool)
	require.True(t, tableExists(t, pool, Schema, "migration_checksums"))

	s := NewStore(pool, nil)
	st, err := s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, ptr(int64(4)), st.MigrationsVersion)
	// The summary counts the tenant that was there before it existed.
	stats, err := s.Stats(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, int64(1), stats.Total)
	require.Equal(t, int64(1), stats.ByStatus[StatusCompleted])
	n, err := s.RecordMigrationChecksums(ctx, []MigrationChecksum{{Version: 1, Name: "00001_a.sql", Checksum: "sha256:aa"}})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}
