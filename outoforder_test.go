package tenantmigrate_test

import (
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestOutOfOrderMigrationRefusedOrApplied: a release adds version 2 to a
// fleet at 3 (branches merged out of order). Without AllowMissing, New
// refuses, naming the file, and records nothing; with it, the tenants are
// no longer counted up to date, and a full_fleet instance applies version 2
// to each, once, ending COMPLETED at 3.
func TestOutOfOrderMigrationRefusedOrApplied(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := fstest.MapFS{
		"00001_accounts.sql": {Data: []byte("-- +goose Up\nCREATE TABLE accounts (id bigserial PRIMARY KEY);\n")},
		"00003_invoices.sql": {Data: []byte("-- +goose Up\nCREATE TABLE invoices (id bigserial PRIMARY KEY);\n")},
	}
	merged := fstest.MapFS{
		"00002_plans.sql": {Data: []byte("-- +goose Up\nCREATE TABLE plans (id bigserial PRIMARY KEY);\n")},
	}
	for k, v := range first {
		merged[k] = v
	}
	cp := pgtest.NewDatabase(t)
	o1 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: first})
	tenants := addSchemaTenants(t, o1, "ooo", 1, 3)
	for _, tn := range tenants {
		_, err := o1.MigrateTenant(ctx, tn.ID)
		require.NoError(t, err)
	}
	o1.Close()

	_, err := tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cp, EncryptionKey: bgKey, Migrations: merged})
	require.ErrorIs(t, err, tenantmigrate.ErrOutOfOrderMigrations)
	require.ErrorContains(t, err, "00002_plans.sql never applied to any tenant, but tenants are at versions up to 3")
	for _, c := range recordedChecksums(t, cp) {
		require.NotEqual(t, int64(2), c.Version, "the refused start recorded version 2 as applied")
	}

	o2 := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: merged, AllowMissing: true,
		Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true})
	for _, tn := range tenants {
		// Not up to date until version 2 is applied.
		st, err := o2.TenantState(ctx, tn.ID)
		require.NoError(t, err)
		if o2.IsLatest(st) {
			require.Equal(t, []int64{1, 3, 2}, fleettest.AppliedVersions(t, tn.URL, tn.Schema), "tenant %s counted up to date", tn.ID)
		}
	}
	waitAllLatest(t, o2, tenants, 60*time.Second)
	for _, tn := range tenants {
		require.Equal(t, []int64{1, 3, 2}, fleettest.AppliedVersions(t, tn.URL, tn.Schema), "version 2 applied once, after 3")
	}

	// Version 2 is recorded now: the next start neither refuses nor marks.
	o3 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: merged})
	for _, tn := range tenants {
		st, err := o3.TenantState(ctx, tn.ID)
		require.NoError(t, err)
		require.True(t, o3.IsLatest(st))
	}
}
