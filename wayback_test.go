package tenantmigrate_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// This file tests the way back: the fleet target pin, Rollback and Force.

// downMigrations are n versions, version i creating table t<i> and its Down
// dropping it; noDown versions have no Down section, failDown ones a Down
// that fails.
func downMigrations(n int, noDown, failDown []int) fstest.MapFS {
	ups := make([]string, n)
	for i := range n {
		v := i + 1
		body := fmt.Sprintf("-- +goose Up\nCREATE TABLE t%d (id int);\n", v)
		switch {
		case contains(noDown, v):
		case contains(failDown, v):
			body += "-- +goose Down\nDROP TABLE no_such_table;\n"
		default:
			body += fmt.Sprintf("-- +goose Down\nDROP TABLE t%d;\n", v)
		}
		ups[i] = body
	}
	return fleettest.Migrations(ups...)
}

func contains(vs []int, v int) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// tablesOf returns the t<N> tables of each tenant's schema, by tenant id.
func tablesOf(t *testing.T, tenants []fleettest.SchemaTenant) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fleettest.ForEachTenant(t, tenants, func(tn fleettest.SchemaTenant, conn *pgx.Conn) {
		rows, err := conn.Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename ~ '^t[0-9]+$' ORDER BY tablename`, tn.Schema)
		require.NoError(t, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		out[tn.ID] = names
	})
	return out
}

func versions(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// TestRollbackWhileFullFleetRuns: 50 tenants at 6 are rolled back to 4 by
// a second process while a full_fleet server works the queue: they end at 4
// in goose_db_version and the control plane, without the tables of 5 and 6,
// and stay there (the server re-applies nothing while the target is pinned,
// even when asked to scan); after the pin is cleared the server brings them
// back to 6 by itself.
func TestRollbackWhileFullFleetRuns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := downMigrations(6, nil, nil)
	cli := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, cli, "rb", 5, 10)
	server := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: migs, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
	})
	waitAllLatest(t, server, tenants, 2*time.Minute)

	res, err := cli.Rollback(ctx, tenantmigrate.RollbackSelection{To: 4, All: true}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(50), res.Completed, "%+v", res)
	require.True(t, res.OK())

	check := func() {
		t.Helper()
		require.Equal(t, 50, fleettest.CountCompleted(t, cli.Pool(), fleettest.IDs(tenants), 4))
		fleettest.RequireAppliedOnce(t, tenants, versions(4)...)
		for id, tables := range tablesOf(t, tenants) {
			require.Equal(t, []string{"t1", "t2", "t3", "t4"}, tables, id)
		}
	}
	check()
	waitFor(t, 10*time.Second, "the server to hear of the pin", func() bool { return server.Target() == 4 })
	// The server is asked to work: a scan, a request. It re-applies nothing.
	n, err := server.ScheduleFleet(ctx, true)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, server.EnsureMigrated(ctx, tenants[0].ID))
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		require.Equal(t, 50, fleettest.CountCompleted(t, cli.Pool(), fleettest.IDs(tenants), 4))
		time.Sleep(200 * time.Millisecond) // observing that nothing happens, bounded
	}
	check()

	_, err = cli.ClearTarget(ctx)
	require.NoError(t, err)
	waitAllLatest(t, server, tenants, 2*time.Minute)
	fleettest.RequireAppliedOnce(t, tenants, versions(6)...)
}

// TestRollbackRefusedWithoutDown: version 7 has no Down section, so a
// rollback to 5 of tenants at 7 is refused, naming 00007, before any tenant
// or the target changes.
func TestRollbackRefusedWithoutDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(7, []int{7}, nil)})
	tenants := addSchemaTenants(t, o, "nd", 1, 3)
	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Completed)

	_, err = o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 5, All: true}, tenantmigrate.RollbackOptions{})
	require.ErrorIs(t, err, tenantmigrate.ErrNoDown)
	require.Contains(t, err.Error(), "00007_v7.sql")
	require.NotContains(t, err.Error(), "00006")
	require.Equal(t, 3, fleettest.CountCompleted(t, o.Pool(), fleettest.IDs(tenants), 7))
	fleettest.RequireAppliedOnce(t, tenants, versions(7)...)
	require.False(t, o.TargetPinned())

	// Below 7 every version has a Down: a tenant rolled back from 6 is fine.
	_, err = o.Force(ctx, tenantmigrate.ForceSelection{IDs: []string{tenants[0].ID}}, 6, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, tenants[0].URL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "DROP TABLE "+pgx.Identifier{tenants[0].Schema, "t7"}.Sanitize())
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
	res, err = o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 5, IDs: []string{tenants[0].ID}}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed)
	require.Equal(t, versions(5), fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
}

// TestRollbackFailingDown: version 2's Down fails. A rollback from 3 to 1
// undoes 3 and leaves the tenant FAILED at 2, with the error; re-applying
// 3 later is normal (no drift).
func TestRollbackFailingDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := downMigrations(3, nil, []int{2})
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, o, "fd", 1, 2)
	_, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)

	var failures []error
	res, err := o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, IDs: []string{tenants[0].ID}}, tenantmigrate.RollbackOptions{
		MigrateOptions: tenantmigrate.MigrateOptions{OnProgress: func(_ context.Context, p tenantmigrate.MigrateProgress) {
			if p.Kind == tenantmigrate.ProgressDone && p.Err != nil {
				failures = append(failures, p.Err)
			}
		}},
	})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Failed)
	require.Len(t, failures, 1)
	var merr *tenantmigrate.MigrationError
	require.ErrorAs(t, failures[0], &merr)
	require.Equal(t, int64(2), merr.FailedVersion)
	require.Equal(t, "00002_v2.sql", merr.FailedFile)

	st, err := o.TenantState(ctx, tenants[0].ID)
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Equal(t, int64(2), *st.MigrationsVersion)
	require.Contains(t, st.LastError, "no_such_table")
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
	require.Equal(t, int64(1), o.Target())

	// Back up: 3 is applied again, and a new Orchestrator starts (no drift).
	_, err = o.ClearTarget(ctx)
	require.NoError(t, err)
	res, err = o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed)
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
	newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
}

// TestForce: force sets one tenant, then every tenant above a version, in
// the version table and the control plane, running no SQL.
func TestForce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(5, nil, nil)})
	tenants := addSchemaTenants(t, o, "fo", 1, 4)
	_, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)

	// One tenant to 2: rows 3-5 deleted, the tables stay (no SQL ran).
	res, err := o.Force(ctx, tenantmigrate.ForceSelection{IDs: []string{tenants[0].ID}}, 2, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed)
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
	require.Len(t, tablesOf(t, tenants[:1])[tenants[0].ID], 5)
	require.Equal(t, 1, fleettest.CountCompleted(t, o.Pool(), []string{tenants[0].ID}, 2))

	// Up again to 4 by force: rows 3 and 4 added.
	_, err = o.Force(ctx, tenantmigrate.ForceSelection{IDs: []string{tenants[0].ID}}, 4, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3, 4}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))

	// Every tenant above 3 to 3.
	res, err = o.Force(ctx, tenantmigrate.ForceSelection{AllAbove: true}, 3, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(4), res.Completed)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	require.Equal(t, 4, fleettest.CountCompleted(t, o.Pool(), fleettest.IDs(tenants), 3))

	_, err = o.Force(ctx, tenantmigrate.ForceSelection{AllAbove: true}, 6, tenantmigrate.MigrateOptions{})
	require.ErrorIs(t, err, tenantmigrate.ErrInvalidTarget)
	_, err = o.Force(ctx, tenantmigrate.ForceSelection{AllAbove: true}, -1, tenantmigrate.MigrateOptions{})
	require.ErrorIs(t, err, tenantmigrate.ErrInvalidTarget)
}

// TestTargetPinSeenThroughNotify: a pin set by one instance reaches a
// second one through the control plane's notifications, and so does
// clearing it; bad targets are refused.
func TestTargetPinSeenThroughNotify(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := downMigrations(3, nil, nil)
	a := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	b := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	waitFor(t, 10*time.Second, "listeners", func() bool { return a.Listening() && b.Listening() })
	tn := addTenantAt(t, a, "pin-1", pgtest.NewDatabase(t), "")

	ft, err := a.SetTarget(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, int64(2), ft.Version)
	waitFor(t, 10*time.Second, "b to see the pin", func() bool { return b.Target() == 2 && b.TargetPinned() })

	// b's gate migrates a new tenant up to the pin only.
	require.NoError(t, b.EnsureMigrated(ctx, tn.ID))
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tn.URL, ""))
	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Behind)

	_, err = a.ClearTarget(ctx)
	require.NoError(t, err)
	waitFor(t, 10*time.Second, "b to see the pin cleared", func() bool { return b.Target() == 3 && !b.TargetPinned() })
	require.NoError(t, b.EnsureMigrated(ctx, tn.ID)) // on_request: up to 3 now
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, tn.URL, ""))

	for _, v := range []int64{-1, 4} {
		_, err := a.SetTarget(ctx, v)
		require.ErrorIs(t, err, tenantmigrate.ErrInvalidTarget, "version %d", v)
	}
	for _, sel := range []tenantmigrate.RollbackSelection{{To: -1, All: true}, {To: 4, All: true}, {To: 1}, {To: 1, IDs: []string{"Bad ID"}}} {
		_, err := a.Rollback(ctx, sel, tenantmigrate.RollbackOptions{})
		require.Error(t, err, "%+v", sel)
		require.False(t, strings.Contains(err.Error(), "panic"))
	}
	require.False(t, a.TargetPinned())
}

// TestQueuedRollbackWorkedByTheQueue: POST /admin/rollbacks's call,
// QueueRollback, pins the target and queues a job per tenant; a full_fleet
// instance's workers run them, and RollbackProgress follows them to done,
// with every tenant at the version asked for in its database and in the
// control plane.
func TestQueuedRollbackWorkedByTheQueue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	migs := downMigrations(5, nil, nil)
	cli := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, cli, "qrb", 2, 3)
	server := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: migs, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Rollout: oneWaveNoHalt,
	})
	waitAllLatest(t, server, tenants, 2*time.Minute)

	st, err := cli.QueueRollback(ctx, tenantmigrate.RollbackSelection{To: 3, All: true}, false)
	require.NoError(t, err)
	require.Equal(t, int64(6), st.Total)
	require.Equal(t, int64(3), cli.Target())
	waitFor(t, time.Minute, "the queued rollback done", func() bool {
		p, found, err := cli.RollbackProgress(ctx, st.ID)
		require.NoError(t, err)
		require.True(t, found)
		return p.Done
	})
	p, _, err := cli.RollbackProgress(ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, int64(6), p.Completed, "%+v", p)
	require.Zero(t, p.Failed)
	require.Equal(t, 6, fleettest.CountCompleted(t, cli.Pool(), fleettest.IDs(tenants), 3))
	fleettest.RequireAppliedOnce(t, tenants, versions(3)...)
	for id, tables := range tablesOf(t, tenants) {
		require.Equal(t, []string{"t1", "t2", "t3"}, tables, id)
	}
}
