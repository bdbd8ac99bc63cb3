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

// TestUpSuccessDoesNotOverwriteConcurrentRollback: an up run (the
// admin API's migrate now) has finished its migration at version 3 but not
// yet recorded it when a rollback to 1 undoes versions 3 and 2 and records
// 1. The up run's late RecordSuccess must not put COMPLETED at 3 on a tenant
// whose goose_db_version now ends at 1.
func TestUpSuccessDoesNotOverwriteConcurrentRollback(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := downMigrations(3, nil, nil)

	hold := make(chan struct{})
	inHook := make(chan struct{}, 1)
	armed := make(chan bool, 1)
	armed <- false
	up := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs, Hooks: tenantmigrate.Hooks{
		OnRun: func(ctx context.Context, e tenantmigrate.RunEvent) {
			a := <-armed
			armed <- false // only the first armed run waits
			if a && e.Trigger == tenantmigrate.TriggerAdmin && e.Direction == tenantmigrate.DirectionUp {
				inHook <- struct{}{}
				<-hold // between the migration and its RecordSuccess
			}
		},
	}})
	cli := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, cli, "upvsdown", 1, 1)
	migrateAll(t, cli, tenants)
	id := tenants[0].ID

	<-armed
	armed <- true
	upDone := make(chan error, 1)
	go func() {
		_, err := up.MigrateTenant(context.Background(), id)
		upDone <- err
	}()
	select {
	case <-inHook:
	case <-time.After(30 * time.Second):
		t.Fatal("the up run never reached its hook")
	}

	res, err := cli.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, IDs: []string{id}}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed, "%+v", res)
	fleettest.RequireAppliedOnce(t, tenants, 1)

	// The up run's instance hears of the rollback's pin (a rerun aims at it).
	waitFor(t, 10*time.Second, "the up instance to hear of the pin", func() bool { return up.Target() == 1 })
	close(hold)
	<-upDone // its error, if any, is not the point

	st, err := cli.TenantState(ctx, id)
	require.NoError(t, err)
	fleettest.RequireAppliedOnce(t, tenants, 1)
	require.Equal(t, int64(1), *st.MigrationsVersion,
		"the control plane records version %d %s, the tenant's goose_db_version ends at 1", *st.MigrationsVersion, st.MigrationsStatus)
}
