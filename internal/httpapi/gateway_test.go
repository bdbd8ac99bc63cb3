package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGatewayTenantInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	dbURL := e.createTenant("acme")

	// No tenant in the host: 400; unknown tenant: 404.
	res := e.do(http.MethodGet, "/tenant", "")
	require.Equal(t, http.StatusBadRequest, res.status, "body: %s", res.body)
	require.NotEmpty(t, res.json(t)["error"])
	res = e.do(http.MethodGet, "/tenant", "", withHost(tenantHost("nobody")))
	require.Equal(t, http.StatusNotFound, res.status, "body: %s", res.body)
	require.NotEmpty(t, res.json(t)["error"])
	require.Zero(t, e.runs.Load())

	// The first request migrates the fresh tenant (on_request).
	res = e.do(http.MethodGet, "/tenant", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, map[string]any{
		"tenantId": "acme", "migrationsVersion": 2.0, "migrationsStatus": "COMPLETED", "isLatest": true,
	}, res.json(t))
	require.Equal(t, []int64{1, 2}, appliedVersions(t, dbURL))
	require.Equal(t, int64(1), e.runs.Load())
	line := e.requestLog(http.MethodGet, "/tenant")
	require.Equal(t, "acme", line["tenant_id"])

	// X-Forwarded-Host names the tenant as well as Host; no new run.
	res = e.do(http.MethodGet, "/tenant", "", withHeader("X-Forwarded-Host", tenantHost("acme")))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, true, res.json(t)["isLatest"])
	require.Equal(t, int64(1), e.runs.Load())

	// Other paths and methods of tenant traffic.
	res = e.do(http.MethodGet, "/other", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusNotFound, res.status)
	require.NotEmpty(t, res.json(t)["error"])
	res = e.do(http.MethodPost, "/tenant", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
	require.NotEmpty(t, res.json(t)["error"])

	// Control endpoints answer on tenant hosts too.
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/health", "", withHost(tenantHost("acme"))).status)
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, "/admin/stats", "", withHost(tenantHost("acme"))).status)
}

func TestGatewayFailedMigration(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{migrations: badMigrations})
	dbURL := e.createTenant("acme")

	res := e.do(http.MethodGet, "/tenant", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusInternalServerError, res.status, "body: %s", res.body)
	require.Contains(t, res.json(t)["error"], "acme")
	require.Equal(t, []int64{1}, appliedVersions(t, dbURL))
	line := e.requestLog(http.MethodGet, "/tenant")
	require.Equal(t, "ERROR", line["level"])
	require.Equal(t, 500.0, line["status"])
	// The failure is on the request's line, the only one that logs it.
	require.Equal(t, "acme", line["tenant_id"])
	require.Contains(t, line["err"], "no_such_table")

	res = e.admin(http.MethodGet, "/admin/tenants/acme/migrations", "")
	require.Equal(t, http.StatusOK, res.status)
	state := res.json(t)
	require.Equal(t, false, state["isLatest"])
	require.Equal(t, 1.0, state["migrationsVersion"])
	require.Equal(t, "FAILED", state["migrationsStatus"])
	require.Contains(t, state["lastError"], "no_such_table")

	res = e.admin(http.MethodGet, "/admin/migrations/failed", "")
	require.Equal(t, http.StatusOK, res.status)
	failed := res.json(t)
	require.Nil(t, failed["nextCursor"])
	require.Len(t, failed["tenants"], 1)
	f := failed["tenants"].([]any)[0].(map[string]any)
	require.Equal(t, "acme", f["id"])
	require.Equal(t, 1.0, f["migrationsVersion"])
	require.Equal(t, "FAILED", f["migrationsStatus"])
	require.Contains(t, f["lastError"], "no_such_table")
	require.NotEmpty(t, f["updatedAt"])

	// Migrating by hand fails the same way.
	res = e.admin(http.MethodPost, "/admin/tenants/acme/migrations", "")
	require.Equal(t, http.StatusInternalServerError, res.status, "body: %s", res.body)
	got := res.json(t)
	require.Equal(t, false, got["migrated"])
	require.Contains(t, got["error"], "no_such_table")
	require.Equal(t, []int64{1}, appliedVersions(t, dbURL))
}

func TestGatewayConcurrentFirstRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	dbURL := e.createTenant("acme")

	const n = 50
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		statuses = make([]int, n)
		errs     = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+"/tenant", nil)
			if err != nil {
				errs[i] = err
				return
			}
			req.Host = tenantHost("acme")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer res.Body.Close()
			var body struct{ IsLatest bool }
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				errs[i] = err
				return
			}
			if !body.IsLatest {
				errs[i] = fmt.Errorf("request %d: isLatest false", i)
			}
			statuses[i] = res.StatusCode
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, http.StatusOK, statuses[i], "request %d", i)
	}
	require.Equal(t, int64(1), e.runs.Load(), "exactly one migration run")
	require.Equal(t, []int64{1, 2}, appliedVersions(t, dbURL))
}

func TestGatewayProxy(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method":        r.Method,
			"path":          r.URL.Path,
			"query":         r.URL.RawQuery,
			"body":          string(body),
			"tenantIds":     r.Header.Values("X-Tenant-Id"),
			"forwardedHost": r.Header.Get("X-Forwarded-Host"),
			"forwardedFor":  r.Header.Get("X-Forwarded-For"),
		})
	}))
	t.Cleanup(upstream.Close)
	upstreamURL, err := url.Parse(upstream.URL + "/app")
	require.NoError(t, err)

	e := newEnv(t, options{upstream: upstreamURL})
	e.createTenant("acme")

	res := e.do(http.MethodPost, "/orders?x=1", "hello", withHost(tenantHost("acme")),
		withHeader("X-Tenant-Id", "evil"))
	require.Equal(t, http.StatusTeapot, res.status, "body: %s", res.body)
	require.Equal(t, "yes", res.header.Get("X-Upstream"))
	got := res.json(t)
	require.Equal(t, "POST", got["method"])
	require.Equal(t, "/app/orders", got["path"])
	require.Equal(t, "x=1", got["query"])
	require.Equal(t, "hello", got["body"])
	require.Equal(t, []any{"acme"}, got["tenantIds"], "the spoofed X-Tenant-Id is replaced")
	require.Equal(t, tenantHost("acme"), got["forwardedHost"])
	require.NotEmpty(t, got["forwardedFor"])
	require.Equal(t, int64(1), e.runs.Load(), "the tenant was migrated before the request went upstream")

	// /tenant is tenant traffic like any other path with an upstream.
	res = e.do(http.MethodGet, "/tenant", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusTeapot, res.status)

	// Gateway errors are answered before the upstream sees the request.
	res = e.do(http.MethodGet, "/orders", "", withHost(tenantHost("nobody")))
	require.Equal(t, http.StatusNotFound, res.status)
	res = e.do(http.MethodGet, "/orders", "")
	require.Equal(t, http.StatusBadRequest, res.status)
}

func TestGatewayUpstreamDown(t *testing.T) {
	t.Parallel()
	down := httptest.NewServer(http.NotFoundHandler())
	downURL, err := url.Parse(down.URL)
	require.NoError(t, err)
	down.Close()

	e := newEnv(t, options{upstream: downURL})
	e.createTenant("acme")
	res := e.do(http.MethodGet, "/orders", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusBadGateway, res.status, "body: %s", res.body)
	require.Equal(t, "upstream unavailable", res.json(t)["error"])
	line := e.requestLog(http.MethodGet, "/orders")
	require.Equal(t, "ERROR", line["level"])
	require.Equal(t, "acme", line["tenant_id"])
	require.NotEmpty(t, line["err"])
}
