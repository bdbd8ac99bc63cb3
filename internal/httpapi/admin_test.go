package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestTenantCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	dbURL := pgtest.NewDatabase(t)

	// Create.
	res := e.admin(http.MethodPost, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": dbURL}))
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	got := res.json(t)
	require.Equal(t, "acme", got["id"])
	require.Equal(t, dbURL, got["databaseUrl"], "a URL without password is shown as is")
	require.Equal(t, "", got["schema"])
	require.Nil(t, got["migrationsVersion"])
	require.Nil(t, got["migrationsStatus"])
	require.Equal(t, "", got["lastError"])
	require.NotEmpty(t, got["createdAt"])
	require.NotEmpty(t, got["updatedAt"])
	require.Equal(t, "application/json", res.header.Get("Content-Type"))

	// Create again: 409, and the tenant is unchanged.
	res = e.admin(http.MethodPost, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": dbURL, "schema": "other"}))
	require.Equal(t, http.StatusConflict, res.status, "body: %s", res.body)
	require.NotEmpty(t, res.json(t)["error"])

	// Read.
	res = e.admin(http.MethodGet, "/admin/tenants/acme", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, "", res.json(t)["schema"])

	// Upsert an existing tenant: 200.
	res = e.admin(http.MethodPut, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": dbURL, "schema": "acme_app"}))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "acme_app", res.json(t)["schema"])

	// Upsert a new tenant: 201.
	res = e.admin(http.MethodPut, "/admin/tenants/beta", jsonBody(map[string]string{"databaseUrl": dbURL, "schema": "beta_app"}))
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)

	// Patch one field.
	res = e.admin(http.MethodPatch, "/admin/tenants/acme", `{"schema": "acme_v2"}`)
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	got = res.json(t)
	require.Equal(t, "acme_v2", got["schema"])
	require.Equal(t, dbURL, got["databaseUrl"])
	// Patch back to database-per-tenant.
	res = e.admin(http.MethodPatch, "/admin/tenants/acme", `{"schema": ""}`)
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "", res.json(t)["schema"])

	// List.
	res = e.admin(http.MethodGet, "/admin/tenants", "")
	require.Equal(t, http.StatusOK, res.status)
	list := res.json(t)
	require.Nil(t, list["nextCursor"])
	require.Len(t, list["tenants"], 2)

	// Delete: 204, then 404 everywhere.
	res = e.admin(http.MethodDelete, "/admin/tenants/acme", "")
	require.Equal(t, http.StatusNoContent, res.status)
	require.Empty(t, res.body)
	for _, req := range []struct{ method, path, body string }{
		{http.MethodDelete, "/admin/tenants/acme", ""},
		{http.MethodGet, "/admin/tenants/acme", ""},
		{http.MethodPatch, "/admin/tenants/acme", `{"schema": "x"}`},
		{http.MethodGet, "/admin/tenants/acme/migrations", ""},
		{http.MethodPost, "/admin/tenants/acme/migrations", ""},
		{http.MethodPost, "/admin/tenants/acme/migrations?async=true", ""},
	} {
		res := e.admin(req.method, req.path, req.body)
		require.Equal(t, http.StatusNotFound, res.status, "%s %s: %s", req.method, req.path, res.body)
		require.NotEmpty(t, res.json(t)["error"])
	}
	// The gateway does not know it either.
	require.Equal(t, http.StatusNotFound, e.do(http.MethodGet, "/tenant", "", withHost(tenantHost("acme"))).status)
}

func TestTenantListPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	for _, id := range []string{"t1", "t2", "t3"} {
		res := e.admin(http.MethodPost, "/admin/tenants/"+id, `{"databaseUrl": "postgres://app@db.invalid/`+id+`"}`)
		require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	}

	res := e.admin(http.MethodGet, "/admin/tenants?limit=2", "")
	require.Equal(t, http.StatusOK, res.status)
	page := res.json(t)
	require.Len(t, page["tenants"], 2)
	require.Equal(t, "t1", page["tenants"].([]any)[0].(map[string]any)["id"])
	require.NotNil(t, page["nextCursor"])

	res = e.admin(http.MethodGet, fmt.Sprintf("/admin/tenants?limit=2&cursor=%v", page["nextCursor"]), "")
	require.Equal(t, http.StatusOK, res.status)
	page = res.json(t)
	require.Len(t, page["tenants"], 1)
	require.Equal(t, "t3", page["tenants"].([]any)[0].(map[string]any)["id"])
	require.Nil(t, page["nextCursor"])
}

func TestPasswordNeverInResponses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	const password = "hunter2-S3cr3t-pw"
	u := &url.URL{Scheme: "postgres", User: url.UserPassword("app", password), Host: "127.0.0.1:1", Path: "/acme"}
	withPw := u.String()
	withQueryPw := "postgres://app@db.invalid/acme?sslpassword=" + password

	var bodies []string
	keep := func(res response, status int) {
		t.Helper()
		require.Equal(t, status, res.status, "body: %s", res.body)
		bodies = append(bodies, string(res.body))
	}
	keep(e.admin(http.MethodPost, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": withPw})), http.StatusCreated)
	keep(e.admin(http.MethodPost, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": withPw})), http.StatusConflict)
	keep(e.admin(http.MethodGet, "/admin/tenants/acme", ""), http.StatusOK)
	keep(e.admin(http.MethodGet, "/admin/tenants", ""), http.StatusOK)
	keep(e.admin(http.MethodPut, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": withPw, "schema": "s"})), http.StatusOK)
	keep(e.admin(http.MethodPut, "/admin/tenants/beta", jsonBody(map[string]string{"databaseUrl": withQueryPw})), http.StatusCreated)
	keep(e.admin(http.MethodPatch, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": withPw})), http.StatusOK)
	keep(e.admin(http.MethodGet, "/admin/tenants/beta", ""), http.StatusOK)
	// Invalid URLs with a password: the error does not echo it.
	for _, bad := range []string{
		"postgres://app:" + password + "@db.invalid:notaport/acme",
		"postgres://app:" + password + "@db.invalid/acme?sslmode=bogus",
		"postgres://app:" + password + "@[::1/acme",
		"mysql://app:" + password + "@db.invalid/acme",
	} {
		keep(e.admin(http.MethodPost, "/admin/tenants/gamma", jsonBody(map[string]string{"databaseUrl": bad})), http.StatusBadRequest)
		keep(e.admin(http.MethodPatch, "/admin/tenants/acme", jsonBody(map[string]string{"databaseUrl": bad})), http.StatusBadRequest)
	}
	// Nothing listens at the tenant's address, so migrating it fails: the error does
	// not show the password either.
	res := e.admin(http.MethodPost, "/admin/tenants/acme/migrations", "")
	keep(res, http.StatusInternalServerError)
	require.Equal(t, false, res.json(t)["migrated"])
	keep(e.admin(http.MethodGet, "/admin/tenants/acme", ""), http.StatusOK)
	keep(e.admin(http.MethodGet, "/admin/migrations/failed", ""), http.StatusOK)

	got := e.admin(http.MethodGet, "/admin/tenants/acme", "").json(t)
	require.Contains(t, got["databaseUrl"], "xxxxx")
	require.Equal(t, "FAILED", got["migrationsStatus"])
	require.NotEmpty(t, got["lastError"])
	for _, b := range bodies {
		require.NotContains(t, b, password)
	}
	require.NotContains(t, e.logs.String(), password)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	e.createTenant("exists")
	validURL := "postgres://app@db.invalid/app"

	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		status       int
	}{
		{"malformed JSON", "POST", "/admin/tenants/t1", `{"databaseUrl":`, 400},
		{"not JSON", "POST", "/admin/tenants/t1", `hello`, 400},
		{"unknown field", "POST", "/admin/tenants/t1", `{"databaseUrl": "` + validURL + `", "extra": 1}`, 400},
		{"wrong type", "POST", "/admin/tenants/t1", `{"databaseUrl": 5}`, 400},
		{"wrong type schema", "POST", "/admin/tenants/t1", `{"databaseUrl": "` + validURL + `", "schema": ["a"]}`, 400},
		{"trailing data", "POST", "/admin/tenants/t1", `{"databaseUrl": "` + validURL + `"} {}`, 400},
		{"trailing garbage", "POST", "/admin/tenants/t1", `{"databaseUrl": "` + validURL + `"} x`, 400},
		{"array", "POST", "/admin/tenants/t1", `[]`, 400},
		{"string", "POST", "/admin/tenants/t1", `"x"`, 400},
		{"null", "POST", "/admin/tenants/t1", `null`, 400},
		{"empty body", "POST", "/admin/tenants/t1", ``, 400},
		{"no databaseUrl", "POST", "/admin/tenants/t1", `{"schema": "s"}`, 400},
		{"not a postgres URL", "POST", "/admin/tenants/t1", `{"databaseUrl": "mysql://h/db"}`, 400},
		{"bad port", "POST", "/admin/tenants/t1", `{"databaseUrl": "postgres://h:port/db"}`, 400},
		{"not a URL", "PUT", "/admin/tenants/t1", `{"databaseUrl": "::::"}`, 400},
		{"NUL in URL", "PUT", "/admin/tenants/t1", `{"databaseUrl": "postgres://h/db\u0000"}`, 400},
		{"bad schema", "POST", "/admin/tenants/t1", `{"databaseUrl": "` + validURL + `", "schema": "Bad-Schema"}`, 400},
		{"reserved schema", "PUT", "/admin/tenants/t1", `{"databaseUrl": "` + validURL + `", "schema": "pg_catalog"}`, 400},
		{"upper-case id", "POST", "/admin/tenants/ACME", `{"databaseUrl": "` + validURL + `"}`, 400},
		{"id with a dot", "PUT", "/admin/tenants/a.b", `{"databaseUrl": "` + validURL + `"}`, 400},
		{"id with a slash", "GET", "/admin/tenants/a%2Fb", ``, 400},
		{"id with a NUL", "GET", "/admin/tenants/a%00b", ``, 400},
		{"id starting with -", "DELETE", "/admin/tenants/-a", ``, 400},
		{"id too long", "POST", "/admin/tenants/" + strings.Repeat("a", 64), `{"databaseUrl": "` + validURL + `"}`, 400},
		{"empty patch", "PATCH", "/admin/tenants/exists", `{}`, 400},
		{"null patch", "PATCH", "/admin/tenants/exists", `null`, 400},
		{"patch wrong type", "PATCH", "/admin/tenants/exists", `{"schema": 5}`, 400},
		{"patch unknown field", "PATCH", "/admin/tenants/exists", `{"migrationsVersion": 5}`, 400},
		{"patch bad URL", "PATCH", "/admin/tenants/exists", `{"databaseUrl": "http://x"}`, 400},
		{"patch bad schema", "PATCH", "/admin/tenants/exists", `{"schema": "1abc"}`, 400},
		{"fleet wrong type", "POST", "/admin/migrations/fleet", `{"includeStale": "yes"}`, 400},
		{"fleet unknown field", "POST", "/admin/migrations/fleet", `{"stale": true}`, 400},
		{"fleet malformed", "POST", "/admin/migrations/fleet", `{`, 400},
		{"negative cursor", "GET", "/admin/tenants?cursor=-1", ``, 400},
		{"cursor not a number", "GET", "/admin/tenants?cursor=abc", ``, 400},
		{"cursor overflow", "GET", "/admin/tenants?cursor=99999999999999999999", ``, 400},
		{"limit 0", "GET", "/admin/tenants?limit=0", ``, 400},
		{"limit over max", "GET", "/admin/tenants?limit=1001", ``, 400},
		{"limit not a number", "GET", "/admin/migrations/failed?limit=ten", ``, 400},
		{"limit twice", "GET", "/admin/tenants?limit=1&limit=2", ``, 400},
		{"malformed query", "GET", "/admin/tenants?cursor=%zz", ``, 400},
		{"bad async", "POST", "/admin/tenants/exists/migrations?async=maybe", ``, 400},
		{"wrong method on list", "DELETE", "/admin/tenants", ``, 405},
		{"unknown tenant subpath", "POST", "/admin/tenants/exists/migrations/x", ``, 404},
		{"wrong method on stats", "PUT", "/admin/stats", `{}`, 405},
		{"wrong method on migrations", "POST", "/admin/migrations", ``, 405},
		{"wrong method on fleet", "GET", "/admin/migrations/fleet", ``, 405},
		{"unknown admin path", "GET", "/admin/tenants/exists/nope", ``, 404},
		{"wrong method on health", "POST", "/health", ``, 405},
		{"metrics not enabled", "GET", "/metrics", ``, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.admin(tc.method, tc.path, tc.body)
			require.Equal(t, tc.status, res.status, "body: %s", res.body)
			require.NotEmpty(t, res.json(t)["error"])
			if tc.status == http.StatusMethodNotAllowed {
				require.NotEmpty(t, res.header.Get("Allow"))
			}
		})
	}

	t.Run("body too large", func(t *testing.T) {
		body := `{"databaseUrl": "` + validURL + `", "schema": "` + strings.Repeat("a", 1<<20) + `"}`
		res := e.admin(http.MethodPost, "/admin/tenants/big", body)
		require.Equal(t, http.StatusRequestEntityTooLarge, res.status, "body: %.200s", res.body)
		require.NotEmpty(t, res.json(t)["error"])
	})

	// None of the bad requests created a tenant.
	res := e.admin(http.MethodGet, "/admin/tenants", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Len(t, res.json(t)["tenants"], 1)
	for _, l := range e.requestLogs() {
		if status, ok := l["status"].(float64); ok {
			require.Less(t, status, 500.0, "a request failed with 5xx: %v", l)
		}
	}
}

func TestSmallMaxBodyBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{maxBodyBytes: 64})
	res := e.admin(http.MethodPost, "/admin/tenants/t1", `{"databaseUrl": "postgres://app@db.invalid/`+strings.Repeat("a", 64)+`"}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, "body: %s", res.body)
	res = e.admin(http.MethodPost, "/admin/tenants/t1", `{"databaseUrl": "postgres://h/a"}`)
	require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
}

func TestNoEncryptionKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{noEncryptionKey: true})
	for _, method := range []string{http.MethodPost, http.MethodPut} {
		res := e.admin(method, "/admin/tenants/acme", `{"databaseUrl": "postgres://app@db.invalid/acme"}`)
		require.Equal(t, http.StatusServiceUnavailable, res.status, "body: %s", res.body)
		msg := res.json(t)["error"].(string)
		require.Contains(t, msg, "misconfiguration")
		require.Contains(t, msg, "encryption key")
	}
	// Endpoints that need no key still work.
	require.Equal(t, http.StatusOK, e.admin(http.MethodGet, "/admin/stats", "").status)
}

func TestAdminMigrations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	dbURL := e.createTenant("acme")
	e.createTenant("beta")

	res := e.admin(http.MethodGet, "/admin/tenants/acme/migrations", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, map[string]any{
		"isLatest": false, "migrationsVersion": nil, "migrationsStatus": nil, "lastError": "", "latestVersion": 2.0,
	}, res.json(t))

	res = e.admin(http.MethodGet, "/admin/stats", "")
	require.Equal(t, http.StatusOK, res.status)
	stats := res.json(t)
	require.Equal(t, 2.0, stats["total"])
	require.Equal(t, 2.0, stats["behind"])
	require.Equal(t, map[string]any{"NEVER_MIGRATED": 2.0}, stats["byStatus"])

	// Migrate now.
	res = e.admin(http.MethodPost, "/admin/tenants/acme/migrations", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"migrated": true, "migrationsVersion": 2.0}, res.json(t))
	require.Equal(t, []int64{1, 2}, appliedVersions(t, dbURL))

	res = e.admin(http.MethodGet, "/admin/tenants/acme/migrations", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, map[string]any{
		"isLatest": true, "migrationsVersion": 2.0, "migrationsStatus": "COMPLETED", "lastError": "", "latestVersion": 2.0,
	}, res.json(t))

	res = e.admin(http.MethodGet, "/admin/stats", "")
	require.Equal(t, http.StatusOK, res.status)
	stats = res.json(t)
	require.Equal(t, 2.0, stats["total"])
	require.Equal(t, 1.0, stats["behind"])
	require.Equal(t, 2.0, stats["latestVersion"])
	require.Equal(t, map[string]any{"NEVER_MIGRATED": 1.0, "COMPLETED": 1.0}, stats["byStatus"])
	require.Equal(t, []any{
		map[string]any{"version": nil, "count": 1.0},
		map[string]any{"version": 2.0, "count": 1.0},
	}, stats["byVersion"])

	// Queue: no workers run here, so a queued job stays live.
	res = e.admin(http.MethodPost, "/admin/tenants/beta/migrations?async=true", "")
	require.Equal(t, http.StatusAccepted, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"enqueued": true}, res.json(t))
	res = e.admin(http.MethodPost, "/admin/tenants/beta/migrations?async=1", "")
	require.Equal(t, http.StatusAccepted, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"enqueued": false}, res.json(t), "a live job exists")

	res = e.admin(http.MethodGet, "/admin/migrations", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, map[string]any{"remaining": 1.0, "latestVersion": 2.0, "targetVersion": 2.0, "targetPinned": false}, res.json(t))

	// The fleet scan finds beta behind and starts the rollout that holds it
	// (its live job will count toward it); a second scan adds nothing.
	res = e.admin(http.MethodPost, "/admin/migrations/fleet", "")
	require.Equal(t, http.StatusAccepted, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"scheduled": 1.0}, res.json(t))
	res = e.admin(http.MethodPost, "/admin/migrations/fleet", "")
	require.Equal(t, http.StatusAccepted, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{"scheduled": 0.0}, res.json(t))
	res = e.admin(http.MethodPost, "/admin/migrations/fleet", `{"includeStale": true}`)
	require.Equal(t, http.StatusAccepted, res.status, "body: %s", res.body)
	require.Contains(t, res.json(t), "scheduled")

	res = e.admin(http.MethodGet, "/admin/migrations/failed", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, map[string]any{"tenants": []any{}, "nextCursor": nil}, res.json(t))
}

func TestAdminExtraAndPanicRecovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{adminExtra: map[string]http.Handler{
		"/admin/extra/": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("extra"))
		}),
		"GET /admin/panic": http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("boom")
		}),
	}})

	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, "/admin/extra/x", "").status)
	res := e.admin(http.MethodGet, "/admin/extra/x", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, "extra", string(res.body))

	res = e.admin(http.MethodGet, "/admin/panic", "")
	require.Equal(t, http.StatusInternalServerError, res.status)
	require.Equal(t, "internal error", res.json(t)["error"])
	line := e.requestLog(http.MethodGet, "/admin/panic")
	require.Equal(t, "ERROR", line["level"])
	require.Equal(t, 500.0, line["status"])
	require.Contains(t, line["err"], "boom")
	require.Contains(t, e.logs.String(), "panic serving request")

	// The server still serves.
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/health", "").status)
}

// appliedVersions returns the versions in the tenant's goose_db_version,
// failing the test if one was applied twice.
func appliedVersions(t *testing.T, dbURL string) []int64 {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `
		SELECT version_id, count(*) FROM goose_db_version
		WHERE version_id > 0 GROUP BY version_id ORDER BY version_id`)
	require.NoError(t, err)
	var versions []int64
	for rows.Next() {
		var v, n int64
		require.NoError(t, rows.Scan(&v, &n))
		require.Equal(t, int64(1), n, "version %d applied %d times", v, n)
		versions = append(versions, v)
	}
	require.NoError(t, rows.Err())
	return versions
}
