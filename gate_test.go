package tenantmigrate_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

const testKey = "test-encryption-key-0123456789"

// testMigrations is a small set: v1 and v2 transactional, v3 NO TRANSACTION.
func testMigrations() fstest.MapFS {
	return fstest.MapFS{
		"00001_users.sql": {Data: []byte(`-- +goose Up
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);
-- +goose Down
DROP TABLE users;
`)},
		"00002_notes.sql": {Data: []byte(`-- +goose Up
CREATE TABLE notes (id bigserial PRIMARY KEY, user_id bigint REFERENCES users(id), body text);
-- +goose Down
DROP TABLE notes;
`)},
		"00003_notes_index.sql": {Data: []byte(`-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_user_idx ON notes (user_id);
-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS notes_user_idx;
`)},
	}
}

type fixture struct {
	t    *testing.T
	ctx  context.Context
	cp   string
	orch *tenantmigrate.Orchestrator
	runs atomic.Int64
}

// newFixture starts an Orchestrator on a fresh control plane.
func newFixture(t *testing.T, cfg tenantmigrate.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), cp: cfg.DatabaseURL}
	if f.cp == "" {
		f.cp = pgtest.NewDatabase(t)
	}
	f.orch = f.start(cfg)
	return f
}

// start starts another Orchestrator on the fixture's control plane.
func (f *fixture) start(cfg tenantmigrate.Config) *tenantmigrate.Orchestrator {
	f.t.Helper()
	cfg.DatabaseURL = f.cp
	if cfg.EncryptionKey == "" {
		cfg.EncryptionKey = testKey
	}
	if cfg.Migrations == nil {
		cfg.Migrations = testMigrations()
	}
	cfg.Hooks.OnMigrationRun = func(tenantmigrate.Strategy, string, time.Duration) { f.runs.Add(1) }
	o, err := tenantmigrate.New(f.ctx, cfg)
	require.NoError(f.t, err)
	require.NoError(f.t, o.Start(f.ctx))
	f.t.Cleanup(o.Close)
	return o
}

func (f *fixture) addTenant(id, schema string) string {
	f.t.Helper()
	url := pgtest.NewDatabase(f.t)
	_, err := f.orch.CreateTenant(f.ctx, tenantmigrate.Tenant{ID: id, DatabaseURL: url, Schema: schema})
	require.NoError(f.t, err)
	return url
}

func TestFreshTenantMigratedOnRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tenantmigrate.Config{})
	url := f.addTenant("fresh", "")

	require.NoError(t, f.orch.EnsureMigrated(f.ctx, "fresh"))
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, url, ""))

	st, err := f.orch.TenantState(f.ctx, "fresh")
	require.NoError(t, err)
	require.Equal(t, int64(3), *st.MigrationsVersion)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus)
	require.True(t, f.orch.IsLatest(st))

	// The NO TRANSACTION migration built its index, and it is valid.
	conn, err := pgx.Connect(f.ctx, url)
	require.NoError(t, err)
	defer conn.Close(f.ctx)
	var valid bool
	require.NoError(t, conn.QueryRow(f.ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'notes_user_idx'::regclass`).Scan(&valid))
	require.True(t, valid)

	require.ErrorIs(t, f.orch.EnsureMigrated(f.ctx, "nobody"), tenantmigrate.ErrTenantNotFound)
}

func TestUpToDateTenantOpensNoTenantConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tenantmigrate.Config{})
	url := f.addTenant("uptodate", "")
	require.NoError(t, f.orch.EnsureMigrated(f.ctx, "uptodate"))

	// Refuse every new connection to the tenant database: from here on any
	// tenant connection attempt would fail.
	conn, err := pgx.Connect(f.ctx, pgtest.ServerURL(t))
	require.NoError(t, err)
	defer conn.Close(f.ctx)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	_, err = conn.Exec(f.ctx, "ALTER DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+" ALLOW_CONNECTIONS false")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "ALTER DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+" ALLOW_CONNECTIONS true")
	})

	// A second instance with an empty cache decides from the control plane alone.
	other := f.start(tenantmigrate.Config{})
	before := f.runs.Load()
	for range 3 {
		require.NoError(t, f.orch.EnsureMigrated(f.ctx, "uptodate"))
		require.NoError(t, other.EnsureMigrated(f.ctx, "uptodate"))
	}
	require.Equal(t, before, f.runs.Load(), "no migration run for an up-to-date tenant")
}

func TestConcurrentRequestsRunOneMigration(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tenantmigrate.Config{})
	url := f.addTenant("busy", "")

	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() { errs <- f.orch.EnsureMigrated(f.ctx, "busy") })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(1), f.runs.Load(), "exactly one migration run")
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, url, ""))
}

func TestFailingMigrationRecordsFailed(t *testing.T) {
	t.Parallel()
	migs := testMigrations()
	migs["00003_notes_index.sql"] = &fstest.MapFile{Data: []byte(`-- +goose Up
CREATE TABLE broken (id int);
SELECT no_such_function();
-- +goose Down
`)}
	f := newFixture(t, tenantmigrate.Config{Migrations: migs})
	url := f.addTenant("broken", "")

	err := f.orch.EnsureMigrated(f.ctx, "broken")
	var merr *tenantmigrate.MigrationError
	require.ErrorAs(t, err, &merr)
	require.Equal(t, int64(2), merr.Version)

	st, err := f.orch.TenantState(f.ctx, "broken")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Equal(t, int64(2), *st.MigrationsVersion, "version stays at the last good one")
	require.Contains(t, st.LastError, "no_such_function")
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, url, ""))

	// v3 ran in a transaction: nothing of it is left.
	conn, err := pgx.Connect(f.ctx, url)
	require.NoError(t, err)
	defer conn.Close(f.ctx)
	var reg *string
	require.NoError(t, conn.QueryRow(f.ctx, "SELECT to_regclass('broken')::text").Scan(&reg))
	require.Nil(t, reg)
}

func TestSchemaPerTenantParallel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tenantmigrate.Config{})
	shared := pgtest.NewDatabase(t)
	for i := range 20 {
		_, err := f.orch.CreateTenant(f.ctx, tenantmigrate.Tenant{ID: fmt.Sprintf("s%02d", i), DatabaseURL: shared, Schema: fmt.Sprintf("tenant_%02d", i)})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() { errs <- f.orch.EnsureMigrated(f.ctx, fmt.Sprintf("s%02d", i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i := range 20 {
		schema := fmt.Sprintf("tenant_%02d", i)
		require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, shared, schema), schema)
	}
	// The tables live in the tenant schemas, not in public.
	conn, err := pgx.Connect(f.ctx, shared)
	require.NoError(t, err)
	defer conn.Close(f.ctx)
	var inTenants, inPublic int
	require.NoError(t, conn.QueryRow(f.ctx, `SELECT count(*) FILTER (WHERE table_schema LIKE 'tenant\_%'), count(*) FILTER (WHERE table_schema = 'public')
		FROM information_schema.tables WHERE table_name = 'notes'`).Scan(&inTenants, &inPublic))
	require.Equal(t, 20, inTenants)
	require.Zero(t, inPublic)
}

func TestCacheInvalidatedAcrossInstances(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tenantmigrate.Config{})
	f.addTenant("shared", "")
	other := f.start(tenantmigrate.Config{})
	require.Eventually(t, func() bool { return f.orch.Listening() && other.Listening() }, 10*time.Second, 10*time.Millisecond)
	// Both instances now cache the tenant as up to date.
	require.NoError(t, f.orch.EnsureMigrated(f.ctx, "shared"))
	require.NoError(t, other.EnsureMigrated(f.ctx, "shared"))

	// Deleting on one instance reaches the other's cache through NOTIFY.
	require.NoError(t, f.orch.DeleteTenant(f.ctx, "shared"))
	require.Eventually(t, func() bool {
		return errors.Is(other.EnsureMigrated(f.ctx, "shared"), tenantmigrate.ErrTenantNotFound)
	}, 10*time.Second, 10*time.Millisecond)
}

// Inline migrations of many cold tenants run at most InlineConcurrency at a
// time. Each run records when it started and ended (clock_timestamp, in the
// shared database's public schema), and no moment sees more than two.
func TestInlineMigrationsBounded(t *testing.T) {
	t.Parallel()
	shared := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(context.Background(), shared)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `CREATE TABLE public.runs (tenant text PRIMARY KEY, started timestamptz, ended timestamptz)`)
	require.NoError(t, err)

	migs := fstest.MapFS{"00001_slow.sql": {Data: []byte(`-- +goose Up
INSERT INTO public.runs (tenant, started) VALUES (current_schema(), clock_timestamp());
SELECT pg_sleep(0.2);
UPDATE public.runs SET ended = clock_timestamp() WHERE tenant = current_schema();
`)}}
	f := newFixture(t, tenantmigrate.Config{Migrations: migs, Limits: tenantmigrate.LimitsConfig{InlineConcurrency: 2}})
	for i := range 6 {
		_, err := f.orch.CreateTenant(f.ctx, tenantmigrate.Tenant{ID: fmt.Sprintf("cold%d", i), DatabaseURL: shared, Schema: fmt.Sprintf("cold_%d", i)})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Go(func() { errs <- f.orch.EnsureMigrated(f.ctx, fmt.Sprintf("cold%d", i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var overlap int
	require.NoError(t, conn.QueryRow(context.Background(), `
		SELECT max(n) FROM (
			SELECT (SELECT count(*) FROM public.runs o WHERE o.started <= r.started AND o.ended > r.started) AS n
			FROM public.runs r) s`).Scan(&overlap))
	require.Equal(t, 2, overlap, "at most InlineConcurrency runs at once, and that many used")
	var done int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM public.runs WHERE ended IS NOT NULL`).Scan(&done))
	require.Equal(t, 6, done)
}
