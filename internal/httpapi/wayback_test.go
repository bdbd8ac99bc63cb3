package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

var _ httpapi.WaybackService = (*tenantmigrate.Orchestrator)(nil)

// TestAdminTargetAndRollbacks: GET/PUT/DELETE /admin/target and POST/GET
// /admin/rollbacks, with bad input to each answered 4xx.
func TestAdminTargetAndRollbacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	e.createTenant("acme")
	require.Equal(t, http.StatusOK, e.admin(http.MethodPost, "/admin/tenants/acme/migrations", "").status)

	res := e.admin(http.MethodGet, "/admin/target", "")
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	require.Nil(t, res.json(t)["pinned"])
	require.EqualValues(t, 2, res.json(t)["version"])

	res = e.admin(http.MethodPut, "/admin/target", `{"version": 1}`)
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	require.EqualValues(t, 1, res.json(t)["pinned"])
	res = e.admin(http.MethodGet, "/admin/migrations", "")
	require.EqualValues(t, 1, res.json(t)["targetVersion"])
	require.Equal(t, true, res.json(t)["targetPinned"])

	for _, body := range []string{`{"version": 3}`, `{"version": -1}`, `{}`, ``, `{"version": "x"}`, `{"version": 1, "x": 2}`} {
		res := e.admin(http.MethodPut, "/admin/target", body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", body, res.body)
		require.NotEmpty(t, res.json(t)["error"])
	}

	res = e.admin(http.MethodPost, "/admin/rollbacks", `{"to": 1, "tenants": ["acme"]}`)
	require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
	id, _ := res.json(t)["id"].(string)
	require.NotEmpty(t, id)
	require.EqualValues(t, 1, res.json(t)["total"])
	res = e.admin(http.MethodGet, "/admin/rollbacks/"+id, "")
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	require.EqualValues(t, 1, res.json(t)["total"])
	require.EqualValues(t, 1, res.json(t)["to"])
	require.Equal(t, false, res.json(t)["done"]) // this on_request instance works no queue

	for _, tc := range []struct {
		body   string
		status int
	}{
		{`{"tenants": ["acme"]}`, http.StatusBadRequest},
		{`{"to": 1}`, http.StatusBadRequest},
		{`{"to": 1, "all": true, "tenants": ["acme"]}`, http.StatusBadRequest},
		{`{"to": 5, "all": true}`, http.StatusBadRequest},
		{`{"to": -1, "all": true}`, http.StatusBadRequest},
		{`{"to": 1, "tenants": ["Bad!"]}`, http.StatusBadRequest},
		{`{"to": 1, "tenants": ["nobody"]}`, http.StatusNotFound},
		{``, http.StatusBadRequest},
		{`{"to": 1, "all": true, "selector": "a=b"}`, http.StatusBadRequest},
		{`{"to": 1, "selector": "a=b,"}`, http.StatusBadRequest},
		{`{"rollout": 999}`, http.StatusNotFound},
		{`{"rollout": 0}`, http.StatusBadRequest},
		{`{"rollout": 1, "all": true}`, http.StatusBadRequest},
		{`{"to": 1, "selector": "plan=none", "keepTarget": true}`, http.StatusAccepted},
	} {
		res := e.admin(http.MethodPost, "/admin/rollbacks", tc.body)
		require.Equal(t, tc.status, res.status, "%s: %s", tc.body, res.body)
	}
	require.Equal(t, http.StatusNotFound, e.admin(http.MethodGet, "/admin/rollbacks/nope", "").status)

	res = e.admin(http.MethodDelete, "/admin/target", "")
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	require.Nil(t, res.json(t)["pinned"])
}
