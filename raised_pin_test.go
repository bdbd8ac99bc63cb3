package tenantmigrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestRaisedPinReachesTenantWhoseJobRuns: under full_fleet, a tenant's job
// migrates it to the pinned target 1 (held inside version 1) when the pin
// is raised to 2. The raise queues a fleet scan, whose enqueue of the tenant
// is a duplicate of the job still running (same tenant, same release), so
// it is skipped. When that job ends at 1, the tenant must not be left
// behind the target with no job until the next rescan (an hour here).
func TestRaisedPinReachesTenantWhoseJobRuns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := fleettest.Migrations(
		"SELECT pg_advisory_xact_lock(4242); CREATE TABLE a (id int);",
		"CREATE TABLE b (id int);",
		"CREATE TABLE c (id int);",
	)
	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: migs,
		Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Queue: tenantmigrate.QueueConfig{Workers: 2, FleetRescanInterval: time.Hour},
	})
	_, err := o.SetTarget(ctx, 1)
	require.NoError(t, err)
	db := pgtest.NewDatabase(t)
	tn := addTenantAt(t, o, "raise-1", db, "")

	holder, err := pgx.Connect(ctx, db)
	require.NoError(t, err)
	defer func() { _ = holder.Close(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock(4242)`)
	require.NoError(t, err)

	require.NoError(t, o.Start(ctx))
	waitFor(t, 30*time.Second, "the job to wait inside version 1", func() bool {
		var n int
		require.NoError(t, holder.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&n))
		return n > 0
	})

	_, err = o.SetTarget(ctx, 2)
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "the raised target's fleet scan to complete", func() bool {
		var n int
		require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
			WHERE kind = 'fleet_scan' AND args ? 'target_generation' AND state = 'completed'`).Scan(&n))
		return n > 0
	})

	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock(4242)`)
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "no live job for the tenant", func() bool {
		var n int
		require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1
				AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled')`, tn.ID).Scan(&n))
		return n == 0
	})
	st, err := o.TenantState(ctx, tn.ID)
	require.NoError(t, err)
	require.Equal(t, int64(2), o.Target())
	require.NotNil(t, st.MigrationsVersion)
	require.Equal(t, int64(2), *st.MigrationsVersion,
		"tenant left behind the raised target with no job: the scan's enqueue was swallowed by the job running to the old pin")
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tn.URL, ""))
}
