package tenantmigrate_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// This file tests the rollbacks that choose their tenants by rollout or by
// label selector.

// TestRollbackRollout: 10 tenants at 4 and 10 at 5 are rolled out to 6;
// rolling back that rollout brings each back where it was (4 or 5, in the
// version table, the tables and the control plane) and pins the fleet at 4,
// the lowest; 3 tenants brought to 6 before the rollout are left alone.
func TestRollbackRollout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o4 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(4, nil, nil)})
	at4 := addSchemaTenants(t, o4, "ro4", 2, 5)
	res, err := o4.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{Concurrency: 4})
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Completed)

	o5 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(5, nil, nil)})
	at5 := addSchemaTenants(t, o5, "ro5", 2, 5)
	res, err = o5.MigrateTenants(ctx, tenantmigrate.Selection{IDs: fleettest.IDs(at5)}, tenantmigrate.MigrateOptions{Concurrency: 4})
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Completed)

	o6 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(6, nil, nil),
		Rollout: tenantmigrate.RolloutConfig{Waves: "100%"}})
	// Brought to 6 before the rollout, one at a time: not the rollout's.
	outside := addSchemaTenants(t, o6, "ro6", 1, 3)
	res, err = o6.MigrateTenants(ctx, tenantmigrate.Selection{IDs: fleettest.IDs(outside)}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Completed)

	res, err = o6.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{Concurrency: 4})
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.NotNil(t, res.Rollout)
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	rolloutID := res.Rollout.ID
	all := append(append(append([]fleettest.SchemaTenant{}, at4...), at5...), outside...)
	require.Equal(t, 23, fleettest.CountCompleted(t, o6.Pool(), fleettest.IDs(all), 6))

	// The history names the rollout on its runs, and only on those.
	runs, _, err := o6.TenantRuns(ctx, at4[0].ID, "", 0)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatInt(rolloutID, 10), runs[0].RolloutID)
	runs, _, err = o6.TenantRuns(ctx, outside[0].ID, "", 0)
	require.NoError(t, err)
	require.Empty(t, runs[0].RolloutID)

	// --to is optional: the lowest version before the rollout.
	sel, err := o6.ResolveRollback(ctx, tenantmigrate.RollbackSelection{To: -1, Rollout: rolloutID})
	require.NoError(t, err)
	require.Equal(t, int64(4), sel.To)
	var planned int
	for rt, err := range o6.RollbackTenants(ctx, sel) {
		require.NoError(t, err)
		require.Equal(t, map[bool]int64{true: 4, false: 5}[rt.ID[:3] == "ro4"], rt.To, rt.ID)
		planned++
	}
	require.Equal(t, 20, planned)

	res, err = o6.Rollback(ctx, tenantmigrate.RollbackSelection{To: -1, Rollout: rolloutID}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.Equal(t, int64(20), res.Completed)

	require.Equal(t, 10, fleettest.CountCompleted(t, o6.Pool(), fleettest.IDs(at4), 4))
	require.Equal(t, 10, fleettest.CountCompleted(t, o6.Pool(), fleettest.IDs(at5), 5))
	require.Equal(t, 3, fleettest.CountCompleted(t, o6.Pool(), fleettest.IDs(outside), 6))
	fleettest.RequireAppliedOnce(t, at4, versions(4)...)
	fleettest.RequireAppliedOnce(t, at5, versions(5)...)
	fleettest.RequireAppliedOnce(t, outside, versions(6)...)
	tables := tablesOf(t, all)
	require.Equal(t, []string{"t1", "t2", "t3", "t4"}, tables[at4[3].ID])
	require.Equal(t, []string{"t1", "t2", "t3", "t4", "t5"}, tables[at5[7].ID])
	require.Equal(t, []string{"t1", "t2", "t3", "t4", "t5", "t6"}, tables[outside[1].ID])
	require.True(t, o6.TargetPinned())
	require.Equal(t, int64(4), o6.Target())

	// Rolling it back again has nothing to undo.
	res, err = o6.Rollback(ctx, tenantmigrate.RollbackSelection{To: -1, Rollout: rolloutID}, tenantmigrate.RollbackOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(0), res.Failed)
	require.Equal(t, 10, fleettest.CountCompleted(t, o6.Pool(), fleettest.IDs(at5), 5))
}

// TestRollbackSelector: only the tenants whose labels match go back.
func TestRollbackSelector(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(3, nil, nil)})
	tenants := addSchemaTenants(t, o, "rs", 1, 6)
	eu, us := tenants[:2], tenants[2:]
	for _, tn := range eu {
		_, err := o.PatchTenant(ctx, tn.ID, tenantmigrate.TenantPatch{Labels: map[string]*string{"region": new("eu")}})
		require.NoError(t, err)
	}
	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(6), res.Completed)

	res, err = o.Rollback(ctx, tenantmigrate.RollbackSelection{To: 1, Selector: "region=eu"}, tenantmigrate.RollbackOptions{KeepTarget: true})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Completed)
	require.Equal(t, 2, fleettest.CountCompleted(t, o.Pool(), fleettest.IDs(eu), 1))
	require.Equal(t, 4, fleettest.CountCompleted(t, o.Pool(), fleettest.IDs(us), 3))
	fleettest.RequireAppliedOnce(t, eu, 1)
	require.False(t, o.TargetPinned())
}

// TestRollbackScopeBadInput: mixed scopes, a bad selector and an unknown
// rollout are refused before anything changes.
func TestRollbackScopeBadInput(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: downMigrations(2, nil, nil)})
	tenants := addSchemaTenants(t, o, "rx", 1, 2)
	_, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)

	for name, sel := range map[string]tenantmigrate.RollbackSelection{
		"selector and all":    {To: 1, All: true, Selector: "a=b"},
		"rollout and tenants": {To: 1, Rollout: 1, IDs: []string{tenants[0].ID}},
		"bad selector":        {To: 1, Selector: "a=b,"},
		"rollout without to":  {To: -1, Rollout: 0, All: true},
		"negative rollout id": {To: 1, Rollout: -3},
	} {
		_, err := o.Rollback(ctx, sel, tenantmigrate.RollbackOptions{})
		require.ErrorIs(t, err, tenantmigrate.ErrInvalid, name)
	}
	_, err = o.Rollback(ctx, tenantmigrate.RollbackSelection{To: -1, Rollout: 999}, tenantmigrate.RollbackOptions{})
	require.ErrorIs(t, err, tenantmigrate.ErrRolloutNotFound)
	require.Equal(t, 2, fleettest.CountCompleted(t, o.Pool(), fleettest.IDs(tenants), 2))
	require.False(t, o.TargetPinned())
}
