package tenantmigrate_test

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// slowSource is two migrations, the second of which takes a while, so a test
// can change the tenant while a run is inside it.
func slowSource() fstest.MapFS {
	return fleettest.Migrations(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY);",
		"SELECT pg_sleep(1.5); CREATE TABLE invoices (id bigserial PRIMARY KEY);",
	)
}

// waitForSleep waits until a session of the database at dbURL runs pg_sleep.
func waitForSleep(t *testing.T, dbURL string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	waitFor(t, 30*time.Second, "the migration to sleep", func() bool {
		var n int
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()`).Scan(&n))
		return n > 0
	})
}

// TestLateResultNeverLandsOnNewTarget: a run against database A is under way
// when the tenant is removed and registered again on an empty database B.
// A's result is not recorded for B; B is migrated (the run starts again on
// the new target) and the control plane claims exactly what B holds.
func TestLateResultNeverLandsOnNewTarget(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	var logs logBuffer
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: slowSource(), Logger: logs.logger()})
	dbA, dbB := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	addTenantAt(t, o, "acme", dbA, "")

	done := make(chan error, 1)
	go func() {
		_, err := o.MigrateTenant(context.WithoutCancel(ctx), "acme")
		done <- err
	}()
	waitForSleep(t, dbA)
	require.NoError(t, o.DeleteTenant(ctx, "acme"))
	addTenantAt(t, o, "acme", dbB, "")
	require.NoError(t, <-done)
	// The result computed for A was dropped, and the log says so.
	require.Contains(t, logs.String(), `"msg":"tenant changed during its run; result not recorded, running it again","tenant_id":"acme"`)

	st, err := o.TenantState(ctx, "acme")
	require.NoError(t, err)
	if st.MigrationsVersion != nil {
		require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, dbB, ""),
			"the control plane records %d for B", *st.MigrationsVersion)
	}
	require.NoError(t, o.EnsureMigrated(ctx, "acme"))
	st, err = o.TenantState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus)
	require.EqualValues(t, 2, *st.MigrationsVersion)
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, dbB, ""))
}

// TestRepointedTenantIsMigratedUnderEveryStrategy: a PATCH of the schema of a
// tenant COMPLETED at the latest version makes its state unknown, so the
// next request migrates the new schema before it is served, whatever the
// strategy.
func TestRepointedTenantIsMigratedUnderEveryStrategy(t *testing.T) {
	t.Parallel()
	for _, strategy := range []tenantmigrate.Strategy{tenantmigrate.StrategyOnRequest, tenantmigrate.StrategyFullFleet, tenantmigrate.StrategyProgressive} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cp := pgtest.NewDatabase(t)
			db := pgtest.NewDatabase(t)
			o := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations(), Strategy: strategy})
			addTenantAt(t, o, "acme", db, "acme")
			require.NoError(t, o.EnsureMigrated(ctx, "acme"))
			require.NoError(t, o.EnsureMigrated(ctx, "acme")) // cached as up to date

			v2 := "acme_v2"
			patched, err := o.PatchTenant(ctx, "acme", tenantmigrate.TenantPatch{Schema: &v2})
			require.NoError(t, err)
			require.Nil(t, patched.MigrationsVersion, "the new target's state is unknown")
			st, err := o.TenantState(ctx, "acme")
			require.NoError(t, err)
			require.False(t, o.IsLatest(st))

			// The cache learns of the change through NOTIFY; poll until the
			// gate has migrated the new schema.
			waitFor(t, 30*time.Second, "acme_v2 migrated by the gate", func() bool {
				require.NoError(t, o.EnsureMigrated(ctx, "acme"))
				st, err := o.TenantState(ctx, "acme")
				require.NoError(t, err)
				return o.IsLatest(st)
			})
			require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, db, "acme_v2"))
		})
	}
}
