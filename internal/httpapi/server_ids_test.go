package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServerCapKeepsServerIDs: setting the cap of a server that has
// its row already uses no server id. Server ids are bounded (CHECK id <
// 4194304: they are bits of the slot's advisory lock key), and an identity
// value drawn by an INSERT ... ON CONFLICT is spent even when the row
// exists; once they are spent, every PUT /admin/servers/{server} (and every
// new server's first run) fails the CHECK, with a 500.
func TestServerCapKeepsServerIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	pool := e.orch.Pool()
	ctx := t.Context()
	put := func(server, body string) response {
		return e.admin(http.MethodPut, "/admin/servers/"+server, body)
	}
	res := put("db1.example.com:5432", `{"maxConcurrent": 3}`)
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	for range 20 {
		res = put("db1.example.com:5432", `{"maxConcurrent": 4}`)
		require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	}
	res = put("db2.example.com:5432", `{"maxConcurrent": 3}`)
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	var id1, id2 int
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.servers WHERE server = 'db1.example.com:5432'`).Scan(&id1))
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.servers WHERE server = 'db2.example.com:5432'`).Scan(&id2))
	require.Equal(t, id1+1, id2, "20 updates of db1's cap spent %d server ids", id2-id1-1)

	// Where that leads: with the ids spent (as after ~4M updates or
	// connection failures), the cap of an existing server cannot be set.
	_, err := pool.Exec(ctx, `ALTER TABLE tenantmigrate.servers ALTER COLUMN id RESTART WITH 4194304`)
	require.NoError(t, err)
	res = put("db1.example.com:5432", `{"maxConcurrent": 5}`)
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
}
