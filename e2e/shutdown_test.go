package e2e

import (
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// sleepingMigrations: version 1 creates a table, version 2 sleeps for
// seconds before it alters it (neither can run twice in one schema).
func sleepingMigrations(t *testing.T, seconds int) string {
	t.Helper()
	return writeMigrations(t,
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"SELECT pg_sleep("+strconv.Itoa(seconds)+");\nALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
	)
}

// waitSleeping waits until n sessions on the tenant database tenantDB is
// connected to run pg_sleep: the migrations are inside version 2. (The
// cluster is shared with other tests: pg_stat_activity lists them all.)
func waitSleeping(t *testing.T, tenantDB *pgxpool.Pool, n int) {
	t.Helper()
	waitFor(t, 60*time.Second, "migrations inside pg_sleep", func() bool {
		var sleeping int
		require.NoError(t, tenantDB.QueryRow(t.Context(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '%pg_sleep(%' AND state = 'active'
			  AND pid <> pg_backend_pid()`).Scan(&sleeping))
		return sleeping == n
	})
}

// migrateJob is a tenant's migrate_tenant job as River keeps it.
type migrateJob struct {
	State   string
	Attempt int
	Errors  int
	Count   int // migrate_tenant jobs of the tenant, all states
}

func tenantJob(t *testing.T, cp *pgxpool.Pool, tenantID string) migrateJob {
	t.Helper()
	var j migrateJob
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT (array_agg(state::text ORDER BY id DESC))[1], (array_agg(attempt ORDER BY id DESC))[1],
		       (array_agg(coalesce(array_length(errors, 1), 0) ORDER BY id DESC))[1], count(*)
		FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1`,
		tenantID).Scan(&j.State, &j.Attempt, &j.Errors, &j.Count))
	return j
}

// TestServeSIGTERMDrainsRunningMigration: SIGTERM reaches serve while two
// queued migrations are inside a 3 s version. serve stops fetching, lets
// them finish within --shutdown-timeout, records them COMPLETED, and exits
// 0 after that: each version applied once, no failure ever written, no
// attempt beyond the first.
func TestServeSIGTERMDrainsRunningMigration(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "drain", 1, 2)
	cp := newPool(t, cpURL)
	logStatuses(t, cp)
	tenantDB := newPool(t, tenants[0].URL)

	s := startServer(t, "serve", serveEnv(cpURL, sleepingMigrations(t, 3), "full_fleet", "SHUTDOWN_TIMEOUT=30s"))
	s.waitListening(t)
	waitSleeping(t, tenantDB, len(tenants))

	sent := time.Now()
	require.Zero(t, s.stop(t, 40*time.Second), "exit code after SIGTERM")
	took := time.Since(sent)
	t.Logf("serve exited %s after SIGTERM", took.Round(time.Millisecond))
	require.Less(t, took, 30*time.Second, "exited within --shutdown-timeout")

	// Read after the exit: everything was recorded before serve exited.
	require.Equal(t, map[string]int{"COMPLETED": len(tenants)}, statusesWritten(t, cp), "status writes")
	require.Equal(t, len(tenants), fleettest.CountCompleted(t, cp, fleettest.IDs(tenants), 2))
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)
	for _, tn := range tenants {
		require.Equal(t, migrateJob{State: "completed", Attempt: 1, Count: 1}, tenantJob(t, cp, tn.ID), "job of %s", tn.ID)
	}
	require.NotContains(t, s.logs.String(), "context canceled")
}

// TestServeSIGTERMRequeuesMigrationPastTimeout: the migrations running at
// SIGTERM take longer than --shutdown-timeout. At the deadline serve
// cancels them (they roll back) and exits 0; their jobs are back in the
// queue, available, with no attempt used and no error, and nothing was
// written for the tenants (not FAILED). A second serve then completes them,
// each version applied once, in the first attempt of the same job.
func TestServeSIGTERMRequeuesMigrationPastTimeout(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "requeue", 1, 2)
	cp := newPool(t, cpURL)
	logStatuses(t, cp)
	tenantDB := newPool(t, tenants[0].URL)
	env := serveEnv(cpURL, sleepingMigrations(t, 4), "full_fleet", "SHUTDOWN_TIMEOUT=1s")

	first := startServer(t, "serve-1", env)
	first.waitListening(t)
	waitSleeping(t, tenantDB, len(tenants))

	sent := time.Now()
	require.Zero(t, first.stop(t, 30*time.Second), "exit code after SIGTERM")
	took := time.Since(sent)
	t.Logf("serve exited %s after SIGTERM", took.Round(time.Millisecond))
	require.Less(t, took, 1*time.Second+5*time.Second, "exited soon after --shutdown-timeout")
	require.Less(t, took, 4*time.Second, "exited before the migrations could have finished")

	require.Empty(t, statusesWritten(t, cp), "nothing recorded for the interrupted tenants")
	for id, st := range controlPlaneTenants(t, cp) {
		require.Equal(t, "null/null", st.String(), "tenant %s keeps its state", id)
	}
	fleettest.RequireAppliedOnce(t, tenants, 1) // version 2 rolled back
	for _, tn := range tenants {
		require.Equal(t, migrateJob{State: "available", Attempt: 0, Count: 1}, tenantJob(t, cp, tn.ID),
			"job of %s requeued, its attempt not used", tn.ID)
	}

	second := startServer(t, "serve-2", env)
	second.waitListening(t)
	listening := time.Now()
	waitAllLatest(t, cp, tenants, 2, 60*time.Second)
	t.Logf("second serve completed the requeued jobs %s after listening", time.Since(listening).Round(time.Millisecond))
	waitNoneRemaining(t, second, 2)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)
	require.Equal(t, map[string]int{"COMPLETED": len(tenants)}, statusesWritten(t, cp), "status writes")
	for _, tn := range tenants {
		require.Equal(t, migrateJob{State: "completed", Attempt: 1, Count: 1}, tenantJob(t, cp, tn.ID), "job of %s", tn.ID)
	}
}

// TestServeSecondSignalExitsAtOnce: a second SIGTERM during the drain ends
// serve at once, by the signal (its default action), instead of waiting out
// --shutdown-timeout behind a migration that sleeps for a minute. Its logs,
// at debug level, hold none of the secrets it was given.
func TestServeSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "sig", 1, 1)
	tenantDB := newPool(t, tenants[0].URL)
	u, err := url.Parse(cpURL)
	require.NoError(t, err)
	const cpPassword = "Cp-S3cret-Passw0rd"
	u.User = url.UserPassword(u.User.Username(), cpPassword)
	env := serveEnv(u.String(), sleepingMigrations(t, 60), "full_fleet", "SHUTDOWN_TIMEOUT=5m", "LOG_LEVEL=debug")
	s := startServer(t, "serve", env)
	s.waitListening(t)
	waitSleeping(t, tenantDB, 1)

	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, 10*time.Second, "the drain to start", func() bool { return strings.Contains(s.logs.String(), "shutting down") })
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("serve still draining 30 s after the second SIGTERM")
	}
	ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM, "ended by the second SIGTERM: %v", s.cmd.ProcessState)
	logs := s.logs.String()
	for _, secret := range []string{cpPassword, encryptionKey, adminKey} {
		require.NotContains(t, logs, secret)
	}
}
