package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestQueuedRollbackOnOlderRelease: a rollback queued by the new
// release (latest 5) of tenants at 5, to 4, while only an instance of the
// old release (latest 3) works the queue, as in a rolling deploy. The old
// instance lacks the Down of 5: it must leave the jobs to the new release
// (as migrate_tenant jobs are snoozed), not cancel them; once the new
// release works the queue, every tenant ends at 4.
func TestQueuedRollbackOnOlderRelease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	newSrc, oldSrc := downMigrations(5, nil, nil), downMigrations(3, nil, nil)
	cli := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: newSrc})
	tenants := addSchemaTenants(t, cli, "rbold", 1, 3)
	res, err := cli.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Completed)

	old := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: oldSrc, Strategy: tenantmigrate.StrategyFullFleet,
		RunWorkers: true, Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 2}})
	st, err := cli.QueueRollback(ctx, tenantmigrate.RollbackSelection{To: 4, All: true}, false)
	require.NoError(t, err)
	require.Equal(t, int64(3), st.Total)

	// The old instance fetches the jobs: wait until it put one back, or
	// the rollback is done.
	waitFor(t, time.Minute, "a rollback job put back, or the rollback done", func() bool {
		var snoozed int
		require.NoError(t, cli.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
			WHERE kind = 'rollback_tenant' AND coalesce((metadata->>'snoozes')::int, 0) > 0`).Scan(&snoozed))
		p, _, err := cli.RollbackProgress(ctx, st.ID)
		require.NoError(t, err)
		return snoozed > 0 || p.Done
	})
	p, _, err := cli.RollbackProgress(ctx, st.ID)
	require.NoError(t, err)
	require.Zero(t, p.Failed, "the old release gave up the new release's rollback jobs: %+v", p)

	old.Close()
	startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: newSrc, Strategy: tenantmigrate.StrategyFullFleet,
		RunWorkers: true, Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 2}})
	waitFor(t, 2*time.Minute, "the rollback done", func() bool {
		p, _, err := cli.RollbackProgress(ctx, st.ID)
		require.NoError(t, err)
		return p.Done
	})
	p, _, err = cli.RollbackProgress(ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, int64(3), p.Completed, "%+v", p)
	require.Equal(t, 3, fleettest.CountCompleted(t, cli.Pool(), fleettest.IDs(tenants), 4))
}

// TestRollbackRolloutSkipsReRegisteredTenant: rollout R moves two
// tenants 2 -> 3. One is then removed and registered again (same id, a new
// schema: a new target) and migrated to 3 outside any rollout. rollback
// --rollout R must leave the new registration alone: the rollout never
// moved it (README: "tenants the rollout never moved ... added later and
// migrated otherwise are left alone").
func TestRollbackRolloutSkipsReRegisteredTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o2 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(2, nil, nil)})
	tenants := addSchemaTenants(t, o2, "rrg", 1, 2)
	res, err := o2.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Completed)

	o3 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(3, nil, nil),
		Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	res, err = o3.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.NotNil(t, res.Rollout)
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	rolloutID := res.Rollout.ID

	// Removed and registered again on a new schema, migrated on its own.
	re := tenants[0]
	require.NoError(t, o3.DeleteTenant(ctx, re.ID))
	re = addTenantAt(t, o3, re.ID, re.URL, re.Schema+"_new")
	_, err = o3.MigrateTenant(ctx, re.ID)
	require.NoError(t, err)
	require.Equal(t, 1, fleettest.CountCompleted(t, o3.Pool(), []string{re.ID}, 3))

	var planned []string
	for rt, err := range o3.RollbackTenants(ctx, tenantmigrate.RollbackSelection{To: -1, Rollout: rolloutID}) {
		require.NoError(t, err)
		planned = append(planned, rt.ID)
	}
	require.Equal(t, []string{tenants[1].ID}, planned, "the re-registered tenant was never moved by the rollout")
}

// TestRollbackRolloutTakesPartlyMovedTenant: the rollout to 6 moves
// tenant A 4 -> 6 and tenant B 4 -> 5, B's version 6 failing (FAILED at
// 5). rollback --rollout should take B back to 4 too: the rollout moved it.
func TestRollbackRolloutTakesPartlyMovedTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o4 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(4, nil, nil)})
	tenants := addSchemaTenants(t, o4, "rpf", 1, 2)
	res, err := o4.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Completed)
	// Version 6 fails on the second tenant's schema only.
	src := downMigrations(6, nil, nil)
	src["00006_v6.sql"].Data = []byte("-- +goose Up\nCREATE TABLE t6 (id int);\n-- +goose StatementBegin\nDO $$ BEGIN IF current_schema() LIKE '%001%' THEN RAISE EXCEPTION 'boom'; END IF; END $$;\n-- +goose StatementEnd\n-- +goose Down\nDROP TABLE t6;\n")
	o6 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: src,
		Rollout: tenantmigrate.RolloutConfig{Waves: "100%", HaltFailureRate: 1}})
	res, err = o6.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NotNil(t, res.Rollout, "%+v %v", res, err)
	st, err := o6.TenantState(ctx, tenants[1].ID)
	require.NoError(t, err)
	require.EqualValues(t, 5, *st.MigrationsVersion, "%+v", st)

	var planned []string
	for rt, err := range o6.RollbackTenants(ctx, tenantmigrate.RollbackSelection{To: -1, Rollout: res.Rollout.ID}) {
		require.NoError(t, err)
		planned = append(planned, rt.ID)
	}
	require.Equal(t, fleettest.IDs(tenants), planned, "the rollout moved both tenants")
}
