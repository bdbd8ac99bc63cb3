package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEveryListedServerCanBeCapped: PUT /admin/servers/{server} takes
// every server GET /admin/servers lists, also one named by a "server" label
// with a space in it, or a long one.
func TestEveryListedServerCanBeCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	names := []string{"pgbouncer a", strings.Repeat("é", 200)}
	for i, name := range names {
		res := e.admin(http.MethodPut, "/admin/tenants/t"+string(rune('a'+i)),
			jsonBody(map[string]any{"databaseUrl": "postgres://app@db.example.com/x", "labels": map[string]string{"server": name}}))
		require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
	}
	res := e.admin(http.MethodGet, "/admin/servers", "")
	require.Equal(t, http.StatusOK, res.status)
	for _, name := range names {
		require.Contains(t, string(res.body), `"server":"`+name+`"`)
		res := e.admin(http.MethodPut, "/admin/servers/"+url.PathEscape(name), `{"maxConcurrent": 1}`)
		require.Equal(t, http.StatusOK, res.status, "PUT /admin/servers/%s: %s", name, res.body)
		require.Equal(t, float64(1), res.json(t)["maxConcurrent"])
	}
}
