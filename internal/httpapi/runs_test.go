package httpapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAdminRuns: GET /admin/tenants/{id}/runs lists the admin API's
// migrate-now runs, newest first, paged by an opaque cursor; a failed run
// has its error; bad paging is 400, an unknown tenant 404.
func TestAdminRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	e.createTenant("acme")

	res := e.admin(http.MethodGet, "/admin/tenants/acme/runs", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"runs": []any{}, "nextCursor": nil}, res.json(t))

	for range 3 {
		res = e.admin(http.MethodPost, "/admin/tenants/acme/migrations", "")
		require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	}
	res = e.admin(http.MethodGet, "/admin/tenants/acme/runs?limit=2", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	page := res.json(t)
	runs := page["runs"].([]any)
	require.Len(t, runs, 2)
	newest := runs[0].(map[string]any)
	require.Equal(t, "acme", newest["tenantId"])
	require.Equal(t, "admin", newest["trigger"])
	require.Equal(t, "completed", newest["result"])
	require.Equal(t, "up", newest["direction"])
	require.Equal(t, 2.0, newest["fromVersion"])
	require.Equal(t, 2.0, newest["toVersion"])
	require.Nil(t, newest["rolloutId"])
	require.Equal(t, "", newest["error"])
	require.Equal(t, 0.0, newest["attempt"])
	require.NotEmpty(t, newest["process"])
	for _, k := range []string{"id", "startedAt", "finishedAt", "durationMs"} {
		require.Contains(t, newest, k)
	}
	require.Greater(t, newest["id"], runs[1].(map[string]any)["id"])
	cursor, ok := page["nextCursor"].(string)
	require.True(t, ok, "nextCursor: %v", page["nextCursor"])

	res = e.admin(http.MethodGet, "/admin/tenants/acme/runs?limit=2&cursor="+url.QueryEscape(cursor), "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	page = res.json(t)
	runs = page["runs"].([]any)
	require.Len(t, runs, 1)
	oldest := runs[0].(map[string]any)
	require.Nil(t, oldest["fromVersion"], "the first run found a tenant never migrated")
	require.Nil(t, page["nextCursor"])

	for _, c := range []struct {
		path   string
		status int
	}{
		{"/admin/tenants/nobody/runs", http.StatusNotFound},
		{"/admin/tenants/Bad!/runs", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?cursor=x", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?cursor=1.0", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?cursor=1.1&cursor=1.2", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?limit=0", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?limit=1001", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?limit=x", http.StatusBadRequest},
		{"/admin/tenants/acme/runs?%zz", http.StatusBadRequest},
	} {
		res = e.admin(http.MethodGet, c.path, "")
		require.Equal(t, c.status, res.status, "%s: %s", c.path, res.body)
		require.NotEmpty(t, res.json(t)["error"], c.path)
	}
	res = e.admin(http.MethodPost, "/admin/tenants/acme/runs", "")
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
}

// TestAdminRunsFailed: a failed migrate-now is in the history with its
// error and the version it reached.
func TestAdminRunsFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{migrations: badMigrations})
	e.createTenant("acme")
	res := e.admin(http.MethodPost, "/admin/tenants/acme/migrations", "")
	require.Equal(t, http.StatusInternalServerError, res.status, "body: %s", res.body)

	res = e.admin(http.MethodGet, "/admin/tenants/acme/runs", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	runs := res.json(t)["runs"].([]any)
	require.Len(t, runs, 1)
	run := runs[0].(map[string]any)
	require.Equal(t, "failed", run["result"])
	require.Contains(t, run["error"], "no_such_table")
	require.Equal(t, 1.0, run["toVersion"])
	require.Equal(t, "admin", run["trigger"])
}
