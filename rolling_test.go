package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestRollingDeployLosesNoWork: instances of the old release (latest 2) and
// of the new one (latest 3) work the same queue, started in either order.
// The old one never completes a job aimed at 3 (it snoozes it for the new
// release, using no attempt) and never records over the new release's
// state; once it is gone, as at the end of a rolling deploy, every tenant
// ends COMPLETED at 3, each version applied once, with no rescan needed.
func TestRollingDeployLosesNoWork(t *testing.T) {
	t.Parallel()
	oldSource := fleettest.Migrations(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
	)
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
