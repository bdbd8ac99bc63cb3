package httpapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestListedServerWithControlCharCanBeCapped: a "server" label may hold a
// tab (labels.ValidateValue refuses only NUL and non-UTF-8); GET
// /admin/servers lists it, so PUT must take it; likewise a Unix-socket host.
func TestListedServerWithControlCharCanBeCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	tenants := []struct{ url, label, want string }{
		{"postgres://app@db.example.com/x", "rack\t1", "rack\t1"},
		{"postgres://app@%2Fvar%2Frun%2Fpostgresql/x", "", "/var/run/postgresql:5432"},
	}
	for i, tc := range tenants {
		body := map[string]any{"databaseUrl": tc.url}
		if tc.label != "" {
			body["labels"] = map[string]string{"server": tc.label}
		}
		res := e.admin(http.MethodPut, "/admin/tenants/u"+string(rune('a'+i)), jsonBody(body))
		require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
	}
	res := e.admin(http.MethodGet, "/admin/servers", "")
	require.Equal(t, http.StatusOK, res.status)
	t.Logf("%s", res.body)
	for _, tc := range tenants {
		res := e.admin(http.MethodPut, "/admin/servers/"+url.PathEscape(tc.want), `{"maxConcurrent": 1}`)
		require.Equal(t, http.StatusOK, res.status, "PUT /admin/servers/%q: %s", tc.want, res.body)
	}
}
