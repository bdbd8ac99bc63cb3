package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// The Orchestrator is the Service the HTTP layer is built for.
var _ httpapi.Service = (*tenantmigrate.Orchestrator)(nil)

const (
	testAdminKey      = "test-admin-key-0123456789"
	testEncryptionKey = "0123456789abcdef-test"
)

// goodMigrations are two migrations, so latest is 2.
var goodMigrations = fstest.MapFS{
	"00001_create_items.sql": {Data: []byte("-- +goose Up\nCREATE TABLE items (id bigint PRIMARY KEY, name text);\n-- +goose Down\nDROP TABLE items;\n")},
	"00002_items_note.sql":   {Data: []byte("-- +goose Up\nALTER TABLE items ADD COLUMN note text;\n-- +goose Down\nALTER TABLE items DROP COLUMN note;\n")},
}

// badMigrations fail at version 2, after version 1 applied.
var badMigrations = fstest.MapFS{
	"00001_create_items.sql": goodMigrations["00001_create_items.sql"],
	"00002_broken.sql":       {Data: []byte("-- +goose Up\nALTER TABLE no_such_table ADD COLUMN note text;\n")},
}

// options configure newEnv; the zero value is a working setup.
type options struct {
	migrations      fs.FS
	noEncryptionKey bool
	noAdminKeys     bool
	upstream        *url.URL
	metrics         http.Handler
	adminExtra      map[string]http.Handler
	maxBodyBytes    int64
	// pool, when set, is the Orchestrator's control-plane pool.
	pool *pgxpool.Pool
	// provision is the Orchestrator's Config.Provision.
	provision tenantmigrate.ProvisionConfig
}

// env is a real Orchestrator on a fresh control-plane database, served by
// httptest.
type env struct {
	t    *testing.T
	orch *tenantmigrate.Orchestrator
	srv  *httptest.Server
	// logs holds the request log lines, as JSON.
	logs *fleettest.SyncBuffer
	// runs counts migration runs (Hooks.OnMigrationRun).
	runs atomic.Int64
}

func newEnv(t *testing.T, opts options) *env {
	t.Helper()
	e := &env{t: t, logs: &fleettest.SyncBuffer{}}
	migrations := opts.migrations
	if migrations == nil {
		migrations = goodMigrations
	}
	cfg := tenantmigrate.Config{
		Migrations: migrations,
		Provision:  opts.provision,
		Logger:     testLogger(t),
		Hooks: tenantmigrate.Hooks{
			OnMigrationRun: func(tenantmigrate.Strategy, string, time.Duration) { e.runs.Add(1) },
		},
	}
	if opts.pool != nil {
		cfg.Pool = opts.pool
	} else {
		cfg.DatabaseURL = pgtest.NewDatabase(t)
	}
	if !opts.noEncryptionKey {
		cfg.EncryptionKey = testEncryptionKey
	}
	orch, err := tenantmigrate.New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(orch.Close)
	require.NoError(t, orch.Start(context.WithoutCancel(t.Context())))
	e.orch = orch

	var keys []string
	if !opts.noAdminKeys {
		keys = []string{"another-key-that-is-longer-than-the-first-one", testAdminKey}
	}
	h, err := httpapi.NewHandler(httpapi.Config{
		Service:             orch,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		AdminAPIKeys:        keys,
		Upstream:            opts.upstream,
		Logger:              slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:             opts.metrics,
		AdminExtra:          opts.adminExtra,
		MaxBodyBytes:        opts.maxBodyBytes,
	})
	require.NoError(t, err)
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// testLogger sends the Orchestrator's logs to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// response is an HTTP response with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a map, failing the test when it is not a JSON
// object.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

// requestOption changes a request before it is sent.
type requestOption func(*http.Request)

func withKey(key string) requestOption {
	return func(r *http.Request) { r.Header.Set("apikey", key) }
}

func withHeader(name, value string) requestOption {
	return func(r *http.Request) { r.Header.Set(name, value) }
}

func withHost(host string) requestOption {
	return func(r *http.Request) { r.Host = host }
}

// do sends a request to the server; body "" sends none.
func (e *env) do(method, path, body string, opts ...requestOption) response {
	e.t.Helper()
	return doRequest(e.t, e.srv.URL, method, path, body, opts...)
}

// admin sends a request with the admin key.
func (e *env) admin(method, path, body string, opts ...requestOption) response {
	e.t.Helper()
	return e.do(method, path, body, append([]requestOption{withKey(testAdminKey)}, opts...)...)
}

func doRequest(t *testing.T, base, method, path, body string, opts ...requestOption) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, rd)
	require.NoError(t, err)
	for _, o := range opts {
		o(req)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// createTenant registers tenant id on a fresh database and returns the
// database URL.
func (e *env) createTenant(id string) string {
	e.t.Helper()
	dbURL := pgtest.NewDatabase(e.t)
	res := e.admin(http.MethodPost, "/admin/tenants/"+id, jsonBody(map[string]string{"databaseUrl": dbURL}))
	require.Equal(e.t, http.StatusCreated, res.status, "body: %s", res.body)
	return dbURL
}

func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// tenantHost is the host of tenant id's traffic under the default
// TenantHostRegexp.
func tenantHost(id string) string { return id + ".local.dev" }

// requestLogs returns the request log lines, decoded.
func (e *env) requestLogs() []map[string]any {
	e.t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(e.t, json.Unmarshal([]byte(line), &m), line)
		lines = append(lines, m)
	}
	return lines
}

// requestLog returns the log line of the last request with method and path.
// The handler writes it before the response ends (the responses of these
// tests are small enough to stay buffered until then), so it is there once
// the client has the response.
func (e *env) requestLog(method, path string) map[string]any {
	e.t.Helper()
	lines := e.requestLogs()
	for i := len(lines) - 1; i >= 0; i-- {
		if l := lines[i]; l["msg"] == "http request" && l["method"] == method && l["path"] == path {
			return l
		}
	}
	e.t.Fatalf("no request log line for %s %s in:\n%s", method, path, e.logs.String())
	return nil
}
