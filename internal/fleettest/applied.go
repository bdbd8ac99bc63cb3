package fleettest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// AppliedVersions returns the versions recorded in the goose_db_version
// table of schema in the database at url, in the order applied, leaving out
// goose's version 0. An empty schema means the table on the search path.
func AppliedVersions(tb testing.TB, url, schema string) []int64 {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), url)
	require.NoError(tb, err)
	defer conn.Close(context.WithoutCancel(tb.Context()))
	return appliedVersions(tb, conn, schema)
}

// RequireAppliedOnce checks each tenant's goose_db_version: every version of
// want, once each and in order, and nothing else.
func RequireAppliedOnce(tb testing.TB, tenants []SchemaTenant, want ...int64) {
	tb.Helper()
	ForEachTenant(tb, tenants, func(tn SchemaTenant, conn *pgx.Conn) {
		require.Equal(tb, want, appliedVersions(tb, conn, tn.Schema), "versions applied to tenant %s", tn.ID)
	})
}

// ForEachTenant calls fn for each tenant, in order, with a connection to the
// tenant's database. It opens one connection per database, and closes them
// all before it returns.
func ForEachTenant(tb testing.TB, tenants []SchemaTenant, fn func(tn SchemaTenant, conn *pgx.Conn)) {
	tb.Helper()
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.WithoutCancel(tb.Context()))
		}
	}()
	for _, tn := range tenants {
		conn := conns[tn.URL]
		if conn == nil {
			var err error
			conn, err = pgx.Connect(tb.Context(), tn.URL)
			require.NoError(tb, err)
			conns[tn.URL] = conn
		}
		fn(tn, conn)
	}
}

func appliedVersions(tb testing.TB, conn *pgx.Conn, schema string) []int64 {
	tb.Helper()
	table := "goose_db_version"
	if schema != "" {
		table = pgx.Identifier{schema, table}.Sanitize()
	}
	rows, err := conn.Query(tb.Context(), "SELECT version_id FROM "+table+" WHERE version_id > 0 ORDER BY id")
	require.NoError(tb, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(tb, err)
	return versions
}
