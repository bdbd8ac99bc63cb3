package tenantmigrate_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestProvisionUnderPin: with the fleet target pinned below the latest
// version (a rollback), a provision must not register a tenant holding the
// versions the pin keeps off the fleet.
func TestProvisionUnderPin(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, uniqueSource(t, fleetMigrations())) // versions 1-4
	ctx := t.Context()
	_, err := f.o.SetTarget(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, int64(2), f.o.Target())

	tn, err := f.o.ProvisionTenant(ctx, "pinned")
	if err == nil {
		require.LessOrEqual(t, *tn.MigrationsVersion, f.o.Target(),
			"provisioned at %d while the fleet target is pinned at %d", *tn.MigrationsVersion, f.o.Target())
	}
	require.ErrorIs(t, err, tenantmigrate.ErrProvisionTargetPinned)
	require.Empty(t, f.serverDatabases(f.prefix+"_%"))
}

// TestProvisionPinnedMeanwhile: a pin set after the provision's first
// checks, before its registration (a Rollback started meanwhile), is seen.
func TestProvisionPinnedMeanwhile(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, uniqueSource(t, fleetMigrations()))
	ctx := t.Context()
	// Build the template first, so the provision below is short.
	_, err := f.o.ProvisionTenant(ctx, "warm")
	require.NoError(t, err)

	lockConn, err := pgx.Connect(ctx, f.cpURL)
	require.NoError(t, err)
	defer lockConn.Close(context.Background())
	lockTx, err := lockConn.Begin(ctx)
	require.NoError(t, err)
	_, err = lockTx.Exec(ctx, `LOCK TABLE tenantmigrate.tenants IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	type result struct {
		tn  tenantmigrate.Tenant
		err error
	}
	done := make(chan result, 1)
	go func() {
		tn, err := f.o.ProvisionTenant(context.Background(), "late")
		done <- result{tn, err}
	}()
	watch, err := pgx.Connect(ctx, f.cpURL)
	require.NoError(t, err)
	defer watch.Close(context.Background())
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		require.NoError(t, watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%tenantmigrate.tenants%' AND pid <> pg_backend_pid()`).Scan(&n))
		if n > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the provision never blocked on the tenants table")
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	// Another instance pins the target (a rollback starts).
	_, err = f.o.Pool().Exec(ctx, `UPDATE tenantmigrate.fleet_target SET version = 2, generation = generation + 1, updated_at = now()`)
	require.NoError(t, err)
	require.NoError(t, lockTx.Commit(ctx))

	r := <-done
	if r.err == nil {
		require.LessOrEqual(t, *r.tn.MigrationsVersion, int64(2), "registered at %d after the target was pinned at 2", *r.tn.MigrationsVersion)
	}
	require.ErrorIs(t, r.err, tenantmigrate.ErrProvisionTargetPinned)
	require.Empty(t, f.serverDatabases(f.prefix+"_late"))
}

// TestProvisionURLWithDbnameParam: a provision URL naming its database
// in a dbname query parameter (which pgx, like libpq, lets override the
// path). withDatabase replaces only the path: the template is built by
// migrating the maintenance database, the clones are empty, and every
// tenant's URL points at the maintenance database.
func TestProvisionURLWithDbnameParam(t *testing.T) {
	t.Parallel()
	maint := pgtest.NewDatabase(t)
	u, err := url.Parse(maint)
	require.NoError(t, err)
	q := u.Query()
	q.Set("dbname", strings.TrimPrefix(u.Path, "/"))
	u.RawQuery = q.Encode()
	src := uniqueSource(t, fleetMigrations())
	f := &provisionFixture{t: t, serverURL: pgtest.ServerURL(t), cpURL: fleettest.NewControlPlane(t, ""), prefix: "p" + randomHex(4), logs: &logBuffer{}}
	t.Cleanup(f.dropDatabases)
	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: f.cpURL, Migrations: src, Logger: f.logs.logger(),
		Provision: tenantmigrate.ProvisionConfig{URL: u.String(), NameTemplate: f.prefix + "_{id}"},
	})
	f.templates = append(f.templates, tenantmigrate.ProvisionTemplateName(o))
	tn, err := o.ProvisionTenant(t.Context(), "x")
	if err != nil {
		return // refused: fine
	}
	require.Equal(t, o.Latest(), *tn.MigrationsVersion)
	su, err := url.Parse(f.serverURL)
	require.NoError(t, err)
	su.Path = "/" + f.prefix + "_x"
	conn, err := pgx.Connect(t.Context(), su.String())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var hasVersionTable bool
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT to_regclass('public.goose_db_version') IS NOT NULL`).Scan(&hasVersionTable))
	require.True(t, hasVersionTable, "tenant x recorded COMPLETED at %d, but its database %s_x has no version table", o.Latest(), f.prefix)
}
