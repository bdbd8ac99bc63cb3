package httpapi_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
	"github.com/tenantmigrate/tenantmigrate/internal/provisioning"
)

// provisionEnv is an env with provisioning on the test server, with a
// source of its own (so a template of its own) and a database name prefix
// of its own; both are dropped at cleanup.
func provisionEnv(t *testing.T) (*env, string) {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "h" + hex.EncodeToString(b[:])
	src := fstest.MapFS{"00003_unique.sql": {Data: []byte("-- +goose Up\nSELECT '" + prefix + "';\n")}}
	for k, v := range goodMigrations {
		src[k] = v
	}
	m, err := migrator.New(migrator.Config{FS: src})
	require.NoError(t, err)
	serverURL := pgtest.ServerURL(t)
	t.Cleanup(func() { dropDatabasesLike(t, serverURL, prefix+"_%", provisioning.TemplateName(m)) })
	return newEnv(t, options{migrations: src, provision: tenantmigrate.ProvisionConfig{URL: serverURL, NameTemplate: prefix + "_{id}"}}), prefix
}

// dropDatabasesLike drops the databases whose names match the patterns,
// templates too.
func dropDatabasesLike(t *testing.T, serverURL string, likes ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close(ctx)
	for _, like := range likes {
		rows, _ := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`, like)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, n := range names {
			_, _ = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{n}.Sanitize()+" WITH IS_TEMPLATE false")
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)")
		}
	}
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgtest.ServerURL(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var ok bool
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok))
	return ok
}

func TestAdminProvision(t *testing.T) {
	t.Parallel()
	e, prefix := provisionEnv(t)

	res := e.admin(http.MethodPost, "/admin/tenants/acme", `{"provision": true}`)
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	body := res.json(t)
	require.Equal(t, "COMPLETED", body["migrationsStatus"])
	require.EqualValues(t, 3, body["migrationsVersion"])
	require.True(t, databaseExists(t, prefix+"_acme"))

	// Again: the tenant exists.
	res = e.admin(http.MethodPost, "/admin/tenants/acme", `{"provision": true}`)
	require.Equal(t, http.StatusConflict, res.status, "body: %s", res.body)

	// A registered tenant's database is never dropped.
	e.createTenant("registered")
	res = e.admin(http.MethodDelete, "/admin/tenants/registered?dropDatabase=true", "")
	require.Equal(t, http.StatusConflict, res.status, "body: %s", res.body)
	require.Contains(t, res.json(t)["error"], "not provisioned by tenantmigrate")
	res = e.admin(http.MethodGet, "/admin/tenants/registered", "")
	require.Equal(t, http.StatusOK, res.status)

	res = e.admin(http.MethodDelete, "/admin/tenants/acme?dropDatabase=maybe", "")
	require.Equal(t, http.StatusBadRequest, res.status, "body: %s", res.body)
	res = e.admin(http.MethodDelete, "/admin/tenants/acme?dropDatabase=true", "")
	require.Equal(t, http.StatusNoContent, res.status, "body: %s", res.body)
	require.False(t, databaseExists(t, prefix+"_acme"))
	res = e.admin(http.MethodGet, "/admin/tenants/acme", "")
	require.Equal(t, http.StatusNotFound, res.status)
}

func TestAdminProvisionBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{}) // no provision URL
	for _, tc := range []struct {
		method, path, body, want string
	}{
		{http.MethodPost, "/admin/tenants/x", `{"provision": true}`, "provisioning is not configured on this server: start it with a provision URL (PROVISION_URL)"},
		{http.MethodPost, "/admin/tenants/x", `{"provision": true, "databaseUrl": "postgres://u@h/db"}`, "provision creates the tenant's database: send it without databaseUrl and schema"},
		{http.MethodPost, "/admin/tenants/x", `{"provision": true, "schema": "s"}`, "provision creates the tenant's database: send it without databaseUrl and schema"},
		{http.MethodPut, "/admin/tenants/x", `{"provision": true}`, "provision is only for POST /admin/tenants/{id}, which creates the tenant"},
		{http.MethodPost, "/admin/tenants/x", `{"provision": "yes"}`, "invalid JSON body: field provision must be a boolean, got string"},
		{http.MethodDelete, "/admin/tenants/x?dropDatabase=true", "", "provisioning is not configured on this server: start it with a provision URL (PROVISION_URL)"},
	} {
		res := e.admin(tc.method, tc.path, tc.body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s %s %s: %s", tc.method, tc.path, tc.body, res.body)
		require.Equal(t, tc.want, res.json(t)["error"], fmt.Sprintf("%s %s", tc.method, tc.body))
	}
}
