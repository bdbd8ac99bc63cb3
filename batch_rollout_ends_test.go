package tenantmigrate_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestMigrateAllRolloutAbortedMidRun: a rollout aborted by another
// operator while migrate --all runs it ends the run with OK (exit 0) and
// tenants the run selected at the start left behind, although a migrate
// --all started after the abort migrates them all.
func TestMigrateAllRolloutAbortedMidRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "abrt", 4)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(fixedV2), Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	r, created, err := o.StartRollout(ctx, "test")
	require.NoError(t, err)
	require.True(t, created)
	var aborted atomic.Bool
	runCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res, err := o.MigrateTenants(runCtx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{
		Concurrency: 1,
		OnProgress: func(_ context.Context, p tenantmigrate.MigrateProgress) {
			if p.Kind == tenantmigrate.ProgressDone && aborted.CompareAndSwap(false, true) {
				_, err := o.AbortRollout(context.WithoutCancel(ctx), r.ID)
				require.NoError(t, err)
			}
		},
	})
	require.NoError(t, err)
	vs, _ := rolloutVersions(t, o, tenants)
	behind := 0
	for _, tn := range tenants {
		if vs[tn.ID] != 2 {
			behind++
		}
	}
	t.Logf("result %+v, tenants behind after the run: %d", res, behind)
	require.False(t, res.OK() && behind > 0, "migrate --all reports OK (exit 0) with %d of its tenants behind", behind)
}

// TestMigrateAllIncludeStaleSkipsRolloutFailures: a tenant that failed
// in the running rollout (FAILED_STALE, the wave not halted) is selected by
// migrate --all --include-stale once its cause is fixed, but the run joins
// the rollout, which holds the tenant as FAILED, never runs it, and reports
// OK (exit 0) with the tenant still FAILED_STALE at version 1.
func TestMigrateAllIncludeStaleSkipsRolloutFailures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "stl", 4)
	bad, held := tenants[0], tenants[3]
	fleettest.ForEachTenant(t, []fleettest.SchemaTenant{bad}, func(tn fleettest.SchemaTenant, conn *pgx.Conn) {
		_, err := conn.Exec(ctx, `INSERT INTO `+tn.Schema+`.accounts (name) VALUES ('bad')`)
		require.NoError(t, err)
	})
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(dataV2), Rollout: oneWaveNoHalt})
	r, created, err := o.StartRollout(ctx, "test")
	require.NoError(t, err)
	require.True(t, created)

	// Another migrate --all (a live claimer) is still running one tenant.
	const liveClaimer = 0x746d6364<<32 | 9
	conn, err := o.Pool().Acquire(ctx)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(liveClaimer))
	require.NoError(t, err)
	_, err = o.Pool().Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'QUEUED', claimed_at = now(), claimed_by = $3
		WHERE rollout_id = $1 AND tenant_id = $2`, r.ID, held.ID, int64(liveClaimer))
	require.NoError(t, err)

	// Run 1: the bad tenant fails in the rollout; the wave waits for the
	// held one, so the run is stopped once the other three are done.
	runCtx, cancel := context.WithCancel(ctx)
	var done atomic.Int64
	res, err := o.MigrateTenants(runCtx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{
		OnProgress: func(_ context.Context, p tenantmigrate.MigrateProgress) {
			if p.Kind == tenantmigrate.ProgressDone && done.Add(1) == 3 {
				cancel()
			}
		},
	})
	cancel()
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Failed, "%+v", res)
	_, sts := rolloutVersions(t, o, tenants)
	require.Equal(t, tenantmigrate.StatusFailedStale, sts[bad.ID])

	// The operator fixes the data; the other process finishes (its lock goes).
	fleettest.ForEachTenant(t, []fleettest.SchemaTenant{bad}, func(tn fleettest.SchemaTenant, conn *pgx.Conn) {
		_, err := conn.Exec(ctx, `DELETE FROM `+tn.Schema+`.accounts WHERE name = 'bad'`)
		require.NoError(t, err)
	})
	_, err = conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(liveClaimer))
	require.NoError(t, err)
	conn.Release()

	sel := tenantmigrate.Selection{AllBehind: true, IncludeStale: true}
	require.Contains(t, collectSelection(t, o, sel), bad.ID, "the stale tenant is selected (counted in 'migrating N tenants')")
	runCtx2, cancel2 := context.WithTimeout(ctx, 60*time.Second)
	defer cancel2()
	res, err = o.MigrateTenants(runCtx2, sel, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	vs, sts := rolloutVersions(t, o, tenants)
	t.Logf("result %+v; bad tenant: version %d %s", res, vs[bad.ID], sts[bad.ID])
	require.False(t, res.OK() && vs[bad.ID] != 2,
		"migrate --all --include-stale reports OK (exit 0) but the selected stale tenant is %s at version %d", sts[bad.ID], vs[bad.ID])
}

// TestMigrateTenantsNegativeConcurrency: a negative Concurrency starts
// no worker, so the selection blocks on its first tenant until ctx ends.
func TestMigrateTenantsNegativeConcurrency(t *testing.T) {
	t.Parallel()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: fleetMigrations()})
	addSchemaTenants(t, o, "negc", 1, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{Concurrency: -1})
	t.Logf("after %s: %+v, %v", time.Since(start).Round(time.Millisecond), res, err)
	require.Error(t, err, "a negative Concurrency must be refused, not hang until ctx ends (interrupted=%v)", res.Interrupted)
	require.ErrorIs(t, err, tenantmigrate.ErrInvalidConfig)
}
