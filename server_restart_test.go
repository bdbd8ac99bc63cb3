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

// TestServerRestartMidMigrationOnLastAttempt: the tenant's server is
// restarted (fast shutdown: 57P01 admin_shutdown) while the job's last
// attempt runs a migration. Nothing of the tenant failed; its server was
// down. README: "a tenant is never FAILED_STALE because its server was
// down".
func TestServerRestartMidMigrationOnLastAttempt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clusters := tenantClusters(t, 1)
	cp := pgtest.NewDatabase(t)
	migs := fleettest.Migrations("CREATE TABLE a (id int);", "SELECT pg_sleep(20); CREATE TABLE b (id int);")
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	logStatuses(t, admin.Pool())
	addTenantAt(t, admin, "acme", clusters[0].URL("fleet"), "acme")
	startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: migs, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Queue:   tenantmigrate.QueueConfig{MaxAttempts: 1},
		Servers: tenantmigrate.ServersConfig{ProbeInterval: 200 * time.Millisecond},
	})
	conn, err := pgx.Connect(ctx, clusters[0].URL("fleet"))
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "the migration to sleep", func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE query LIKE '%pg_sleep(20)%' AND pid <> pg_backend_pid()`).Scan(&n))
		return n > 0
	})
	_ = conn.Close(ctx)
	require.NoError(t, clusters[0].Restart(ctx))
	waitFor(t, 30*time.Second, "a status for acme", func() bool { return len(statusHistory(t, admin.Pool(), "acme")) > 0 })
	require.NotContains(t, statusHistory(t, admin.Pool(), "acme"), "FAILED_STALE")
}
