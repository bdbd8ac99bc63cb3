package tenantmigrate_test

import (
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestDatabaseTenantBesideSchemaTenantRecordedFailed: a database tenant
// registered on a database that holds a schema tenant (acme) is not migrated:
// its run fails naming acme's version table, it is recorded FAILED, acme is
// left as it was, and verify reports the database tenant (and not acme).
// Without the schema tenant's mark, the database tenant took acme's table for
// its own: COMPLETED at acme's version without any of its tables, and its next
// versions recorded in acme's table.
func TestDatabaseTenantBesideSchemaTenantRecordedFailed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	dbURL := pgtest.NewDatabase(t)
	files := fstest.MapFS{
		"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (id int);\n")},
		"00002_b.sql": {Data: []byte("-- +goose Up\nCREATE TABLE b (id int);\n")},
	}
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: files})
	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: dbURL, Schema: "acme"})
	require.NoError(t, err)
	version, err := o.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, int64(2), version)

	_, err = o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "whole", DatabaseURL: dbURL})
	require.NoError(t, err)
	_, err = o.MigrateTenant(ctx, "whole")
	require.ErrorIs(t, err, tenantmigrate.ErrVersionTableConflict)
	st, err := o.TenantState(ctx, "whole")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Nil(t, st.MigrationsVersion, "never recorded at acme's version")
	require.Contains(t, st.LastError, `the database's only goose_db_version is schema tenant acme's ("acme"."goose_db_version")`)

	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var publicA bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('public.a') IS NOT NULL`).Scan(&publicA))
	require.False(t, publicA, "nothing applied to the database tenant")

	v := o.VerifyTenant(ctx, mustTenant(t, o, "whole"))
	require.False(t, v.OK())
	require.True(t, v.Inconsistent())
	require.False(t, v.VersionMismatch(), "nothing else compared")
	require.Equal(t, []string{`"acme"."goose_db_version"`}, v.SchemaTenantVersionTables)
	require.Empty(t, v.VersionTables)
	require.Equal(t, []string{`inconsistent: its database's only version table is a schema tenant's, "acme"."goose_db_version"; ` +
		`a database tenant would take such a table for its own (tenantmigrate applies nothing to it: register it with its own database or schema)`}, v.Problems())

	va := o.VerifyTenant(ctx, mustTenant(t, o, "acme"))
	require.True(t, va.OK(), "acme: %v", va.Problems())
}
