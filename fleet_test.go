package tenantmigrate_test

import (
	"fmt"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// This file tests the background strategies (full_fleet here, progressive
// and retries in progressive_test.go and retry_test.go) and holds the helpers
// those files share beyond internal/fleettest. Tenants are schemas in a few shared databases: a
// hundred schema tenants cost far less than a hundred databases.

const bgKey = "background-test-key-0123456789"

// fleetMigrations are three transactional migrations, none of which can run
// twice in one schema: a second run would fail, not pass unnoticed.
func fleetMigrations() fstest.MapFS { return fleetRelease(3) }

// fleetRelease is the release of fleetMigrations' first n files:
// fleetRelease(2) is the release before it, in the rolling-deploy tests.
func fleetRelease(n int) fstest.MapFS {
	return fleettest.Migrations([]string{
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
		"CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));",
	}[:n]...)
}

// newOrchestrator builds an Orchestrator (not started) and closes it when
// the test ends. It fills in the encryption key.
func newOrchestrator(t *testing.T, cfg tenantmigrate.Config) *tenantmigrate.Orchestrator {
	t.Helper()
	if cfg.EncryptionKey == "" {
		cfg.EncryptionKey = bgKey
	}
	o, err := tenantmigrate.New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(o.Close)
	return o
}

// startOrchestrator builds and starts an Orchestrator.
func startOrchestrator(t *testing.T, cfg tenantmigrate.Config) *tenantmigrate.Orchestrator {
	t.Helper()
	o := newOrchestrator(t, cfg)
	require.NoError(t, o.Start(t.Context()))
	return o
}

// addSchemaTenants creates dbs databases with perDB tenant schemas each
// (the schemas themselves are created by the first migration run) and
// registers them as tenants prefix-000, prefix-001, ...
func addSchemaTenants(t *testing.T, o *tenantmigrate.Orchestrator, prefix string, dbs, perDB int) []fleettest.SchemaTenant {
	t.Helper()
	return fleettest.NewSchemaTenants(t, prefix, dbs, perDB, func(tn fleettest.SchemaTenant) {
		addTenantAt(t, o, tn.ID, tn.URL, tn.Schema)
	})
}

func addTenantAt(t *testing.T, o *tenantmigrate.Orchestrator, id, url, schema string) fleettest.SchemaTenant {
	t.Helper()
	_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: id, DatabaseURL: url, Schema: schema})
	require.NoError(t, err)
	return fleettest.SchemaTenant{ID: id, URL: url, Schema: schema}
}

// pollEvery is how often waitFor checks its condition.
const pollEvery = 20 * time.Millisecond

// waitFor polls cond until it holds, failing the test after timeout. cond
// runs on the test goroutine and may use require.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	fleettest.Poll(t, pollEvery, timeout, what, cond)
}

// waitAllLatest waits until every tenant is COMPLETED at o's latest version.
func waitAllLatest(t *testing.T, o *tenantmigrate.Orchestrator, tenants []fleettest.SchemaTenant, timeout time.Duration) {
	t.Helper()
	fleettest.WaitAllCompleted(t, o.Pool(), fleettest.IDs(tenants), o.Latest(), pollEvery, timeout)
}

func countJobs(t *testing.T, pool *pgxpool.Pool, kind string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(),
		"SELECT count(*) FROM tenantmigrate.river_job WHERE kind = $1", kind).Scan(&n))
	return n
}

// requireOneScanPerWindow checks that the fleet_scan jobs are one per
// window of the scans' unique period: a test that straddles a window's
// start has one in each (the second finds nothing to queue).
func requireOneScanPerWindow(t *testing.T, pool *pgxpool.Pool, window time.Duration) {
	t.Helper()
	var scans, windows int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT floor(extract(epoch FROM created_at) / $1))
		FROM tenantmigrate.river_job WHERE kind = 'fleet_scan'`, window.Seconds()).Scan(&scans, &windows))
	require.Equal(t, windows, scans, "fleet_scan jobs: one per window")
	require.LessOrEqual(t, scans, 2, "fleet_scan jobs")
}

// TestFullFleetThreeInstances starts three full_fleet instances together on
// one control plane listing 102 tenants: one of them scans the fleet, once,
// and the three work the queue until every tenant is at the latest version,
// each migration applied once per tenant.
func TestFullFleetThreeInstances(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)

	// Register the fleet before any instance starts: the scan at start must
	// find it.
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	tenants := addSchemaTenants(t, admin, "ff", 3, 34)

	cfg := tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  fleetMigrations(),
		Strategy:    tenantmigrate.StrategyFullFleet,
		RunWorkers:  true,
	}
	instances := make([]*tenantmigrate.Orchestrator, 3)
	for i := range instances {
		instances[i] = newOrchestrator(t, cfg)
	}
	// Start them at the same time, as a fleet of replicas would.
	var wg sync.WaitGroup
	errs := make([]error, len(instances))
	for i, o := range instances {
		wg.Go(func() { errs[i] = o.Start(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	waitAllLatest(t, admin, tenants, 90*time.Second)
	for i, o := range instances {
		waitFor(t, 30*time.Second, fmt.Sprintf("no remaining jobs on instance %d", i), func() bool {
			n, err := o.Remaining(ctx)
			require.NoError(t, err)
			return n == 0
		})
	}

	// One scan (one per window of the default rescan interval), so one job
	// per tenant.
	pool := admin.Pool()
	requireOneScanPerWindow(t, pool, tenantmigrate.DefaultFleetRescanInterval)
	perTenant := fleettest.JobsPerTenant(t, pool)
	require.Len(t, perTenant, len(tenants))
	for _, tn := range tenants {
		require.Equal(t, 1, perTenant[tn.ID], "migrate_tenant jobs of %s", tn.ID)
	}
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)

	stats, err := admin.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, stats.Behind)
	require.Equal(t, int64(len(tenants)), stats.ByStatus[tenantmigrate.StatusCompleted])

	// The work was shared: more than one instance ran migrations.
	var workers int
	require.NoError(t, pool.QueryRow(ctx, `
		SELECT count(DISTINCT attempted_by[cardinality(attempted_by)]) FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant'`).Scan(&workers))
	t.Logf("%d instances ran migrate_tenant jobs", workers)
}

// A release deployed soon after the previous one scanned must scan at once,
// not when the previous scan's rescan window ends.
func TestFullFleetNewReleaseScansAtOnce(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	v2 := fleetRelease(2)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: v2})
	tenants := addSchemaTenants(t, admin, "rel", 1, 5)

	cfg := tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  v2,
		Strategy:    tenantmigrate.StrategyFullFleet,
		RunWorkers:  true, Queue: tenantmigrate.QueueConfig{FleetRescanInterval: time.Hour},
	}
	first := startOrchestrator(t, cfg)
	waitAllLatest(t, first, tenants, 60*time.Second)
	require.NoError(t, first.Stop(t.Context()))

	// The next release adds version 3, within the hour of the first scan.
	cfg.Migrations = fleetMigrations()
	second := startOrchestrator(t, cfg)
	require.Equal(t, int64(3), second.Latest())
	waitAllLatest(t, second, tenants, 60*time.Second)
	require.Equal(t, 2, countJobs(t, second.Pool(), "fleet_scan"), "one scan per release")
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
}
