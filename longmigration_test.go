package tenantmigrate_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// longSleep outlasts every timer of the queue in TestMigrationLongerThanEveryTimer:
// the heartbeat (100 ms), the instance timeout and River's RescueAfter (1 s
// each), and River's rescuer, which runs once its leader has started its
// maintenance services (within about 6 s) and every 30 s after, so at least
// once during the sleep.
const longSleep = "36"

// TestMigrationLongerThanEveryTimer: with no job timeout (the default), a
// migration that runs longer than the instance timeout, River's RescueAfter
// and a River rescuer tick, with two instances working the queue, is applied
// once and recorded COMPLETED on its first attempt; nobody rescued its job.
func TestMigrationLongerThanEveryTimer(t *testing.T) {
	t.Parallel()
	cfg := tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations: fleettest.Migrations(
			"CREATE TABLE side_effects (at timestamptz NOT NULL DEFAULT clock_timestamp());",
			"SELECT pg_sleep("+longSleep+");\nINSERT INTO side_effects DEFAULT VALUES;",
		),
		Strategy:   tenantmigrate.StrategyFullFleet,
		RunWorkers: true,
		Queue: tenantmigrate.QueueConfig{
			InstanceTimeout: time.Second,
			RescueAfter:     time.Second,
			RetryBackoff:    100 * time.Millisecond,
		},
	}
	a := newOrchestrator(t, cfg)
	tenantURL := pgtest.NewDatabase(t)
	addTenantAt(t, a, "long", tenantURL, "")
	require.NoError(t, a.Start(t.Context()))
	startOrchestrator(t, cfg)

	fleettest.WaitAllCompleted(t, a.Pool(), []string{"long"}, 2, pollEvery, 2*time.Minute)

	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenantURL, ""))
	conn, err := pgx.Connect(t.Context(), tenantURL)
	require.NoError(t, err)
	defer conn.Close(t.Context())
	var effects int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM side_effects").Scan(&effects))
	require.Equal(t, 1, effects, "rows the slow migration inserted")

	// River records the job's end after the tenant's.
	var state string
	var attempt int
	var rescued bool
	waitFor(t, 30*time.Second, "the job completed", func() bool {
		require.NoError(t, a.Pool().QueryRow(t.Context(), `
			SELECT state::text, attempt, metadata ? 'tenantmigrate_rescues'
			FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = 'long'`,
		).Scan(&state, &attempt, &rescued))
		return state != "running"
	})
	require.Equal(t, "completed", state)
	require.Equal(t, 1, attempt)
	require.False(t, rescued, "the job of a live instance was rescued")
}
