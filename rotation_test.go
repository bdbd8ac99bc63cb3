package tenantmigrate_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

const (
	rotationKeyA = "rotation-key-A-0123456789"
	rotationKeyB = "rotation-key-B-0123456789"
)

// TestEncryptionKeyRotation: a fleet written under key A moves to key B.
// With B and previous A every tenant is read and migrated, new ones are
// written under B, and Rekey moves the rest; then B alone runs everything,
// and A alone fails only the tenants it cannot decrypt, naming them.
func TestEncryptionKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	db := pgtest.NewDatabase(t)
	orch := func(key string, previous ...string) *tenantmigrate.Orchestrator {
		return newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: fleetMigrations(),
			EncryptionKey: key, PreviousEncryptionKeys: previous})
	}

	underA := orch(rotationKeyA)
	for _, id := range []string{"t1", "t2", "t3"} {
		addTenantAt(t, underA, id, db, id)
	}
	_, err := underA.MigrateTenant(ctx, "t1")
	require.NoError(t, err)

	// B with previous A reads the tenants under A, and writes under B.
	rotated := orch(rotationKeyB, rotationKeyA)
	require.NoError(t, rotated.EnsureMigrated(ctx, "t2"))
	_, err = rotated.MigrateTenant(ctx, "t3")
	require.NoError(t, err)
	addTenantAt(t, rotated, "t4", db, "t4")
	res, err := rotated.Rekey(ctx, tenantmigrate.RekeyOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.RekeyResult{Rekeyed: 3, AlreadyCurrent: 1}, res)
	res, err = rotated.Rekey(ctx, tenantmigrate.RekeyOptions{})
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.RekeyResult{Rekeyed: 3, AlreadyCurrent: 1}, res)

	// B alone: everything works.
	onlyB := orch(rotationKeyB)
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		v, err := onlyB.MigrateTenant(ctx, id)
		require.NoError(t, err, id)
		require.EqualValues(t, 3, v)
		got, err := onlyB.GetTenant(ctx, id)
		require.NoError(t, err)
		require.Equal(t, db, got.DatabaseURL)
	}

	// A alone: the tenants under B fail, each naming itself; one under A
	// still works, and an up-to-date tenant is served without its URL.
	onlyA := orch(rotationKeyA)
	addTenantAt(t, onlyA, "t5", db, "t5")
	_, err = onlyA.MigrateTenant(ctx, "t5")
	require.NoError(t, err)
	_, err = onlyA.MigrateTenant(ctx, "t1")
	require.ErrorIs(t, err, tenantmigrate.ErrDecrypt)
	require.ErrorContains(t, err, "tenant t1")
	require.NotContains(t, err.Error(), rotationKeyA)
	_, err = onlyA.GetTenant(ctx, "t2")
	require.ErrorIs(t, err, tenantmigrate.ErrDecrypt)
	require.ErrorContains(t, err, "t2")
	require.NoError(t, onlyA.EnsureMigrated(ctx, "t3"), "the gate reads no URL for a tenant at the latest version")
	res, err = onlyA.Rekey(ctx, tenantmigrate.RekeyOptions{})
	require.NoError(t, err)
	require.Equal(t, 0, res.Rekeyed)
	require.Equal(t, 1, res.AlreadyCurrent)
	var failed []string
	for _, f := range res.Failed {
		require.ErrorIs(t, f.Err, tenantmigrate.ErrDecrypt)
		failed = append(failed, f.TenantID)
	}
	require.Equal(t, []string{"t1", "t2", "t3", "t4"}, failed)

	// An up-to-date tenant keeps its state; one that needed the run is
	// recorded failed, saying why; a list shows every tenant, the
	// undecryptable ones without their URL, and verify names them.
	st, err := onlyA.TenantState(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus)
	addTenantAt(t, onlyB, "t6", db, "t6")
	_, err = onlyA.MigrateTenant(ctx, "t6")
	require.ErrorIs(t, err, tenantmigrate.ErrDecrypt)
	st, err = onlyA.TenantState(ctx, "t6")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Contains(t, st.LastError, "tenant t6: cannot decrypt tenant database URL")
	listed, next, err := onlyA.ListTenants(ctx, 0, 100)
	require.NoError(t, err)
	require.Zero(t, next)
	undecryptable := map[string]bool{}
	for _, lt := range listed {
		if lt.DecryptError != "" {
			require.Empty(t, lt.DatabaseURL)
			require.Equal(t, "<cannot decrypt>", lt.RedactedURL())
			undecryptable[lt.ID] = true
			v := onlyA.VerifyTenant(ctx, lt)
			require.ErrorIs(t, v.Err, tenantmigrate.ErrDecrypt)
			require.ErrorContains(t, v.Err, "tenant "+lt.ID)
		} else {
			require.Equal(t, "t5", lt.ID)
		}
	}
	require.Equal(t, map[string]bool{"t1": true, "t2": true, "t3": true, "t4": true, "t6": true}, undecryptable)
}
