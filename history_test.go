package tenantmigrate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// historyPassword is the password in the URL of the "leaky" tenant, whose
// version 3 fails with it in the message. The test server trusts local
// connections: the password is never checked.
const historyPassword = "hunter2-history-pw"

// historyMigrations are three versions; version 3 fails in schema "broken"
// (a missing function), in schema "flaky" (a serialization failure, which is
// retried) and in schema "leaky" (a message quoting the tenant's password).
func historyMigrations() []string {
	return []string{
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
		"DO $$ BEGIN IF current_schema() = 'broken' THEN PERFORM no_such_function(); END IF; IF current_schema() = 'flaky' THEN RAISE EXCEPTION 'flaky' USING ERRCODE = 'serialization_failure'; END IF; IF current_schema() = 'leaky' THEN RAISE EXCEPTION 'password is " + historyPassword + "'; END IF; END $$;\nCREATE TABLE invoices (id bigserial PRIMARY KEY);",
	}
}

// tenantRuns returns every run of the tenant, newest first, paging through
// TenantRuns two at a time.
func tenantRuns(t *testing.T, o *tenantmigrate.Orchestrator, id string) []tenantmigrate.Run {
	t.Helper()
	var all []tenantmigrate.Run
	cursor := ""
	for range 50 {
		runs, next, err := o.TenantRuns(t.Context(), id, cursor, 2)
		require.NoError(t, err)
		all = append(all, runs...)
		if next == "" {
			return all
		}
		cursor = next
	}
	t.Fatalf("tenant %s: more than 100 runs", id)
	return nil
}

// requireRun checks the fields of a run that every trigger fills in.
func requireRun(t *testing.T, r tenantmigrate.Run, id, trigger string, result tenantmigrate.RunResult, attempt int) {
	t.Helper()
	require.Equal(t, id, r.TenantID)
	require.Equal(t, trigger, r.Trigger, "trigger of %+v", r)
	require.Equal(t, result, r.Result, "result of %+v", r)
	require.Equal(t, attempt, r.Attempt, "attempt of %+v", r)
	require.Equal(t, "up", r.Direction)
	require.Regexp(t, `^.+:[0-9]+$`, r.Process)
	require.False(t, r.StartedAt.IsZero())
	require.False(t, r.FinishedAt.Before(r.StartedAt))
	require.WithinDuration(t, time.Now(), r.FinishedAt, time.Minute)
	if result == tenantmigrate.RunCompleted {
		require.Empty(t, r.Error)
	}
}

// TestHistoryRequestAndAdmin: under on_request, the gate's run and the admin
// API's migrate-now each leave a row, newest first; an unknown tenant is
// ErrTenantNotFound and bad paging an error.
func TestHistoryRequestAndAdmin(t *testing.T) {
	t.Parallel()
	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations:  fleettest.Migrations(historyMigrations()...),
	})
	ctx := t.Context()
	tn := addSchemaTenants(t, o, "hr", 1, 1)[0]

	runs := tenantRuns(t, o, tn.ID)
	require.Empty(t, runs)

	require.NoError(t, o.EnsureMigrated(ctx, tn.ID))
	v, err := o.MigrateTenant(ctx, tn.ID)
	require.NoError(t, err)
	require.Equal(t, int64(3), v)

	runs = tenantRuns(t, o, tn.ID)
	require.Len(t, runs, 2)
	requireRun(t, runs[0], tn.ID, "admin", tenantmigrate.RunCompleted, 0)
	require.Equal(t, int64(3), *runs[0].FromVersion)
	require.Equal(t, int64(3), *runs[0].ToVersion)
	requireRun(t, runs[1], tn.ID, "request", tenantmigrate.RunCompleted, 0)
	require.Nil(t, runs[1].FromVersion)
	require.Equal(t, int64(3), *runs[1].ToVersion)
	require.Greater(t, runs[0].ID, runs[1].ID)
	require.False(t, runs[0].StartedAt.Before(runs[1].FinishedAt))

	_, _, err = o.TenantRuns(ctx, "nobody", "", 0)
	require.ErrorIs(t, err, tenantmigrate.ErrTenantNotFound)
	_, _, err = o.TenantRuns(ctx, tn.ID, "not-a-cursor", 0)
	require.ErrorIs(t, err, tenantmigrate.ErrInvalidCursor)
	_, _, err = o.TenantRuns(ctx, tn.ID, "", tenantmigrate.MaxRunsPageSize+1)
	require.ErrorIs(t, err, tenantmigrate.ErrInvalidLimit)
}

// TestHistoryQueueFullFleet: under full_fleet every queued attempt is a row
// with its attempt number: a tenant that fails every attempt with a
// retryable error has one failed row per attempt, with the error; one whose
// failure is not retried has one.
func TestHistoryQueueFullFleet(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	migrations := fleettest.Migrations(historyMigrations()...)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migrations})
	good := addSchemaTenants(t, admin, "hq", 1, 3)
	broken := addTenantAt(t, admin, "hq-broken", good[0].URL, "broken")
	flaky := addTenantAt(t, admin, "hq-flaky", good[0].URL, "flaky")

	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  migrations,
		Strategy:    tenantmigrate.StrategyFullFleet,
		RunWorkers:  true,
		Queue:       tenantmigrate.QueueConfig{MaxAttempts: 2, RetryBackoff: 10 * time.Millisecond},
		Rollout:     oneWaveNoHalt, // failures by design: no halt, no canary first
	})
	waitAllLatest(t, o, good, time.Minute)
	for _, id := range []string{broken.ID, flaky.ID} {
		waitFor(t, time.Minute, id+" FAILED_STALE", func() bool {
			st, err := o.TenantState(t.Context(), id)
			require.NoError(t, err)
			return st.MigrationsStatus == tenantmigrate.StatusFailedStale
		})
	}

	for _, tn := range good {
		runs := tenantRuns(t, o, tn.ID)
		require.Len(t, runs, 1, "tenant %s", tn.ID)
		requireRun(t, runs[0], tn.ID, "queue", tenantmigrate.RunCompleted, 1)
		require.Nil(t, runs[0].FromVersion)
		require.Equal(t, int64(3), *runs[0].ToVersion)
	}
	runs := tenantRuns(t, o, broken.ID)
	require.Len(t, runs, 1)
	requireRun(t, runs[0], broken.ID, "queue", tenantmigrate.RunFailed, 1)
	require.Contains(t, runs[0].Error, "no_such_function")
	require.Equal(t, int64(2), *runs[0].ToVersion)

	runs = tenantRuns(t, o, flaky.ID)
	require.Len(t, runs, 2)
	for i, r := range runs {
		requireRun(t, r, flaky.ID, "queue", tenantmigrate.RunFailed, 2-i)
		require.Contains(t, r.Error, "SQLSTATE 40001")
		require.Equal(t, int64(2), *r.ToVersion)
	}
	require.Nil(t, runs[1].FromVersion)
	require.Equal(t, int64(2), *runs[0].FromVersion, "the second attempt starts where the first left it")

	// Per-tenant durations come from the three that applied migrations.
	d, err := o.RunDurations(t.Context(), time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Equal(t, 3, d.Runs)
	require.Positive(t, d.P50)
	require.GreaterOrEqual(t, d.P95, d.P50)
}

// TestHistoryBatch: migrate --all (MigrateTenants over every tenant behind)
// leaves a row per attempt with its attempt number, a failure's error with
// the tenant's password masked, and a tenant it skips at the latest version
// (nothing ran) leaves none.
func TestHistoryBatch(t *testing.T) {
	t.Parallel()
	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations:  fleettest.Migrations(historyMigrations()...),
		Rollout:     oneWaveNoHalt, // failures by design: no halt, no canary first
	})
	ctx := t.Context()
	good := addSchemaTenants(t, o, "hb", 1, 2)
	leakyURL := strings.Replace(good[0].URL, "postgres@", "postgres:"+historyPassword+"@", 1)
	require.NotEqual(t, good[0].URL, leakyURL)
	leaky := addTenantAt(t, o, "hb-leaky", leakyURL, "leaky")

	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Completed)
	require.Equal(t, int64(1), res.Failed)

	for _, tn := range good {
		runs := tenantRuns(t, o, tn.ID)
		require.Len(t, runs, 1)
		requireRun(t, runs[0], tn.ID, "batch", tenantmigrate.RunCompleted, 1)
		require.NotEmpty(t, runs[0].RolloutID, "migrate --all ran it in the rollout")
	}
	runs := tenantRuns(t, o, leaky.ID)
	require.Len(t, runs, 1)
	requireRun(t, runs[0], leaky.ID, "batch", tenantmigrate.RunFailed, 1)
	require.Contains(t, runs[0].Error, "password is")
	require.NotContains(t, runs[0].Error, historyPassword)
	require.Equal(t, int64(2), *runs[0].ToVersion)

	// A second pass (the failure was not retryable: FAILED_STALE in the
	// rollout, so it is asked for) runs only the failed tenant again.
	_, err = o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true, IncludeStale: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Len(t, tenantRuns(t, o, good[0].ID), 1)
	runs = tenantRuns(t, o, leaky.ID)
	require.Len(t, runs, 2)
	require.Equal(t, int64(2), *runs[0].FromVersion)
}

// TestHistoryRetention: a running Orchestrator deletes the runs older than
// Config.History.Retention and keeps the newer ones.
func TestHistoryRetention(t *testing.T) {
	t.Parallel()
	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations:  fleettest.Migrations(historyMigrations()...),
		History:     tenantmigrate.HistoryConfig{Retention: time.Hour},
	})
	ctx := t.Context()
	tn := addSchemaTenants(t, o, "hp", 1, 1)[0]
	require.NoError(t, o.EnsureMigrated(ctx, tn.ID)) // a run of now
	_, err := o.Pool().Exec(ctx, `
		INSERT INTO tenantmigrate.runs (tenant_id, result, started_at, finished_at, process, trigger)
		SELECT $1, 'completed', now() - interval '2 hours' - i * interval '1 second', now() - interval '2 hours', 'old:1', 'queue'
		FROM generate_series(1, 2500) i`, tn.ID)
	require.NoError(t, err)
	_, err = o.Pool().Exec(ctx, `
		INSERT INTO tenantmigrate.runs (tenant_id, result, started_at, finished_at, process, trigger)
		VALUES ($1, 'completed', now() - interval '59 minutes', now() - interval '59 minutes', 'recent:1', 'queue')`, tn.ID)
	require.NoError(t, err)

	require.NoError(t, o.Start(ctx))
	waitFor(t, 30*time.Second, "old runs pruned", func() bool {
		var n int
		require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.runs WHERE process = 'old:1'`).Scan(&n))
		return n == 0
	})
	runs := tenantRuns(t, o, tn.ID)
	require.Len(t, runs, 2)
	require.Equal(t, "recent:1", runs[1].Process)
	requireRun(t, runs[0], tn.ID, "request", tenantmigrate.RunCompleted, 0)
}
