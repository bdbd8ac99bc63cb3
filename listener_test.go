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

// TestGateDistrustsCacheWhileListenerDown: the listener's backend is
// terminated and held off (no new connection to the control plane's
// database is allowed, while the pool keeps the ones it has). A tenant
// removed and registered again on an empty database meanwhile is not passed
// through from the cache: it is read from the control plane and migrated.
// Once the listener is back, up-to-date tenants are cached again.
func TestGateDistrustsCacheWhileListenerDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	o := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	dbA, dbB := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	addTenantAt(t, o, "acme", dbA, "")
	waitFor(t, 30*time.Second, "the listener", o.Listening)
	waitFor(t, 30*time.Second, "acme cached as up to date", func() bool {
		require.NoError(t, o.EnsureMigrated(ctx, "acme"))
		return o.CachedUpToDate("acme")
	})

	// Another instance (an operator's CLI), connected before the control
	// plane stops taking connections: its changes reach o only through
	// NOTIFY.
	other := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	require.NoError(t, other.Ping(ctx))

	admin, err := pgx.Connect(ctx, pgtest.ServerURL(t))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	var cpName string
	require.NoError(t, o.Pool().QueryRow(ctx, `SELECT current_database()`).Scan(&cpName))
	ident := pgx.Identifier{cpName}.Sanitize()
	_, err = admin.Exec(ctx, "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS false")
	require.NoError(t, err)
	allow := func() { _, _ = admin.Exec(context.Background(), "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS true") }
	defer allow()
	_, err = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND application_name = 'tenantmigrate-listener'`, cpName)
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "the listener to be lost", func() bool { return !o.Listening() })
	require.False(t, o.CachedUpToDate("acme"), "nothing is served from the cache while the listener is down")

	require.NoError(t, other.DeleteTenant(ctx, "acme"))
	addTenantAt(t, other, "acme", dbB, "")
	require.NoError(t, o.EnsureMigrated(ctx, "acme"))
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, dbB, ""), "B was migrated before it was served")

	allow()
	waitFor(t, 60*time.Second, "the listener back and acme cached again", func() bool {
		require.NoError(t, o.EnsureMigrated(ctx, "acme"))
		return o.Listening() && o.CachedUpToDate("acme")
	})
}
