package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestTenantLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	dbURL := pgtest.NewDatabase(t)

	// POST sets labels; a tenant without shows {}.
	res := e.admin(http.MethodPost, "/admin/tenants/acme", `{"databaseUrl": "`+dbURL+`", "labels": {"tier": "gold", "server": "db1"}}`)
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"tier": "gold", "server": "db1"}, res.json(t)["labels"])
	res = e.admin(http.MethodPost, "/admin/tenants/plain", `{"databaseUrl": "`+dbURL+`"}`)
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{}, res.json(t)["labels"])

	// PATCH merges; null removes.
	res = e.admin(http.MethodPatch, "/admin/tenants/acme", `{"labels": {"tier": null, "canary": "yes"}}`)
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"server": "db1", "canary": "yes"}, res.json(t)["labels"])

	// PUT replaces, labels absent meaning none.
	res = e.admin(http.MethodPut, "/admin/tenants/acme", `{"databaseUrl": "`+dbURL+`", "labels": {"tier": "silver"}}`)
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"tier": "silver"}, res.json(t)["labels"])

	// Bad labels: 400 naming the label, on every method.
	long := strings.Repeat("v", 256)
	for _, tc := range []struct{ method, path, body, want string }{
		{http.MethodPost, "/admin/tenants/bad", `{"databaseUrl": "` + dbURL + `", "labels": {"Tier": "x"}}`, `"Tier"`},
		{http.MethodPut, "/admin/tenants/acme", `{"databaseUrl": "` + dbURL + `", "labels": {"tier": "` + long + `"}}`, `label "tier"`},
		{http.MethodPatch, "/admin/tenants/acme", `{"labels": {"a b": "x"}}`, `"a b"`},
		{http.MethodPatch, "/admin/tenants/acme", `{"labels": {"tier": 5}}`, "labels"},
	} {
		res := e.admin(tc.method, tc.path, tc.body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s %s: %s", tc.method, tc.path, res.body)
		require.Contains(t, res.json(t)["error"], tc.want)
	}
	res = e.admin(http.MethodGet, "/admin/tenants/acme", "")
	require.Equal(t, map[string]any{"tier": "silver"}, res.json(t)["labels"])

	// Selectors.
	for sel, want := range map[string][]string{
		"":            {"acme", "plain"},
		"tier=silver": {"acme"},
		"!tier":       {"plain"},
		"tier!=gold":  {"acme", "plain"},
	} {
		res := e.admin(http.MethodGet, "/admin/tenants?selector="+url.QueryEscape(sel), "")
		require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
		var ids []string
		for _, tn := range res.json(t)["tenants"].([]any) {
			ids = append(ids, tn.(map[string]any)["id"].(string))
		}
		require.Equal(t, want, ids, sel)
	}
	for _, bad := range []string{"Tier=x", "a=b=c", ",", "!"} {
		res := e.admin(http.MethodGet, "/admin/tenants?selector="+url.QueryEscape(bad), "")
		require.Equal(t, http.StatusBadRequest, res.status, "%q: %s", bad, res.body)
		require.Contains(t, res.json(t)["error"], "selector")
	}
}
