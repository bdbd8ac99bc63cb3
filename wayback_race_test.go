package tenantmigrate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// schemaTenantAt adds one schema tenant to o's fleet and migrates it to
// version v (under a pin at v, cleared afterwards), for a test that then
// moves it on from there.
func schemaTenantAt(t *testing.T, o *tenantmigrate.Orchestrator, prefix string, v int64) []fleettest.SchemaTenant {
	t.Helper()
	ctx := t.Context()
	tenants := addSchemaTenants(t, o, prefix, 1, 1)
	_, err := o.SetTarget(ctx, v)
	require.NoError(t, err)
	_, err = o.MigrateTenants(ctx, tenantmigrate.Selection{IDs: []string{tenants[0].ID}}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	_, err = o.ClearTarget(ctx)
	require.NoError(t, err)
	return tenants
}

// TestUpRunBeforePinReappliesAfterRollback: an up run (migrate-now)
// reads the target (3, none pinned) and the tenant, and is held just after
// (its rollout admission waits for a lock on tenantmigrate.rollouts). Then
// the same Orchestrator rolls the tenant back to 1: the pin commits and the
// Down runs and is recorded. When the up run goes on it must apply nothing
// above the pin: "An undo sticks".
func TestUpRunBeforePinReappliesAfterRollback(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(3, nil, nil)})
	tenants := schemaTenantAt(t, o, "ab", 2)
	id := tenants[0].ID
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))

	holder, err := o.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `LOCK TABLE tenantmigrate.rollouts IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	type result struct {
		v   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := o.MigrateTenant(context.WithoutCancel(ctx), id)
		done <- result{v, err}
	}()
	waitFor(t, 30*time.Second, "the up run to wait after reading the target", func() bool {
		var n int
		require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM tenantmigrate.rollouts%'`).Scan(&n))
		return n > 0
	})

	res, err := o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, IDs: []string{id}}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed, "%+v", res)
	require.Equal(t, int64(1), o.Target())
	require.Equal(t, []int64{1}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))

	require.NoError(t, holder.Commit(ctx))
	select {
	case r := <-done:
		t.Logf("up run returned version %d, err %v", r.v, r.err)
	case <-time.After(60 * time.Second):
		t.Fatal("the up run did not end")
	}
	st, err := o.TenantState(ctx, id)
	require.NoError(t, err)
	require.Equal(t, int64(1), o.Target())
	require.Equal(t, []int64{1}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema), "versions above the pin re-applied")
	require.Equal(t, int64(1), *st.MigrationsVersion, "recorded above the pin")
}

// TestMigrateAllStartedBeforePin: a migrate --all process (an
// Orchestrator that is not started, as the CLI's) that began before another
// process rolled the fleet back keeps aiming at the latest version: README
// says "scans and migrate --all aim at 4".
func TestMigrateAllStartedBeforePin(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := downMigrations(3, nil, nil)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, admin, "ma", 1, 2)
	_, err := admin.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)

	cli := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs}) // migrate --all, started now
	res, err := admin.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, All: true}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Completed)

	// The migrate --all goes on (its next page, a retry).
	_, err = cli.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	fleettest.RequireAppliedOnce(t, tenants, 1)
}

// TestInterruptedDownLeavesClaim: a rollback from 3 to 1 undoes 3 and
// is cancelled by a shutdown (Stop's deadline) while version 2's Down runs.
// The executor records nothing for an interrupted run, so the control plane
// still says COMPLETED at 3 while the tenant's database is at 2; once the
// pin is cleared nothing ever migrates it again.
func TestInterruptedDownLeavesClaim(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := fleettest.Migrations(
		"-- +goose Up\nCREATE TABLE t1 (id int);\n-- +goose Down\nDROP TABLE t1;\n",
		"-- +goose Up\nCREATE TABLE t2 (id int);\n-- +goose Down\nSELECT pg_sleep(60);\nDROP TABLE t2;\n",
		"-- +goose Up\nCREATE TABLE t3 (id int);\n-- +goose Down\nDROP TABLE t3;\n",
	)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, o, "ai", 1, 1)
	id := tenants[0].ID
	_, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := o.Rollback(context.WithoutCancel(ctx), tenantmigrate.RollbackSelection{To: 1, IDs: []string{id}}, tenantmigrate.RollbackOptions{})
		done <- err
	}()
	waitFor(t, 30*time.Second, "version 3 undone", func() bool {
		return len(fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema)) == 2
	})
	stopCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	t.Logf("stop: %v", o.Stop(stopCtx))
	select {
	case err := <-done:
		t.Logf("rollback returned %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the rollback did not end")
	}
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
	st, err := o.TenantState(ctx, id)
	require.NoError(t, err)
	t.Logf("recorded: %v %s", *st.MigrationsVersion, st.MigrationsStatus)
	require.False(t, *st.MigrationsVersion == 3 && st.MigrationsStatus == tenantmigrate.StatusCompleted,
		"the control plane claims COMPLETED at 3 for a tenant at 2")

	// The pin cleared, a migrate --all brings the tenant back to 3.
	o2 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	_, err = o2.ClearTarget(ctx)
	require.NoError(t, err)
	_, err = o2.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
}

// TestRollbackMissingInFlightTenantIsNamed: an up run past its check
// under the tenant's lock (it applied 2 and 3, held here in its OnRun hook
// before it records them) when a rollback to 1 pins the target and selects
// the tenants recorded above 1: the tenant is still recorded at 1, so the
// rollback misses it (a documented limit). The up run then records the 3
// it applied and logs an error that names the tenant and the rollback to
// run again; run again, that rollback moves it back to 1.
func TestRollbackMissingInFlightTenantIsNamed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	held, release := make(chan struct{}), make(chan struct{})
	var holdOnce sync.Once
	logs := &logBuffer{}
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(3, nil, nil), Logger: logs.logger(),
		Hooks: tenantmigrate.Hooks{OnRun: func(_ context.Context, e tenantmigrate.RunEvent) {
			if e.Direction == tenantmigrate.DirectionUp && e.Trigger == tenantmigrate.TriggerAdmin && len(e.Applied) > 0 {
				holdOnce.Do(func() { close(held); <-release })
			}
		}}})
	tenants := schemaTenantAt(t, o, "al", 1)
	id := tenants[0].ID

	upDone := make(chan error, 1)
	go func() {
		_, err := o.MigrateTenant(context.WithoutCancel(ctx), id)
		upDone <- err
	}()
	select {
	case <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("the up run did not apply")
	}
	res, err := o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, All: true}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Selected, "the tenant is still recorded at 1: %+v", res)
	close(release)
	require.NoError(t, <-upDone)
	st, err := o.TenantState(ctx, id)
	require.NoError(t, err)
	require.Equal(t, int64(3), *st.MigrationsVersion, "the control plane records what the tenant holds")
	require.Contains(t, logs.String(), `"msg":"tenant migrated above the fleet target, which was pinned while its migration ran`)
	require.Contains(t, logs.String(), "tenantmigrate rollback --to 1 --tenant "+id)

	res, err = o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, All: true}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed, "%+v", res)
	require.Equal(t, []int64{1}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
}

// TestLoweredTargetAfterConflictRetry: an up run from 1 to 3 applies
// 2 and meets a catalog conflict on 3 ("tuple concurrently updated"), which
// Migrate retries under a new lock. The fleet target is pinned at 1 before
// the retry: the retry's CheckUpTo ends it with errTargetLowered. Before,
// the executor took that for "nothing applied" and started over, dropping
// the result of the 2 it applied. The control plane records what the tenant
// holds (2), and the tenant above the pin is named in the error log.
func TestLoweredTargetAfterConflictRetry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	logs := &logBuffer{}
	migs := fleettest.Migrations(
		"-- +goose Up\nCREATE SEQUENCE s;\n",
		"-- +goose Up\nCREATE TABLE t2 (id int);\n",
		"-- +goose Up\nSELECT pg_advisory_xact_lock(424242);\n"+
			"-- +goose StatementBegin\nDO $$ BEGIN IF nextval('s') = 1 THEN RAISE EXCEPTION USING ERRCODE = 'XX000', MESSAGE = 'tuple concurrently updated'; END IF; END $$;\n-- +goose StatementEnd\n"+
			"CREATE TABLE t3 (id int);\n",
	)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs, Logger: logs.logger()})
	tenants := schemaTenantAt(t, o, "rc", 1)
	id := tenants[0].ID

	holder, err := pgx.Connect(ctx, tenants[0].URL)
	require.NoError(t, err)
	defer holder.Close(context.Background())
	_, err = holder.Exec(ctx, "SELECT pg_advisory_lock(424242)")
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := o.MigrateTenant(context.WithoutCancel(ctx), id)
		done <- err
	}()
	waitFor(t, 30*time.Second, "version 3 to wait for the test's lock", func() bool {
		var n int
		require.NoError(t, holder.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock(424242)%'`).Scan(&n))
		return n > 0
	})
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
	_, err = o.SetTarget(ctx, 1) // an operator's pin (or a rollback's), while 3 waits
	require.NoError(t, err)
	_, err = holder.Exec(ctx, "SELECT pg_advisory_unlock(424242)")
	require.NoError(t, err)
	select {
	case err := <-done:
		t.Logf("up run returned %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the up run did not end")
	}
	applied := fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema)
	st, err := o.TenantState(ctx, id)
	require.NoError(t, err)
	t.Logf("tenant holds %v; recorded %d %s", applied, *st.MigrationsVersion, st.MigrationsStatus)
	require.Equal(t, applied[len(applied)-1], *st.MigrationsVersion, "the control plane does not record what the tenant holds")
	require.Contains(t, logs.String(), "tenant migrated above the fleet target", "the tenant above the pin is not named")
}
