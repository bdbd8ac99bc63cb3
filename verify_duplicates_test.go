package tenantmigrate_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestVerifyReportsDoubleApply: a version recorded twice in a tenant's
// version table, the trace of a double apply, makes VerifyTenant report
// the tenant inconsistent, naming the version (issue 17 §8: verify used to
// de-duplicate the rows and call it consistent).
func TestVerifyReportsDoubleApply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp, dbURL := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	addTenantAt(t, o, "acme", dbURL, "")
	_, err := o.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	v := o.VerifyTenant(ctx, mustTenant(t, o, "acme"))
	require.True(t, v.OK(), "%v", v.Problems())

	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO public.goose_db_version (version_id, is_applied) VALUES (2, true)`)
	require.NoError(t, err)
	v = o.VerifyTenant(ctx, mustTenant(t, o, "acme"))
	require.False(t, v.OK())
	require.Equal(t, []int64{2}, v.Duplicates)
	require.Contains(t, v.Problems(), "inconsistent: versions 2 are recorded more than once in its version table (applied twice)")
}
