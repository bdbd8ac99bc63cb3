package servers_test

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// TestFailuresKeepServerIDs: counting connection failures of a server
// that has its row (every failing run, every failed probe of a DOWN server)
// spends no server id; with the bounded id range spent, failures are still
// counted.
func TestFailuresKeepServerIDs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	m := newManager(t, servers.Config{Pool: pool})
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for range 10 {
		_, err := m.ReportFailure(ctx, "db1:5432", refused)
		require.NoError(t, err)
	}
	_, err := m.ReportFailure(ctx, "db2:5432", refused)
	require.NoError(t, err)
	var id1, id2 int
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.servers WHERE server = 'db1:5432'`).Scan(&id1))
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.servers WHERE server = 'db2:5432'`).Scan(&id2))
	require.Equal(t, id1+1, id2, "10 failures of db1 spent %d server ids", id2-id1-1)

	_, err = pool.Exec(ctx, `ALTER TABLE tenantmigrate.servers ALTER COLUMN id RESTART WITH 4194304`)
	require.NoError(t, err)
	down, err := m.ReportFailure(ctx, "db1:5432", refused)
	require.NoError(t, err)
	require.True(t, down)
}
