package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/instances"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestDiscardedJobLeavesCompletedTenant: a migrate_tenant job whose
// instances kept dying is discarded by the rescue with no attempt left,
// and its tenant is recorded FAILED_STALE, unless the tenant is COMPLETED
// at the target meanwhile (a migrate --all took it over): that result is
// kept, not overwritten with the failure of a job that no longer matters.
func TestDiscardedJobLeavesCompletedTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg := tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: fleetMigrations()}
	admin := newOrchestrator(t, cfg)
	addTenantAt(t, admin, "done", pgtest.NewDatabase(t), "")
	addTenantAt(t, admin, "behind", pgtest.NewDatabase(t), "")
	_, err := admin.MigrateTenant(ctx, "done")
	require.NoError(t, err)

	// Both tenants' jobs ran on an instance that died, for the last time.
	_, err = admin.Pool().Exec(ctx, `INSERT INTO tenantmigrate.instances (id, host, pid, heartbeat_at, timeout)
		VALUES ('dead', 'elsewhere', 1, now() - interval '1 hour', interval '15 seconds')`)
	require.NoError(t, err)
	_, err = admin.Pool().Exec(ctx, `INSERT INTO tenantmigrate.river_job (args, kind, max_attempts, state, attempt, attempted_at, attempted_by, metadata)
		SELECT jsonb_build_object('tenant_id', id), 'migrate_tenant', 3, 'running', 3, now() - interval '1 minute', ARRAY['dead'],
			jsonb_build_object($1::text, 3)
		FROM unnest(ARRAY['done', 'behind']) AS id`, instances.RescuesKey)
	require.NoError(t, err)

	cfg.Strategy, cfg.RunWorkers = tenantmigrate.StrategyProgressive, true // works the queue, scans nothing
	cfg.Queue.InstanceTimeout = time.Second
	startOrchestrator(t, cfg)
	fleettest.Poll(t, pollEvery, time.Minute, "both jobs discarded", func() bool {
		var n int
		require.NoError(t, admin.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job WHERE state = 'discarded'`).Scan(&n))
		return n == 2
	})
	fleettest.Poll(t, pollEvery, time.Minute, "the behind tenant recorded FAILED_STALE", func() bool {
		st, err := admin.TenantState(ctx, "behind")
		require.NoError(t, err)
		return st.MigrationsStatus == tenantmigrate.StatusFailedStale
	})
	st, err := admin.TenantState(ctx, "done")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus, "last error: %s", st.LastError)
	require.Equal(t, admin.Latest(), *st.MigrationsVersion)
}
