package strategy_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/strategy"
)

var _ strategy.Scanner = (*controlplane.Store)(nil)

var _ strategy.EnqueueFunc = (*queue.Queue)(nil).Enqueue

// newControlPlane returns the URL of a fresh control-plane database (tenants
// table, River's tables) with a runs table the test Runner writes to.
func newControlPlane(tb testing.TB) string {
	tb.Helper()
	return fleettest.NewControlPlane(tb, "CREATE TABLE runs (tenant_id text NOT NULL, attempt int NOT NULL)")
}

func newPool(tb testing.TB, dbURL string) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(tb, err)
	cfg.MaxConns = 10
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	return pool
}

// insertTenants adds n tenants named prefix-000.. with the given version
// (nil: never migrated) and status ("" for none).
func insertTenants(t *testing.T, pool *pgxpool.Pool, prefix string, n int, version *int64, status string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	var st *string
	if status != "" {
		st = &status
	}
	_, err := pool.Exec(context.Background(), `
		INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
		SELECT id, '\x00', $2, $3 FROM unnest($1::text[]) AS id`, ids, version, st)
	require.NoError(t, err)
	return ids
}

// queuedTenants returns the tenant of every migrate_tenant job, sorted.
func queuedTenants(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT args->>'tenant_id' FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' ORDER BY 1`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return ids
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// runsRunner does real work: a row in runs per attempt.
type runsRunner struct{ pool *pgxpool.Pool }

func (r runsRunner) RunTenant(ctx context.Context, tenantID string, attempt, _ int) error {
	_, err := r.pool.Exec(ctx, "INSERT INTO runs (tenant_id, attempt) VALUES ($1, $2)", tenantID, attempt)
	return err
}

// countingScanner counts ScanBehind calls, and those for a first page.
type countingScanner struct {
	strategy.Scanner
	mu                sync.Mutex
	calls, firstPages int
}

func (s *countingScanner) ScanBehind(ctx context.Context, latest int64, includeStale bool, afterCursor int64, limit int) ([]string, int64, error) {
	s.mu.Lock()
	s.calls++
	if afterCursor == 0 {
		s.firstPages++
	}
	s.mu.Unlock()
	return s.Scanner.ScanBehind(ctx, latest, includeStale, afterCursor, limit)
}

func (s *countingScanner) counts() (calls, firstPages int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.firstPages
}

// eventually checks cond every 10ms until it holds, failing the test after
// timeout.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	fleettest.Poll(tb, 10*time.Millisecond, timeout, what, cond)
}

func ptr[T any](v T) *T { return &v }
