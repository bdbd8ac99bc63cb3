package migrator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// connectionCheckFS records the migration session's client_connection_check_interval.
var connectionCheckFS = sqlFS(map[string]string{
	"00001_connection_check.sql": `-- +goose Up
CREATE TABLE connection_check AS SELECT current_setting('client_connection_check_interval') AS v;
`,
})

// TestMigrateChecksClientConnection: migration sessions have the server check every second that
// the client is still there, so a killed process's session, and the tenant lock it holds, end
// during a long statement instead of after it; a value in the tenant's URL wins.
func TestMigrateChecksClientConnection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, url, want string
	}{
		{"Default", "", "1s"},
		{"FromURL", "5s", "5s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL := newTestDB(t)
			tenantURL := dbURL
			if tc.url != "" {
				tenantURL = withQuery(t, dbURL, map[string]string{"client_connection_check_interval": tc.url})
			}
			m := newMigrator(t, Config{FS: connectionCheckFS})
			_, err := m.Migrate(t.Context(), Target{DatabaseURL: tenantURL})
			require.NoError(t, err)
			var v string
			require.NoError(t, connect(t, dbURL).QueryRow(t.Context(), `SELECT v FROM connection_check`).Scan(&v))
			require.Equal(t, tc.want, v)
		})
	}
}
