package instances_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/instances"
)

// TestRescueLeavesJobRefetchedByLiveInstance: a rescue statement takes
// its snapshot while a job runs on a dead instance, and reaches the job's
// row only after another rescuer gave it back and a live instance fetched
// it (the test holds the row lock for that time and makes both changes
// meanwhile). PostgreSQL rechecks only "state = 'running'" on the new row
// version, which still holds: the job that now runs on the live instance
// must not be handed out again.
func TestRescueLeavesJobRefetchedByLiveInstance(t *testing.T) {
	t.Parallel()
	pool := controlPlane(t)
	ctx := t.Context()
	instanceRow(t, pool, "dead", time.Hour)
	instanceRow(t, pool, "live", 0) // heartbeat now, timeout 15 s
	job := runningJob(t, pool, "t1", "dead", 1, time.Minute, `{}`)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, err = tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.river_job WHERE id = $1 FOR UPDATE`, job)
	require.NoError(t, err)

	startService(t, instances.Config{Pool: pool, Timeout: 300 * time.Millisecond, Rescue: true})
	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the rescue waiting for the job's row", func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%WITH dead AS%' AND datname = current_database()`).Scan(&n))
		return n > 0
	})
	// Meanwhile: another rescuer gives the job back (as rescueSQL does),
	// then the live instance fetches it (as River's fetch does).
	_, err = tx.Exec(ctx, `UPDATE tenantmigrate.river_job SET state = 'available', attempt = attempt - 1,
		metadata = metadata || '{"`+instances.RescuesKey+`": 1}' WHERE id = $1`, job)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE tenantmigrate.river_job SET state = 'running', attempt = attempt + 1,
		attempted_at = now(), attempted_by = array_append(attempted_by, 'live') WHERE id = $1`, job)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	// Give the blocked statement time to finish: poll until it no longer waits.
	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the rescue statement done", func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%WITH dead AS%' AND datname = current_database()`).Scan(&n))
		return n == 0
	})
	// One more rescue tick after it, at most: the dead row gets pruned once nothing names it.
	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the dead instance's row deleted", func() bool {
		return !instanceExists(t, pool, "dead")
	})
	var state, last string
	require.NoError(t, pool.QueryRow(ctx, `SELECT state::text, attempted_by[cardinality(attempted_by)] FROM tenantmigrate.river_job WHERE id = $1`, job).Scan(&state, &last))
	require.Equal(t, "running", state, "the job running on the live instance %q was handed out again: %+v", last, readJob(t, pool, job))
}
