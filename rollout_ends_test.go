package tenantmigrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
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
