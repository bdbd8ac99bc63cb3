package fleettest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// NewControlPlane returns the URL of a fresh database (pgtest.NewDatabase,
// dropped at cleanup) holding the control plane as controlplane.Migrate
// creates it: the tenants table and River's tables, in schema tenantmigrate
// as in production. setupSQL, unless empty, runs after that (a table the
// test's Runner writes to, say).
func NewControlPlane(tb testing.TB, setupSQL string) string {
	tb.Helper()
	dbURL := pgtest.NewDatabase(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(tb, err)
	defer pool.Close()
	require.NoError(tb, controlplane.Migrate(ctx, pool))
	if setupSQL != "" {
		_, err = pool.Exec(ctx, setupSQL)
		require.NoError(tb, err)
	}
	return dbURL
}

// CountCompleted counts the tenants among ids that the control plane lists
// as COMPLETED at version.
func CountCompleted(tb testing.TB, pool *pgxpool.Pool, ids []string, version int64) int {
	tb.Helper()
	var n int
	require.NoError(tb, pool.QueryRow(tb.Context(), `
		SELECT count(*) FROM tenantmigrate.tenants
		WHERE id = ANY($1) AND migrations_status = 'COMPLETED' AND migrations_version = $2`,
		ids, version).Scan(&n))
	return n
}

// WaitAllCompleted polls the control plane (see Poll) until it lists every
// tenant among ids as COMPLETED at version, failing the test after timeout.
func WaitAllCompleted(tb testing.TB, pool *pgxpool.Pool, ids []string, version int64, every, timeout time.Duration) {
	tb.Helper()
	Poll(tb, every, timeout, fmt.Sprintf("%d tenants COMPLETED at version %d", len(ids), version), func() bool {
		return CountCompleted(tb, pool, ids, version) == len(ids)
	})
}

// Counts runs sql, a query whose rows are a text key and an int count, and
// returns the counts by key.
func Counts(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) map[string]int {
	tb.Helper()
	rows, err := pool.Query(tb.Context(), sql, args...)
	require.NoError(tb, err)
	out := map[string]int{}
	var key string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&key, &n}, func() error {
		out[key] = n
		return nil
	})
	require.NoError(tb, err)
	return out
}

// JobsPerTenant counts the River jobs of kind migrate_tenant per tenant id,
// in every state.
func JobsPerTenant(tb testing.TB, pool *pgxpool.Pool) map[string]int {
	tb.Helper()
	return Counts(tb, pool, `
		SELECT args->>'tenant_id', count(*)::int FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' GROUP BY 1`)
}

// Job is a River job of kind migrate_tenant, as far as tests look at it.
type Job struct {
	// State is River's job state: available, running, retryable, completed, ...
	State string
	// Attempt is the number of attempts started.
	Attempt int
	// Errors are the errors of the failed attempts, oldest first.
	Errors []string
}

// LastJob returns the newest migrate_tenant job of the tenant, or the zero
// Job when there is none.
func LastJob(tb testing.TB, pool *pgxpool.Pool, tenantID string) Job {
	tb.Helper()
	var j Job
	err := pool.QueryRow(tb.Context(), `
		SELECT state::text, attempt, coalesce(ARRAY(SELECT e->>'error' FROM unnest(errors) AS e), '{}')
		FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1
		ORDER BY id DESC LIMIT 1`, tenantID).Scan(&j.State, &j.Attempt, &j.Errors)
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}
	}
	require.NoError(tb, err)
	return j
}
