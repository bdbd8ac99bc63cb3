package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestMigrateAllAfterServeKilledMidJob: a full_fleet serve fed the whole
// rollout to the queue and is killed with SIGKILL while its jobs are inside
// a migration; no server runs afterwards, so nothing rescues the jobs, which
// stay "running". migrate --all must still finish the rollout: once the
// killed instance is dead (its heartbeat timeout), it takes over the tenants
// of those jobs, and those of the jobs left waiting in the queue. Before,
// it printed "migrating 4 tenants" and polled a RUNNING rollout with nothing
// claimable for 10 minutes (the TestModel hang of seed 1796136615702938700).
func TestMigrateAllAfterServeKilledMidJob(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "ka", 1, 4)
	cp := newPool(t, cpURL)
	pgsrv := newPool(t, pgtest.ServerURL(t))
	dbs := databaseNames(t, tenants)
	env := serveEnv(cpURL, pairMigrations(t, "2"), "full_fleet", append(preRolloutEnv, "WORKERS=2", "INSTANCE_TIMEOUT=3s")...)

	s := startServer(t, "serve", env)
	s.waitListening(t)
	waitFor(t, 60*time.Second, "the server's jobs inside migration 2", func() bool {
		var n int
		require.NoError(t, pgsrv.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = ANY($1) AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()`, dbs).Scan(&n))
		return n > 0
	})
	s.kill9(t)
	var running int
	require.NoError(t, cp.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND state = 'running'`).Scan(&running))
	require.Positive(t, running, "jobs left running by the killed server")

	run := startCommand(t, "migrate --all", env, "migrate", "--all", "--concurrency", "2", "--progress", "none")
	require.Zero(t, run.wait(t, 2*time.Minute), "exit code of migrate --all:\n%s", run.out.String())
	waitAllLatest(t, cp, tenants, 3, 10*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
}
