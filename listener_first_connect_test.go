package tenantmigrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestListenerFirstConnectFailureIsRetried: the control plane refuses
// new connections for a moment just as Start runs (a failover, too many
// clients). Start succeeds (the pool keeps its connections), but the
// listener's first connect fails; once the control plane takes connections
// again, the instance must listen, and hear a pin set by another instance.
func TestListenerFirstConnectFailureIsRetried(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	var logs logBuffer
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations(), Logger: logs.logger()})
	other := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	require.NoError(t, other.Ping(ctx))
	require.NoError(t, o.Ping(ctx))

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

	require.NoError(t, o.Start(ctx))
	waitFor(t, 10*time.Second, "the listener's first connect to be refused", func() bool {
		return strings.Contains(logs.String(), "control-plane listener") && !o.Listening()
	})
	allow()

	_, err = other.SetTarget(ctx, 2)
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "o to listen and hear the pin", func() bool {
		return o.Listening() && o.Target() == 2
	})
}
