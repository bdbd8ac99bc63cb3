package migrator

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
)

func TestPendingIsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	m := newMigrator(t, Config{FS: examplemigrations.FS})

	noVersionTables := func() bool {
		return !queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'goose_db_version')`)
	}

	// A fresh database: everything pending, nothing created.
	current, pending, err := m.Pending(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, int64(0), current)
	require.Equal(t, []int64{1, 2, 3, 4}, pending)
	require.True(t, noVersionTables())

	// A schema that does not exist: everything pending, the schema is not created.
	current, pending, err = m.Pending(ctx, Target{DatabaseURL: dbURL, Schema: "acme"})
	require.NoError(t, err)
	require.Equal(t, int64(0), current)
	require.Equal(t, []int64{1, 2, 3, 4}, pending)
	require.False(t, queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'acme')`))
	require.True(t, noVersionTables())

	// Partly migrated targets, in both layouts.
	partial := newMigrator(t, Config{FS: exampleUpTo(t, 2)})
	for _, target := range []Target{{DatabaseURL: dbURL}, {DatabaseURL: dbURL, Schema: "acme"}} {
		_, err = partial.Migrate(ctx, target)
		require.NoError(t, err)

		current, pending, err = m.Pending(ctx, target)
		require.NoError(t, err, target.Schema)
		require.Equal(t, int64(2), current, target.Schema)
		require.Equal(t, []int64{3, 4}, pending, target.Schema)

		_, err = m.Migrate(ctx, target)
		require.NoError(t, err)
		current, pending, err = m.Pending(ctx, target)
		require.NoError(t, err, target.Schema)
		require.Equal(t, int64(4), current, target.Schema)
		require.Empty(t, pending, target.Schema)
	}
}

func TestUpVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		source        []int64
		applied       []int64
		wantCurrent   int64
		wantPending   []int64
		wantErrSubstr string
	}{
		{name: "Fresh", source: []int64{1, 2, 3}, applied: []int64{0}, wantCurrent: 0, wantPending: []int64{1, 2, 3}},
		{name: "Partial", source: []int64{1, 2, 3}, applied: []int64{0, 1, 2}, wantCurrent: 2, wantPending: []int64{3}},
		{name: "UpToDate", source: []int64{1, 2, 3}, applied: []int64{0, 1, 2, 3}, wantCurrent: 3},
		{name: "AheadOfSource", source: []int64{1, 2}, applied: []int64{0, 1, 2, 3}, wantCurrent: 3},
		{name: "Missing", source: []int64{1, 2, 3, 4}, applied: []int64{0, 1, 3}, wantErrSubstr: "misses lower versions 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			current, pending, err := upVersions(tc.source, tc.applied, false)
			if tc.wantErrSubstr != "" {
				require.ErrorContains(t, err, tc.wantErrSubstr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantCurrent, current)
			require.Equal(t, tc.wantPending, pending)
		})
	}
}

// TestAllowMissingAppliesOutOfOrder: a release adds version 2 to a target at 3. By default the
// target is refused, naming the version; with AllowMissing version 2 is applied (and 4, the new
// one), each once, and the version stays the highest.
func TestAllowMissingAppliesOutOfOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	target := Target{DatabaseURL: dbURL}
	first := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n",
	}
	_, err := newMigrator(t, Config{FS: sqlFS(first)}).Migrate(ctx, target)
	require.NoError(t, err)

	merged := map[string]string{
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n",
		"00004_d.sql": "-- +goose Up\nCREATE TABLE d (id int);\n",
	}
	for k, v := range first {
		merged[k] = v
	}
	_, _, err = newMigrator(t, Config{FS: sqlFS(merged)}).Pending(ctx, target)
	require.ErrorContains(t, err, "misses lower versions 2")
	_, err = newMigrator(t, Config{FS: sqlFS(merged)}).Migrate(ctx, target)
	require.Error(t, err)
	conn := connect(t, dbURL)
	require.False(t, tableExists(t, conn, "public", "b"))

	m := newMigrator(t, Config{FS: sqlFS(merged), AllowMissing: true})
	current, pending, err := m.Pending(ctx, target)
	require.NoError(t, err)
	require.Equal(t, int64(3), current)
	require.Equal(t, []int64{2, 4}, pending)
	res, err := m.Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 4}, res.Applied)
	require.Equal(t, int64(4), res.Version)
	require.Equal(t, []int64{0, 1, 3, 2, 4}, appliedVersions(t, conn, "public"))
}
