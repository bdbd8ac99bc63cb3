package tenantmigrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// deadClaimer is the key of a rollout claimer (a migrate --all) whose lock
// nobody holds: a process that died.
const deadClaimer = 0x746d6364<<32 | 7

// migrateAllBounded runs MigrateTenants over every tenant behind under a
// deadline, so a rollout loop that never ends fails the test (as an
// interrupted result) instead of hanging it.
func migrateAllBounded(t *testing.T, o *tenantmigrate.Orchestrator) (tenantmigrate.MigrateResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.False(t, res.Interrupted, "MigrateTenants did not end: the rollout loop waited for tenants nobody works on (%+v, %v)", res, err)
	return res, err
}

// TestMigrateTenantsRolloutTakesOverAbandoned: migrate --all ends when the
// running rollout it joins waits on tenants nothing will finish: QUEUED by
// a migrate --all that died, one of them with a job left in the queue by a
// server since stopped (nothing works it), and one handed to the queue
// whose job is "running" on an instance that was killed (nothing rescues
// it without an instance working the queue). Before, Step said RUNNING,
// Claim returned nothing and the process polled forever (TestModel, seed
// 1796136615702938700: "migrating 2 tenants", then nothing).
func TestMigrateTenantsRolloutTakesOverAbandoned(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "aband", 4)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(fixedV2), Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	r, created, err := o.StartRollout(ctx, "test")
	require.NoError(t, err)
	require.True(t, created)
	pool := o.Pool()
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'QUEUED', claimed_at = now() - interval '1 minute',
		claimed_by = CASE WHEN tenant_id = $3 THEN NULL ELSE $2::bigint END
		WHERE rollout_id = $1`, r.ID, int64(deadClaimer), tenants[1].ID)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.instances (id, host, pid, heartbeat_at, timeout)
		VALUES ('killed', 'elsewhere', 1, now() - interval '1 minute', interval '15 seconds')`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.river_job (args, kind, max_attempts, state, attempt, attempted_at, attempted_by)
		VALUES (jsonb_build_object('tenant_id', $1::text), 'migrate_tenant', 3, 'available', 0, NULL, NULL),
			(jsonb_build_object('tenant_id', $2::text), 'migrate_tenant', 3, 'running', 1, now() - interval '1 minute', ARRAY['killed'])`,
		tenants[0].ID, tenants[1].ID)
	require.NoError(t, err)

	res, err := migrateAllBounded(t, o)
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.EqualValues(t, 4, res.Completed)
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	vs, _ := rolloutVersions(t, o, tenants)
	for _, tn := range tenants {
		require.EqualValues(t, 2, vs[tn.ID], tn.ID)
	}
}

// TestMigrateTenantsRolloutGivesUpUnrecorded: a tenant whose runs here end
// without their result reaching the rollout (its result cannot be
// recorded) is run once more, then given up on with an error naming it,
// instead of the wave waiting for it, QUEUED by this very process, for good.
func TestMigrateTenantsRolloutGivesUpUnrecorded(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "unrec", 3)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(fixedV2), Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	bad := tenants[2].ID
	// The control plane refuses to record the tenant's success.
	_, err := o.Pool().Exec(ctx, `CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused'; END $$;
		CREATE TRIGGER refuse BEFORE UPDATE ON tenantmigrate.tenants FOR EACH ROW
			WHEN (NEW.id = '`+bad+`' AND NEW.migrations_version = 2) EXECUTE FUNCTION public.refuse()`)
	require.NoError(t, err)

	res, err := migrateAllBounded(t, o)
	require.ErrorContains(t, err, "waits for tenants whose runs here ended twice without their result reaching the rollout")
	require.ErrorContains(t, err, bad)
	require.EqualValues(t, 3, res.Completed, "the other tenants (rolloutFleet registers 4)")
	require.EqualValues(t, 2, res.Failed, "the tenant's two runs")
	require.Equal(t, tenantmigrate.RolloutRunning, res.Rollout.State)
}

// TestMigrateTenantsRolloutAddsLate: migrate --all joining a running
// rollout runs the tenants behind that it lacks (registered since it began)
// in it, as a fleet scan would add them, rather than ending with the
// rollout and leaving them behind.
func TestMigrateTenantsRolloutAddsLate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "late", 2)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(fixedV2), Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	r, created, err := o.StartRollout(ctx, "test")
	require.NoError(t, err)
	require.True(t, created)
	late := addSchemaTenants(t, o, "late-new", 1, 1)

	res, err := migrateAllBounded(t, o)
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.Equal(t, r.ID, res.Rollout.ID)
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	require.EqualValues(t, r.Total+1, res.Rollout.Total, "the late tenant joined the rollout")
	vs, _ := rolloutVersions(t, o, append(tenants, late...))
	for _, tn := range append(tenants, late...) {
		require.EqualValues(t, 2, vs[tn.ID], tn.ID)
	}
}

// endRolloutWhileAddingLate runs add (a fleet scan, a migrate --all) while
// the running rollout r is locked, and, once add waits for the lock to add
// the tenants behind that r lacks, ends r in state end and lets add go on:
// the rollout ended between add's read of it and its adding, as when its
// last tenant finishes then (COMPLETED).
func endRolloutWhileAddingLate(t *testing.T, o *tenantmigrate.Orchestrator, r *tenantmigrate.Rollout, end tenantmigrate.RolloutState, add func()) {
	t.Helper()
	ctx := t.Context()
	holder, err := o.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollouts WHERE id = $1 FOR UPDATE`, r.ID)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		add()
	}()
	waitFor(t, 30*time.Second, "the late tenants' adding to wait for the rollout", func() bool {
		var n int
		require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%rollouts%FOR UPDATE%'`).Scan(&n))
		return n > 0
	})
	_, err = holder.Exec(ctx, `UPDATE tenantmigrate.rollouts SET state = $2, finished_at = now() WHERE id = $1`, r.ID, string(end))
	require.NoError(t, err)
	require.NoError(t, holder.Commit(ctx))
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the adding did not end")
	}
}

// TestScheduleFleetRolloutEndsMeanwhile: a fleet scan that finds the rollout
// running, and the rollout complete before it adds the tenant registered
// since, queues that tenant as after a completed rollout. Before, it added
// nothing to the ended rollout and queued nothing: "scheduled 0", and the
// tenant stayed behind (e2e TestServeUnreachableTenantFixedThroughAdminAPI
// once waited a minute for a job that never came).
func TestScheduleFleetRolloutEndsMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	o, r, _, lates := lateRolloutFleet(t, "ends")
	late := lates[0]

	var (
		n   int
		err error
	)
	endRolloutWhileAddingLate(t, o, r, tenantmigrate.RolloutCompleted, func() {
		n, err = o.ScheduleFleet(ctx, false)
	})
	require.NoError(t, err)
	require.Equal(t, 3, n, "every tenant behind queued, the late one too")
	var jobs int
	require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1`, late.ID).Scan(&jobs))
	require.Equal(t, 1, jobs, "the late tenant's job")
}

// TestMigrateTenantsRolloutEndsMeanwhile: the same for migrate --all, which
// then migrates the tenants behind itself instead of following the ended
// rollout and leaving the late one behind.
func TestMigrateTenantsRolloutEndsMeanwhile(t *testing.T) {
	t.Parallel()
	o, r, tenants, late := lateRolloutFleet(t, "endsm")
	res, err := migrateAllWhileEnding(t, o, r, tenantmigrate.RolloutCompleted)
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.EqualValues(t, 3, res.Completed, "every tenant behind, the late one too")
	vs, _ := rolloutVersions(t, o, append(tenants, late...))
	for _, tn := range append(tenants, late...) {
		require.EqualValues(t, 2, vs[tn.ID], tn.ID)
	}
}

// TestMigrateTenantsRolloutSupersededMeanwhile: a rollout superseded by a
// newer release in that window is followed, and ends the run: this older
// migrate --all does not migrate the fleet outside any rollout (the
// superseded rollout may have been halted on a broken version).
func TestMigrateTenantsRolloutSupersededMeanwhile(t *testing.T) {
	t.Parallel()
	o, r, tenants, late := lateRolloutFleet(t, "supm")
	res, err := migrateAllWhileEnding(t, o, r, tenantmigrate.RolloutSuperseded)
	require.NoError(t, err)
	require.False(t, res.Interrupted, "%+v", res)
	require.Zero(t, res.Completed, "%+v", res)
	vs, _ := rolloutVersions(t, o, append(tenants, late...))
	for _, tn := range tenants {
		require.EqualValues(t, 1, vs[tn.ID], tn.ID)
	}
}

// lateRolloutFleet registers 2 tenants at version 1, starts the rollout to
// version 2 and registers one more tenant, which the rollout lacks.
func lateRolloutFleet(t *testing.T, prefix string) (o *tenantmigrate.Orchestrator, r *tenantmigrate.Rollout, tenants, late []fleettest.SchemaTenant) {
	t.Helper()
	cp := pgtest.NewDatabase(t)
	tenants = rolloutFleet(t, cp, prefix, 2)
	o = newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(fixedV2), Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	r, created, err := o.StartRollout(t.Context(), "test")
	require.NoError(t, err)
	require.True(t, created)
	return o, r, tenants, addSchemaTenants(t, o, prefix+"-new", 1, 1)
}

// migrateAllWhileEnding runs migrate --all while the rollout ends in
// state end (endRolloutWhileAddingLate).
func migrateAllWhileEnding(t *testing.T, o *tenantmigrate.Orchestrator, r *tenantmigrate.Rollout, end tenantmigrate.RolloutState) (res tenantmigrate.MigrateResult, err error) {
	t.Helper()
	endRolloutWhileAddingLate(t, o, r, end, func() {
		runCtx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		res, err = o.MigrateTenants(runCtx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	})
	return res, err
}
