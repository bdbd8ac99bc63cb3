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
// The old ones never complete a job aimed at 3 (they snooze it for the new
// release, using no attempt) and never record over the new release's state:
// every tenant ends COMPLETED at 3, each version applied once, with no
// rescan needed.
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

			start := func(src bool) {
				cfg := tenantmigrate.Config{DatabaseURL: cp, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
					Migrations: fleetMigrations(), FleetRescanInterval: -1, Workers: 4}
				if !src {
					cfg.Migrations = oldSource
					cfg.Workers = 2
				}
				startOrchestrator(t, cfg)
			}
			if order == "OldFirst" {
				start(false)
				start(true)
			} else {
				start(true)
				start(false)
			}
			fleettest.WaitAllCompleted(t, admin.Pool(), fleettest.IDs(tenants), 3, pollEvery, 180*time.Second)
			fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
			for _, tn := range tenants {
				job := fleettest.LastJob(t, admin.Pool(), tn.ID)
				require.LessOrEqual(t, job.Attempt, 1, "tenant %s: a snooze used an attempt", tn.ID)
			}
		})
	}
}
