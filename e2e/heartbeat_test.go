package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestServeSIGSTOPAppliesOnce: the serve process running a tenant's
// migration is stopped (SIGSTOP) inside its slow version for longer than
// the instance timeout, so the other process takes it for dead and runs the
// job; then it is continued (SIGCONT). The stopped process still holds the
// tenant's migration lock (its session is alive), so the second run waits
// for it, finds the version applied and applies nothing: goose_db_version
// lists each version once, and the side-effect table holds one row.
func TestServeSIGSTOPAppliesOnce(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "st", 1, 1)
	cp := newPool(t, cpURL)
	tenantDB := newPool(t, tenants[0].URL)
	migrations := writeMigrations(t,
		"CREATE TABLE side_effects (at timestamptz NOT NULL DEFAULT clock_timestamp());",
		"SELECT pg_sleep(6);\nINSERT INTO side_effects DEFAULT VALUES;",
	)
	servers := startFleet(t, 2, serveEnv(cpURL, migrations, "full_fleet", "INSTANCE_TIMEOUT=2s", "RETRY_BACKOFF=100ms"))

	// The process running the job, inside pg_sleep.
	waitSleeping(t, tenantDB, 1)
	var owner string
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT attempted_by[cardinality(attempted_by)] FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND state = 'running'`).Scan(&owner))
	var stalled, other *server
	for _, s := range servers {
		if s.ownsRiverID(owner) {
			stalled = s
		} else {
			other = s
		}
	}
	require.NotNil(t, stalled, "River client %s is none of the processes", owner)

	require.NoError(t, stalled.cmd.Process.Signal(syscall.SIGSTOP))
	stoppedAt := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			_ = stalled.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	waitFor(t, 30*time.Second, "the job taken over by "+other.name, func() bool {
		var running string
		err := cp.QueryRow(t.Context(), `
			SELECT attempted_by[cardinality(attempted_by)] FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND state = 'running'`).Scan(&running)
		return err == nil && other.ownsRiverID(running)
	})
	takenOver := time.Since(stoppedAt)
	require.NoError(t, stalled.cmd.Process.Signal(syscall.SIGCONT))
	resumed = true

	waitAllLatest(t, cp, tenants, 2, 90*time.Second)
	t.Logf("%s stopped; job taken over after %s, %s continued; tenant COMPLETED %s after the stop",
		stalled.name, takenOver.Round(100*time.Millisecond), stalled.name, time.Since(stoppedAt).Round(100*time.Millisecond))
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)
	var effects int
	require.NoError(t, tenantDB.QueryRow(t.Context(),
		"SELECT count(*) FROM "+pgx.Identifier{tenants[0].Schema, "side_effects"}.Sanitize()).Scan(&effects))
	require.Equal(t, 1, effects, "rows the slow version inserted")
	for _, s := range servers {
		waitNoneRemaining(t, s, 2)
	}
	require.Contains(t, other.logs.String(), "job of a dead instance back in the queue")
	require.False(t, strings.Contains(other.logs.String(), `"FAILED_STALE"`))
}
