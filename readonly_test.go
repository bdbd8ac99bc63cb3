package tenantmigrate_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// timestampMigrations is a goose set with timestamp versions, as `goose
// create` names them by default.
func timestampMigrations(ups ...string) fstest.MapFS {
	names := []string{"20240101120000_accounts.sql", "20240102120000_invoices.sql", "20240103120000_plans.sql"}
	fsys := fstest.MapFS{}
	for i, up := range ups {
		fsys[names[i]] = &fstest.MapFile{Data: []byte("-- +goose Up\n" + up + "\n")}
	}
	return fsys
}

// TestReadOnlyRecordsNoChecksums: a ReadOnly Orchestrator, opened with
// another source than the fleet's (here the example set, versions 1-4, on a
// fleet of timestamp versions), records no checksum, applies nothing, and a
// later start with the fleet's own source is not refused.
func TestReadOnlyRecordsNoChecksums(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	tenantURL := pgtest.NewDatabase(t)
	ts := timestampMigrations("CREATE TABLE accounts (id int);", "CREATE TABLE invoices (id int);")
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: ts})
	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
	require.NoError(t, err)
	_, err = o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "never", DatabaseURL: pgtest.NewDatabase(t)})
	require.NoError(t, err)
	_, err = o.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	// A control plane from before checksums were recorded: the case New
	// backfills.
	driftExec(t, cpURL, `TRUNCATE tenantmigrate.migration_checksums`)

	for name, cfg := range map[string]tenantmigrate.Config{
		"ExampleSet":   {Migrations: examplemigrations.FS},
		"FleetSource":  {Migrations: ts},
		"NoMigrations": {},
	} {
		cfg.DatabaseURL, cfg.EncryptionKey, cfg.ReadOnly = cpURL, testKey, true
		ro := newOrchestrator(t, cfg)
		_, err := ro.MigrateTenant(ctx, "never")
		require.ErrorIs(t, err, tenantmigrate.ErrReadOnly, name)
		require.ErrorIs(t, ro.EnsureMigrated(ctx, "never"), tenantmigrate.ErrReadOnly, name)
		require.Empty(t, recordedChecksums(t, cpURL), name)
	}
	st, err := o.TenantState(ctx, "never")
	require.NoError(t, err)
	require.Nil(t, st.MigrationsVersion, "a ReadOnly Orchestrator migrated a tenant")
	require.Equal(t, []int64{20240101120000, 20240102120000}, fleettest.AppliedVersions(t, tenantURL, ""))

	// The fleet's next release starts, backfills from its own source and
	// records what it applies.
	next := timestampMigrations("CREATE TABLE accounts (id int);", "CREATE TABLE invoices (id int);", "CREATE TABLE plans (id int);")
	o2 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: next})
	v, err := o2.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, int64(20240103120000), v)
	sums := recordedChecksums(t, cpURL)
	require.Len(t, sums, 3)
	require.Equal(t, "20240101120000_accounts.sql", sums[0].Name)

	_, err = tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cpURL, ReadOnly: true, RunWorkers: true, Migrations: ts})
	require.ErrorContains(t, err, "RunWorkers")
}

// TestReadOnlyLeavesControlPlaneSchemaAlone: a ReadOnly Orchestrator creates
// a missing control-plane schema (a new control plane), but never upgrades
// an existing one.
func TestReadOnlyLeavesControlPlaneSchemaAlone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	ro := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, ReadOnly: true})
	st, err := ro.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Total)

	// An older schema: every control-plane migration after the first undone.
	driftExec(t, cpURL, `DROP TABLE tenantmigrate.migration_checksums, tenantmigrate.rollout_tenants, tenantmigrate.rollouts;
		ALTER TABLE tenantmigrate.tenants DROP COLUMN target_seq, DROP COLUMN key_id, DROP COLUMN labels;
		DELETE FROM tenantmigrate.controlplane_version WHERE version_id >= 2`)
	_, err = tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cpURL, ReadOnly: true})
	require.ErrorContains(t, err, "control-plane schema is at version 1 and this build needs ")
	require.False(t, checksumsTableExists(t, cpURL), "a ReadOnly Orchestrator upgraded the control-plane schema")

	// Without ReadOnly it is upgraded.
	newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: testMigrations()})
	require.True(t, checksumsTableExists(t, cpURL))
}

func checksumsTableExists(t *testing.T, cpURL string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), cpURL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	var exists bool
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT to_regclass('tenantmigrate.migration_checksums') IS NOT NULL`).Scan(&exists))
	return exists
}

// TestNewWithoutMigrations: New without migrations fails with
// ErrNoMigrations (also goose's) before connecting, so no tenant and not
// the control plane are touched; an empty source is refused the same way.
// Before, the embedded example set was applied. A ReadOnly Orchestrator
// needs no migrations, and says so where it would.
func TestNewWithoutMigrations(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	for name, cfg := range map[string]tenantmigrate.Config{
		"Nothing":     {},
		"EmptySource": {Migrations: fstest.MapFS{"README.md": {Data: []byte("hi")}}},
	} {
		cfg.DatabaseURL, cfg.EncryptionKey = cpURL, testKey
		_, err := tenantmigrate.New(ctx, cfg)
		require.ErrorIs(t, err, tenantmigrate.ErrNoMigrations, name)
		require.ErrorIs(t, err, goose.ErrNoMigrations, name)
		require.ErrorContains(t, err, "Config.Migrations", name)
		require.NotContains(t, err.Error(), "MIGRATIONS_DIR", name)
		require.NotContains(t, err.Error(), "--migrations", name)
	}
	conn, err := pgx.Connect(ctx, cpURL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regnamespace('tenantmigrate') IS NOT NULL`).Scan(&exists))
	require.False(t, exists, "New wrote the control plane")

	ro := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, ReadOnly: true})
	require.Zero(t, ro.Latest())
	tenantURL := pgtest.NewDatabase(t)
	tn, err := ro.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
	require.NoError(t, err)
	_, _, err = ro.PendingVersions(ctx, "acme")
	require.ErrorIs(t, err, tenantmigrate.ErrNoMigrations)
	require.ErrorIs(t, ro.VerifyTenant(ctx, tn).Err, tenantmigrate.ErrNoMigrations)
	require.ErrorIs(t, ro.EnsureMigrated(ctx, "acme"), tenantmigrate.ErrReadOnly)
	tconn, err := pgx.Connect(ctx, tenantURL)
	require.NoError(t, err)
	defer tconn.Close(context.WithoutCancel(ctx))
	require.NoError(t, tconn.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists))
	require.False(t, exists, "a ReadOnly Orchestrator migrated a tenant")
}
