package tenantmigrate_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestDeprovisionAfterProvisionServerMoved: new tenants go to another
// provision server (PROVISION_URL changed). Deprovisioning a tenant
// provisioned on the old one looks for its database on the new server,
// finds none, takes it for "already gone", and removes the tenant: 204,
// while its database, data and all, stays on the old server.
func TestDeprovisionAfterProvisionServerMoved(t *testing.T) {
	t.Parallel()
	src := uniqueSource(t, fleetMigrations())
	f := newProvisionFixture(t, src)
	ctx := t.Context()
	_, err := f.o.ProvisionTenant(ctx, "old")
	require.NoError(t, err)

	s2 := pgtest.NewServer(t, nil)
	o2 := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: f.cpURL, Migrations: src,
		Provision: tenantmigrate.ProvisionConfig{URL: s2.URL("postgres"), NameTemplate: f.prefix + "_{id}"},
	})
	derr := o2.DeprovisionTenant(ctx, "old")

	conn, err := pgx.Connect(ctx, f.serverURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var stillThere bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, f.prefix+"_old").Scan(&stillThere))
	if stillThere {
		require.Error(t, derr, "deprovision reported success; the tenant is gone but its database %s_old is still on the old server", f.prefix)
		_, err := o2.TenantState(ctx, "old")
		require.NoError(t, err, "the tenant was removed though its database was not dropped")
	}
}
