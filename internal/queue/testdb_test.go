package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
)

// newControlPlane returns the URL of a fresh database holding the control
// plane (River's tables in schema tenantmigrate, as in production) and a runs
// table that the test Runner writes to. The database is dropped at cleanup.
func newControlPlane(tb testing.TB) string {
	tb.Helper()
	return fleettest.NewControlPlane(tb, "CREATE TABLE runs (tenant_id text NOT NULL, attempt int NOT NULL, max_attempts int NOT NULL)")
}

// newPool opens a pool on dbURL, closed at cleanup. tracer may be nil.
func newPool(tb testing.TB, dbURL string, tracer pgx.QueryTracer) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(tb, err)
	cfg.MaxConns = 10
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	return pool
}

// eventually checks cond every 10ms until it holds, failing the test after
// timeout.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	fleettest.Poll(tb, 10*time.Millisecond, timeout, what, cond)
}
