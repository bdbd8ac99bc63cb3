package migrator

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGolangMigrateDownForceUpTo: a golang-migrate tenant migrated up to a
// cap, then up, rolled back with its .down.sql files (golang-migrate agrees
// on the version, clean), forced from a dirty state; versions without a
// down file are named.
func TestGolangMigrateDownForceUpTo(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)
	dir := gmDir(t, 4, nil)
	m := newMigrator(t, Config{FS: os.DirFS(dir)})
	tgt := Target{DatabaseURL: dbURL}

	res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL, UpTo: 2})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, res.Applied)
	res, err = m.Migrate(t.Context(), tgt)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 4}, res.Applied)

	res, err = m.Down(t.Context(), tgt, 2)
	require.NoError(t, err)
	require.Equal(t, []int64{4, 3}, res.Applied)
	require.Equal(t, int64(2), res.Version)
	v, dirty := gmVersion(t, dir, gmurl)
	require.Equal(t, uint(2), v)
	require.False(t, dirty)
	conn := connect(t, dbURL)
	require.False(t, tableExists(t, conn, "public", "orders"))
	require.True(t, tableExists(t, conn, "public", "users"))

	// Versions 5 and 6 of the full set have no down file.
	full := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 6, nil))})
	files, err := full.WithoutDown(2, 6)
	require.NoError(t, err)
	require.Equal(t, []string{"5_plans.down.sql (missing)", "6_order_total.down.sql (missing)"}, files)
	files, err = full.WithoutDown(2, 4)
	require.NoError(t, err)
	require.Empty(t, files)

	// Dirty at 3 after a failed golang-migrate run; force 3 clears it.
	bad := gmDir(t, 3, map[string]string{"3_create_orders.up.sql": "SELECT * FROM no_such_table;"})
	require.Error(t, golangMigrate(t, bad, gmurl).Up())
	_, err = m.Migrate(t.Context(), tgt)
	require.ErrorIs(t, err, ErrDirty)
	res, err = m.Force(t.Context(), tgt, 3)
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Version)
	v, dirty = gmVersion(t, dir, gmurl)
	require.Equal(t, uint(3), v)
	require.False(t, dirty)
	_, err = m.Force(t.Context(), tgt, 5)
	require.Error(t, err)
}

// TestGooseDownRefusesEmptyDown: a goose tenant whose version 2 has no Down
// section is refused by Down, under the lock, naming the file; nothing is
// undone.
func TestGooseDownRefusesEmptyDown(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n-- +goose Down\n-- nothing to undo\n",
	})})
	tgt := Target{DatabaseURL: dbURL}
	_, err := m.Migrate(t.Context(), tgt)
	require.NoError(t, err)
	res, err := m.Down(t.Context(), tgt, 0)
	require.ErrorIs(t, err, ErrNoDown)
	require.Contains(t, err.Error(), "00002_b.sql")
	require.Empty(t, res.Applied)
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, connect(t, dbURL), "public"))
}
