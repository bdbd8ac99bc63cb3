package migrator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDatabaseTargetDoesNotAdoptSchemaTenantsTable: a database-per-tenant target on a
// database that also holds one schema tenant (acme). The database target takes acme's version
// table for its own: it is reported at acme's version with none of its tables, and a new
// version it applies (into public) is recorded in acme's table, so acme never gets it.
func TestDatabaseTargetDoesNotAdoptSchemaTenantsTable(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	v12 := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n",
	}
	_, err := newMigrator(t, Config{FS: sqlFS(v12)}).Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: "acme"})
	require.NoError(t, err)

	v123 := map[string]string{"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n"}
	for k, v := range v12 {
		v123[k] = v
	}
	m := newMigrator(t, Config{FS: sqlFS(v123)})
	res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	t.Logf("database target: %+v %v", res, err)
	conn := connect(t, dbURL)
	if err == nil {
		require.True(t, tableExists(t, conn, "public", "a"), "database target reported at %d with applied %v, but public.a does not exist", res.Version, res.Applied)
	}
	res, err = m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: "acme"})
	require.NoError(t, err)
	require.True(t, tableExists(t, conn, "acme", "c"), "acme reported at %d, without its table c", res.Version)
}
