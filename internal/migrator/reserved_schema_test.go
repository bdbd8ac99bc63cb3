package migrator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReservedWordSchema runs every entry point on schema tenants named by reserved words.
func TestReservedWordSchema(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
		"00002_b.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_idx ON a (id);\n-- +goose Down\nDROP INDEX CONCURRENTLY a_idx;\n",
		"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n-- +goose Down\nDROP TABLE IF EXISTS c;\n",
	}
	for _, mode := range []TransactionMode{TransactionModeFile, TransactionModeTenant} {
		for _, schema := range []string{"user", "select"} {
			m := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: mode})
			tg := Target{DatabaseURL: dbURL, Schema: schema}
			res, err := m.Migrate(t.Context(), tg)
			require.NoError(t, err, "%s %s", mode, schema)
			require.Equal(t, int64(3), res.Version)
			ap, err := m.Applied(t.Context(), tg)
			require.NoError(t, err)
			require.Equal(t, []int64{1, 2, 3}, ap)
			cur, pend, err := m.Pending(t.Context(), tg)
			require.NoError(t, err)
			require.Equal(t, int64(3), cur)
			require.Empty(t, pend)
			res, err = m.Down(t.Context(), tg, 1)
			require.NoError(t, err)
			require.Equal(t, int64(1), res.Version)
			res, err = m.Force(t.Context(), tg, 2)
			require.NoError(t, err)
			ap, err = m.Applied(t.Context(), tg)
			require.NoError(t, err)
			require.Equal(t, []int64{1, 2}, ap)
			conn := connect(t, dbURL)
			exec(t, conn, `DROP SCHEMA "`+schema+`" CASCADE`)
		}
	}
}
