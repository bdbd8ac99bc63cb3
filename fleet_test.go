package tenantmigrate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// This file tests the background strategies (full_fleet here, progressive
// and retries in progressive_test.go and retry_test.go) and holds the helpers
// those files share. Tenants are schemas in a few shared databases: a
// hundred schema tenants cost far less than a hundred databases.

const bgKey = "background-test-key-0123456789"

// migrationSet builds a goose source whose version i+1 runs ups[i]. An entry
// that starts with "-- +goose" is used as the whole file; any other is the
// body of "-- +goose Up". goose ends a statement at a line ending in ";", so
// a DO block must sit on one line.
func migrationSet(ups ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i, up := range ups {
		if !strings.HasPrefix(up, "-- +goose") {
			up = "-- +goose Up\n" + up + "\n"
		}
		fsys[fmt.Sprintf("%05d_v%d.sql", i+1, i+1)] = &fstest.MapFile{Data: []byte(up)}
	}
	return fsys
}

// fleetMigrations are three transactional migrations, none of which can run
// twice in one schema: a second run would fail, not pass unnoticed.
func fleetMigrations() fstest.MapFS {
	return migrationSet(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
		"CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));",
	)
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

// schemaTenant is a tenant that owns one schema of a shared database.
type schemaTenant struct {
	ID, URL, Schema string
}

// addSchemaTenants creates dbs databases with perDB tenant schemas each
// (the schemas themselves are created by the first migration run) and
// registers them as tenants prefix-000, prefix-001, ...
func addSchemaTenants(t *testing.T, o *tenantmigrate.Orchestrator, prefix string, dbs, perDB int) []schemaTenant {
	t.Helper()
	var tenants []schemaTenant
	for range dbs {
		url := pgtest.NewDatabase(t)
		for range perDB {
			n := len(tenants)
			tenants = append(tenants, addTenantAt(t, o, fmt.Sprintf("%s-%03d", prefix, n), url, fmt.Sprintf("s_%03d", n)))
		}
	}
	return tenants
}

func addTenantAt(t *testing.T, o *tenantmigrate.Orchestrator, id, url, schema string) schemaTenant {
	t.Helper()
	_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: id, DatabaseURL: url, Schema: schema})
	require.NoError(t, err)
	return schemaTenant{ID: id, URL: url, Schema: schema}
}

// waitFor polls cond until it holds, failing the test after timeout. cond
// runs on the test goroutine and may use require.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func tenantIDs(tenants []schemaTenant) []string {
	ids := make([]string, len(tenants))
	for i, tn := range tenants {
		ids[i] = tn.ID
	}
	return ids
}

// tenantsAtLatest counts the tenants among ids that the control plane lists
// as COMPLETED at version latest.
func tenantsAtLatest(t *testing.T, pool *pgxpool.Pool, ids []string, latest int64) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `
		SELECT count(*) FROM tenantmigrate.tenants
		WHERE id = ANY($1) AND migrations_status = 'COMPLETED' AND migrations_version = $2`,
		ids, latest).Scan(&n))
	return n
}

// waitAllLatest waits until every tenant is COMPLETED at latest.
func waitAllLatest(t *testing.T, o *tenantmigrate.Orchestrator, tenants []schemaTenant, timeout time.Duration) {
	t.Helper()
	ids := tenantIDs(tenants)
	waitFor(t, timeout, fmt.Sprintf("%d tenants COMPLETED at version %d", len(ids), o.Latest()), func() bool {
		return tenantsAtLatest(t, o.Pool(), ids, o.Latest()) == len(ids)
	})
}

// requireAppliedOnce checks each tenant's goose_db_version: every version of
// want, once each and in order, and nothing else.
func requireAppliedOnce(t *testing.T, tenants []schemaTenant, want ...int64) {
	t.Helper()
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for _, tn := range tenants {
		conn := conns[tn.URL]
		if conn == nil {
			var err error
			conn, err = pgx.Connect(t.Context(), tn.URL)
			require.NoError(t, err)
			conns[tn.URL] = conn
		}
		rows, err := conn.Query(t.Context(), "SELECT version_id FROM "+
			pgx.Identifier{tn.Schema, "goose_db_version"}.Sanitize()+" WHERE version_id > 0 ORDER BY id")
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		require.Equal(t, want, got, "versions applied to tenant %s", tn.ID)
	}
}

// jobsPerTenant counts the jobs of kind migrate_tenant per tenant id.
func jobsPerTenant(t *testing.T, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(t.Context(), `
		SELECT args->>'tenant_id', count(*)::int FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' GROUP BY 1`)
	require.NoError(t, err)
	out := map[string]int{}
	var id string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		out[id] = n
		return nil
	})
	require.NoError(t, err)
	return out
}

// tenantJob is the newest migrate_tenant job of one tenant.
type tenantJob struct {
	State   string
	Attempt int
	Errors  []string
}

func lastJob(t *testing.T, pool *pgxpool.Pool, tenantID string) tenantJob {
	t.Helper()
	var j tenantJob
	err := pool.QueryRow(t.Context(), `
		SELECT state::text, attempt, coalesce(ARRAY(SELECT e->>'error' FROM unnest(errors) AS e), '{}')
		FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1
		ORDER BY id DESC LIMIT 1`, tenantID).Scan(&j.State, &j.Attempt, &j.Errors)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenantJob{}
	}
	require.NoError(t, err)
	return j
}

func countJobs(t *testing.T, pool *pgxpool.Pool, kind string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(),
		"SELECT count(*) FROM tenantmigrate.river_job WHERE kind = $1", kind).Scan(&n))
	return n
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

	// One scan, so one job per tenant.
	pool := admin.Pool()
	require.Equal(t, 1, countJobs(t, pool, "fleet_scan"), "fleet_scan jobs")
	perTenant := jobsPerTenant(t, pool)
	require.Len(t, perTenant, len(tenants))
	for _, tn := range tenants {
		require.Equal(t, 1, perTenant[tn.ID], "migrate_tenant jobs of %s", tn.ID)
	}
	requireAppliedOnce(t, tenants, 1, 2, 3)

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
	v2 := migrationSet(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
	)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: v2})
	tenants := addSchemaTenants(t, admin, "rel", 1, 5)

	cfg := tenantmigrate.Config{
		DatabaseURL:         cp,
		Migrations:          v2,
		Strategy:            tenantmigrate.StrategyFullFleet,
		RunWorkers:          true,
		FleetRescanInterval: time.Hour,
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
	requireAppliedOnce(t, tenants, 1, 2, 3)
}
