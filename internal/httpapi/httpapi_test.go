package httpapi_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	e := newEnv(t, options{pool: pool})

	res := e.do(http.MethodGet, "/health", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, map[string]any{"status": "ok"}, res.json(t))
	require.Equal(t, "INFO", e.requestLog(http.MethodGet, "/health")["level"])
	require.Equal(t, http.StatusOK, e.do(http.MethodHead, "/health", "").status)

	// The control plane goes away.
	pool.Close()
	res = e.do(http.MethodGet, "/health", "")
	require.Equal(t, http.StatusServiceUnavailable, res.status)
	require.Equal(t, "unavailable", res.json(t)["status"])
	require.NotEmpty(t, res.json(t)["error"])
	line := e.requestLog(http.MethodGet, "/health")
	require.Equal(t, "ERROR", line["level"], "5xx are logged as errors")
	require.Equal(t, 503.0, line["status"])
	require.NotEmpty(t, line["err"])

	// Other control-plane reads fail with 500, without details.
	res = e.admin(http.MethodGet, "/admin/stats", "")
	require.Equal(t, http.StatusInternalServerError, res.status)
	require.Equal(t, "internal error", res.json(t)["error"])
	line = e.requestLog(http.MethodGet, "/admin/stats")
	require.Equal(t, "ERROR", line["level"])
	require.NotEmpty(t, line["err"])
}

func TestRequestLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})

	require.Equal(t, http.StatusOK, e.admin(http.MethodGet, "/admin/tenants?cursor=0&limit=5&secret=s3cr3t-in-query", "").status)
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, "/admin/stats", "", withHeader("Authorization", "Bearer wrong-key-xyz")).status)
	require.Equal(t, http.StatusNotFound, e.admin(http.MethodGet, "/admin/tenants/nobody", "").status)

	line := e.requestLog(http.MethodGet, "/admin/tenants")
	require.Equal(t, "INFO", line["level"])
	require.Equal(t, 200.0, line["status"])
	require.Contains(t, line, "duration_ms")
	require.Greater(t, line["bytes"], 0.0)
	require.NotContains(t, line, "tenant_id")

	line = e.requestLog(http.MethodGet, "/admin/stats")
	require.Equal(t, "WARN", line["level"])
	require.Equal(t, 401.0, line["status"])

	line = e.requestLog(http.MethodGet, "/admin/tenants/nobody")
	require.Equal(t, "WARN", line["level"])
	require.Equal(t, 404.0, line["status"])
	require.Equal(t, "nobody", line["tenant_id"])

	// 5xx lines are errors: see TestHealth and TestGatewayFailedMigration.

	logs := e.logs.String()
	require.NotContains(t, logs, "s3cr3t-in-query", "the query string is not logged")
	require.NotContains(t, logs, "wrong-key-xyz")
	require.NotContains(t, logs, testAdminKey)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# metrics\n"))
	})})
	res := e.do(http.MethodGet, "/metrics", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusOK, res.status, "no key needed, on any host")
	require.Equal(t, "# metrics\n", string(res.body))
	require.Equal(t, http.StatusMethodNotAllowed, e.do(http.MethodPost, "/metrics", "").status)
}

func TestNewHandlerConfig(t *testing.T) {
	t.Parallel()
	orch, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t), Migrations: goodMigrations,
	})
	require.NoError(t, err)
	t.Cleanup(orch.Close)
	ok := http.NotFoundHandler()

	for _, tc := range []struct {
		name string
		cfg  httpapi.Config
	}{
		{"no service", httpapi.Config{TenantIDFromContext: tenantmigrate.TenantIDFromContext}},
		{"no TenantIDFromContext", httpapi.Config{Service: orch}},
		{"relative upstream", httpapi.Config{Upstream: &url.URL{Path: "/x"}}},
		{"upstream of another scheme", httpapi.Config{Upstream: &url.URL{Scheme: "ftp", Host: "h"}}},
		{"extra outside /admin/", httpapi.Config{AdminExtra: map[string]http.Handler{"/riverui/": ok}}},
		{"extra with method outside /admin/", httpapi.Config{AdminExtra: map[string]http.Handler{"GET /x": ok}}},
		{"extra conflicting with a route", httpapi.Config{AdminExtra: map[string]http.Handler{"GET /admin/stats": ok}}},
		{"extra with a bad pattern", httpapi.Config{AdminExtra: map[string]http.Handler{"/admin/{": ok}}},
		{"extra nil handler", httpapi.Config{AdminExtra: map[string]http.Handler{"/admin/x/": nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if tc.name != "no service" && tc.name != "no TenantIDFromContext" {
				cfg.Service, cfg.TenantIDFromContext = orch, tenantmigrate.TenantIDFromContext
			}
			h, err := httpapi.NewHandler(cfg)
			require.Error(t, err)
			require.Nil(t, h)
		})
	}
}

func TestNewServer(t *testing.T) {
	t.Parallel()
	h := http.NotFoundHandler()
	s := httpapi.NewServer(":0", h)
	require.Equal(t, ":0", s.Addr)
	require.NotNil(t, s.Handler)
	require.Positive(t, s.ReadHeaderTimeout)
	require.GreaterOrEqual(t, s.ReadTimeout, s.ReadHeaderTimeout)
	require.Greater(t, s.WriteTimeout, 15*time.Minute, "longer than the default inline migration timeout")
	require.Positive(t, s.IdleTimeout)
	require.Equal(t, 64<<10, s.MaxHeaderBytes)
}
