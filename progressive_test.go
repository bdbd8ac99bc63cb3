package tenantmigrate_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// gateLockKey is the advisory lock that gatedMigrations' version 2 waits
// for. A test holding it in a tenant database keeps every migration there
// running, and behind, for as long as it likes; advisory locks are per
// database, so tenants of other databases pass.
const gateLockKey = 7340001

// gatedMigrations: version 1 as applied before the release; version 2, the
// release, waits at the gate.
func gatedMigrations(withV2 bool) fstest.MapFS {
	ups := []string{"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);"}
	if withV2 {
		ups = append(ups, fmt.Sprintf("SELECT pg_advisory_xact_lock_shared(%d);\nCREATE TABLE projects (id bigserial PRIMARY KEY);", gateLockKey))
	}
	return fleettest.Migrations(ups...)
}

// migrateAll brings every tenant to o's latest version now.
func migrateAll(t *testing.T, o *tenantmigrate.Orchestrator, tenants []fleettest.SchemaTenant) {
	t.Helper()
	var g errgroup.Group
	g.SetLimit(4)
	for _, tn := range tenants {
		g.Go(func() error {
			_, err := o.MigrateTenant(t.Context(), tn.ID)
			return err
		})
	}
	require.NoError(t, g.Wait())
}

// tenantServer serves o.Middleware in front of a handler that answers the
// tenant id.
func tenantServer(t *testing.T, o *tenantmigrate.Orchestrator) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(o.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := tenantmigrate.TenantIDFromContext(r.Context())
		_, _ = io.WriteString(w, id)
	})))
	t.Cleanup(srv.Close)
	return srv
}

// get sends a request for tenant id through srv and returns the status and
// body.
func get(t *testing.T, srv *httptest.Server, id string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Host = id + ".local.dev"
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func requireServed(t *testing.T, srv *httptest.Server, id string) {
	t.Helper()
	status, body := get(t, srv, id)
	require.Equal(t, http.StatusOK, status, "request for %s: %s", id, body)
	require.Equal(t, id, body)
}

// TestProgressiveRequestsDoNotWait: with progressive, requests for tenants
// behind are served at once while their migration runs in the background; a
// tenant never migrated is the exception and is migrated during its
// request; once the collector has flushed, every tenant seen reaches the
// latest version.
func TestProgressiveRequestsDoNotWait(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)

	// The fleet is at version 1 when version 2 is released.
	old := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: gatedMigrations(false)})
	tenants := addSchemaTenants(t, old, "pg", 1, 8)
	migrateAll(t, old, tenants)
	fresh := addTenantAt(t, old, "fresh", pgtest.NewDatabase(t), "fresh")

	// Close the gate in the fleet's database: version 2 cannot finish there.
	gate, err := pgx.Connect(ctx, tenants[0].URL)
	require.NoError(t, err)
	defer gate.Close(context.Background())
	_, err = gate.Exec(ctx, "SELECT pg_advisory_lock($1)", gateLockKey)
	require.NoError(t, err)

	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  gatedMigrations(true),
		Strategy:    tenantmigrate.StrategyProgressive,
		RunWorkers:  true, Progressive: tenantmigrate.ProgressiveConfig{Interval: 50 * time.Millisecond}, Limits: tenantmigrate.LimitsConfig{
			// wait at the gate as long as the test holds it
			TenantLockTimeout: -1},
	})
	require.Equal(t, int64(2), o.Latest())
	srv := tenantServer(t, o)

	for _, tn := range tenants {
		requireServed(t, srv, tn.ID)
		st, err := o.TenantState(ctx, tn.ID)
		require.NoError(t, err)
		require.Equal(t, int64(1), *st.MigrationsVersion, "tenant %s is served while still behind", tn.ID)
	}

	// The collector queued them, and workers are migrating them (held at
	// the gate); the tenants are still behind.
	ids := fleettest.IDs(tenants)
	pool := o.Pool()
	waitFor(t, 10*time.Second, "a job per tenant seen", func() bool { return len(fleettest.JobsPerTenant(t, pool)) == len(ids) })
	waitFor(t, 10*time.Second, "migrations running", func() bool {
		var running int
		require.NoError(t, pool.QueryRow(ctx,
			"SELECT count(*) FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant' AND state = 'running'").Scan(&running))
		return running > 0
	})
	require.Zero(t, fleettest.CountCompleted(t, pool, ids, 2))

	// A tenant never migrated has no schema to serve from: its request
	// migrates it, so it is at the latest version when the response comes.
	requireServed(t, srv, "fresh")
	st, err := o.TenantState(ctx, "fresh")
	require.NoError(t, err)
	require.True(t, o.IsLatest(st), "fresh tenant migrated during its request: %+v", st)
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{fresh}, 1, 2)

	// Open the gate: the queued migrations finish.
	_, err = gate.Exec(ctx, "SELECT pg_advisory_unlock($1)", gateLockKey)
	require.NoError(t, err)
	waitAllLatest(t, o, tenants, 30*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)
	waitFor(t, 10*time.Second, "no remaining jobs", func() bool {
		n, err := o.Remaining(ctx)
		require.NoError(t, err)
		return n == 0
	})
	for _, tn := range tenants {
		requireServed(t, srv, tn.ID)
	}
}

// TestProgressiveStopFlushes: tenants collected by an instance whose flush
// interval has not come yet are queued when it stops gracefully, and
// another instance migrates them.
func TestProgressiveStopFlushes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	old := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: gatedMigrations(false)})
	tenants := addSchemaTenants(t, old, "ps", 1, 5)
	migrateAll(t, old, tenants)

	cfg := tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  gatedMigrations(true),
		Strategy:    tenantmigrate.StrategyProgressive, Progressive: tenantmigrate.ProgressiveConfig{

			// The first instance runs no workers: whatever it queues stays queued.
			Interval: time.Hour},
	}

	first := startOrchestrator(t, cfg)
	srv := tenantServer(t, first)
	for _, tn := range tenants {
		requireServed(t, srv, tn.ID)
	}
	require.Zero(t, countJobs(t, first.Pool(), "migrate_tenant"), "nothing queued before the interval")

	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, first.Stop(stopCtx))
	perTenant := fleettest.JobsPerTenant(t, first.Pool())
	require.Len(t, perTenant, len(tenants))
	for _, tn := range tenants {
		require.Equal(t, 1, perTenant[tn.ID], "job of %s", tn.ID)
		require.Equal(t, "available", fleettest.LastJob(t, first.Pool(), tn.ID).State)
	}

	// Another instance works the queue.
	cfg.RunWorkers = true
	second := startOrchestrator(t, cfg)
	waitAllLatest(t, second, tenants, 30*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)
}

// TestProgressiveStaleTenantRetriedOncePerInterval: requests for a
// FAILED_STALE tenant start one background attempt, and no other within
// StaleRetryInterval however many requests come; the tenant stays
// FAILED_STALE when the attempt fails again, and is not queued again.
func TestProgressiveStaleTenantRetriedOncePerInterval(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)

	// Version 1 creates a sequence that counts the attempts at version 2:
	// nextval is not rolled back with the failed migration.
	v1 := "CREATE TABLE accounts (id bigserial PRIMARY KEY);\nCREATE SEQUENCE attempts;"
	old := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleettest.Migrations(v1)})
	tenants := addSchemaTenants(t, old, "st", 1, 1)
	migrateAll(t, old, tenants)
	id := tenants[0].ID

	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  fleettest.Migrations(v1, "SELECT nextval('attempts');\nSELECT no_such_function();"),
		Strategy:    tenantmigrate.StrategyProgressive,
		RunWorkers:  true, Progressive: tenantmigrate.ProgressiveConfig{Interval: 20 * time.Millisecond, StaleRetryInterval: time.Hour},
	})
	srv := tenantServer(t, o)
	attempts := func() int64 { return attemptsSeq(t, tenants[0]) }

	// First request: queued; the error is not retryable, so one attempt
	// makes the tenant FAILED_STALE.
	requireServed(t, srv, id)
	waitFor(t, 10*time.Second, "FAILED_STALE", func() bool {
		st, err := o.TenantState(ctx, id)
		require.NoError(t, err)
		return st.MigrationsStatus == tenantmigrate.StatusFailedStale
	})
	require.Equal(t, int64(1), attempts())
	staleSince, err := o.TenantState(ctx, id)
	require.NoError(t, err)

	// Next request: one background attempt, which fails and is recorded.
	requireServed(t, srv, id)
	waitFor(t, 10*time.Second, "the background attempt's failure recorded", func() bool {
		st, err := o.TenantState(ctx, id)
		require.NoError(t, err)
		return attempts() == 2 && st.UpdatedAt.After(staleSince.UpdatedAt)
	})

	// Many more requests within the interval: no attempt, nothing queued.
	for range 20 {
		requireServed(t, srv, id)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, o.Stop(stopCtx)) // waits for background attempts, flushes the collector

	require.Equal(t, int64(2), attempts(), "attempts at version 2")
	st, err := o.TenantState(ctx, id)
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailedStale, st.MigrationsStatus)
	require.Equal(t, int64(1), *st.MigrationsVersion)
	require.Contains(t, st.LastError, "no_such_function")
	require.Equal(t, map[string]int{id: 1}, fleettest.JobsPerTenant(t, o.Pool()), "the tenant was queued once")
}

// attemptsSeq reads the tenant's attempts sequence: how many times a
// migration called nextval on it.
func attemptsSeq(t *testing.T, tn fleettest.SchemaTenant) int64 {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), tn.URL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int64
	var called bool
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT last_value, is_called FROM "+
		pgx.Identifier{tn.Schema, "attempts"}.Sanitize()).Scan(&n, &called))
	if !called {
		return 0
	}
	return n
}
