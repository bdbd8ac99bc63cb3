package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// The tests of this file prove the guarantees listed in RELIABILITY.md with
// real processes and real PostgreSQL clusters: crashes, outages of the
// control plane and of tenant databases, concurrent operators, bounded
// connections.

// pairMigrations are three migrations; version 2 creates two tables with a
// pause between them, so a run can be killed inside its transaction, and
// none of them can run twice in one schema.
func pairMigrations(t *testing.T, pause string) string {
	t.Helper()
	return writeMigrations(t,
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"CREATE TABLE pair_a (id int);\nSELECT pg_sleep("+pause+");\nCREATE TABLE pair_b (id int);",
		"CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));",
	)
}

// TestMigrateAllKill9MidMigration: `migrate --all` is killed with SIGKILL
// once some tenants are done and others are inside the transaction of a
// migration that creates two tables. Afterwards every tenant holds both
// tables or neither, the control plane records no version a tenant database
// lacks, and running the same command again completes the fleet with each
// migration applied once. 12 tenants, one kill; TestSoak runs 60 tenants
// killed five times in a row.
func TestMigrateAllKill9MidMigration(t *testing.T) {
	t.Parallel()
	testMigrateAllKill9(t, 2, 1)
}

// testMigrateAllKill9 is TestMigrateAllKill9MidMigration with 6 tenants in
// each of dbCount databases, killed rounds times.
func testMigrateAllKill9(t *testing.T, dbCount, rounds int) {
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "mk", dbCount, 6)
	cp := newPool(t, cpURL)
	pgsrv := newPool(t, pgtest.ServerURL(t))
	dbs := databaseNames(t, tenants)
	env := serveEnv(cpURL, pairMigrations(t, "1"), "full_fleet")
	migrateAll := []string{"migrate", "--all", "--concurrency", "4", "--progress", "none"}

	sleeping := func() int {
		var n int
		require.NoError(t, pgsrv.QueryRow(t.Context(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = ANY($1) AND application_name = 'tenantmigrate' AND state = 'active' AND query LIKE '%pg_sleep%'`,
			dbs).Scan(&n))
		return n
	}
	completed := func() int {
		n := 0
		for _, st := range controlPlaneTenants(t, cp) {
			if st.Status != nil && *st.Status == "COMPLETED" {
				n++
			}
		}
		return n
	}

	for round := 1; round <= rounds; round++ {
		doneBefore := completed()
		if doneBefore == len(tenants) {
			break
		}
		started := time.Now()
		run := startCommand(t, fmt.Sprintf("migrate-%d", round), env, migrateAll...)
		// Kill it once a few more tenants are done and two sleep between
		// pair_a and pair_b.
		waitFor(t, 60*time.Second, "tenants done and tenants inside migration 2", func() bool {
			return completed() >= min(doneBefore+4, len(tenants)-2) && sleeping() >= 2
		})
		run.kill9(t)
		killedAt := time.Since(started)

		// The sessions of the dead process end when PostgreSQL notices it
		// is gone (at the end of the statement), rolling back their
		// transactions.
		waitFor(t, 30*time.Second, "the killed process's tenant sessions to end", func() bool {
			return tenantBackends(t, pgsrv, dbs, "tenantmigrate") == 0
		})

		contents := readTenants(t, tenants, "pair_a", "pair_b")
		rolledBack, done := 0, 0
		for _, tn := range tenants {
			c := contents[tn.ID]
			require.Equal(t, c.tables["pair_a"], c.tables["pair_b"], "tenant %s holds half of migration 2", tn.ID)
			require.Equal(t, c.maxVersion >= 2, c.tables["pair_a"], "tenant %s: migration 2's tables and its version row disagree", tn.ID)
			switch c.maxVersion {
			case 1:
				rolledBack++
			case 3:
				done++
			}
		}
		require.Positive(t, rolledBack, "the kill interrupted no migration 2")
		requireControlPlaneTruthful(t, cp, tenants)
		t.Logf("round %d: killed at %s; %d tenants at version 1 (migration 2 rolled back), %d at 3; control plane: %s",
			round, killedAt.Round(100*time.Millisecond), rolledBack, done, statusCounts(controlPlaneTenants(t, cp)))
	}

	// The same command again finishes the job; nobody repairs anything.
	rerunStart := time.Now()
	rerun := startCommand(t, "migrate-final", env, migrateAll...)
	require.Zero(t, rerun.wait(t, 120*time.Second), "exit code of the rerun:\n%s", rerun.out.String())
	t.Logf("rerun completed the fleet of %d in %s", len(tenants), time.Since(rerunStart).Round(100*time.Millisecond))

	waitAllLatest(t, cp, tenants, 3, 10*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	for id, c := range readTenants(t, tenants, "pair_a", "pair_b") {
		require.True(t, c.tables["pair_a"] && c.tables["pair_b"], "tenant %s lacks a table of migration 2", id)
	}
	requireControlPlaneTruthful(t, cp, tenants)
}

// newControlPlaneCluster starts a PostgreSQL cluster of the test's own for
// the control plane, so the test may stop it, and returns it with the URL of
// a database on it.
func newControlPlaneCluster(t *testing.T) (stop, start func(), cpURL string) {
	t.Helper()
	srv := pgtest.NewServer(t, nil)
	conn, err := pgx.Connect(t.Context(), srv.URL("postgres"))
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), "CREATE DATABASE control")
	require.NoError(t, err)
	require.NoError(t, conn.Close(t.Context()))
	stop = func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
	}
	start = func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		require.NoError(t, srv.Restart(ctx))
	}
	return stop, start, srv.URL("control")
}

// TestControlPlaneRestartDuringFleetRun: the control plane's PostgreSQL is
// stopped while two serve processes migrate a fleet. Both stay up and answer
// 503 on /health while it is down; once it is back they reconnect by
// themselves, /health is 200 again, and every tenant ends COMPLETED at the
// latest version with each migration applied once: no job lost, no tenant
// marked FAILED_STALE, no version recorded that a tenant lacks, and no job
// rescued although the outage outlasts the instance timeout. Down for 3
// seconds; TestSoak keeps it down for 20.
func TestControlPlaneRestartDuringFleetRun(t *testing.T) {
	t.Parallel()
	testControlPlaneRestart(t, 3*time.Second)
}

// testControlPlaneRestart is TestControlPlaneRestartDuringFleetRun with the
// control plane down for outage.
func testControlPlaneRestart(t *testing.T, outage time.Duration) {
	stopCP, startCP, cpURL := newControlPlaneCluster(t)
	tenants := registerTenants(t, cpURL, "co", 2, 30)
	cp := newPool(t, cpURL)
	logStatuses(t, cp)

	// An instance timeout shorter than the outage: every heartbeat is old
	// when the control plane returns, and no instance may take the other's
	// jobs for a dead one's (rescue waits for a timeout of its own
	// heartbeats first).
	servers := startFleet(t, 2, serveEnv(cpURL, fleetMigrations(t, true), "full_fleet",
		"JOB_TIMEOUT=5s", "RESCUE_AFTER=6s", "RETRY_BACKOFF=200ms", "INSTANCE_TIMEOUT=2s"))

	// Stop the control plane once the run is under way.
	waitFor(t, 60*time.Second, "a few tenants migrated", func() bool {
		var n int
		require.NoError(t, cp.QueryRow(t.Context(),
			"SELECT count(*) FROM tenantmigrate.tenants WHERE migrations_status = 'COMPLETED'").Scan(&n))
		return n >= 5
	})
	stopCP()
	stoppedAt := time.Now()

	// While it is down every instance says so on /health, and stays up.
	// Keep it down for a few seconds of polling: long enough for running
	// jobs to finish their tenant work and fail to record it, and for
	// workers to fail fetching.
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for polls := 0; time.Since(stoppedAt) < outage || polls < 5; polls++ {
		for _, s := range servers {
			require.Equal(t, http.StatusServiceUnavailable, s.health(t), "%s /health while the control plane is down", s.name)
			require.True(t, s.alive(), "%s exited while the control plane was down", s.name)
		}
		<-poll.C
	}
	down := time.Since(stoppedAt)
	startCP()
	restartedAt := time.Now()
	// The test's own pool lost its connections too.
	cp = newPool(t, cpURL)

	for _, s := range servers {
		waitFor(t, 30*time.Second, s.name+" answering 200 on /health", func() bool {
			return s.health(t) == http.StatusOK
		})
	}
	waitAllLatest(t, cp, tenants, 3, 120*time.Second)
	t.Logf("control plane down for %s; fleet COMPLETED %s after it returned", down.Round(100*time.Millisecond), time.Since(restartedAt).Round(100*time.Millisecond))
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	requireControlPlaneTruthful(t, cp, tenants)
	for _, s := range servers {
		waitNoneRemaining(t, s, 3)
		require.True(t, s.alive(), "%s exited", s.name)
	}
	var discarded int
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT count(*) FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND state IN ('discarded', 'cancelled')`).Scan(&discarded))
	require.Zero(t, discarded, "migrate_tenant jobs given up")
	written := statusesWritten(t, cp)
	require.Zero(t, written["FAILED_STALE"], "FAILED_STALE written")
	var rescued int
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT count(*) FROM tenantmigrate.river_job WHERE metadata ? 'tenantmigrate_rescues'`).Scan(&rescued))
	require.Zero(t, rescued, "jobs of live instances rescued after the outage")
	var retried, maxAttempt int
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT count(*) FILTER (WHERE attempt > 1), coalesce(max(attempt), 0) FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant'`).Scan(&retried, &maxAttempt))
	t.Logf("%d tenants: statuses written %v; %d jobs needed more than one attempt (at most %d)", len(tenants), written, retried, maxAttempt)
}

// TestSoak runs the long variants of the reliability tests: `migrate
// --all` killed five times over 60 tenants, the control plane down for 20
// seconds, and the gateway under load while 200 tenants migrate. Opt-in
// (TENANTMIGRATE_SOAK=1): about two minutes.
func TestSoak(t *testing.T) {
	if os.Getenv("TENANTMIGRATE_SOAK") != "1" {
		t.Skip("opt-in: set TENANTMIGRATE_SOAK=1 to run the long variants of the reliability tests (about two minutes); see RELIABILITY.md")
	}
	t.Run("MigrateAllKill9FiveTimes", func(t *testing.T) { testMigrateAllKill9(t, 10, 5) })
	t.Run("ControlPlaneDown20s", func(t *testing.T) { testControlPlaneRestart(t, 20*time.Second) })
	t.Run("GatewayLoad200Tenants", func(t *testing.T) { testGatewayLoad(t, 4, 50, 10*time.Second, 200, 20000) })
}

// blackhole is a TCP listener that accepts connections and never answers:
// a tenant database host that hangs. It counts the connections it holds.
type blackhole struct {
	ln      net.Listener
	mu      sync.Mutex
	open    int
	maxOpen int
	total   int
	conns   []net.Conn
}

func newBlackhole(t *testing.T) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &blackhole{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open++
			b.total++
			b.maxOpen = max(b.maxOpen, b.open)
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			go func() {
				// Read until the client gives up; answer nothing.
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
				b.mu.Lock()
				b.open--
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

// close stops listening and drops the connections held: the host is now
// refusing connections.
func (b *blackhole) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
}

func (b *blackhole) counts() (open, maxOpen, total int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open, b.maxOpen, b.total
}

// TestTenantDatabaseOutage: among 40 tenants, "lost" lives on a PostgreSQL
// that is stopped (connections refused) and "hung" on a host that accepts
// connections and never answers. With two workers, their servers turn DOWN
// after repeated connection failures; their jobs wait using no attempt and
// nothing is recorded for them (never FAILED_STALE), while the other
// tenants complete; tenant sessions never exceed the workers, and the hung
// host never holds more than one connection. Once lost's PostgreSQL is
// back, the probe finds it UP and it completes with no command.
func TestTenantDatabaseOutage(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "ok", 2, 20)
	cp := newPool(t, cpURL)
	pgsrv := newPool(t, pgtest.ServerURL(t))
	dbs := databaseNames(t, tenants)

	// lost: a database on a cluster of the test's own, stopped.
	lostCluster := pgtest.NewServer(t, nil)
	conn, err := pgx.Connect(t.Context(), lostCluster.URL("postgres"))
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), "CREATE DATABASE lost")
	require.NoError(t, err)
	require.NoError(t, conn.Close(t.Context()))
	require.NoError(t, lostCluster.Stop(t.Context()))
	// hung: a host that never answers.
	hole := newBlackhole(t)
	registerExtra(t, cpURL, map[string]fleettest.SchemaTenant{
		"lost": {ID: "lost", URL: lostCluster.URL("lost"), Schema: "lost"},
		"hung": {ID: "hung", URL: "postgres://nobody@" + hole.ln.Addr().String() + "/hung?sslmode=disable", Schema: "hung"},
	})

	const backoff = 300 * time.Millisecond
	s := startServer(t, "serve", serveEnv(cpURL, fleetMigrations(t, true), "full_fleet", "WORKERS=2", "PGAPPNAME=tm-serve",
		"JOB_TIMEOUT=2s", "RESCUE_AFTER=3s", "RETRY_BACKOFF="+backoff.String(), "MAX_ATTEMPTS=3", "SERVER_PROBE_INTERVAL=1s"))
	sampler := sampleBackends(t, pgsrv, dbs, map[string]int{"tm-serve": s.cmd.Process.Pid})
	s.waitListening(t)
	started := time.Now()

	// Their servers turn DOWN; their jobs wait (snoozed) using no attempt,
	// and nothing is recorded for them, never FAILED_STALE.
	waitAllLatest(t, cp, tenants, 3, 90*time.Second)
	fleetDone := time.Since(started)
	lostServer := strings.TrimPrefix(strings.SplitN(lostCluster.URL("lost"), "/", 4)[2], "postgres@")
	hungServer := hole.ln.Addr().String()
	waitFor(t, 60*time.Second, "lost's and hung's servers DOWN", func() bool {
		var list struct {
			Servers []struct {
				Server string `json:"server"`
				State  string `json:"state"`
			} `json:"servers"`
		}
		require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/admin/servers", "", &list))
		down := map[string]bool{}
		for _, sv := range list.Servers {
			down[sv.Server] = sv.State == "DOWN"
		}
		return down[lostServer] && down[hungServer]
	})
	downAfter := time.Since(started)
	sampler.finish(t)
	for _, id := range []string{"lost", "hung"} {
		// Between two snoozes the job runs for a moment (attempt 1), to find
		// its server DOWN; waiting, it is back at attempt 0.
		waitFor(t, 30*time.Second, "the job of "+id+" waiting with no attempt used", func() bool {
			var attempt int
			var state string
			require.NoError(t, cp.QueryRow(t.Context(), `SELECT state::text, attempt FROM tenantmigrate.river_job
				WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1`, id).Scan(&state, &attempt))
			return (state == "available" || state == "scheduled") && attempt == 0
		})
		require.Nil(t, controlPlaneTenants(t, cp)[id].Status, "nothing recorded for %s", id)
	}
	staleAfter := downAfter

	// Bounded connections: the workers' sessions on the healthy tenant
	// databases, and the connections the hung host was left holding.
	open, maxOpen, total := hole.counts()
	t.Logf("fleet of %d COMPLETED in %s; lost's and hung's servers DOWN after %s; tenant sessions at most %d (%d samples); hung host: %d connections, at most %d at once, %d open now",
		len(tenants), fleetDone.Round(100*time.Millisecond), staleAfter.Round(100*time.Millisecond), sampler.maxHeld["tm-serve"], sampler.samples, total, maxOpen, open)
	require.LessOrEqual(t, sampler.maxHeld["tm-serve"], 2, "tenant sessions with WORKERS=2")
	require.Positive(t, sampler.maxHeld["tm-serve"])
	require.Equal(t, 1, maxOpen, "connections held at once by the hung host")
	waitFor(t, 10*time.Second, "the hung host's connections closed", func() bool {
		open, _, _ := hole.counts()
		return open == 0
	})

	// Recovery: lost's PostgreSQL is back; the probe finds it UP and its
	// tenant completes with no command. hung's host now refuses
	// connections: it stays DOWN, its tenant waiting.
	require.NoError(t, lostCluster.Restart(t.Context()))
	hole.close()
	lost := fleettest.SchemaTenant{ID: "lost", URL: lostCluster.URL("lost"), Schema: "lost"}
	waitAllLatest(t, cp, []fleettest.SchemaTenant{lost}, 3, 60*time.Second)
	fleettest.RequireAppliedOnce(t, append(tenants, lost), 1, 2, 3)
	requireControlPlaneTruthful(t, cp, append(tenants, lost))
	require.Nil(t, controlPlaneTenants(t, cp)["hung"].Status)
}

// registerExtra registers more tenants through the library.
func registerExtra(t *testing.T, cpURL string, tenants map[string]fleettest.SchemaTenant) {
	t.Helper()
	o, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: encryptionKey, ReadOnly: true})
	require.NoError(t, err)
	defer o.Close()
	for _, tn := range tenants {
		_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: tn.ID, DatabaseURL: tn.URL, Schema: tn.Schema})
		require.NoError(t, err)
	}
}

// TestConcurrentOperators: two `migrate --all` processes run at once while
// three serve processes work the same fleet with full_fleet. Every version
// is applied once per tenant, every tenant ends COMPLETED at the latest
// version, and no process ever holds more tenant sessions than its
// --workers / --concurrency (each process's sessions are told apart by
// application_name, set with PGAPPNAME).
func TestConcurrentOperators(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "op", 3, 20)
	cp := newPool(t, cpURL)
	logStatuses(t, cp)
	pgsrv := newPool(t, pgtest.ServerURL(t))

	env := serveEnv(cpURL, fleetMigrations(t, true), "full_fleet")
	servers := make([]*server, 3)
	for i := range servers {
		servers[i] = startServer(t, fmt.Sprintf("serve-%d", i), append(slices.Clone(env), "WORKERS=2", fmt.Sprintf("PGAPPNAME=tm-serve-%d", i)))
	}
	runs := make([]*cmdProc, 2)
	for i := range runs {
		runs[i] = startCommand(t, fmt.Sprintf("migrate-%d", i), append(slices.Clone(env), fmt.Sprintf("PGAPPNAME=tm-migrate-%d", i)),
			"migrate", "--all", "--concurrency", "2", "--progress", "none")
	}
	started := time.Now()
	pids := map[string]int{}
	for i, s := range servers {
		pids[fmt.Sprintf("tm-serve-%d", i)] = s.cmd.Process.Pid
	}
	for i, r := range runs {
		pids[fmt.Sprintf("tm-migrate-%d", i)] = r.cmd.Process.Pid
	}
	sampler := sampleBackends(t, pgsrv, databaseNames(t, tenants), pids)
	for _, s := range servers {
		s.waitListening(t)
	}
	for _, r := range runs {
		require.Zero(t, r.wait(t, 120*time.Second), "exit code of %s:\n%s", r.name, r.out.String())
	}
	waitAllLatest(t, cp, tenants, 3, 60*time.Second)
	took := time.Since(started)
	for _, s := range servers {
		waitNoneRemaining(t, s, 3)
	}
	sampler.finish(t)

	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	requireControlPlaneTruthful(t, cp, tenants)
	written := statusesWritten(t, cp)
	require.Zero(t, written["FAILED_STALE"], "FAILED_STALE written")
	var rescued int
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT count(*) FROM tenantmigrate.river_job WHERE metadata ? 'tenantmigrate_rescues'`).Scan(&rescued))
	require.Zero(t, rescued, "jobs of live instances rescued after the outage")
	require.Zero(t, written["FAILED"], "FAILED written")

	t.Logf("%d tenants COMPLETED in %s by 3 serve (WORKERS=2) and 2 migrate --all (--concurrency 2); tenant sessions held at once per process at most %v (listed by the server, closing ones included: %v, %d in all); %d samples; statuses written %v",
		len(tenants), took.Round(100*time.Millisecond), sampler.maxHeld, sampler.maxListed, sampler.maxTotal, sampler.samples, written)
	for app := range pids {
		require.LessOrEqual(t, sampler.maxHeld[app], 2, "tenant sessions held by %s", app)
		// The processes share one rollout: a migrate --all claims the
		// tenants no server has queued yet, and the servers' feeders may
		// have queued them all (a batch is 100) before it asks.
		if strings.HasPrefix(app, "tm-serve") {
			require.Positive(t, sampler.maxHeld[app], "%s migrated no tenant", app)
		}
	}
}

// TestCLIRejectsHostileInput: tenant ids and schema names that try SQL
// injection or path tricks are refused by the CLI before anything is
// written, and the control plane is left as it was.
func TestCLIRejectsHostileInput(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "cli", 1, 1)
	cp := newPool(t, cpURL)
	env := serveEnv(cpURL, fleetMigrations(t, false), "full_fleet")
	for _, args := range [][]string{
		{"tenants", "add", "x';DROP TABLE tenantmigrate.tenants;--", tenants[0].URL},
		{"tenants", "add", "../cli-000", tenants[0].URL},
		{"tenants", "add", "CLI-000", tenants[0].URL},
		{"tenants", "add", "evil", tenants[0].URL, "--schema", `s"; DROP SCHEMA tenantmigrate CASCADE; --`},
		{"tenants", "add", "evil", tenants[0].URL, "--schema", "pg_catalog"},
		{"tenants", "add", "evil", "postgres://h/db'; DROP TABLE x; --?sslmode=disable&options=-c%20search_path%3Dx"},
		{"tenants", "rm", "cli-000' OR '1'='1"},
		{"migrate", "--tenant", "x';DROP TABLE tenantmigrate.tenants;--"},
		{"migrate", "--tenant", "cli-000,../etc"},
	} {
		p := startCommand(t, args[0], env, args...)
		code := p.wait(t, 30*time.Second)
		require.NotZero(t, code, "%v succeeded:\n%s", args, p.out.String())
		require.Regexp(t, `invalid|no tenant`, p.out.String(), "%v", args)
	}
	states := controlPlaneTenants(t, cp)
	require.Len(t, states, 1, "tenants in the control plane")
	require.Contains(t, states, "cli-000")
}
