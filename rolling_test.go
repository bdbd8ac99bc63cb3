package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// TestRollingDeployLosesNoWork: instances of the old release (latest 2) and
// of the new one (latest 3) work the same queue, started in either order.
// The old one never completes a job aimed at 3 (it snoozes it for the new
// release, using no attempt) and never records over the new release's
// state; once it is gone, as at the end of a rolling deploy, every tenant
// ends COMPLETED at 3, each version applied once, with no rescan needed.
func TestRollingDeployLosesNoWork(t *testing.T) {
	t.Parallel()
	oldSource := fleetRelease(2)
	for _, order := range []string{"OldFirst", "NewFirst"} {
		t.Run(order, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cp := pgtest.NewDatabase(t)
			admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: oldSource})
			tenants := addSchemaTenants(t, admin, "roll", 1, 8)
			for _, tn := range tenants {
				_, err := admin.MigrateTenant(ctx, tn.ID)
				require.NoError(t, err)
			}

			start := func(src bool) *tenantmigrate.Orchestrator {
				cfg := tenantmigrate.Config{DatabaseURL: cp, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
					Migrations: fleetMigrations(), Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 4}}
				if !src {
					cfg.Migrations = oldSource
					cfg.Queue.Workers = 2
				}
				return startOrchestrator(t, cfg)
			}
			var old *tenantmigrate.Orchestrator
			if order == "OldFirst" {
				old = start(false)
				start(true)
			} else {
				start(true)
				old = start(false)
			}

			// While both run, the old instance may fetch the new release's
			// jobs: it must put them back, never complete them. Wait until it
			// did so at least once, or the new instance got every job first.
			waitFor(t, 60*time.Second, "a job left to the new release, or all done", func() bool {
				var snoozed int
				// migrate_tenant jobs, or the new release's fleet_scan itself.
				require.NoError(t, admin.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
					WHERE coalesce((metadata->>'snoozes')::int, 0) > 0`).Scan(&snoozed))
				return snoozed > 0 || fleettest.CountCompleted(t, admin.Pool(), fleettest.IDs(tenants), 3) == len(tenants)
			})
			for _, tn := range tenants {
				st, err := admin.TenantState(ctx, tn.ID)
				require.NoError(t, err)
				if job := fleettest.LastJob(t, admin.Pool(), tn.ID); job.State == "completed" {
					require.EqualValues(t, 3, *st.MigrationsVersion, "tenant %s: its job completed without migrating it", tn.ID)
				}
			}
			// The rolling deploy ends: the old instance goes, and the new one
			// finishes what was left to it (a snooze is at most 30 s).
			old.Close()
			fleettest.WaitAllCompleted(t, admin.Pool(), fleettest.IDs(tenants), 3, pollEvery, 120*time.Second)
			fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
			for _, tn := range tenants {
				job := fleettest.LastJob(t, admin.Pool(), tn.ID)
				require.LessOrEqual(t, job.Attempt, 1, "tenant %s: a snooze used an attempt", tn.ID)
			}
		})
	}
}

// TestOldReleaseJobDoesNotHoldBackNewRelease: every tenant has a live job
// of the old release (target 2), waiting an hour for its retry (retryable:
// nothing wakes it before its time). The new release (latest 3) queues its
// own job for each tenant and completes them all at 3 while the old jobs are
// still live: before the target was part of the job's unique key the new
// release's enqueue was deduplicated against the old job, and its rollout
// handed the tenant out again only once no live job was left (the old job's
// end plus 30 s). The old jobs, run at last by an instance of the old
// release, find the tenants above their latest and record nothing.
func TestOldReleaseJobDoesNotHoldBackNewRelease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	oldSource := fleetRelease(2)
	cp := pgtest.NewDatabase(t)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: oldSource})
	tenants := addSchemaTenants(t, admin, "held", 1, 4)
	for _, tn := range tenants {
		_, err := admin.MigrateTenant(ctx, tn.ID)
		require.NoError(t, err)
	}
	// The old release's jobs, as its instances queue them, waiting for a
	// retry.
	oldQueue, err := queue.New(queue.Config{Pool: admin.Pool(), Latest: 2})
	require.NoError(t, err)
	n, err := oldQueue.Enqueue(ctx, fleettest.IDs(tenants))
	require.NoError(t, err)
	require.Equal(t, len(tenants), n)
	_, err = admin.Pool().Exec(ctx, `UPDATE tenantmigrate.river_job SET state = 'retryable', scheduled_at = now() + interval '1 hour'
		WHERE kind = 'migrate_tenant'`)
	require.NoError(t, err)
	oldJobsLive := func() int {
		var live int
		require.NoError(t, admin.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND (args->>'target')::bigint = 2 AND state = 'retryable'`).Scan(&live))
		return live
	}

	startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Migrations: fleetMigrations(), Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 4}})
	fleettest.WaitAllCompleted(t, admin.Pool(), fleettest.IDs(tenants), 3, pollEvery, 60*time.Second)
	require.Equal(t, len(tenants), oldJobsLive(), "the new release waited for the old jobs")
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)

	// The old release's instance runs its jobs at last: nothing to do for a
	// tenant recorded above its latest, nothing recorded.
	startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Migrations: oldSource, Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 2}})
	_, err = admin.Pool().Exec(ctx, `UPDATE tenantmigrate.river_job SET state = 'available', scheduled_at = now()
		WHERE kind = 'migrate_tenant' AND state = 'retryable'`)
	require.NoError(t, err)
	waitFor(t, 60*time.Second, "the old jobs to complete", func() bool {
		var done int
		require.NoError(t, admin.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND (args->>'target')::bigint = 2 AND state = 'completed'`).Scan(&done))
		return done == len(tenants)
	})
	require.Equal(t, len(tenants), fleettest.CountCompleted(t, admin.Pool(), fleettest.IDs(tenants), 3))
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
}

// TestOldReleaseLeavesNewerStateAlone: a tenant the new release (latest 3)
// left FAILED at 3 (its last run failed after version 3 committed) is not
// run or recorded by the old release (latest 2), whatever triggers the run:
// a request, a migrate-now, a queued job. Before, the old release's run
// found nothing pending and rewrote the state as COMPLETED.
func TestOldReleaseLeavesNewerStateAlone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	oldSource := fleetRelease(2)
	cp := pgtest.NewDatabase(t)
	newer := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	tenants := addSchemaTenants(t, newer, "newer", 1, 1)
	_, err := newer.MigrateTenant(ctx, tenants[0].ID)
	require.NoError(t, err)
	_, err = newer.Pool().Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_status = 'FAILED', last_error = 'connection lost after the commit' WHERE id = $1`, tenants[0].ID)
	require.NoError(t, err)
	requireFailedAt3 := func(what string) {
		t.Helper()
		st, err := newer.TenantState(ctx, tenants[0].ID)
		require.NoError(t, err)
		require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus, "%s rewrote the newer release's state", what)
		require.EqualValues(t, 3, *st.MigrationsVersion, what)
	}

	old := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Migrations: oldSource, Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 2}})
	require.NoError(t, old.EnsureMigrated(ctx, tenants[0].ID), "the old release serves the tenant: it has every version it knows")
	requireFailedAt3("a request")
	_, err = old.MigrateTenant(ctx, tenants[0].ID)
	require.NoError(t, err)
	requireFailedAt3("a migrate-now")
	oldQueue, err := queue.New(queue.Config{Pool: newer.Pool(), Latest: 2})
	require.NoError(t, err)
	n, err := oldQueue.Enqueue(ctx, fleettest.IDs(tenants))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	waitFor(t, 60*time.Second, "the old release's job to complete", func() bool {
		return fleettest.LastJob(t, newer.Pool(), tenants[0].ID).State == "completed"
	})
	requireFailedAt3("a queued job")
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
}
