package tenantmigrate_test

import (
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestLostChecksumIsNotOutOfOrder: a version applied to every tenant whose
// checksum could not be recorded (the control plane failed that one write:
// down for a moment, or the process killed between the tenant's commit and
// the write) must not make the next release's start refuse it as "never
// applied to any tenant". Nothing records a checksum later (a rerun of the
// tenant applies nothing, so it records nothing), so before the fix every
// start of such a release was refused, and with AllowMissing every start
// marked the whole fleet FAILED. Found while writing TestModel (e2e), whose
// prediction of refusals reads what the tenants hold where the start reads
// the checksums; reproduced here with the one write refused.
func TestLostChecksumIsNotOutOfOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	v1 := []byte("-- +goose Up\nCREATE TABLE accounts (id bigserial PRIMARY KEY);\n")
	v2 := []byte("-- +goose Up\nCREATE TABLE plans (id bigserial PRIMARY KEY);\n")
	v3 := []byte("-- +goose Up\nCREATE TABLE invoices (id bigserial PRIMARY KEY);\n")
	release1 := fstest.MapFS{"00001_accounts.sql": {Data: v1}}
	release2 := fstest.MapFS{"00001_accounts.sql": {Data: v1}, "00002_plans.sql": {Data: v2}}
	release3 := fstest.MapFS{"00001_accounts.sql": {Data: v1}, "00002_plans.sql": {Data: v2}, "00003_invoices.sql": {Data: v3}}

	cp := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, cp)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	// Release 1 everywhere, its checksum recorded.
	o1 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: release1})
	tenants := addSchemaTenants(t, o1, "lost", 1, 2)
	for _, tn := range tenants {
		_, err := o1.MigrateTenant(ctx, tn.ID)
		require.NoError(t, err)
	}
	o1.Close()

	// Release 2 everywhere, while the control plane refuses the checksum
	// write (the run succeeds: that failure is only logged).
	_, err = pool.Exec(ctx, `
		CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'control plane unavailable' USING ERRCODE = '57P01'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON tenantmigrate.migration_checksums
			FOR EACH ROW EXECUTE FUNCTION public.refuse();`)
	require.NoError(t, err)
	o2 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: release2})
	for _, tn := range tenants {
		_, err := o2.MigrateTenant(ctx, tn.ID)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, "DROP TRIGGER refuse ON tenantmigrate.migration_checksums")
	require.NoError(t, err)
	for _, tn := range tenants {
		_, err := o2.MigrateTenant(ctx, tn.ID) // nothing pending: nothing recorded
		require.NoError(t, err)
	}
	o2.Close()
	for _, tn := range tenants {
		require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tn.URL, tn.Schema))
	}

	// Release 3 applied to one tenant: its checksum is recorded, above 2.
	o3 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: release3})
	_, err = o3.MigrateTenant(ctx, tenants[0].ID)
	require.NoError(t, err)
	o3.Close()

	// The next start of release 3 must not call version 2 out of order:
	// every tenant has it.
	o4, err := tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cp, EncryptionKey: bgKey, Migrations: release3})
	require.NoError(t, err, "version 2 is applied to every tenant")
	o4.Close()
	var versions []int64
	for _, c := range recordedChecksums(t, cp) {
		versions = append(versions, c.Version)
	}
	require.Equal(t, []int64{1, 2, 3}, versions, "the start recorded the lost checksum")
}
