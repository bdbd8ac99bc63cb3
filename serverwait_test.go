package tenantmigrate_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// blockerLock is the advisory lock (in the tenants' database) that the
// migration of the tenant in schema "blocker" waits for, while the test
// holds it: a long migration that keeps its server full.
const blockerLock = 7

// serverWaitMigrations: one version; the tenant in schema "blocker" waits
// in it until the test releases blockerLock.
var serverWaitMigrations = fstest.MapFS{"00001_accounts.sql": {Data: []byte(`-- +goose Up
CREATE TABLE accounts (id bigint PRIMARY KEY);
SELECT pg_advisory_xact_lock(7) WHERE current_schema() = 'blocker';
`)}}

// gateRequest sends one tenant request through o's Middleware.
func gateRequest(o *tenantmigrate.Orchestrator, tenantID string) *httptest.ResponseRecorder {
	h := o.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://"+tenantID+".local.dev/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// goroutinesIn counts the goroutines whose stack is in function fn (its
// full name, as in a stack trace).
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), fn+"(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestFullServerHoldsOnlyItsOwnRequests: one instance runs a long
// migration of a tenant of server "busy" (cap 1). On another instance
// (InlineConcurrency 1), requests for other tenants of "busy" wait for a
// slot without holding the inline slot, so a request for a tenant of server
// "free" is served meanwhile; they are served once the slot frees. On a
// third instance, whose InlineServerWait is short, a request for a tenant of
// "busy" gets 503 with Retry-After after the wait, using no attempt and
// recording nothing; once the slot is free the tenant is served.
//
// Not parallel: it waits until the requests for busy's tenants are waiting
// for its slot by counting the goroutines in servers.(*Manager).Take, which
// only this test's may be in.
func TestFullServerHoldsOnlyItsOwnRequests(t *testing.T) {
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	shared := pgtest.NewDatabase(t)
	servers := tenantmigrate.ServersConfig{MaxPerServer: 1}
	base := tenantmigrate.Config{DatabaseURL: cp, Migrations: serverWaitMigrations, Servers: servers,
		Limits: tenantmigrate.LimitsConfig{TenantLockTimeout: -1}}

	blockerInstance := startOrchestrator(t, base)
	waitingCfg := base
	waitingCfg.Limits.InlineConcurrency = 1
	waitingCfg.Limits.InlineServerWait = time.Minute
	waiting := startOrchestrator(t, waitingCfg)
	shortCfg := base
	shortCfg.Limits.InlineServerWait = 300 * time.Millisecond
	short := startOrchestrator(t, shortCfg)

	add := func(id, schema, server string) {
		_, err := blockerInstance.CreateTenant(ctx, tenantmigrate.Tenant{ID: id, DatabaseURL: shared, Schema: schema,
			Labels: map[string]string{"server": server}})
		require.NoError(t, err)
	}
	add("blocker", "blocker", "busy")
	busy := []string{"busy-1", "busy-2"}
	for _, id := range busy {
		add(id, "s_"+id[5:], "busy")
	}
	add("short-1", "short_1", "busy")
	add("free-1", "free_1", "free")

	// The long migration: it holds busy's one slot until the lock is
	// released.
	lockConn, err := pgx.Connect(ctx, shared)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lockConn.Close(context.WithoutCancel(ctx)) }) // after release, below
	_, err = lockConn.Exec(ctx, `SELECT pg_advisory_lock($1)`, blockerLock)
	require.NoError(t, err)
	released := false
	release := func() {
		if !released {
			released = true
			_, err := lockConn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, blockerLock)
			require.NoError(t, err)
		}
	}
	t.Cleanup(release)
	blockerDone := make(chan error, 1)
	go func() { blockerDone <- blockerInstance.EnsureMigrated(context.WithoutCancel(ctx), "blocker") }()
	waitFor(t, 30*time.Second, "the blocker's migration waiting for its lock", func() bool {
		var n int
		require.NoError(t, lockConn.QueryRow(ctx, `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted AND classid = 0 AND objid = $1 AND objsubid = 1`, blockerLock).Scan(&n))
		return n == 1
	})

	// Requests for busy's tenants wait for its slot, not holding the one
	// inline slot of their instance: free's tenant is served meanwhile.
	busyDone := make(chan *httptest.ResponseRecorder, len(busy))
	for _, id := range busy {
		go func() { busyDone <- gateRequest(waiting, id) }()
	}
	waitFor(t, 30*time.Second, "the requests for busy's tenants waiting for its slot", func() bool {
		return goroutinesIn("github.com/tenantmigrate/tenantmigrate/internal/servers.(*Manager).Take") == len(busy)
	})
	rec := gateRequest(waiting, "free-1")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	st, err := waiting.TenantState(ctx, "free-1")
	require.NoError(t, err)
	require.True(t, waiting.IsLatest(st))
	require.Empty(t, busyDone, "a request for a tenant of the full server returned before its slot was free")

	// Past the bound: 503 with Retry-After and a JSON error; nothing run
	// or recorded for the tenant.
	rec = gateRequest(short, "short-1")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	require.Equal(t, "2", rec.Header().Get("Retry-After"))
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var body map[string]string
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	require.Contains(t, body["error"], "database server is busy")
	st, err = short.TenantState(ctx, "short-1")
	require.NoError(t, err)
	require.Nil(t, st.MigrationsVersion)
	require.Empty(t, st.MigrationsStatus, "nothing recorded, never FAILED")
	runs, _, err := short.TenantRuns(ctx, "short-1", "", 10)
	require.NoError(t, err)
	require.Empty(t, runs, "no run in the history")
	_, err = short.MigrateTenant(ctx, "short-1")
	require.ErrorIs(t, err, tenantmigrate.ErrServerFull)

	// The slot frees: every waiting request is served, and so is the next
	// request of the one turned away.
	release()
	require.NoError(t, <-blockerDone)
	for range busy {
		rec := <-busyDone
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	rec = gateRequest(short, "short-1")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	for _, id := range append(busy, "short-1", "blocker") {
		st, err := short.TenantState(ctx, id)
		require.NoError(t, err)
		require.True(t, short.IsLatest(st), id)
		runs, _, err := short.TenantRuns(ctx, id, "", 10)
		require.NoError(t, err)
		require.Len(t, runs, 1, "%s: one run, completed", id)
		require.Equal(t, tenantmigrate.RunCompleted, runs[0].Result)
	}
}
