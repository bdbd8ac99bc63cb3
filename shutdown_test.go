package tenantmigrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// shutdownFixture is one tenant at version 1 and an on_request Orchestrator
// whose version 2 waits at the gate, which the test holds.
type shutdownFixture struct {
	o      *tenantmigrate.Orchestrator
	tenant fleettest.SchemaTenant
	gate   *pgx.Conn
}

func newShutdownFixture(t *testing.T, startCtx context.Context) *shutdownFixture {
	t.Helper()
	cp := pgtest.NewDatabase(t)
	old := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: gatedMigrations(false)})
	tenants := addSchemaTenants(t, old, "sd", 1, 1)
	migrateAll(t, old, tenants)

	gate, err := pgx.Connect(t.Context(), tenants[0].URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = gate.Close(context.Background()) })
	_, err = gate.Exec(t.Context(), "SELECT pg_advisory_lock($1)", gateLockKey)
	require.NoError(t, err)

	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  gatedMigrations(true), Limits: tenantmigrate.LimitsConfig{
			// wait at the gate as long as the test holds it
			TenantLockTimeout: -1},
	})
	require.NoError(t, o.Start(startCtx))
	return &shutdownFixture{o: o, tenant: tenants[0], gate: gate}
}

// migrateInBackground starts MigrateTenant, as a request would, and waits
// until the run waits at the gate (in this test's database: other tests'
// runs wait on the same key in theirs).
func (f *shutdownFixture) migrateInBackground(t *testing.T) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := f.o.MigrateTenant(context.Background(), f.tenant.ID)
		done <- err
	}()
	waitFor(t, 10*time.Second, "the migration waiting at the gate", func() bool {
		var waiting bool
		require.NoError(t, f.gate.QueryRow(t.Context(), `
			SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`,
			gateLockKey).Scan(&waiting))
		return waiting
	})
	return done
}

// TestStopWaitsForInlineMigration: an inline migration running when Stop is
// called (after the context Start got has ended, as on SIGTERM) finishes
// and is recorded COMPLETED before Stop returns.
func TestStopWaitsForInlineMigration(t *testing.T) {
	t.Parallel()
	startCtx, signal := context.WithCancel(t.Context())
	f := newShutdownFixture(t, startCtx)
	run := f.migrateInBackground(t)
	signal()

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- f.o.Stop(ctx)
	}()
	_, err := f.gate.Exec(t.Context(), "SELECT pg_advisory_unlock($1)", gateLockKey)
	require.NoError(t, err)

	require.NoError(t, <-stopped)
	st, err := f.o.TenantState(t.Context(), f.tenant.ID) // read right after Stop returned
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus)
	require.Equal(t, int64(2), *st.MigrationsVersion)
	require.NoError(t, <-run)
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{f.tenant}, 1, 2)
}

// TestStopDeadlineInterruptsInlineMigration: an inline migration still
// running at Stop's deadline is cancelled and rolls back, and its tenant is
// not recorded FAILED: it keeps its state (COMPLETED at version 1). A later
// run applies version 2 once.
func TestStopDeadlineInterruptsInlineMigration(t *testing.T) {
	t.Parallel()
	f := newShutdownFixture(t, t.Context())
	run := f.migrateInBackground(t)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	require.ErrorIs(t, f.o.Stop(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(began), 10*time.Second, "Stop returned soon after its deadline")
	require.Error(t, <-run, "the caller learns that its migration did not finish")

	st, err := f.o.TenantState(t.Context(), f.tenant.ID)
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus, "not FAILED: interrupted")
	require.Equal(t, int64(1), *st.MigrationsVersion)
	require.Empty(t, st.LastError)
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{f.tenant}, 1)
	// The history has the run, interrupted.
	runs, _, err := f.o.TenantRuns(t.Context(), f.tenant.ID, "", 1)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Equal(t, tenantmigrate.RunInterrupted, runs[0].Result)
	require.Equal(t, "admin", runs[0].Trigger)
	require.NotEmpty(t, runs[0].Error)

	_, err = f.gate.Exec(t.Context(), "SELECT pg_advisory_unlock($1)", gateLockKey)
	require.NoError(t, err)
	v, err := f.o.MigrateTenant(t.Context(), f.tenant.ID)
	require.NoError(t, err, "a stopped Orchestrator still migrates inline")
	require.Equal(t, int64(2), v)
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{f.tenant}, 1, 2)
}

// TestStopDeadlineAfterCommitStillRecords: Stop's deadline passes after
// an inline run's migration committed but before its result was written to
// the control plane (here: while Hooks.OnRun, which runs in that window,
// is still busy). The migration is finished, so it must be recorded as usual
// (RELIABILITY row 1: "they are recorded as usual"), as a failure is
// (recordFailure writes "even when ctx has ended").
func TestStopDeadlineAfterCommitStillRecords(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	old := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(1, nil, nil)})
	tenants := addSchemaTenants(t, old, "sdrec", 1, 1)
	migrateAll(t, old, tenants)
	id := tenants[0].ID

	inHook := make(chan struct{}, 1)
	o := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(2, nil, nil), Hooks: tenantmigrate.Hooks{
		OnRun: func(ctx context.Context, e tenantmigrate.RunEvent) {
			if e.TenantID == id && e.Err == nil {
				inHook <- struct{}{}
				<-ctx.Done() // busy until Stop's deadline cancels the run
			}
		},
	}})
	runErr := make(chan error, 1)
	go func() {
		_, err := o.MigrateTenant(context.Background(), id)
		runErr <- err
	}()
	select {
	case <-inHook:
	case <-time.After(30 * time.Second):
		t.Fatal("the run never reached its hook")
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = o.Stop(stopCtx)
	err := <-runErr

	fleettest.RequireAppliedOnce(t, tenants, 1, 2) // committed
	st, serr := o.TenantState(t.Context(), id)
	require.NoError(t, serr)
	require.Equal(t, int64(2), *st.MigrationsVersion,
		"version 2 is committed in the tenant, the control plane keeps %d %s; MigrateTenant returned %v", *st.MigrationsVersion, st.MigrationsStatus, err)
	require.NoError(t, err)
}
