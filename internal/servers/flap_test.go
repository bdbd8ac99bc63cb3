package servers_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// TestReachableBetweenFailureAndDown: the third failure of a server
// is counted (ReportFailure's first statement), then, before its second
// statement marks the server DOWN, a run of another process reports the
// server reachable (failures cleared). The server answered last: it must
// stay UP, not be DOWN until the next probe.
func TestReachableBetweenFailureAndDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	a := newManager(t, servers.Config{Pool: pool})
	b := newManager(t, servers.Config{Pool: pool})
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for range 2 {
		down, err := a.ReportFailure(ctx, "db1:5432", refused)
		require.NoError(t, err)
		require.False(t, down)
	}
	// A gate only the "mark DOWN" statement passes: a statement trigger
	// that reads a table the test holds locked.
	_, err := pool.Exec(ctx, `
		CREATE TABLE tenantmigrate.audit_gate ();
		CREATE FUNCTION tenantmigrate.audit_gate_fn() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF current_query() LIKE '%SET state = ''DOWN''%' THEN
				PERFORM 1 FROM tenantmigrate.audit_gate;
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER audit_gate BEFORE UPDATE ON tenantmigrate.servers
			FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.audit_gate_fn();`)
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, err = tx.Exec(ctx, `LOCK TABLE tenantmigrate.audit_gate IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := a.ReportFailure(context.WithoutCancel(ctx), "db1:5432", refused)
		done <- err
	}()
	fleettest.Poll(t, 5*time.Millisecond, 10*time.Second, "the DOWN write to wait", func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%SET state = ''DOWN''%'`).Scan(&n))
		return n == 1
	})
	require.NoError(t, b.ReportReachable(ctx, "db1:5432")) // the server answered
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-done)

	require.Equal(t, tenanttype.ServerUp, listByName(t, b)["db1:5432"].State,
		"the server answered after its third failure was counted")
}
