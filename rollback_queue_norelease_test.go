package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestQueuedRollbackAboveLatestNoNewerRelease: release 5 migrated the
// tenants to 5 and was then rolled back (deploy); only release 3 runs. A
// rollback to 2 queued by release 3 itself cannot undo 4 and 5 anywhere:
// its jobs must end (failed, with the error), not be put back for a newer
// release that does not exist, leaving the rollback pending for ever.
func TestQueuedRollbackAboveLatestNoNewerRelease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	newSrc, oldSrc := downMigrations(5, nil, nil), downMigrations(3, nil, nil)
	cli5 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: newSrc})
	addSchemaTenants(t, cli5, "rbnone", 1, 1)
	res, err := cli5.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed)

	old := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: oldSrc, Strategy: tenantmigrate.StrategyFullFleet,
		RunWorkers: true, Queue: tenantmigrate.QueueConfig{FleetRescanInterval: -1, Workers: 2}})
	st, err := old.QueueRollback(ctx, tenantmigrate.RollbackSelection{To: 2, All: true}, true)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Total)

	deadline := time.Now().Add(75 * time.Second)
	for {
		p, _, err := old.RollbackProgress(ctx, st.ID)
		require.NoError(t, err)
		if p.Done {
			require.Equal(t, int64(1), p.Failed, "%+v", p)
			return
		}
		var snoozes int
		require.NoError(t, old.Pool().QueryRow(ctx, `SELECT coalesce(max((metadata->>'snoozes')::int), 0) FROM tenantmigrate.river_job
			WHERE kind = 'rollback_tenant'`).Scan(&snoozes))
		if time.Now().After(deadline) {
			t.Fatalf("rollback queued by the only release never ends: %+v, the job put back %d times for a newer release no instance runs", p, snoozes)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
