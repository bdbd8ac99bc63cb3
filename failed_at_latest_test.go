package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// A tenant whose run failed after its last migration committed (recorded
// FAILED at the latest version, e.g. the connection dropped before the
// result came back) is at the latest version but not COMPLETED. The
// full_fleet scan at start queues it, and its job records it COMPLETED
// without applying anything twice.
func TestFullFleetCompletesTenantFailedAtLatest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	tn := addTenantAt(t, admin, "failed-at-latest", pgtest.NewDatabase(t), "acme")
	v, err := admin.MigrateTenant(ctx, tn.ID)
	require.NoError(t, err)
	require.EqualValues(t, 3, v)

	pool, err := pgxpool.New(ctx, cp)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.tenants
		SET migrations_status = 'FAILED', last_error = 'connection reset after the last commit'
		WHERE id = $1`, tn.ID)
	require.NoError(t, err)

	startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  fleetMigrations(),
		Strategy:    tenantmigrate.StrategyFullFleet,
		RunWorkers:  true,
	})
	waitFor(t, 60*time.Second, "the tenant recorded COMPLETED", func() bool {
		st, err := admin.TenantState(ctx, tn.ID)
		require.NoError(t, err)
		return st.MigrationsStatus == tenantmigrate.StatusCompleted
	})
	st, err := admin.TenantState(ctx, tn.ID)
	require.NoError(t, err)
	require.EqualValues(t, 3, *st.MigrationsVersion)
	require.Empty(t, st.LastError)
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{tn}, 1, 2, 3)
}
