package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestRolloutEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{migrations: badMigrations})
	dbURL := pgtest.NewDatabase(t)

	res := e.admin(http.MethodPost, "/admin/rollouts", "")
	require.Equal(t, http.StatusConflict, res.status, "no tenant behind: %s", res.body)
	for i := range 3 {
		res := e.admin(http.MethodPost, fmt.Sprintf("/admin/tenants/t%d", i), `{"databaseUrl": "`+dbURL+`", "schema": "t`+fmt.Sprint(i)+`"}`)
		require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	}
	res = e.admin(http.MethodPost, "/admin/rollouts", "")
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	ro := res.json(t)
	require.Equal(t, "RUNNING", ro["state"])
	require.EqualValues(t, 2, ro["targetVersion"])
	require.EqualValues(t, 3, ro["total"])
	require.Len(t, ro["waves"], 2)
	id := fmt.Sprint(ro["id"])
	res = e.admin(http.MethodPost, "/admin/rollouts", "")
	require.Equal(t, http.StatusOK, res.status, "it exists: %s", res.body)

	// A broken migration run by migrate-now fails the tenant in the
	// rollout: its wave (under 20 tenants) halts.
	res = e.admin(http.MethodPost, "/admin/tenants/t0/migrations", "")
	require.Equal(t, http.StatusInternalServerError, res.status, "body: %s", res.body)
	res = e.admin(http.MethodGet, "/admin/rollouts/"+id, "")
	require.Equal(t, http.StatusOK, res.status)
	ro = res.json(t)
	require.Equal(t, "HALTED", ro["state"])
	require.Contains(t, ro["haltReason"], "1 failed")
	require.EqualValues(t, 2, ro["firstErrors"].([]any)[0].(map[string]any)["failedVersion"])

	// During the halt migrate-now is refused, naming the rollout.
	res = e.admin(http.MethodPost, "/admin/tenants/t1/migrations", "")
	require.Equal(t, http.StatusServiceUnavailable, res.status, "body: %s", res.body)
	require.Equal(t, "60", res.header.Get("Retry-After"))
	require.EqualValues(t, ro["id"], res.json(t)["rollout"])

	res = e.admin(http.MethodGet, "/admin/rollouts", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Len(t, res.json(t)["rollouts"], 1)

	// Resume, abort, and what they refuse.
	res = e.admin(http.MethodPost, "/admin/rollouts/"+id+"/resume", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "RUNNING", res.json(t)["state"])
	res = e.admin(http.MethodPost, "/admin/rollouts/"+id+"/resume", "")
	require.Equal(t, http.StatusConflict, res.status, "body: %s", res.body)
	require.Contains(t, res.json(t)["error"], "not HALTED")
	res = e.admin(http.MethodPost, "/admin/rollouts/"+id+"/abort", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "ABORTED", res.json(t)["state"])
	res = e.admin(http.MethodPost, "/admin/rollouts/"+id+"/abort", "")
	require.Equal(t, http.StatusConflict, res.status, "body: %s", res.body)
	require.Equal(t, http.StatusNotFound, e.admin(http.MethodGet, "/admin/rollouts/999", "").status)
	require.Equal(t, http.StatusBadRequest, e.admin(http.MethodGet, "/admin/rollouts/x", "").status)
	require.Equal(t, http.StatusBadRequest, e.admin(http.MethodPost, "/admin/rollouts/-1/abort", "").status)
}
