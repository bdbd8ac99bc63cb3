package tenantmigrate_test

import (
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// logStatuses records, in public.status_log of the control plane, every
// status a tenant's run writes (RecordSuccess, RecordFailure), so a test can
// assert the sequence rather than catch a passing state by polling.
func logStatuses(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(t.Context(), `
		CREATE TABLE public.status_log (seq bigserial PRIMARY KEY, tenant_id text NOT NULL, status text NOT NULL);
		CREATE FUNCTION public.log_status() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.status_log (tenant_id, status) VALUES (NEW.id, coalesce(NEW.migrations_status, 'unknown'));
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_status AFTER UPDATE OF migrations_status ON tenantmigrate.tenants
			FOR EACH ROW EXECUTE FUNCTION public.log_status();`)
	require.NoError(t, err)
}

func statusHistory(t *testing.T, pool *pgxpool.Pool, id string) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT status FROM public.status_log WHERE tenant_id = $1 ORDER BY seq", id)
	require.NoError(t, err)
	statuses, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return statuses
}

// closedPortURL is a database URL on a local port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "postgres://nobody@" + addr + "/nowhere?connect_timeout=5"
}

// waitJobState waits until the newest migrate_tenant job of the tenant is in
// state (River records a job's end shortly after the tenant's status).
func waitJobState(t *testing.T, pool *pgxpool.Pool, id, state string) fleettest.Job {
	t.Helper()
	var j fleettest.Job
	waitFor(t, 10*time.Second, "job of "+id+" "+state, func() bool {
		j = fleettest.LastJob(t, pool, id)
		return j.State == state
	})
	return j
}

// TestRetriesByErrorKind runs queued migrations whose version 2 fails in
// one schema with a transient error (serialization_failure) on its first
// run only, and in another with a permanent one: the first completes on its
// second attempt, the second ends FAILED_STALE after one attempt, and the
// others complete at once.
func TestRetriesByErrorKind(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)

	// Version 1 creates a sequence; version 2 draws from it on every run, so
	// it counts the runs of version 2 (nextval is not rolled back with the
	// failed transaction), and decides by schema name and count.
	migrations := fleettest.Migrations(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY);\nCREATE SEQUENCE attempts;",
		`SELECT nextval('attempts');
DO $$ BEGIN IF current_schema() = 'flaky' AND currval('attempts') = 1 THEN RAISE EXCEPTION 'first run fails' USING ERRCODE = 'serialization_failure'; END IF; END $$;
DO $$ BEGIN IF current_schema() = 'broken' THEN PERFORM no_such_function(); END IF; END $$;
CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint REFERENCES accounts (id));`,
	)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migrations})
	pool := admin.Pool()
	logStatuses(t, pool)
	good := addSchemaTenants(t, admin, "ok", 1, 3)
	db := good[0].URL
	flaky := addTenantAt(t, admin, "flaky", db, "flaky")
	broken := addTenantAt(t, admin, "broken", db, "broken")

	startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  migrations,
		Strategy:    tenantmigrate.StrategyFullFleet,
		RunWorkers:  true, Queue: tenantmigrate.QueueConfig{RetryBackoff: 50 * time.Millisecond},
		Rollout: oneWaveNoHalt,
	})

	waitAllLatest(t, admin, append(good, flaky), 30*time.Second)
	fleettest.RequireAppliedOnce(t, append(good, flaky), 1, 2)
	for _, tn := range good {
		require.Equal(t, []string{"COMPLETED"}, statusHistory(t, pool, tn.ID), tn.ID)
		require.Equal(t, int64(1), attemptsSeq(t, tn), tn.ID)
	}

	// Transient: FAILED at version 1 after the first attempt, COMPLETED
	// after the second.
	require.Equal(t, []string{"FAILED", "COMPLETED"}, statusHistory(t, pool, flaky.ID))
	require.Equal(t, int64(2), attemptsSeq(t, flaky))
	job := waitJobState(t, pool, flaky.ID, "completed")
	require.Equal(t, 2, job.Attempt)
	require.Len(t, job.Errors, 1)
	require.Contains(t, job.Errors[0], "first run fails")

	// Permanent: FAILED_STALE after one attempt, its job cancelled rather
	// than retried.
	waitFor(t, 10*time.Second, "broken tenant FAILED_STALE", func() bool {
		return len(statusHistory(t, pool, broken.ID)) > 0
	})
	job = waitJobState(t, pool, broken.ID, "cancelled")
	require.Equal(t, 1, job.Attempt)
	require.Equal(t, []string{"FAILED_STALE"}, statusHistory(t, pool, broken.ID))
	require.Equal(t, int64(1), attemptsSeq(t, broken))
	st, err := admin.TenantState(t.Context(), broken.ID)
	require.NoError(t, err)
	require.Equal(t, int64(1), *st.MigrationsVersion, "version 1 applied before the failure")
	require.Contains(t, st.LastError, "no_such_function")
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{broken}, 1)
}

// TestUnreachableTenantWaitsForItsServer: a tenant whose database cannot be
// reached (nothing listens on its port) fails no attempt and is never
// FAILED_STALE: its server turns DOWN, the job waits as snoozes, while the
// others complete. Once its URL is fixed, a fleet scan brings it to the
// latest version, the old job finding it done.
func TestUnreachableTenantWaitsForItsServer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	pool := admin.Pool()
	logStatuses(t, pool)
	good := addSchemaTenants(t, admin, "ok", 1, 3)
	deadURL := closedPortURL(t)
	lost := addTenantAt(t, admin, "lost", deadURL, "lost")

	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp,
		Migrations:  fleetMigrations(),
		Strategy:    tenantmigrate.StrategyFullFleet,
		RunWorkers:  true,
		Queue:       tenantmigrate.QueueConfig{RetryBackoff: 50 * time.Millisecond},
		Servers:     tenantmigrate.ServersConfig{ProbeInterval: 200 * time.Millisecond},
		Rollout:     oneWaveNoHalt,
	})

	waitAllLatest(t, o, good, 30*time.Second)
	waitFor(t, 60*time.Second, "the dead server DOWN after more snoozes than attempts", func() bool {
		job := fleettest.LastJob(t, pool, lost.ID)
		var snoozes int
		require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce((metadata->>'snoozes')::int, 0) FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = 'lost'`).Scan(&snoozes))
		list, err := o.ListServers(ctx)
		require.NoError(t, err)
		for _, s := range list {
			if s.Server == tenantmigrate.ServerOf(deadURL, nil) {
				return s.State == tenantmigrate.ServerDown && snoozes > 3 && job.Attempt == 0
			}
		}
		return false
	})
	require.Empty(t, statusHistory(t, pool, lost.ID), "nothing recorded for a tenant of a DOWN server")

	// Fix the URL: another target, whose state is unknown, so a plain scan
	// queues it (the waiting job is the tenant's unique job), and it
	// completes.
	fixedURL := good[0].URL
	_, err := o.PatchTenant(ctx, lost.ID, tenantmigrate.TenantPatch{DatabaseURL: &fixedURL})
	require.NoError(t, err)
	_, err = o.ScheduleFleet(ctx, false)
	require.NoError(t, err)

	lost.URL = fixedURL
	waitAllLatest(t, o, []fleettest.SchemaTenant{lost}, 30*time.Second)
	fleettest.RequireAppliedOnce(t, append(good, lost), 1, 2, 3)
	require.Equal(t, []string{"unknown", "COMPLETED"}, statusHistory(t, pool, lost.ID))
}
