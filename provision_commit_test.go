package tenantmigrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestProvisionCommitLost: the registration's COMMIT is durable but its
// reply is lost (the connection dies while the commit waits on a synchronous
// standby: "the transaction has already committed locally"). ProvisionTenant
// takes the error for a failed registration and drops the database: the
// control plane keeps a tenant COMPLETED at the latest version whose
// database no longer exists.
func TestProvisionCommitLost(t *testing.T) {
	t.Parallel()
	s := pgtest.NewServer(t, nil)
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, s.URL("postgres"))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	// Every session commits locally, except a transaction that asks for the
	// (missing) synchronous standby.
	for _, sql := range []string{
		`ALTER ROLE postgres SET synchronous_commit = local`,
		`ALTER SYSTEM SET synchronous_standby_names = 'ghost'`,
		`SELECT pg_reload_conf()`,
		`CREATE DATABASE cp`,
	} {
		_, err := admin.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	cpURL := s.URL("cp")
	pool, err := pgxpool.New(ctx, cpURL)
	require.NoError(t, err)
	defer pool.Close()
	require.NoError(t, controlplane.Migrate(ctx, pool))
	_, err = pool.Exec(ctx, `CREATE FUNCTION wait_standby() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM set_config('synchronous_commit', 'on', true); RETURN NEW; END $$;
		CREATE TRIGGER wait_standby BEFORE INSERT ON tenantmigrate.tenants FOR EACH ROW WHEN (NEW.id = 'amb') EXECUTE FUNCTION wait_standby()`)
	require.NoError(t, err)

	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cpURL,
		Migrations:  uniqueSource(t, fleetMigrations()),
		Provision:   tenantmigrate.ProvisionConfig{URL: s.URL("postgres")},
	})
	done := make(chan error, 1)
	go func() {
		_, err := o.ProvisionTenant(context.Background(), "amb")
		done <- err
	}()
	// The commit waits for the standby: end its session, as a network
	// failure or a failover would.
	for deadline := time.Now().Add(60 * time.Second); ; {
		var n int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`).Scan(&n))
		if n > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the registration never waited for the standby")
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	provErr := <-done
	t.Logf("ProvisionTenant: %v", provErr)

	// The control plane's word and the server's must agree.
	var registered bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenantmigrate.tenants WHERE id = 'amb')`).Scan(&registered))
	var exists bool
	require.NoError(t, admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tenant_amb')`).Scan(&exists))
	require.Equal(t, registered, exists, "tenant registered: %v, its database exists: %v (ProvisionTenant: %v)", registered, exists, provErr)
	if registered {
		require.NoError(t, provErr)
	}
}
